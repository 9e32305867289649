"""Steady-state behaviour on a real rclpy node (issue 12, bugs 10 and 11): a queue that overflows by design
is counted and summarized, not warned about every second; a detector that cannot be built is tried once
per configuration and reported in diagnostics."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from partslip_ros.log_policy import SteadyStateDrops
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
_names = itertools.count()


class BlockingDetector:
    """A detector that holds its run until released (inference much slower than the sensor)."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def detect(self, views, part_names, point_fields=None):
        from partslip_core.types import ViewDetections
        self.entered.set()
        self.release.wait(60)
        return [ViewDetections.empty() for _ in range(len(views.images))]


def test_an_overflowing_queue_warns_once_then_summarizes(running_node, mug_scans):
    """A 20 Hz sensor into a busy node for 2.5 s: before the fix, one warning per second (217 lines in 5 min)."""
    _, scans = mug_scans
    detector = BlockingDetector()
    node, outputs, _ = running_node(f"queue_full_{next(_names)}", {"trigger.mode": "on_demand", "queue_size": 2},
                                    detector_factory=lambda settings, fused: detector)
    msg = scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scans[0], True)
    node.submit(msg)
    assert wait_for(lambda: node.stats_snapshot().accepted == 1)
    runner = threading.Thread(target=node.request_run, kwargs={"timeout_s": 60})
    runner.start()
    try:
        assert detector.entered.wait(30)
        for _ in range(50):
            node.submit(msg)
            time.sleep(0.05)
    finally:
        detector.release.set()
        runner.join(60)
    stats = node.stats_snapshot()
    assert stats.dropped_queue_full == 48  # 50 in, 2 queued: every drop is counted
    assert wait_for(lambda: outputs.lines("input queue full", Log.WARN), timeout=15)  # /rosout is asynchronous
    time.sleep(1.0)  # any further (wrong) warning has arrived too
    warnings = outputs.lines("input queue full", Log.WARN)
    assert len(warnings) == 1, warnings
    assert "/diagnostics" in warnings[0]
    assert wait_for(lambda: any(d.get("dropped_queue_full") == "48" for d in outputs.diagnostics), timeout=5)


def test_drop_summaries_come_at_most_every_interval_and_a_new_episode_warns_again():
    now = [0.0]
    drops = SteadyStateDrops("input queue full", interval_s=30.0, clock=lambda: now[0])
    lines = []
    for _ in range(600):  # 20 Hz for 30 s
        lines.append(drops.record("dropping"))
        now[0] += 0.05
    lines.append(drops.record("dropping"))
    logged = [line for line in lines if line]
    assert [level for level, _ in logged] == ["warning", "info"]
    assert "600 more in the last 30 s (601 in all)" in logged[1][1]
    now[0] += 31.0
    assert drops.poll() == ("info", "input queue full: no more drops (601 in all)")  # a quiet interval ends it ...
    assert drops.record("dropping")[0] == "warning"  # ... and the next overflow is a change: a warning


def test_a_detector_that_cannot_be_built_is_not_rebuilt_on_every_run(running_node, mug_scans, tmp_path):
    _, scans = mug_scans
    empty = tmp_path / "no_model_here"
    empty.mkdir()
    node, outputs, _ = running_node(f"detector_memory_{next(_names)}", {
        "pipeline.detector.backend": "owlv2", "pipeline.detector.weights": str(empty)})
    for k in range(3):
        node.submit(scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scans[k], True))
        assert wait_for(lambda: node.stats_snapshot().runs_failed.get("detector_error") == k + 1, timeout=60)
    assert wait_for(lambda: len(outputs.lines("no result published")) >= 1)
    time.sleep(0.5)
    assert len(outputs.lines("loading detector")) == 1, outputs.lines("loading detector")
    assert wait_for(lambda: any("incomplete" in d.get("detector_failure", "") for d in outputs.diagnostics),
                    timeout=5), "the build failure is not in /diagnostics"
    assert node.set_parameters([Parameter("pipeline.detector.score_threshold", value=0.4)])[0].successful
    node.submit(scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scans[0], True))
    assert wait_for(lambda: node.stats_snapshot().runs_failed.get("detector_error") == 4, timeout=60)
    assert wait_for(lambda: len(outputs.lines("loading detector")) == 2), "a parameter change must retry the build"


def test_a_build_failure_of_any_error_type_is_remembered(monkeypatch):
    """Corrupt weights raise what the loading library raises (OSError, ValueError, ...), not only
    DetectorError: the failure is still remembered per configuration and reported, not retried every run."""
    import numpy as np

    from partslip_core import detect
    from partslip_ros.detectors import DetectorCache, RunFailure
    from partslip_ros.params import all_defaults, settings_from_values

    attempts = []

    def corrupt(config, device):
        attempts.append(device)
        raise OSError("unable to load weights from pytorch checkpoint file")

    monkeypatch.setattr(detect, "build_detector", corrupt)
    values = {**all_defaults(), "parts": "mug", "pipeline.detector.backend": "owlv2", "pipeline.device": "cpu"}
    settings = settings_from_values(values)
    logged: list[str] = []
    cache = DetectorCache(logged.append)
    fused = type("Fused", (), {"extras": {}, "xyz": np.zeros((1, 3), np.float32)})()
    for _ in range(3):
        with pytest.raises(RunFailure) as failure:
            cache.get(settings, fused)
        assert failure.value.reason == "detector_error" and "OSError: unable to load weights" in str(failure.value)
    assert len(attempts) == 1 and len(logged) == 1
    assert "OSError" in cache.failure
    cache.forget_failures()
    with pytest.raises(RunFailure):
        cache.get(settings, fused)
    assert len(attempts) == 2
