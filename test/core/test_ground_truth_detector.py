"""ProjectedGroundTruthDetector: exact boxes and masks from index maps, controlled noise."""

import numpy as np
import pytest

from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.detect.registry import backend_info, build_detector
from partslip_core.config import DetectorConfig
from partslip_core.detect.base import DetectorError
from partslip_core.types import RenderedViews


def _views(index_maps, num_points):
    k, h, w = index_maps.shape
    visible = np.zeros((k, num_points), bool)
    for view in range(k):
        visible[view, np.unique(index_maps[view][index_maps[view] >= 0])] = True
    return RenderedViews(images=np.zeros((k, h, w, 3), np.uint8), pixel_point_index=index_maps,
                         point_screen_xy=np.zeros((k, num_points, 2), np.float32), point_visible=visible,
                         view_angles=np.zeros((k, 2), np.float32))


def _scene():
    """Points 0-1: part 0 instance 0; 2: part 0 instance 1; 3: part 1 instance 2; 4: unlabeled."""
    index_map = np.full((1, 40, 40), -1, np.int64)
    index_map[0, 2:10, 3:9] = 0
    index_map[0, 10:12, 3:20] = 1
    index_map[0, 20:30, 20:25] = 2
    index_map[0, 30:35, 30:38] = 3
    index_map[0, 0:2, 0:40] = 4
    return _views(index_map, 5), np.array([0, 0, 0, 1, -1]), np.array([0, 0, 1, 2, -1])


def test_one_exact_box_per_visible_instance():
    views, label, instance = _scene()
    dets = ProjectedGroundTruthDetector(label, instance).detect(views, ["leg", "seat"])[0]
    order = np.lexsort((dets.boxes[:, 0], dets.labels))
    np.testing.assert_array_equal(dets.boxes[order], [[3, 2, 20, 12], [20, 20, 25, 30], [30, 30, 38, 35]])
    assert dets.labels[order].tolist() == [0, 0, 1]
    assert (dets.scores > 0.7).all()


def test_masks_are_the_instance_pixels():
    views, label, instance = _scene()
    dets = ProjectedGroundTruthDetector(label, instance, GroundTruthNoise(masks=True)).detect(views, ["leg", "seat"])[0]
    areas = sorted(int(m.sum()) for m in dets.masks)
    assert areas == sorted([8 * 6 + 2 * 17, 10 * 5, 5 * 8])


def test_small_instances_and_dropping():
    views, label, instance = _scene()
    tiny = ProjectedGroundTruthDetector(label, instance, GroundTruthNoise(min_pixels=60)).detect(views, ["a", "b"])[0]
    assert tiny.num_boxes == 1  # only the 82-pixel instance is large enough
    dropped = ProjectedGroundTruthDetector(label, instance, GroundTruthNoise(drop_probability=1.0)).detect(views, ["a", "b"])
    assert dropped[0].num_boxes == 0


def test_jitter_and_false_positives_are_seeded_and_bounded():
    views, label, instance = _scene()
    noise = GroundTruthNoise(jitter=0.2, false_positives_per_view=5, masks=True)
    first = ProjectedGroundTruthDetector(label, instance, noise, seed=3).detect(views, ["a", "b"])[0]
    again = ProjectedGroundTruthDetector(label, instance, noise, seed=3).detect(views, ["a", "b"])[0]
    np.testing.assert_array_equal(first.boxes, again.boxes)
    assert first.num_boxes > 3 and len(first.masks) == first.num_boxes
    assert (first.boxes[:, :2] <= first.boxes[:, 2:]).all() and first.boxes.min() >= 0 and first.boxes.max() <= 40
    assert set(first.labels.tolist()) <= {0, 1}


def test_label_count_mismatch_is_an_error():
    views, label, instance = _scene()
    with pytest.raises(ValueError, match="holds labels for 4 points"):
        ProjectedGroundTruthDetector(label[:4], instance[:4]).detect(views, ["a", "b"])


def test_registry_backend_reads_the_labels_from_the_point_fields():
    views, label, instance = _scene()
    detector = build_detector(DetectorConfig(backend="ground_truth"), seed=3)
    expected = ProjectedGroundTruthDetector(label, instance, seed=3).detect(views, ["a", "b"])[0]
    for fields in ({"gt_label": label, "gt_instance": instance}, {"label": label, "instance": instance}):
        found = detector.detect(views, ["a", "b"], point_fields=fields)[0]
        np.testing.assert_array_equal(found.boxes, expected.boxes)
        np.testing.assert_array_equal(found.scores, expected.scores)  # a fresh stream per call: same boxes per cloud
    with pytest.raises(DetectorError, match="gt_label/gt_instance or label/instance"):
        detector.detect(views, ["a", "b"], point_fields={"gt_label": label})
    info = backend_info("ground_truth")
    assert info.point_fields == ProjectedGroundTruthDetector.FIELD_NAMES and not info.loads_weights
    assert "TEST/DEMO" in info.warning
    assert info.missing_fields({"label", "instance"}) == "" and info.missing_fields({"gt_label"})
    with pytest.raises(DetectorError, match="takes no option"):
        build_detector(DetectorConfig(backend="ground_truth"), colour="red")
    with pytest.raises(DetectorError, match="unknown detector backend"):
        build_detector(DetectorConfig(backend="yolo9000"))


# ---------------------------------------------------------------- the box-noise model (issue 8)

def test_jitter_moves_each_edge_by_at_most_j_times_the_box_size():
    from partslip_core.detect.box_noise import jitter_boxes
    boxes = np.array([[100, 100, 200, 150]] * 2000, np.float32)
    moved = jitter_boxes(boxes, 0.1, np.random.default_rng(0), 400, 400)
    delta = moved - boxes
    limit = np.array([10, 5, 10, 5])  # 0.1 x (width, height, width, height)
    assert (np.abs(delta) <= limit + 1e-4).all()
    assert (np.abs(delta).max(axis=0) > 0.95 * limit).all()  # uniform: the bound is reached
    assert abs(delta.mean()) < 0.3  # unbiased


def test_false_positives_are_exactly_n_per_view_inside_the_object():
    from partslip_core.detect.box_noise import BoxNoise, object_extent, perturb_detections
    views, label, instance = _scene()
    exact = ProjectedGroundTruthDetector(label, instance).detect(views, ["a", "b"])
    noisy = perturb_detections(exact, views, 2, BoxNoise(false_positives_per_view=3), seed=5)[0]
    assert noisy.num_boxes == exact[0].num_boxes + 3
    extent = object_extent(views.pixel_point_index[0])
    false = noisy.boxes[-3:]
    assert (false[:, :2] >= extent[:2]).all() and (false[:, 2:] <= extent[2:]).all()
    assert set(noisy.labels[-3:].tolist()) <= {0, 1} and (noisy.scores[-3:] >= 0.5).all()
    again = perturb_detections(exact, views, 2, BoxNoise(false_positives_per_view=3), seed=5)[0]
    np.testing.assert_array_equal(noisy.boxes, again.boxes)


def test_drop_probability_drops_that_share_of_boxes():
    from partslip_core.detect.box_noise import BoxNoise, perturb_view
    views, label, instance = _scene()
    exact = ProjectedGroundTruthDetector(label, instance).detect(views, ["a", "b"])[0]
    rng = np.random.default_rng(1)
    kept = [perturb_view(exact, views.pixel_point_index[0], 2, BoxNoise(drop_probability=0.3), rng).num_boxes
            for _ in range(2000)]
    assert abs(1 - np.mean(kept) / exact.num_boxes - 0.3) < 0.02


def test_box_noise_rejects_bad_values():
    from partslip_core.detect.box_noise import BoxNoise
    with pytest.raises(ValueError, match="false_positives_per_view"):
        BoxNoise(false_positives_per_view=0.5)
    with pytest.raises(ValueError, match="drop_probability"):
        BoxNoise(drop_probability=1.5)
    assert BoxNoise.issue_model() == BoxNoise(0.1, 0.3, 1)


@pytest.mark.parametrize("category", ["cabinet", "chair"])
def test_boxes_are_the_pixel_bounds_of_each_instance_in_a_real_render(category, synthetic_objects):
    """Against a per-view, per-instance loop over a rendered object's index maps (views with the renderer's
    covered-pixel list and without it give the same boxes)."""
    import dataclasses
    from partslip_core.config import RenderConfig
    from partslip_core.render import render_views
    obj = synthetic_objects[category]
    views = render_views(obj.xyz / np.abs(obj.xyz).max(), None,
                         RenderConfig(views=[(10.0, 0.0), (40.0, 120.0), (-20.0, 300.0)], image_size=160))
    detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, GroundTruthNoise(min_pixels=5))
    found = detector.detect(views, obj.part_names)
    again = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, GroundTruthNoise(min_pixels=5)).detect(
        dataclasses.replace(views), obj.part_names)
    for view, (dets, other) in enumerate(zip(found, again)):
        np.testing.assert_array_equal(dets.boxes, other.boxes)
        index = views.pixel_point_index[view]
        expected = {}
        for label, instance in {(int(a), int(b)) for a, b in zip(obj.point_label, obj.point_instance) if b >= 0}:
            shown = np.isin(index, np.flatnonzero((obj.point_label == label) & (obj.point_instance == instance)))
            rows, cols = np.nonzero(shown)
            if len(rows) >= 5:
                expected[(label, cols.min(), rows.min())] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        got = {(int(label), int(box[0]), int(box[1])): box.tolist() for label, box in zip(dets.labels, dets.boxes)}
        assert got == expected and len(expected) >= 2
