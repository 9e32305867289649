"""Ctrl-C as a terminal and ``ros2 launch`` send it (issue 12, bug 3): SIGINT to the whole process group,
then launch's own SIGINT, idle and with a run in flight; and SIGTERM. The node process must exit 0 with no
traceback, and a run in flight must not turn into an internal_error."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from partslip_ros.node import NodeSpinner
from partslip_ros.scan_publisher import make_scans, scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
BAD_WORDS = ("Traceback", "KeyboardInterrupt", "internal_error", "run failed unexpectedly", "context is invalid")


class NodeProcess:
    """``python -m partslip_ros.node`` in its own process group (as under a terminal or ros2 launch)."""

    def __init__(self, ros, image_size: int = 160) -> None:
        self.name = f"partslip_sig_{os.getpid()}_{next(_names)}"
        self.topic = f"{self.name}_in"
        args = [sys.executable, "-m", "partslip_ros.node", "--params-file", str(REPO / "config" / "segment.yaml"),
                "--ros-args", "-r", f"__node:={self.name}", "-p", f"input_topic:={self.topic}",
                "-p", "input_qos:=reliable", "-p", "parts:=[arm, back, leg, seat]",
                "-p", "pipeline.detector.backend:=ground_truth", "-p", f"pipeline.render.image_size:={image_size}",
                "-p", "pipeline.device:=cpu", "-p", "trigger.every_n_frames:=1", "-p", "fixed_frame:=world"]
        self.process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.client = ros.create_node(f"sig_client_{next(_names)}")
        self.publisher = self.client.create_publisher(PointCloud2, self.topic, RELIABLE)
        self.in_progress: list[float] = []
        self.client.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 20)
        self.spinner = NodeSpinner([self.client]).start()

    def _diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self.name:
                values = {kv.key: kv.value for kv in status.values}
                self.in_progress.append(float(values.get("run_in_progress_s", "0")))

    def ready(self) -> bool:
        return wait_for(lambda: self.publisher.get_subscription_count() > 0, timeout=90)

    def interrupt_like_a_terminal_under_launch(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # the terminal: the whole group
        time.sleep(0.05)
        self.process.send_signal(signal.SIGINT)  # then launch forwards its own

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.spinner.stop()
            self.client.destroy_node()
        return self.process.returncode, output


def assert_clean(code: int, output: str) -> None:
    assert code == 0, output[-3000:]
    for word in BAD_WORDS:
        assert word not in output, f"{word!r} in the node's output:\n{output[-3000:]}"


def test_ctrl_c_under_launch_while_idle_exits_0_without_a_traceback(ros):
    node = NodeProcess(ros)
    assert node.ready(), node.finish(5)[1]
    node.interrupt_like_a_terminal_under_launch()
    code, output = node.finish()
    assert_clean(code, output)
    assert "shutting down" in output


def test_ctrl_c_under_launch_with_a_run_in_flight_exits_0_and_counts_no_internal_error(ros):
    # A run of about 2 s: measured 2.0-2.4 s per run with 150k-point chair scans at 2000 px on the 2-core VM
    # (shared); at 900 px and 60k points runs took 0.6-0.75 s since the faster superpoints, and the 1 Hz
    # diagnostics often missed them. /diagnostics samples every second, so one sample falls in the first
    # second of a run: signalled then, the run has >= 1 s left.
    node = NodeProcess(ros, image_size=2000)
    assert node.ready(), node.finish(5)[1]
    _, scans = make_scans("chair", 150_000, 2, 1)
    for attempt in range(3):  # catch a run in flight through /diagnostics
        node.publisher.publish(scan_to_cloud(Header(frame_id="world", stamp=node.client.get_clock().now().to_msg()),
                                             scans[attempt % 2], True))
        if wait_for(lambda: any(0 < v <= 1.0 for v in node.in_progress[-2:]), timeout=15):
            break
    else:
        pytest.fail(f"never saw a run in progress: {node.finish(5)[1][-2000:]}")
    node.interrupt_like_a_terminal_under_launch()
    code, output = node.finish()
    assert_clean(code, output)
    assert "waiting up to" in output  # it knew a run was in flight


def test_sigterm_exits_0(ros):
    node = NodeProcess(ros)
    assert node.ready(), node.finish(5)[1]
    node.process.send_signal(signal.SIGTERM)
    code, output = node.finish()
    assert_clean(code, output)


def test_a_request_the_worker_takes_as_shutdown_starts_is_answered(running_node, mug_scans):
    """The worker takes queued clouds and a service request together; if shutdown starts while it decodes
    them, the request is no longer queued for shutdown to answer. Before the fix the caller waited for its
    whole timeout; now the worker answers it."""
    _, scans = mug_scans
    node, _, _ = running_node(f"stop_request_{next(_names)}", {"trigger.mode": "on_demand"})
    entered, release = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]
    real_ingest, calls = node._intake.ingest, itertools.count()

    def gated_ingest(msg, settings):  # each call waits for the test (a slow decode)
        call = next(calls)
        entered[call].set()
        release[call].wait(30)
        real_ingest(msg, settings)

    node._intake.ingest = gated_ingest
    header = Header(frame_id="world", stamp=node.get_clock().now().to_msg())
    node.submit(scan_to_cloud(header, scans[0], True))
    assert entered[0].wait(30)  # the worker holds cloud 1
    node.submit(scan_to_cloud(header, scans[1], True))
    answer: dict = {}
    asker = threading.Thread(target=lambda: answer.setdefault("output", node.request_run(timeout_s=25)))
    asker.start()
    assert wait_for(lambda: len(node._requests) == 1)
    release[0].set()
    assert entered[1].wait(30)  # the worker took cloud 2 and the request together
    stopper = threading.Thread(target=node.shutdown, kwargs={"wait_s": 20})
    stopper.start()
    assert wait_for(lambda: node._stop)
    started = time.monotonic()
    release[1].set()
    asker.join(30)
    stopper.join(30)
    assert answer["output"].message == "node shutting down" and not answer["output"].ok
    assert time.monotonic() - started < 10  # answered at once, not after the request's 25 s timeout
