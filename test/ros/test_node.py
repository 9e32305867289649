"""PartSlipNode on real rclpy: synthetic scans in -> labeled cloud, markers and PartSegmentation out,
labels matching ground truth (with the ground-truth projection detector); bad inputs are rejected
with a reason and the next good cloud is still served; parts changes; services; bounded queue."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from partslip_ros.node import NodeSpinner, PartSlipNode
from partslip_ros.pointcloud import build_cloud, read_structured, xyz_rgb_columns
from partslip_ros.scan_publisher import ScanPublisher, scan_to_cloud

from .conftest import NodeOutputs, SpunNodes, nearest_labels, wait_for

REPO = Path(__file__).resolve().parents[2]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_names = itertools.count()
SMALL_RENDER = [Parameter("pipeline.detector.backend", value="ground_truth"),
                Parameter("pipeline.render.image_size", value=160), Parameter("pipeline.device", value="cpu")]

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
from partslip_ros.srv import SegmentNow  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402


@pytest.fixture
def system(ros):
    """Factory: (PartSlipNode, NodeOutputs, publisher node) spun in background threads; torn down in order."""
    spun = SpunNodes()

    def make(params, topic: str, extra_nodes=()):
        name = f"partslip_test_{next(_names)}"
        node = PartSlipNode(name, parameter_overrides=SMALL_RENDER + [Parameter("input_topic", value=topic)] + params)
        collector = NodeOutputs(ros, node, f"collector_{next(_names)}")
        source = ros.create_node(f"source_{next(_names)}")
        spun.spin(node, collector.node, source, *extra_nodes)
        return node, collector, source

    yield make
    spun.close()


def field_types(cloud: PointCloud2) -> list[tuple[str, int]]:
    return [(f.name, f.datatype) for f in cloud.fields]


LABELED_FIELDS = [("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
                  ("rgb", PointField.FLOAT32), ("label", PointField.INT32), ("instance", PointField.INT32),
                  ("score", PointField.FLOAT32)]


def check_result_against_ground_truth(cloud: PointCloud2, seg, scans, min_agreement: float = 0.85) -> None:
    """Labeled cloud and PartSegmentation agree with each other and with the scans' ground truth."""
    points = read_structured(cloud)
    assert field_types(cloud) == LABELED_FIELDS
    assert cloud.width == seg.num_points == len(points) and cloud.height == 1
    assert cloud.header == seg.header
    xyz = np.stack([points["x"], points["y"], points["z"]], 1)
    truth = nearest_labels(xyz, np.concatenate([s.xyz for s in scans]), np.concatenate([s.point_label for s in scans]))
    agreement = float((points["label"] == truth).mean())
    assert agreement >= min_agreement, f"labels agree with ground truth on only {agreement:.1%}"
    assert sum(seg.points_per_part) == seg.num_labeled_points == int((points["label"] >= 0).sum())
    for inst in seg.instances:
        index = np.asarray(inst.point_indices)
        assert inst.num_points == len(index) and index.max() < seg.num_points
        assert (points["label"][index] == inst.label).all() and (points["instance"][index] == inst.instance_id).all()
        assert seg.part_names[inst.label] == inst.label_name


def test_synthetic_scans_are_segmented_and_published_consistently(system, ros):
    publisher = ScanPublisher(f"scans_{next(_names)}", parameter_overrides=[
        Parameter("category", value="mug"), Parameter("num_points", value=6000), Parameter("num_frames", value=3),
        Parameter("seed", value=4), Parameter("rate_hz", value=10.0), Parameter("topic", value="scans_a")])
    node, out, _ = system([Parameter("parts", value=publisher.part_names), Parameter("window.size", value=3),
                           Parameter("trigger.every_n_frames", value=3)], "scans_a", extra_nodes=[publisher])
    assert wait_for(out.complete, timeout=60), f"no result; stats: {node.stats_snapshot()}"
    time.sleep(0.3)
    seg, cloud, markers = out.segmentations[0], out.clouds[0], out.markers[0].markers
    assert len(out.segmentations) == 1  # 3 clouds, one run every 3 clouds
    assert seg.header.frame_id == "world"
    newest = publisher.published_stamps_ns[-1]
    assert seg.header.stamp.sec * 10**9 + seg.header.stamp.nanosec == newest  # REP: stamp of the newest data
    assert seg.num_input_clouds == 3 and list(seg.part_names) == ["body", "handle"] and seg.detector == "ground_truth"
    check_result_against_ground_truth(cloud, seg, publisher.scans)
    assert {i.label_name for i in seg.instances} == {"body", "handle"}
    assert markers[0].action == Marker.DELETEALL
    boxes = sorted(m.id for m in markers if m.ns == "part_boxes" and m.type == Marker.CUBE)
    assert boxes == sorted(i.instance_id for i in seg.instances)
    assert all(m.header.frame_id == "world" for m in markers)
    stats = node.stats_snapshot()
    assert stats.accepted == 3 and stats.rejected == {} and stats.runs_ok == 1 and stats.last_latency_ms > 0


def with_gt(columns: list, n: int) -> list:
    """Add valid gt_label/gt_instance columns, so each bad cloud below is wrong in exactly one way."""
    return columns + [("gt_label", np.zeros(n, np.int32)), ("gt_instance", np.zeros(n, np.int32))]


def bad_clouds() -> list[tuple[str, PointCloud2]]:
    """(expected reason, message) for each kind of bad input."""
    header = Header(frame_id="world")
    rng = np.random.default_rng(0)
    empty = build_cloud(header, with_gt(xyz_rgb_columns(np.zeros((0, 3), np.float32), np.zeros((0, 3))), 0))
    nan = build_cloud(header, with_gt(xyz_rgb_columns(np.full((100, 3), np.nan, np.float32), np.ones((100, 3))), 100))
    no_rgb = build_cloud(header, with_gt(xyz_rgb_columns(rng.random((100, 3)), None), 100))
    ints = build_cloud(header, with_gt([("x", np.arange(10, dtype=np.int16)), ("y", np.arange(10, dtype=np.int16)),
                                        ("z", np.arange(10, dtype=np.int16)), ("rgb", np.zeros(10, np.uint32))], 10))
    huge = build_cloud(header, xyz_rgb_columns(np.zeros((2_000_000, 3), np.float32), None))
    no_gt = build_cloud(header, xyz_rgb_columns(rng.random((100, 3)), rng.random((100, 3))))
    other_frame = build_cloud(Header(frame_id="camera_link"),
                              with_gt(xyz_rgb_columns(rng.random((100, 3)), rng.random((100, 3))), 100))
    return [("empty", empty), ("non_finite", nan), ("missing_field", no_rgb), ("bad_field_type", ints),
            ("too_large", huge), ("missing_gt", no_gt), ("unknown_frame", other_frame)]


def test_bad_inputs_are_rejected_with_reasons_and_the_next_good_cloud_is_served(system, mug_scans):
    part_names, scans = mug_scans
    node, out, source = system([Parameter("parts", value=part_names), Parameter("input_qos", value="reliable"),
                                Parameter("fixed_frame", value="world"),
                                Parameter("queue_size", value=10), Parameter("window.size", value=1),
                                Parameter("trigger.every_n_frames", value=1),
                                Parameter("trigger.max_rate_hz", value=0.0)],
                               "scans_b")
    pub = source.create_publisher(PointCloud2, "scans_b", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    bad = bad_clouds()
    for _, msg in bad:
        pub.publish(msg)
    assert wait_for(lambda: sum(node.stats_snapshot().rejected.values()) == len(bad), timeout=30), node.stats_snapshot()
    time.sleep(0.3)
    assert out.segmentations == [] and out.clouds == [] and out.markers == []
    assert node.stats_snapshot().rejected == {"empty": 1, "non_finite": 1, "missing_field": 2, "bad_field_type": 1,
                                              "too_large": 1, "unknown_frame": 1}

    good = scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scans[1], True)
    pub.publish(good)
    assert wait_for(out.complete, timeout=60), node.stats_snapshot()
    seg = out.segmentations[0]
    assert seg.header.stamp == good.header.stamp and seg.num_input_clouds == 1
    assert 100 < seg.num_points <= scans[1].num_points  # voxelized (5 mm) and outlier-filtered
    check_result_against_ground_truth(out.clouds[0], seg, [scans[1]])
    stats = node.stats_snapshot()
    assert stats.runs_ok == 1 and stats.runs_failed == {} and stats.accepted == 1


def test_empty_parts_skip_runs_until_parts_are_set(system, mug_scans):
    part_names, scans = mug_scans
    node, out, source = system([Parameter("window.size", value=1), Parameter("trigger.every_n_frames", value=1),
                                Parameter("trigger.max_rate_hz", value=0.0), Parameter("input_qos", value="reliable")],
                               "scans_c")
    assert node.settings.parts == ()
    pub = source.create_publisher(PointCloud2, "scans_c", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)

    def send(scan) -> None:
        pub.publish(scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scan, True))

    send(scans[0])
    assert wait_for(lambda: node.stats_snapshot().runs_failed.get("no_parts") == 1, timeout=30)
    rejected = node.set_parameters([Parameter("parts", Parameter.Type.STRING_ARRAY, [])])[0]
    assert not rejected.successful
    time.sleep(0.2)
    assert out.segmentations == []
    assert node.set_parameters([Parameter("parts", value=part_names)])[0].successful
    send(scans[2])
    assert wait_for(out.complete, timeout=60), node.stats_snapshot()
    assert list(out.segmentations[0].part_names) == part_names
    check_result_against_ground_truth(out.clouds[0], out.segmentations[0], [scans[2]])


def test_clouds_without_rgb_are_served_when_require_rgb_is_false(system, mug_scans):
    part_names, scans = mug_scans
    node, out, source = system([Parameter("parts", value=part_names), Parameter("require_rgb", value=False),
                                Parameter("input_qos", value="reliable"), Parameter("window.size", value=1),
                                Parameter("trigger.every_n_frames", value=1)], "scans_g")
    pub = source.create_publisher(PointCloud2, "scans_g", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    scan = scans[2]
    columns = xyz_rgb_columns(scan.xyz, None) + [("gt_label", scan.point_label.astype(np.int32)),
                                                 ("gt_instance", scan.point_instance.astype(np.int32))]
    pub.publish(build_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), columns))
    assert wait_for(out.complete, timeout=60), node.stats_snapshot()
    check_result_against_ground_truth(out.clouds[0], out.segmentations[0], [scan])


def test_detector_failure_is_reported_and_a_runtime_backend_change_recovers(system, mug_scans, tmp_path):
    part_names, scans = mug_scans
    missing = tmp_path / "empty_model"  # exists (a path that does not is refused when set), holds no model
    missing.mkdir()
    missing = str(missing)
    node, out, source = system([Parameter("parts", value=part_names), Parameter("input_qos", value="reliable"),
                                Parameter("pipeline.detector.backend", value="owlv2"),
                                Parameter("pipeline.detector.weights", value=missing),
                                Parameter("window.size", value=1), Parameter("trigger.every_n_frames", value=1)],
                               "scans_h")
    pub = source.create_publisher(PointCloud2, "scans_h", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)

    def send(scan) -> None:
        pub.publish(scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scan, True))

    send(scans[0])
    assert wait_for(lambda: node.stats_snapshot().runs_failed.get("detector_error") == 1, timeout=60)
    time.sleep(0.2)
    assert out.segmentations == []
    assert node.set_parameters([Parameter("pipeline.detector.backend", value="ground_truth")])[0].successful
    send(scans[1])
    assert wait_for(out.complete, timeout=60), node.stats_snapshot()
    check_result_against_ground_truth(out.clouds[0], out.segmentations[0], [scans[1]])


def call(client, request, timeout: float = 60.0):
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(request)
    assert wait_for(future.done, timeout=timeout)
    return future.result()


def test_on_demand_services_return_and_publish_results(system, mug_scans):
    part_names, scans = mug_scans
    node, out, source = system([Parameter("parts", value=part_names), Parameter("trigger.mode", value="on_demand"),
                                Parameter("input_qos", value="reliable"), Parameter("window.size", value=3)],
                               "scans_d")
    pub = source.create_publisher(PointCloud2, "scans_d", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    for scan in scans:
        pub.publish(scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scan, True))
    assert wait_for(lambda: node.stats_snapshot().accepted == 3, timeout=30)
    time.sleep(0.3)
    assert out.segmentations == []  # on demand: nothing runs by itself

    fqn = node.get_fully_qualified_name()
    segment = source.create_client(SegmentNow, f"{fqn}/segment")
    asked = part_names + ["lid"]  # a per-call override (gt_label indexes this list: lid gets no boxes)
    response = call(segment, SegmentNow.Request(parts=asked))
    assert response.success, response.message
    seg = response.segmentation
    assert list(seg.part_names) == asked and seg.num_input_clouds == 3 and seg.points_per_part[2] == 0
    assert response.cloud.width == seg.num_points and response.cloud.header == seg.header
    check_result_against_ground_truth(response.cloud, seg, scans)
    assert wait_for(lambda: len(out.segmentations) == 1, timeout=10)

    trigger = call(source.create_client(Trigger, f"{fqn}/trigger"), Trigger.Request())
    assert trigger.success and "instances" in trigger.message
    bad = call(segment, SegmentNow.Request(parts=["lid", "lid"]))
    assert not bad.success and "duplicates" in bad.message
    assert wait_for(lambda: len(out.segmentations) == 2, timeout=10)


def test_input_queue_is_bounded_and_drops_the_oldest_while_a_run_is_busy(system, mug_scans):
    part_names, scans = mug_scans
    node, out, source = system([Parameter("parts", value=part_names), Parameter("trigger.mode", value="on_demand"),
                                Parameter("input_qos", value="reliable"), Parameter("queue_size", value=2),
                                Parameter("pipeline.render.image_size", value=640)], "scans_e")
    pub = source.create_publisher(PointCloud2, "scans_e", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    message = scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scans[0], True)
    pub.publish(message)
    assert wait_for(lambda: node.stats_snapshot().accepted == 1, timeout=30)
    runner = threading.Thread(target=node.request_run)
    runner.start()
    assert wait_for(node.busy.is_set, timeout=10)
    for _ in range(6):
        pub.publish(message)
    assert wait_for(lambda: node.stats_snapshot().received == 7, timeout=10), node.stats_snapshot()
    still_busy = node.busy.is_set()
    runner.join(timeout=60)
    assert wait_for(lambda: node.stats_snapshot().accepted + node.stats_snapshot().dropped_queue_full == 7, timeout=10)
    stats = node.stats_snapshot()
    if still_busy:  # all 6 arrived during the run: 2 queued, 4 dropped
        assert stats.dropped_queue_full == 4 and stats.accepted == 3
    assert stats.dropped_queue_full >= 1


def test_console_script_with_params_file_serves_another_process(ros, mug_scans, tmp_path):
    """``python -m partslip_ros.node --params-file config/segment.yaml`` in its own process (no launch_ros)."""
    part_names, scans = mug_scans
    name = f"partslip_proc_{next(_names)}"
    args = [sys.executable, "-m", "partslip_ros.node", "--params-file", str(REPO / "config" / "segment.yaml"),
            "--ros-args", "-r", f"__node:={name}", "-p", "input_topic:=scans_f", "-p", "input_qos:=reliable",
            "-p", f"parts:={part_names}", "-p", "pipeline.detector.backend:=ground_truth",
            "-p", "pipeline.render.image_size:=160", "-p", "pipeline.device:=cpu", "-p", "trigger.every_n_frames:=1"]
    process = subprocess.Popen(args, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    client = ros.create_node(f"client_{next(_names)}")
    collector = NodeOutputs(ros, f"/{name}", f"collector_{next(_names)}")
    spinner = NodeSpinner([client, collector.node]).start()
    try:
        pub = client.create_publisher(PointCloud2, "scans_f", RELIABLE)
        assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=60), "the node process did not subscribe"
        pub.publish(scan_to_cloud(Header(frame_id="world", stamp=client.get_clock().now().to_msg()), scans[0], True))
        assert wait_for(collector.complete, timeout=60)
        check_result_against_ground_truth(collector.clouds[0], collector.segmentations[0], [scans[0]])
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        spinner.stop()
        client.destroy_node()
        collector.node.destroy_node()
    assert process.returncode == 0, output
    assert "run 1:" in output
