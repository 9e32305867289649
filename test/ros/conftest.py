"""Real-rclpy fixtures for the node tests (no ROS mocks).

Every test session gets a random ROS_DOMAIN_ID and localhost-only discovery, so parallel sessions
and other machines never see each other's topics. rclpy is initialized once per session; each test
spins its nodes with ``NodeSpinner`` and joins the executor threads before the session shuts rclpy down.
"""

from __future__ import annotations

import os
import random
import time
from typing import Callable

import numpy as np
import pytest

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)

rclpy = pytest.importorskip("rclpy", reason="rclpy is installed by requirements-ros.txt")


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
