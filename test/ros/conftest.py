"""Real-rclpy fixtures for the node tests (no ROS mocks).

Every test session gets a random ROS_DOMAIN_ID and localhost-only discovery, so parallel sessions
and other machines never see each other's topics. rclpy is initialized once per session; each test
spins its nodes with ``NodeSpinner`` and joins the executor threads before the session shuts rclpy down.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)

rclpy = pytest.importorskip("rclpy", reason="rclpy is installed by requirements-ros.txt")
import rclpy.qos  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402


REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "segment.launch.py"


def launch_module():
    """launch/segment.launch.py imported as a module; skips the test without launch_ros (not on PyPI)."""
    pytest.importorskip("launch_ros", reason="launch_ros ships with ROS 2 installs only (not on PyPI)")
    import importlib.util
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def installed_prefix(tmp_path, monkeypatch) -> Path:
    """A minimal ament install prefix for partslip_ros, first on AMENT_PREFIX_PATH (what ``colcon build`` installs
    and launch_ros looks up): the package marker, share/partslip_ros/{config,launch} (links to this checkout) and
    lib/partslip_ros/partslip_node running this interpreter's ``partslip_ros.node``."""
    root = tmp_path / "install"
    index = root / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "partslip_ros").write_text("")
    share = root / "share" / "partslip_ros"
    share.mkdir(parents=True)
    (share / "config").symlink_to(REPO / "config")
    (share / "launch").symlink_to(REPO / "launch")
    executable = root / "lib" / "partslip_ros" / "partslip_node"
    executable.parent.mkdir(parents=True)
    executable.write_text(f"#!/bin/sh\ncd '{REPO}'\nexec '{sys.executable}' -m partslip_ros.node \"$@\"\n")
    executable.chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join(filter(None, [str(root),
                                                                          os.environ.get("AMENT_PREFIX_PATH")])))
    return root


@pytest.fixture(scope="session")
def ros():
    """rclpy initialized for the whole session."""
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture(scope="session")
def mug_scans():
    """(part_names, [scan, ...]): a 6000-point synthetic mug seen by 3 sensor poses (seed 4)."""
    from partslip_core.synthetic import make_object, sensor_sequence
    obj = make_object("mug", num_points=6000, seed=4)
    return list(obj.part_names), [scan for _, scan in sensor_sequence(obj, 3, seed=4)]


def nearest_labels(query_xyz: np.ndarray, reference_xyz: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
    """Ground-truth label of the nearest reference point for each query point."""
    from scipy.spatial import cKDTree
    _, index = cKDTree(reference_xyz).query(query_xyz)
    return reference_labels[index]


# --------------------------------------------------------------------------------------------- running nodes

RELIABLE = rclpy.qos.QoSProfile(depth=100, reliability=rclpy.qos.ReliabilityPolicy.RELIABLE)  # tests' publishers

NODE_PARAMS = {  # ground_truth detector, 3 small views, one run per accepted cloud, everything queued
    "pipeline.detector.backend": "ground_truth", "pipeline.device": "cpu", "pipeline.render.image_size": 128,
    "pipeline.render.views": [10.0, 0.0, 10.0, 120.0, 30.0, 240.0], "input_qos": "reliable", "fixed_frame": "world",
    "queue_size": 100, "window.size": 1, "trigger.every_n_frames": 1, "trigger.max_rate_hz": 0.0,
    "parts": ["body", "handle"],
}


class NodeOutputs:
    """What a node publishes (results, /diagnostics) and its /rosout lines, received by a listener node named
    ``name``. ``node``: a PartSlipNode, or the fully qualified name of one in another process. ``results`` holds
    every message of the three result topics (labeled_cloud, markers, segmentation) in order."""

    def __init__(self, ros, node, name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from partslip_ros.msg import PartSegmentation
        from rcl_interfaces.msg import Log
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from partslip_ros.node import OUTPUT_QOS
        self.node = ros.create_node(name)
        if isinstance(node, str):  # "/ns/name": its logger is "ns.name"
            fqn, self.logger, self._hardware_id = node, node.lstrip("/").replace("/", "."), node.rsplit("/", 1)[-1]
        else:
            fqn, self.logger = node.get_fully_qualified_name(), node.get_logger().name
            self._hardware_id = node.get_name()
        self.segmentations, self.clouds, self.markers, self.results = [], [], [], []
        self.logs, self.diagnostics = [], []
        topics = ((PartSegmentation, "segmentation", self.segmentations), (PointCloud2, "labeled_cloud", self.clouds),
                  (MarkerArray, "markers", self.markers))
        for kind, topic, received in topics:
            self.node.create_subscription(kind, f"{fqn}/{topic}", self._result(received), OUTPUT_QOS)
        qos = QoSProfile(depth=5000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Log, "/rosout", self._log, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 50)

    def complete(self, count: int = 1) -> bool:
        """``count`` results arrived on each of the three result topics."""
        return min(len(self.clouds), len(self.markers), len(self.segmentations)) >= count

    def _result(self, received: list) -> Callable:
        def append(msg) -> None:
            received.append(msg)
            self.results.append(msg)
        return append

    def _log(self, msg) -> None:
        if msg.name == self.logger:
            self.logs.append(msg)

    def _diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.hardware_id == self._hardware_id:
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def lines(self, text: str, level: Optional[int] = None) -> list[str]:
        """Log lines of the node containing ``text`` (at exactly ``level`` when given)."""
        return [m.msg for m in list(self.logs) if text in m.msg and (level is None or m.level == level)]


class SpunNodes:
    """PartSlipNodes with their helper nodes, spun in background threads (the node's services on their own
    executor); ``close`` tears them down in order: executors joined before the session shuts rclpy down."""

    def __init__(self) -> None:
        self._created = []

    def spin(self, node, *others) -> None:
        from partslip_ros.node import NodeSpinner
        spinner = NodeSpinner([node, *others], [node.service_node]).start()
        self._created.append((spinner, node, others))

    def close(self) -> None:
        for spinner, node, others in self._created:
            spinner.stop()
            node.shutdown()
            for other in others:
                other.destroy_node()


@pytest.fixture
def running_node(ros):
    """Factory (name, parameter overrides, PartSlipNode kwargs; ``log_level``: the node's logger level, e.g.
    rclpy.logging.LoggingSeverity.DEBUG) -> (node, NodeOutputs, source node), spun in background threads
    (``SpunNodes``)."""
    from rclpy.parameter import Parameter

    from partslip_ros.node import PartSlipNode
    spun = SpunNodes()

    def make(name: str, params: Optional[dict] = None, log_level=None, **kwargs):
        values = {**NODE_PARAMS, "input_topic": f"{name}_in", **(params or {})}
        node = PartSlipNode(name, **kwargs,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        if log_level is not None:
            node.get_logger().set_level(log_level)
        outputs = NodeOutputs(ros, node, f"{name}_listener")
        source = ros.create_node(f"{name}_source")
        spun.spin(node, outputs.node, source)
        return node, outputs, source

    yield make
    spun.close()


_verbose_names = itertools.count()


@pytest.fixture
def verbose_node(running_node):
    """Factory (input topic, parameter overrides, PartSlipNode kwargs) -> (node, NodeOutputs, source node): a
    ``running_node`` with a unique name that logs at DEBUG (the fuzz, fault and load tests count its log lines)."""
    from rclpy.logging import LoggingSeverity

    def make(topic: str, params: Optional[dict] = None, **kwargs):
        return running_node(f"partslip_verbose_{next(_verbose_names)}", {"input_topic": topic, **(params or {})},
                            log_level=LoggingSeverity.DEBUG, **kwargs)

    return make


def send_good_cloud_and_expect_a_result(node, outputs, send: Callable[[PointCloud2], None], scan,
                                        runs_before: int) -> None:
    """Send a good cloud of ``scan``: it is segmented and counted (the node still serves after the faults).
    ``send``: ``node.submit`` or a publisher's ``publish``; ``runs_before``: the node's runs_ok so far."""
    from partslip_ros.scan_publisher import scan_to_cloud
    good = scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True)
    send(good)
    assert wait_for(lambda: len(outputs.segmentations) == 1, timeout=60), node.stats_snapshot()
    seg = outputs.segmentations[0]
    assert seg.header.stamp == good.header.stamp and seg.num_labeled_points > 0
    # The result is published just before the run is counted: wait for the counter too.
    assert wait_for(lambda: node.stats_snapshot().runs_ok == runs_before + 1, timeout=10), node.stats_snapshot()
    assert node.stats_snapshot().runs_failed == {}


@pytest.fixture(scope="session")
def tiny_grounding_dino(tmp_path_factory) -> Path:
    """A real, tiny, random-weight Grounding DINO folder (the core tests' builder), built once per session."""
    pytest.importorskip("transformers")
    from ..core.detect.conftest import build_tiny_grounding_dino
    root = tmp_path_factory.mktemp("tiny_gd_node")
    return build_tiny_grounding_dino(root / "model", root / "scratch")
