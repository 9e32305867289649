"""Publishes the bundled synthetic scan sequence (``partslip_core.synthetic``) as PointCloud2.

A stand-in for a depth sensor walking past an object: ``num_frames`` partial, noisy scans of one
procedurally generated object, in ``frame_id`` (the object frame, Z up), stamped when published.
With ``ground_truth`` the clouds also carry int32 ``gt_label`` / ``gt_instance`` fields (label =
index into the category's part list, printed at start): what the node's test/demo detector
backend ``ground_truth`` reads. Console script: ``partslip_scan_publisher``.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from partslip_core.detect.ground_truth import ProjectedGroundTruthDetector
from partslip_ros.pointcloud import build_cloud, xyz_rgb_columns
from partslip_ros.stamps import stamp_to_ns

GT_LABEL_FIELD, GT_INSTANCE_FIELD = ProjectedGroundTruthDetector.FIELD_NAMES[0]  # the backend's preferred names


def scan_to_cloud(header: Header, scan, ground_truth: bool) -> PointCloud2:
    """One SyntheticObject scan -> PointCloud2 (x, y, z, rgb [, gt_label, gt_instance])."""
    columns = xyz_rgb_columns(scan.xyz, scan.rgb)
    if ground_truth:
        columns += [(GT_LABEL_FIELD, scan.point_label.astype(np.int32)),
                    (GT_INSTANCE_FIELD, scan.point_instance.astype(np.int32))]
    return build_cloud(header, columns)


def make_scans(category: str, num_points: int, num_frames: int, seed: int):
    """(object, [scan, ...]) of the synthetic sequence."""
    from partslip_core.synthetic import make_object, sensor_sequence
    obj = make_object(category, num_points, seed)
    return obj, [scan for _, scan in sensor_sequence(obj, num_frames, seed)]


class ScanPublisher(Node):
    """Publishes the scans at ``rate_hz`` once a subscriber is matched (or after ``wait_for_subscriber_s``).

    ``published_stamps_ns`` records the stamp of every cloud sent (for latency measurements).
    """

    def __init__(self, node_name: str = "partslip_scan_publisher", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("category", "mug"), ("num_points", 8000), ("num_frames", 4), ("seed", 0), ("rate_hz", 2.0),
            ("frame_id", "world"), ("topic", "points"), ("loop", False), ("ground_truth", True),
            ("reliable", False), ("wait_for_subscriber_s", 10.0), ("match_grace_s", 0.5))}
        self.obj, self.scans = make_scans(p["category"], p["num_points"], p["num_frames"], p["seed"])
        self.part_names = list(self.obj.part_names)
        self.frame_id, self.loop, self.ground_truth = p["frame_id"], p["loop"], p["ground_truth"]
        self.wait_for_subscriber_s, self.match_grace_s = p["wait_for_subscriber_s"], p["match_grace_s"]
        self._matched_at: Optional[float] = None
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if p["reliable"] else qos_profile_sensor_data
        self.publisher = self.create_publisher(PointCloud2, p["topic"], qos)
        self.published_stamps_ns: list[int] = []
        self._next = 0
        self._created = time.monotonic()
        self.create_timer(1.0 / max(p["rate_hz"], 1e-3), self._tick)
        self.get_logger().info(
            f"{len(self.scans)} synthetic {p['category']} scans ({[s.num_points for s in self.scans]} points) "
            f"-> {self.resolve_topic_name(p['topic'])} in frame {self.frame_id!r}; parts (gt_label order): "
            f"{self.part_names}")

    @property
    def done(self) -> bool:
        return not self.loop and self._next >= len(self.scans)

    def _ready(self, now: float) -> bool:
        """A subscriber has been matched for match_grace_s (so it has matched us too: best-effort samples
        sent earlier are lost), or wait_for_subscriber_s passed without one."""
        if self._matched_at is None and self.publisher.get_subscription_count() > 0:
            self._matched_at = now
        if self._matched_at is not None:
            return now - self._matched_at >= self.match_grace_s
        return now - self._created >= self.wait_for_subscriber_s

    def _tick(self) -> None:
        if self.done:
            return
        if not self._ready(time.monotonic()):
            return
        header = Header(frame_id=self.frame_id, stamp=self.get_clock().now().to_msg())
        self.publisher.publish(scan_to_cloud(header, self.scans[self._next % len(self.scans)], self.ground_truth))
        self.published_stamps_ns.append(stamp_to_ns(header.stamp))
        self._next += 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``partslip_scan_publisher`` (ROS args: -p category:=mug -p num_frames:=4 ...)."""
    from partslip_ros.process import run_console
    return run_console(ScanPublisher, argv, "partslip_scan_publisher")


if __name__ == "__main__":
    sys.exit(main())
