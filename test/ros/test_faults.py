"""Fault tests: a detector that raises, runs out of (accelerator) memory, hangs, or cannot load its
checkpoint. Each time the run fails cleanly (no output, a counted reason, one log line with that
reason), the node keeps answering, and the next cloud is segmented.

Detectors are injected through ``PartSlipNode(detector_factory=...)``: the factory below hands out
scripted detectors for the first runs and the ground-truth projection detector afterwards.
"""

from __future__ import annotations

import itertools
import re
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from partslip_core.detect import DetectorError, ProjectedGroundTruthDetector
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import RELIABLE, NodeOutputs, wait_for

_names = itertools.count()
FAILURE_LINE = re.compile(r"no result published: (.*) \[(\w+)\]$", re.S)


def ground_truth(fused) -> ProjectedGroundTruthDetector:
    return ProjectedGroundTruthDetector()  # reads gt_label/gt_instance from the run's point fields


class Script:
    """A detector_factory: the i-th run gets ``steps[i](ground truth detector)``, later runs the ground truth."""

    def __init__(self, *steps: Callable[[Any], Any]) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, settings, fused):
        self.calls += 1
        detector = ground_truth(fused)
        return self.steps.pop(0)(detector) if self.steps else detector


class Raising:
    """Raises a fresh exception made by ``make`` from inside ``detect``."""

    name = "faulty"

    def __init__(self, make: Callable[[], BaseException]) -> None:
        self.make = make

    def detect(self, views, part_names, point_fields=None):
        raise self.make()


class OutOfMemory:
    """Holds a tensor in its frame (like a forward pass's activations) and then runs out of memory."""

    name = "hungry"

    def __init__(self) -> None:
        self.activations: weakref.ref | None = None

    def detect(self, views, part_names, point_fields=None):
        activations = torch.ones(4_000_000)
        self.activations = weakref.ref(activations)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)")


class Hanging:
    """Blocks in ``detect`` until released (or 60 s), then answers like the ground truth."""

    name = "hanging"

    def __init__(self, inner, release: threading.Event) -> None:
        self.inner, self.release = inner, release

    def detect(self, views, part_names, point_fields=None):
        self.release.wait(60)
        return self.inner.detect(views, part_names, point_fields)


class WrongViewCount:
    """Returns one view too few: the pipeline's own check fails (a bug-class error, not the detector's)."""

    name = "short"

    def __init__(self, inner) -> None:
        self.inner = inner

    def detect(self, views, part_names, point_fields=None):
        return self.inner.detect(views, part_names, point_fields)[:-1]


def failure_lines(outputs: NodeOutputs) -> list[tuple[str, str, int]]:
    """(reason, text, level) of every "no result published" log line of the node."""
    found = [(FAILURE_LINE.search(log.msg), log.level) for log in outputs.logs]
    return [(m.group(2), m.group(1), level) for m, level in found if m]


def send(node, publish: Callable[[PointCloud2], None], scan) -> PointCloud2:
    msg = scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True)
    publish(msg)
    return msg


def expect_clean_failure(node, outputs, reason: str, count: int = 1) -> str:
    """The run failed with ``reason`` (counted, logged once as a warning), and nothing was published."""
    assert wait_for(lambda: node.stats_snapshot().runs_failed.get(reason) == count, timeout=60), node.stats_snapshot()
    assert wait_for(lambda: sum(r == reason for r, _, _ in failure_lines(outputs)) == count, timeout=10)
    lines = [(text, level) for r, text, level in failure_lines(outputs) if r == reason]
    assert lines[0][1] == Log.WARN
    time.sleep(0.2)
    assert outputs.results == [], "a failed run published something"
    return lines[-1][0]


def expect_result(node, outputs, msg: PointCloud2, count: int = 1):
    """The count-th result is published (and counted: the counter follows the publication)."""
    assert wait_for(lambda: len(outputs.segmentations) == count, timeout=60), node.stats_snapshot()
    assert wait_for(lambda: node.stats_snapshot().runs_ok >= count, timeout=10), node.stats_snapshot()
    seg = outputs.segmentations[-1]
    assert seg.header.stamp == msg.header.stamp and seg.num_points > 0
    return seg


def test_detector_exception_fails_the_run_and_the_next_cloud_is_segmented(verbose_node, mug_scans):
    script = Script(lambda gt: Raising(lambda: ValueError("tensor shapes disagree")))
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", detector_factory=script)
    send(node, node.submit, mug_scans[1][0])
    text = expect_clean_failure(node, outputs, "detector_error")
    assert "'faulty' raised ValueError: tensor shapes disagree" in text
    good = send(node, node.submit, mug_scans[1][1])
    seg = expect_result(node, outputs, good)
    assert seg.detector == "ground_truth" and seg.num_labeled_points > 0
    stats = node.stats_snapshot()
    assert stats.runs_ok == 1 and stats.runs_failed == {"detector_error": 1} and script.calls == 2


def test_a_detector_error_from_the_backend_is_reported_with_its_message(verbose_node, mug_scans):
    script = Script(lambda gt: Raising(lambda: DetectorError("grounding_dino: the processor failed")))
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", detector_factory=script)
    send(node, node.submit, mug_scans[1][0])
    assert expect_clean_failure(node, outputs, "detector_error") == "grounding_dino: the processor failed"
    expect_result(node, outputs, send(node, node.submit, mug_scans[1][1]))


def test_a_pipeline_stage_error_is_an_internal_error_with_a_traceback(verbose_node, mug_scans):
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", detector_factory=Script(WrongViewCount))
    send(node, node.submit, mug_scans[1][0])
    text = expect_clean_failure(node, outputs, "internal_error")
    assert "RuntimeError" in text and "returned 2 views for 3" in text
    tracebacks = [log for log in outputs.logs if "run failed unexpectedly" in log.msg]
    assert len(tracebacks) == 1 and tracebacks[0].level == Log.ERROR and "Traceback" in tracebacks[0].msg
    expect_result(node, outputs, send(node, node.submit, mug_scans[1][1]))


def oom_in_detect(gt):
    return OutOfMemory()


def oom_while_loading(gt):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB while loading weights")


class WrappedOutOfMemory:
    """A backend that turns the OOM into its own DetectorError (the OOM is only in the cause chain)."""

    name = "owlv2"

    def detect(self, views, part_names, point_fields=None):
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        except torch.OutOfMemoryError as error:
            raise DetectorError("owlv2: the forward pass failed") from error


def oom_wrapped_by_the_backend(gt):
    return WrappedOutOfMemory()


@pytest.mark.parametrize("step", [oom_in_detect, oom_while_loading, oom_wrapped_by_the_backend])
def test_out_of_memory_fails_cleanly_frees_the_run_and_the_next_cloud_is_segmented(verbose_node, mug_scans,
                                                                                   monkeypatch, step):
    """CPU stand-in for a CUDA OOM: the node frees the failed run's tensors *before* emptying the CUDA cache."""
    emptied: list[bool] = []
    detectors: list = []

    def record(gt):
        detector = step(gt)
        detectors.append(detector)
        return detector

    def empty_cache() -> None:  # what torch.cuda.empty_cache would return to the driver: nothing may pin it
        emptied.append(all(d.activations() is None for d in detectors if isinstance(d, OutOfMemory)))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", detector_factory=Script(record))
    send(node, node.submit, mug_scans[1][0])
    text = expect_clean_failure(node, outputs, "out_of_memory")
    assert "OutOfMemoryError: CUDA out of memory" in text and "pipeline.render.image_size" in text  # what to change
    assert emptied == [True], "the CUDA cache must be emptied once, after the failed run's tensors are freed"
    expect_result(node, outputs, send(node, node.submit, mug_scans[1][1]))
    assert node.stats_snapshot().runs_failed == {"out_of_memory": 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real CUDA out-of-memory needs a GPU")
def test_real_cuda_out_of_memory_returns_the_memory(verbose_node, mug_scans):
    class Greedy:
        name = "greedy"

        def detect(self, views, part_names, point_fields=None):
            held = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device="cuda")  # noqa: F841 - pinned by this frame
            torch.empty(2 ** 50, dtype=torch.uint8, device="cuda")  # 1 PiB: a genuine OutOfMemoryError

    torch.cuda.init()
    baseline = torch.cuda.memory_reserved()
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", detector_factory=Script(lambda gt: Greedy()))
    send(node, node.submit, mug_scans[1][0])
    expect_clean_failure(node, outputs, "out_of_memory")
    assert torch.cuda.memory_reserved() <= baseline + 2 ** 20, "the failed run's 256 MiB stayed reserved"
    expect_result(node, outputs, send(node, node.submit, mug_scans[1][1]))


def diagnostics_value(node_fqn: str, arrays: list, key: str) -> list[float]:
    return [float(kv.value) for array in arrays for status in array.status if status.name.startswith(node_fqn)
            for kv in status.values if kv.key == key]


def test_a_hanging_detector_leaves_the_node_responsive_and_bounded(verbose_node, mug_scans, ros):
    """While a run hangs: inputs are dropped (counted) beyond the queue, parameters and the trigger answer
    (the trigger with a timeout failure), diagnostics show the stuck run; after it returns, work resumes."""
    release = threading.Event()
    params = {"queue_size": 2, "service_timeout_s": 1.0, "input_qos": "reliable"}
    topic = f"faults_{next(_names)}"
    node, outputs, source = verbose_node(topic, params, detector_factory=Script(lambda gt: Hanging(gt, release)))
    fqn = node.get_fully_qualified_name()
    diagnostics: list = []
    source.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    pub = source.create_publisher(PointCloud2, topic, RELIABLE)
    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
        send(node, pub.publish, mug_scans[1][0])
        assert wait_for(node.busy.is_set, timeout=30)
        for i in range(8):
            send(node, pub.publish, mug_scans[1][i % 3])
        assert wait_for(lambda: node.stats_snapshot().received == 9, timeout=10), node.stats_snapshot()
        assert node.stats_snapshot().dropped_queue_full == 6  # 8 arrived during the run; 2 fit in the queue

        client = AsyncParameterClient(source, fqn)
        assert client.wait_for_services(timeout_sec=10)
        started = time.monotonic()
        future = client.set_parameters([Parameter("fusion.voxel_size", value=0.004)])
        assert wait_for(future.done, timeout=5) and future.result().results[0].successful
        assert time.monotonic() - started < 2.0 and node.settings.fusion.voxel_size == 0.004

        trigger = source.create_client(Trigger, f"{fqn}/trigger")
        assert trigger.wait_for_service(timeout_sec=10)
        started = time.monotonic()
        answer = trigger.call_async(Trigger.Request())
        assert wait_for(answer.done, timeout=10)
        assert not answer.result().success and "no result within 1.0 s" in answer.result().message
        assert time.monotonic() - started < 3.0
        assert wait_for(lambda: max(diagnostics_value(fqn, diagnostics, "run_in_progress_s"), default=0) >= 1.0,
                        timeout=5), "diagnostics do not show the stuck run"
        assert node.busy.is_set() and outputs.results == []
    finally:
        release.set()
    # The released run publishes; the two queued clouds are then ingested and run too.
    assert wait_for(lambda: len(outputs.segmentations) >= 2, timeout=60), node.stats_snapshot()
    assert wait_for(lambda: node.stats_snapshot().runs_ok >= 2, timeout=10), node.stats_snapshot()
    stats = node.stats_snapshot()
    assert stats.runs_failed == {} and stats.runs_ok >= 2 and stats.accepted == 3


def test_missing_or_corrupt_checkpoint_fails_each_run_until_the_weights_are_fixed(verbose_node, mug_scans, tmp_path,
                                                                                  tiny_grounding_dino):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = Path(shutil.copytree(tiny_grounding_dino, tmp_path / "corrupt"))
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    node, outputs, _ = verbose_node(f"faults_{next(_names)}", {
        "pipeline.detector.backend": "grounding_dino", "pipeline.detector.weights": str(empty)})
    send(node, node.submit, mug_scans[1][0])
    assert "incomplete" in expect_clean_failure(node, outputs, "detector_error", 1)
    assert node.set_parameters([Parameter("pipeline.detector.weights", value=str(corrupt))])[0].successful
    send(node, node.submit, mug_scans[1][1])
    assert "truncated or corrupt" in expect_clean_failure(node, outputs, "detector_error", 2)
    assert node.set_parameters([Parameter("pipeline.detector.weights", value=str(tiny_grounding_dino))])[0].successful
    good = send(node, node.submit, mug_scans[1][2])
    seg = expect_result(node, outputs, good)
    assert seg.detector == "grounding_dino"  # the real backend, random weights: boxes are arbitrary
    stats = node.stats_snapshot()
    assert stats.runs_ok == 1 and stats.runs_failed == {"detector_error": 2}
