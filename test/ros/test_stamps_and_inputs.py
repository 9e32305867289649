"""Stamps ahead of the clock, time going backwards, a PointField with count 0 and huge coordinates, on a
real rclpy node (issue 12, bugs 1, 2 and 9)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from partslip_ros import pointcloud
from partslip_ros.pointcloud import build_cloud, structured_dtype, xyz_rgb_columns
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
_names = itertools.count()
HOUR_NS = 3600 * 10**9
SHIFT = np.array([5.0, 0.0, 0.0], np.float32)


def cloud_at(scan, stamp_ns: int, shift=(0.0, 0.0, 0.0)):
    """The scan as a PointCloud2 in "world", moved by ``shift``, stamped ``stamp_ns``."""
    moved = type(scan)(**{**vars(scan), "xyz": scan.xyz + np.asarray(shift, np.float32)})
    header = Header(frame_id="world")
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
    return scan_to_cloud(header, moved, True)


def run_now(node):
    output = node.request_run(timeout_s=120)
    assert output.ok, output.message
    return output


def points_of(output) -> np.ndarray:
    points = pointcloud.read_structured(output.cloud)
    return np.stack([points["x"], points["y"], points["z"]], 1)


def test_future_stamps_are_rejected_and_cannot_jam_the_window(running_node, mug_scans):
    """The outside client's repro: 4 clouds stamped now + 1 h, then 8 normal ones. Before the fix the future
    clouds stayed in the (stamp-sorted) window for good and every normal cloud was evicted on arrival."""
    _, scans = mug_scans
    node, outputs, _ = running_node(f"stamps_future_{next(_names)}", {
        # a queue for all 12 clouds and a generous age limit: under CPU load the worker may lag the submits
        "trigger.mode": "on_demand", "window.size": 4, "window.max_age_s": 120.0, "queue_size": 16})
    now = node.get_clock().now().nanoseconds
    for k in range(4):
        node.submit(cloud_at(scans[k % 3], now + HOUR_NS + k, SHIFT))
    normal = []
    for k in range(8):
        normal.append(cloud_at(scans[k % 3], node.get_clock().now().nanoseconds))
        node.submit(normal[-1])
    assert wait_for(lambda: node.stats_snapshot().accepted + sum(node.stats_snapshot().rejected.values()) == 12)
    stats = node.stats_snapshot()
    assert stats.rejected == {"future_stamp": 4} and stats.accepted == 8
    output = run_now(node)
    assert points_of(output)[:, 0].max() < 1.0, "points of the future clouds were fused"
    seg = output.segmentation
    assert seg.header.stamp == normal[-1].header.stamp and seg.num_input_clouds == 4
    # /rosout arrives over DDS, asynchronously: wait for it rather than read it once
    assert wait_for(lambda: outputs.lines("ahead of the node clock"), timeout=15), "no log line gives the reason"


def test_a_stamp_within_the_tolerance_is_accepted(running_node, mug_scans):
    _, scans = mug_scans
    node, _, _ = running_node(f"stamps_tolerance_{next(_names)}", {"trigger.mode": "on_demand",
                                                                    "window.max_future_s": 2.0})
    node.submit(cloud_at(scans[0], node.get_clock().now().nanoseconds + 10**9))  # 1 s ahead: clock skew
    assert wait_for(lambda: node.stats_snapshot().accepted == 1), node.stats_snapshot()


def node_with_a_full_window(running_node, scans, name: str):
    """(node, outputs, stamp of the first cloud): 3 clouds accepted into a window of 3, no age limit, 5 s jump."""
    node, outputs, _ = running_node(f"{name}_{next(_names)}", {
        "trigger.mode": "on_demand", "window.size": 3, "window.max_age_s": 0.0, "window.time_jump_s": 5.0})
    start = node.get_clock().now().nanoseconds
    for k in range(3):
        node.submit(cloud_at(scans[k], start + k * 10**8))
    assert wait_for(lambda: node.stats_snapshot().accepted == 3)
    return node, outputs, start


def test_stamps_jumping_back_clear_the_window_once(running_node, mug_scans):
    """A bag restarting without sim time (no age limit): the window starts over with the new clouds, logged once."""
    scans = mug_scans[1]
    node, outputs, start = node_with_a_full_window(running_node, scans, "stamps_back")
    looped = [cloud_at(scans[k], start - 100 * 10**9 + k * 10**8, SHIFT) for k in range(2)]
    for msg in looped:
        node.submit(msg)
    assert wait_for(lambda: node.stats_snapshot().accepted == 5)
    output = run_now(node)
    assert output.segmentation.num_input_clouds == 2 and output.segmentation.header.stamp == looped[-1].header.stamp
    assert points_of(output)[:, 0].min() > 4.0, "clouds from before the jump were fused with the new ones"
    assert node.stats_snapshot().window_resets == 1
    assert wait_for(lambda: len(outputs.lines("time went backwards")) == 1)


def test_a_cloud_rejected_for_another_reason_does_not_clear_the_window(running_node, mug_scans):
    """A cloud stamped far behind the window that then fails its other checks (here: garbage coordinates) is
    only rejected; before the fix its stamp had already cleared the window."""
    scans = mug_scans[1]
    node, _, start = node_with_a_full_window(running_node, scans, "stamps_back_rejected")
    node.submit(cloud_at(scans[0], start - 100 * 10**9, (1e6, 0.0, 0.0)))  # beyond max_coordinate_m
    assert wait_for(lambda: node.stats_snapshot().rejected == {"out_of_range": 1}), node.stats_snapshot()
    assert node.stats_snapshot().window_resets == 0
    assert run_now(node).segmentation.num_input_clouds == 3


def test_the_node_clock_going_back_clears_the_window(running_node, mug_scans):
    """Simulator reset with use_sim_time: /clock jumps from 1000 s to 10 s."""
    from rosgraph_msgs.msg import Clock
    _, scans = mug_scans
    node, outputs, source = running_node(f"stamps_clock_{next(_names)}", {
        "trigger.mode": "on_demand", "window.size": 3, "use_sim_time": True})
    clock = source.create_publisher(Clock, "/clock", 10)

    def set_clock(seconds: int) -> None:
        def now_is() -> bool:
            message = Clock()
            message.clock.sec = seconds
            clock.publish(message)
            return node.get_clock().now().nanoseconds == seconds * 10**9
        assert wait_for(now_is, timeout=20), node.get_clock().now()

    set_clock(1000)
    for k in range(3):
        node.submit(cloud_at(scans[k], 1000 * 10**9 - k * 10**8, SHIFT))
    assert wait_for(lambda: node.stats_snapshot().accepted == 3)
    set_clock(10)
    fresh = cloud_at(scans[0], 10 * 10**9)
    node.submit(fresh)
    assert wait_for(lambda: node.stats_snapshot().accepted == 4)
    output = run_now(node)
    assert output.segmentation.num_input_clouds == 1 and output.segmentation.header.stamp == fresh.header.stamp
    assert points_of(output)[:, 0].max() < 1.0
    assert node.stats_snapshot().window_resets == 1
    assert wait_for(lambda: outputs.lines("node clock went back"), timeout=15)  # /rosout is asynchronous


class FakeSensorMsgsPy:
    """What the decoder uses of sensor_msgs_py.point_cloud2, with its documented behaviour for plain layouts:
    the dtype is built from the fields and ``assert field.count > 0`` (ros2/common_interfaces
    dtype_from_fields); that AssertionError was the node's internal_error."""

    @staticmethod
    def read_points(cloud, field_names=None, skip_nans=False, uvs=None, reshape_organized_cloud=False):
        for f in cloud.fields:
            assert f.count > 0, "Can't process fields with count = 0."
        dtype = structured_dtype(cloud.fields, cloud.point_step, cloud.is_bigendian)
        return np.frombuffer(bytes(cloud.data), dtype=dtype)


def test_a_field_with_count_zero_follows_one_rule_on_both_decoder_paths(running_node, mug_scans, monkeypatch):
    _, scans = mug_scans
    monkeypatch.setattr(pointcloud, "_sensor_msgs_py", FakeSensorMsgsPy)
    node, _, _ = running_node(f"count_zero_{next(_names)}", {"trigger.mode": "on_demand"})
    msg = cloud_at(scans[0], node.get_clock().now().nanoseconds)
    plain = pointcloud.decode_cloud(msg, extra_fields=("gt_label", "gt_instance"), prefer_sensor_msgs_py=True)
    for f in msg.fields:
        if f.name in ("x", "rgb", "gt_label"):
            f.count = 0  # drivers that leave count unset
    for prefer in (True, False):
        decoded = pointcloud.decode_cloud(msg, extra_fields=("gt_label", "gt_instance"), prefer_sensor_msgs_py=prefer)
        np.testing.assert_array_equal(decoded.xyz, plain.xyz)
        np.testing.assert_array_equal(decoded.extras["gt_label"], plain.extras["gt_label"])
    node.submit(msg)
    assert wait_for(lambda: node.stats_snapshot().accepted + sum(node.stats_snapshot().rejected.values()) == 1)
    assert node.stats_snapshot().rejected == {} and node.stats_snapshot().accepted == 1
    assert run_now(node).segmentation.num_points > 100


def test_huge_coordinates_are_rejected_with_a_reason(running_node, mug_scans):
    _, scans = mug_scans
    node, outputs, _ = running_node(f"huge_{next(_names)}", {"trigger.mode": "on_demand"})
    rng = np.random.default_rng(0)
    xyz = rng.random((500, 3)).astype(np.float32)
    xyz[:2] = 1e30
    columns = xyz_rgb_columns(xyz, rng.random((500, 3))) + [("gt_label", np.zeros(500, np.int32)),
                                                            ("gt_instance", np.zeros(500, np.int32))]
    header = Header(frame_id="world", stamp=node.get_clock().now().to_msg())
    node.submit(build_cloud(header, columns))
    assert wait_for(lambda: node.stats_snapshot().rejected == {"out_of_range": 1}), node.stats_snapshot()
    assert node.stats_snapshot().accepted == 0
    assert wait_for(lambda: outputs.lines("max_coordinate_m"))
    assert not node.request_run(timeout_s=60).ok  # nothing in the window: no "successful" 2-point run
    node.submit(build_cloud(header, [(name, column[2:]) for name, column in columns]))  # the same, minus the two
    assert wait_for(lambda: node.stats_snapshot().accepted == 1), node.stats_snapshot()


def test_pointfield_count_zero_is_read_as_one_value():
    field = PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=0)
    assert structured_dtype([field], 4, False)["x"].shape == ()
