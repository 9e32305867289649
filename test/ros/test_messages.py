"""Result -> ROS messages: labeled cloud layout, PartSegmentation fields, grasp hints, marker structure."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from partslip_core.geometry import oriented_box
from partslip_core.types import PartInstance, PartSegmentationResult
from partslip_ros import messages
from partslip_ros.pointcloud import read_structured


def bar_and_plate() -> tuple[np.ndarray, PartSegmentationResult]:
    """A plate (label 0, 'body') at the origin and a bar along y (label 1, 'handle') at x = +0.2."""
    rng = np.random.default_rng(0)
    plate = np.c_[rng.uniform(-0.1, 0.1, (400, 2)), rng.uniform(-0.005, 0.005, 400)]
    bar = np.c_[0.2 + rng.uniform(-0.01, 0.01, 100), rng.uniform(-0.08, 0.08, 100), rng.uniform(-0.01, 0.01, 100)]
    xyz = np.concatenate([plate, bar]).astype(np.float32)
    label = np.r_[np.zeros(400, np.int64), np.ones(100, np.int64)]
    instances = []
    for iid, (lab, name, idx) in enumerate([(0, "body", np.arange(400)), (1, "handle", np.arange(400, 500))]):
        pts = xyz[idx].astype(np.float64)
        box = oriented_box(pts)
        instances.append(PartInstance(iid, lab, name, 0.9, idx, pts.mean(0), pts.min(0), pts.max(0), box.center,
                                      box.rotation, box.extent, box.rotation[:, 0]))
    result = PartSegmentationResult(["body", "handle"], label, label.copy(), np.full(500, 0.9, np.float32), instances)
    return xyz, result


def test_labeled_cloud_has_the_documented_fields_and_values():
    xyz, result = bar_and_plate()
    result.point_label[:10] = -1
    msg = messages.labeled_cloud(Header(frame_id="world"), xyz, None, result)
    assert [(f.name, f.datatype) for f in msg.fields] == [
        ("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32), ("rgb", PointField.FLOAT32),
        ("label", PointField.INT32), ("instance", PointField.INT32), ("score", PointField.FLOAT32)]
    points = read_structured(msg)
    np.testing.assert_array_equal(points["label"], result.point_label)
    np.testing.assert_array_equal(points["instance"], result.point_instance)
    packed = points["rgb"].view(np.uint32)
    assert len(np.unique(packed[result.point_label == 0])) == 1
    assert packed[0] == 0x999999  # unlabeled = gray
    assert packed[0] != packed[450]


def test_grasp_hint_of_a_handle_points_along_the_bar_and_approaches_from_outside():
    xyz, result = bar_and_plate()
    handle = result.instances[1]
    hint = messages.grasp_hint(handle.obb_rotation, handle.obb_extent, handle.centroid, xyz.mean(0))
    assert hint.has_axis and hint.elongation > 3
    assert abs(hint.axis[1]) > 0.99  # along y
    assert hint.approach[0] < -0.9  # the gripper moves towards -x: the handle sits at +x
    assert abs(hint.approach @ hint.axis) < 1e-6
    assert 0.01 < hint.width < 0.03
    plate = result.instances[0]
    assert not messages.grasp_hint(plate.obb_rotation, plate.obb_extent, plate.centroid, xyz.mean(0)).has_axis


def test_part_segmentation_message_indexes_the_labeled_cloud():
    xyz, result = bar_and_plate()
    header = Header(frame_id="world")
    header.stamp.sec = 42
    info = messages.RunInfo("ground_truth", 3, 41_500_000_000, 7, {"render": 12.5, "vote": 3.0}, 20.0)
    msg = messages.part_segmentation_msg(header, xyz, result, info)
    assert msg.header.stamp.sec == 42 and msg.header.frame_id == "world"
    assert list(msg.part_names) == ["body", "handle"] and msg.num_points == 500 and msg.num_labeled_points == 500
    assert list(msg.points_per_part) == [400, 100]
    assert msg.window_start.sec == 41 and msg.window_start.nanosec == 500_000_000 and msg.run_id == 7
    assert list(msg.stage_names) == ["render", "vote"] and msg.stage_ms[0] == pytest.approx(12.5)
    handle = msg.instances[1]
    assert handle.label_name == "handle" and handle.label == 1 and handle.num_points == 100
    assert list(handle.point_indices) == list(range(400, 500))
    assert handle.has_grasp_axis and abs(handle.grasp_axis.y) > 0.99
    q = handle.bbox_pose.orientation
    assert q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 == pytest.approx(1.0)
    assert handle.bbox_size.x >= handle.bbox_size.y >= handle.bbox_size.z
    assert msg.object_aabb_min.x == pytest.approx(float(xyz[:, 0].min()))


def test_markers_start_with_deleteall_and_use_stable_namespaced_ids():
    xyz, result = bar_and_plate()
    markers = messages.marker_array(Header(frame_id="world"), xyz, result).markers
    assert markers[0].action == Marker.DELETEALL
    by_ns = {}
    for m in markers[1:]:
        assert m.header.frame_id == "world" and m.action == Marker.ADD
        by_ns.setdefault(m.ns, []).append((m.id, m.type))
    assert by_ns["part_boxes"] == [(0, Marker.CUBE), (1, Marker.CUBE)]
    assert by_ns["part_labels"] == [(0, Marker.TEXT_VIEW_FACING), (1, Marker.TEXT_VIEW_FACING)]
    assert by_ns["part_centroids"] == [(0, Marker.SPHERE), (1, Marker.SPHERE)]
    assert by_ns["grasp_axes"] == [(1, Marker.ARROW)]  # only the elongated handle
    texts = [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert texts[1].startswith("handle #1")
    again = messages.marker_array(Header(frame_id="world"), xyz, result).markers
    assert [(m.ns, m.id) for m in again] == [(m.ns, m.id) for m in markers]


@pytest.mark.skipif(messages.has_vision_msgs(), reason="vision_msgs is installed")
def test_detection3d_array_is_none_without_vision_msgs():
    assert messages.detection3d_array(Header(), bar_and_plate()[1]) is None


@pytest.mark.skipif(not messages.has_vision_msgs(), reason="vision_msgs ships with ROS 2 installs only (not on PyPI)")
def test_detection3d_array_when_vision_msgs_is_installed():
    array = messages.detection3d_array(Header(frame_id="world"), bar_and_plate()[1])
    assert [d.results[0].hypothesis.class_id for d in array.detections] == ["body", "handle"]
    assert array.detections[1].bbox.size.x > array.detections[1].bbox.size.z
