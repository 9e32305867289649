"""Real scenes through the node with default fusion parameters (issue 12): an organized RealSense-style RGB-D
frame and a 128-ring lidar sweep of a mug on a table with a floor. The published cloud must be the mug
(>= 95% of its points), labeled through the ground-truth demo detector; the static ``sensor_to_fixed``
transform brings an optical-frame camera into a Z-up fixed frame without tf2_ros."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from std_msgs.msg import Header

from partslip_core.synthetic_scene import flatten, lidar_tabletop_scan, rgbd_tabletop_scan
from partslip_ros import pointcloud
from partslip_ros.pointcloud import build_cloud, xyz_rgb_columns
from partslip_ros.static_transform import static_matrix

from .conftest import nearest_labels, wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
_names = itertools.count()
SCENE_PARAMS = {"trigger.mode": "on_demand", "pipeline.render.image_size": 160}  # fusion.*: all defaults


def organized_cloud(scan, frame: str, stamp, xyz=None):
    """The scan as an organized PointCloud2 (height = rows, NaN where nothing was hit), gt fields included."""
    columns = flatten(scan)
    xyz = columns["xyz"] if xyz is None else xyz
    msg = build_cloud(Header(frame_id=frame, stamp=stamp), xyz_rgb_columns(xyz, columns["rgb"]) + [
        ("gt_label", columns["label"]), ("gt_instance", columns["instance"])])
    msg.height, msg.width = scan.label.shape
    msg.row_step = msg.width * msg.point_step
    msg.is_dense = False
    return msg


def published_points(output) -> tuple[np.ndarray, np.ndarray]:
    points = pointcloud.read_structured(output.cloud)
    return np.stack([points["x"], points["y"], points["z"]], 1), np.asarray(points["label"])


def check_the_mug_is_what_was_published(output, scan, labels_checked: bool = True) -> None:
    """>= 95% of the published points are the mug's (measured: 100%); with ``labels_checked`` the part labels
    agree with the ground truth. Measured with fuse(FusionConfig()) + segment() at 160 px, 3 views, the ground-truth
    detector, seeds 0-2: RGB-D 0.95-0.99; the lidar mug has only ~200 points at 9 mm spacing and labels poorly
    (0.0-0.75), so only its isolation is checked."""
    columns = flatten(scan)
    finite = np.isfinite(columns["xyz"]).all(axis=1)
    xyz, label = published_points(output)
    truth = nearest_labels(xyz, columns["xyz"][finite], columns["label"][finite])
    assert (truth >= 0).mean() >= 0.95, f"only {(truth >= 0).mean():.1%} of the published cloud is the mug"
    if labels_checked:
        assert (label == truth).mean() >= 0.85
        assert {i.label_name for i in output.segmentation.instances} == {"body", "handle"}


@pytest.mark.parametrize("make", [rgbd_tabletop_scan, lidar_tabletop_scan])
def test_default_parameters_isolate_the_mug_in_a_scene(running_node, make):
    scan = make("mug", 0)
    node, outputs, _ = running_node(f"scene_{make.__name__[:5]}_{next(_names)}", SCENE_PARAMS)
    msg = organized_cloud(scan, "world", node.get_clock().now().to_msg())
    assert msg.height > 1 and not np.isfinite(flatten(scan)["xyz"]).all()  # organized, with holes
    node.submit(msg)
    assert wait_for(lambda: node.stats_snapshot().accepted == 1, timeout=30), node.stats_snapshot()
    output = node.request_run(timeout_s=120)
    assert output.ok, output.message
    check_the_mug_is_what_was_published(output, scan, labels_checked=make is rgbd_tabletop_scan)
    assert output.segmentation.num_points < 0.05 * np.isfinite(flatten(scan)["xyz"]).all(axis=1).sum()
    assert wait_for(lambda: any("support" in d.get("isolation", "") for d in outputs.diagnostics), timeout=5), (
        "diagnostics do not say what isolation removed")


def test_isolation_can_be_turned_off(running_node):
    scan = rgbd_tabletop_scan("mug", 1)
    node, _, _ = running_node(f"scene_off_{next(_names)}", {**SCENE_PARAMS, "fusion.isolate_object": False})
    node.submit(organized_cloud(scan, "world", node.get_clock().now().to_msg()))
    assert wait_for(lambda: node.stats_snapshot().accepted == 1, timeout=30)
    output = node.request_run(timeout_s=120)
    assert output.ok and output.segmentation.num_points > 20 * (flatten(scan)["label"] >= 0).sum() / 4


@pytest.mark.parametrize("rotation", ["rpy", "quaternion"])
def test_sensor_to_fixed_moves_an_optical_frame_camera_into_the_fixed_frame(running_node, rotation):
    """Without tf2_ros: the camera's pose as a parameter. The cloud arrives in camera_optical_frame; the
    node fuses and publishes in world (Z up), where the mug is isolated as in the world-frame test."""
    import transforms3d
    scan = rgbd_tabletop_scan("mug", 2)
    roll, pitch, yaw = -1.9, 0.1, -1.4  # an arbitrary camera pose (not the one the scan came from: fine)
    pose = static_matrix((0.3, -0.2, 1.2), (roll, pitch, yaw))
    world = flatten(scan)["xyz"].astype(np.float64)
    in_camera = ((world - pose[:3, 3]) @ pose[:3, :3]).astype(np.float32)  # inverse pose
    params = {**SCENE_PARAMS, "sensor_to_fixed.frame": "camera_optical_frame", "sensor_to_fixed.xyz": [0.3, -0.2, 1.2]}
    if rotation == "rpy":
        params["sensor_to_fixed.rpy"] = [roll, pitch, yaw]
    else:
        w, x, y, z = transforms3d.euler.euler2quat(roll, pitch, yaw, axes="sxyz")
        params["sensor_to_fixed.quaternion"] = [x, y, z, w]
    node, _, _ = running_node(f"scene_static_{rotation}_{next(_names)}", params)
    node.submit(organized_cloud(scan, "camera_optical_frame", node.get_clock().now().to_msg(), in_camera))
    assert wait_for(lambda: node.stats_snapshot().accepted == 1, timeout=30), node.stats_snapshot()
    output = node.request_run(timeout_s=120)
    assert output.ok, output.message
    assert output.cloud.header.frame_id == "world"
    check_the_mug_is_what_was_published(output, scan)  # compared in world coordinates


def test_sensor_to_fixed_is_validated():
    from partslip_ros.params import SettingsError, all_defaults, settings_from_values
    values = all_defaults()
    values.update({"sensor_to_fixed.frame": "camera", "fixed_frame": ""})
    with pytest.raises(SettingsError, match="fixed_frame"):
        settings_from_values(values)
    values.update({"fixed_frame": "world", "sensor_to_fixed.quaternion": [0.0, 0.0, 0.5, 0.5]})
    with pytest.raises(SettingsError, match="unit quaternion"):
        settings_from_values(values)
    values["sensor_to_fixed.quaternion"] = [0.0, 0.0, np.sin(0.25), np.cos(0.25)]
    matrix = settings_from_values(values).sensor_to_fixed.matrix
    np.testing.assert_allclose(matrix[:3, :3] @ [1.0, 0.0, 0.0], [np.cos(0.5), np.sin(0.5), 0.0], atol=1e-12)
