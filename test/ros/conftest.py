"""Real-rclpy fixtures for the node tests (no ROS mocks).

Every test session gets a random ROS_DOMAIN_ID and localhost-only discovery, so parallel sessions
and other machines never see each other's topics. rclpy is initialized once per session; each test
spins its nodes with ``NodeSpinner`` and joins the executor threads before the session shuts rclpy down.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)

rclpy = pytest.importorskip("rclpy", reason="rclpy is installed by requirements-ros.txt")


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

NODE_PARAMS = {  # ground_truth detector, 3 small views, one run per accepted cloud, everything queued
    "pipeline.detector.backend": "ground_truth", "pipeline.device": "cpu", "pipeline.render.image_size": 128,
    "pipeline.render.views": [10.0, 0.0, 10.0, 120.0, 30.0, 240.0], "input_qos": "reliable", "fixed_frame": "world",
    "queue_size": 100, "window.size": 1, "trigger.every_n_frames": 1, "trigger.max_rate_hz": 0.0,
    "parts": ["body", "handle"],
}


class NodeOutputs:
    """What a node publishes (results, /diagnostics) and its /rosout lines, received by a listener node."""

    def __init__(self, ros, node, name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from partslip_msgs.msg import PartSegmentation
        from rcl_interfaces.msg import Log
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        from partslip_ros.node import OUTPUT_QOS
        self.node = ros.create_node(name)
        fqn, self.logger = node.get_fully_qualified_name(), node.get_logger().name
        self.segmentations, self.clouds, self.logs, self.diagnostics = [], [], [], []
        self.node.create_subscription(PartSegmentation, f"{fqn}/segmentation", self.segmentations.append, OUTPUT_QOS)
        self.node.create_subscription(PointCloud2, f"{fqn}/labeled_cloud", self.clouds.append, OUTPUT_QOS)
        qos = QoSProfile(depth=5000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Log, "/rosout", self._log, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 50)
        self._hardware_id = node.get_name()

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
    """Factory (name, parameter overrides, PartSlipNode kwargs) -> (node, NodeOutputs, source node), spun in
    background threads (``SpunNodes``)."""
    from rclpy.parameter import Parameter

    from partslip_ros.node import PartSlipNode
    spun = SpunNodes()

    def make(name: str, params: Optional[dict] = None, **kwargs):
        values = {**NODE_PARAMS, "input_topic": f"{name}_in", **(params or {})}
        node = PartSlipNode(name, **kwargs,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        outputs = NodeOutputs(ros, node, f"{name}_listener")
        source = ros.create_node(f"{name}_source")
        spun.spin(node, outputs.node, source)
        return node, outputs, source

    yield make
    spun.close()
