"""The node hands a detector backend the per-point fields its registry entry names (BackendInfo.point_fields):
decoded from the input clouds, required at intake, checked per run (``missing_point_fields``), the backend's
warning logged, the detector built once. The ground_truth backend goes the same way (test_node, test_faults)."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from partslip_core.detect import ProjectedGroundTruthDetector, registry
from partslip_ros.pointcloud import build_cloud, xyz_rgb_columns
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import RELIABLE, wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
from std_srvs.srv import Trigger  # noqa: E402

WARNING = "detector backend 'test_reflectivity' is a test fake"


class _RecordingDetector(ProjectedGroundTruthDetector):
    """Ground-truth boxes (from the cloud's gt fields when present), recording the point fields of each run."""

    name = "test_reflectivity"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def detect(self, views, part_names, point_fields=None):
        self.seen.append(dict(point_fields or {}))
        return super().detect(views, part_names, point_fields)


@pytest.fixture
def reflectivity_backend(monkeypatch):
    """Registers (for this test only) a backend that reads the per-point field ``reflectivity`` (and gt fields)."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))
    built: list[_RecordingDetector] = []

    @registry.register("test_reflectivity", point_fields=(("reflectivity", "gt_label", "gt_instance"),),
                       loads_weights=False, warning=WARNING)
    def _build(config, device):
        built.append(_RecordingDetector())
        return built[-1]

    return built


def _stamped(source) -> Header:
    return Header(frame_id="world", stamp=source.get_clock().now().to_msg())


def test_the_node_decodes_a_backends_fields_and_builds_it_once(running_node, reflectivity_backend, mug_scans):
    part_names, scans = mug_scans
    node, out, source = running_node("fields_a", {"pipeline.detector.backend": "test_reflectivity",
                                                  "parts": part_names})
    assert wait_for(lambda: out.lines(WARNING)), "the backend's warning is logged at configure"
    pub = source.create_publisher(PointCloud2, "fields_a_in", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    pub.publish(scan_to_cloud(_stamped(source), scans[0], True))  # gt fields but no reflectivity: refused
    assert wait_for(lambda: node.stats_snapshot().rejected.get("missing_field") == 1, timeout=30)
    for index in (1, 2):
        scan = scans[index]
        reflectivity = np.arange(len(scan.xyz), dtype=np.float32) + 1000.0 * index
        columns = xyz_rgb_columns(scan.xyz, scan.rgb) + [
            ("gt_label", scan.point_label.astype(np.int32)), ("gt_instance", scan.point_instance.astype(np.int32)),
            ("reflectivity", reflectivity)]
        pub.publish(build_cloud(_stamped(source), columns))
        assert wait_for(lambda: out.complete(index), timeout=60), node.stats_snapshot()
        fields = reflectivity_backend[-1].seen[-1]
        assert {"reflectivity", "gt_label", "gt_instance"} <= set(fields)
        assert len(fields["reflectivity"]) == out.segmentations[-1].num_points  # the fused cloud's point order
        assert np.isin(fields["reflectivity"], reflectivity).all()  # this cloud's values (filtering keeps values)
        assert sum(out.segmentations[-1].points_per_part) > 0  # the gt fields gave boxes: parts were labelled
    assert len(reflectivity_backend) == 1, "built once (at configure), reused by every run"


def test_a_run_whose_window_lacks_the_fields_fails_with_a_reason(running_node, reflectivity_backend, mug_scans):
    part_names, scans = mug_scans
    node, out, source = running_node("fields_b", {"trigger.mode": "on_demand", "parts": part_names})
    pub = source.create_publisher(PointCloud2, "fields_b_in", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    pub.publish(scan_to_cloud(_stamped(source), scans[0], True))  # accepted by ground_truth: no reflectivity
    assert wait_for(lambda: node.stats_snapshot().accepted == 1, timeout=30)
    assert node.set_parameters([Parameter("pipeline.detector.backend", value="test_reflectivity")])[0].successful
    trigger = source.create_client(Trigger, f"{node.get_fully_qualified_name()}/trigger")
    assert trigger.wait_for_service(timeout_sec=10)
    future = trigger.call_async(Trigger.Request())
    assert wait_for(future.done, timeout=60)
    assert not future.result().success and "reflectivity" in future.result().message
    assert node.stats_snapshot().runs_failed == {"missing_point_fields": 1}
    assert wait_for(lambda: out.lines("[missing_point_fields]"))
    assert out.segmentations == []
