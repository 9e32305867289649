"""Debug outputs on real rclpy (issue 10): ``~/debug/views`` and ``~/debug/superpoints`` exist only with
``debug: true`` (also switched at runtime), carry the run's mosaic and superpoints, and a run whose points
end mostly unlabelled logs why and is counted per reason, debug or not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

import partslip_core
from partslip_core.debug import mosaic_tile_origin, part_colors_u8, views_mosaic
from partslip_core.types import ViewDetections
from partslip_ros.debug_outputs import SUPERPOINTS_TOPIC, TILE_SIZE, VIEWS_TOPIC
from partslip_ros.pointcloud import read_structured, unpack_rgb
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")

_names = itertools.count()
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DEBUG_SUFFIXES = (VIEWS_TOPIC[1:], SUPERPOINTS_TOPIC[1:])  # "/debug/views", "/debug/superpoints"


@pytest.fixture
def recorded_results(monkeypatch):
    """Every PartSegmentationResult the node's runs produce (``partslip_core.segment`` wrapped)."""
    results = []
    original = partslip_core.segment

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(partslip_core, "segment", recording)
    return results


def send(node, scan) -> PointCloud2:
    msg = scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True)
    node.submit(msg)
    return msg


def debug_topics(node) -> list[str]:
    return [p.topic_name for p in node.publishers if p.topic_name.endswith(DEBUG_SUFFIXES)]


def subscribe_debug(outputs, node):
    fqn = node.get_fully_qualified_name()
    images, clouds = [], []
    outputs.node.create_subscription(Image, fqn + VIEWS_TOPIC[1:], images.append, RELIABLE)
    outputs.node.create_subscription(PointCloud2, fqn + SUPERPOINTS_TOPIC[1:], clouds.append, RELIABLE)
    return images, clouds


def test_debug_off_advertises_and_publishes_nothing_and_keeps_no_views(running_node, mug_scans, recorded_results):
    node, outputs, _ = running_node(f"debug_off_{next(_names)}")
    images, clouds = subscribe_debug(outputs, node)
    assert debug_topics(node) == []
    send(node, mug_scans[1][0])
    assert wait_for(lambda: len(outputs.segmentations) == 1, timeout=60), node.stats_snapshot()
    assert wait_for(lambda: len(images) + len(clouds) > 0, timeout=1.0) is False
    assert recorded_results[-1].views is None  # segment ran without keep_views
    assert debug_topics(node) == []


def test_debug_can_be_switched_at_runtime(running_node):
    node, _, _ = running_node(f"debug_toggle_{next(_names)}")
    assert debug_topics(node) == []
    assert node.set_parameters([Parameter("debug", value=True)])[0].successful
    assert sorted(debug_topics(node)) == sorted(node.get_fully_qualified_name() + s for s in DEBUG_SUFFIXES)
    assert node.settings.debug is True
    assert node.set_parameters([Parameter("debug", value=False)])[0].successful
    assert debug_topics(node) == []


def test_debug_views_and_superpoints_show_the_run(running_node, mug_scans, recorded_results):
    node, outputs, _ = running_node(f"debug_on_{next(_names)}", {"debug": True})
    images, clouds = subscribe_debug(outputs, node)
    fqn = node.get_fully_qualified_name()
    assert wait_for(lambda: node.count_subscribers(fqn + VIEWS_TOPIC[1:]) == 1, timeout=10)
    send(node, mug_scans[1][0])
    assert wait_for(lambda: images and clouds and outputs.segmentations, timeout=60), node.stats_snapshot()
    result, image, cloud, seg = recorded_results[-1], images[-1], clouds[-1], outputs.segmentations[-1]

    # The image: rgb8, the run's header, exactly the mosaic of this run's views, boxes and kept flags.
    assert image.encoding == "rgb8" and image.step == image.width * 3 and image.header == seg.header
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
    expected = views_mosaic(result.views, result.detections, result.part_names, tile_size=TILE_SIZE,
                            kept=result.kept_boxes)
    assert pixels.shape == expected.shape and result.views.num_views == 3
    assert np.array_equal(pixels, expected)
    # ... and a kept box's left edge is drawn in its part's colour where the detection is.
    colors = part_colors_u8(len(result.part_names))
    checked = 0
    for k, (dets, kept) in enumerate(zip(result.detections, result.kept_boxes)):
        row0, col0, scale = mosaic_tile_origin(k, result.views, tile_size=TILE_SIZE)
        for box, label in zip(dets.boxes[kept], dets.labels[kept]):
            x1, y1, _, y2 = (np.asarray(box, np.float64) * scale).round().astype(int)
            assert tuple(pixels[row0 + (y1 + y2) // 2, col0 + x1]) == tuple(colors[label])
            checked += 1
    assert checked >= 2, "the ground-truth detector boxed no part"

    # The superpoint cloud: the run's frame and points, one distinct colour per superpoint id.
    points = read_structured(cloud)
    assert cloud.header == seg.header and cloud.width * cloud.height == seg.num_points == len(result.point_label)
    assert np.array_equal(points["superpoint"], result.point_superpoint)
    rgb = (unpack_rgb(points["rgb"]) * 255).round().astype(np.int64)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    pairs = np.unique(np.stack([points["superpoint"].astype(np.int64), packed], axis=1), axis=0)
    ids = np.unique(points["superpoint"])
    assert len(ids) > 10 and len(pairs) == len(ids) == len(np.unique(packed))
    assert node.stats_snapshot().unlabelled == {}  # a labelled run is not reported as unlabelled


class NoBoxes:
    """A detector that finds nothing in any view."""

    name = "blind"

    def detect(self, views, part_names, point_fields=None):
        return [ViewDetections(boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                               scores=np.zeros(0, np.float32)) for _ in range(views.num_views)]


def test_a_run_with_no_boxes_logs_why_and_counts_it(running_node, mug_scans):
    node, outputs, _ = running_node(f"debug_blind_{next(_names)}", detector_factory=lambda settings, fused: NoBoxes())
    send(node, mug_scans[1][0])
    # runs_ok is counted last (runner._run), so once it is 1 the run's other figures are in
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=60), node.stats_snapshot()
    assert node.stats_snapshot().unlabelled == {"no_boxes": 1}  # the run succeeded: everything published, unlabelled
    assert wait_for(lambda: outputs.lines("mostly unlabelled [no_boxes]", Log.WARN), timeout=10)
    line = outputs.lines("mostly unlabelled [no_boxes]")[0]
    assert "no boxes from the detector in 3 views" in line and "body, handle" in line
    assert wait_for(lambda: any(d.get("unlabelled_no_boxes") == "1" for d in outputs.diagnostics), timeout=10)
    assert wait_for(lambda: outputs.segmentations, timeout=10)
    assert outputs.segmentations[-1].num_labeled_points == 0


def test_a_failing_debug_view_is_logged_and_counted_and_the_run_still_publishes(running_node, mug_scans,
                                                                                 monkeypatch):
    import partslip_core.debug

    def broken(*args, **kwargs):
        raise RuntimeError("font missing")

    monkeypatch.setattr(partslip_core.debug, "views_mosaic", broken)
    node, outputs, _ = running_node(f"debug_broken_{next(_names)}", {"debug": True})
    images, clouds = subscribe_debug(outputs, node)
    assert wait_for(lambda: node.count_subscribers(node.get_fully_qualified_name() + VIEWS_TOPIC[1:]) == 1)
    send(node, mug_scans[1][0])
    assert wait_for(lambda: node.stats_snapshot().debug_failures == 1, timeout=60), node.stats_snapshot()
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=10)
    assert node.stats_snapshot().runs_failed == {}
    assert wait_for(lambda: outputs.segmentations and clouds, timeout=10) and images == []
    assert wait_for(lambda: outputs.lines("debug outputs not published", Log.ERROR), timeout=10)
    assert "RuntimeError: font missing" in outputs.lines("debug outputs not published")[0]
