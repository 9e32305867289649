"""End to end through segment(): quality with projected ground-truth boxes, degradation, frames, bad input.

Quality floors (measured with this file's settings: 10k points, 400 px views, 2 seeds per category; the
numbers are in docs/quality.md). With exact boxes the reference algorithm reaches mIoU >= 0.9 and
AP50 >= 0.8 on chair, table, bottle and lamp. Mug and kettle handles/spouts lose to box ambiguity (the
handle's box also covers the body behind it) and reach >= 0.9 only with exact masks. Cabinets fail on
instances: coplanar, same-coloured doors and drawers share superpoints (``instances.split_extent`` fixes most of that), and
10-30 point handles are merged into their door by the min-size rule, as in the reference; see docs/quality.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core import InputError, PointCloud, config_from_dict, segment
from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.evaluate import average_precision_50, predictions_from_instances, shape_miou
from partslip_core.synthetic import make_object
from partslip_core.types import ViewDetections

CONFIG = config_from_dict({"render": {"image_size": 400}})
SEEDS = (0, 1)


def _run(obj, noise=None, seed=0, config=CONFIG):
    detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, noise=noise, seed=seed)
    return segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, config, detector)


def _scores(category, noise=None):
    objects = [make_object(category, num_points=10000, seed=seed) for seed in SEEDS]
    results = [_run(obj, noise, seed) for obj, seed in zip(objects, SEEDS)]
    mious = [shape_miou(r.point_label, o.point_label, len(o.part_names)) for r, o in zip(results, objects)]
    ap = average_precision_50([predictions_from_instances(r.instances) for r in results],
                              [o.point_instance for o in objects], [o.point_label for o in objects],
                              len(objects[0].part_names))
    return float(np.mean(mious)), float(np.nanmean(ap))


@pytest.mark.parametrize("category", ["chair", "table", "bottle", "lamp"])
def test_exact_boxes_reach_paper_grade_quality(category):
    miou, ap50 = _scores(category)
    assert miou >= 0.9, f"{category}: mIoU {miou:.3f}"
    assert ap50 >= 0.8, f"{category}: AP50 {ap50:.3f}"


@pytest.mark.parametrize("category", ["mug", "kettle"])
def test_box_ambiguity_limits_handles_and_masks_remove_it(category):
    """Exact masks (what a perfect SAM would return) are the upper bound of box refinement, exact and noisy.

    Measured at 10:40 UTC 2026-12-02 (2 seeds, this file's settings; script: _scores() for each case):
    mIoU boxes -> masks: mug 0.909 -> 0.960, kettle 0.827 -> 0.953; under the issue-8 noise model (jitter
    0.1, drop 0.3, 1 false positive per view) mug 0.608 -> 0.739, kettle 0.729 -> 0.812. AP50 with exact
    boxes 1.0 either way (kettle masks 0.958). Margins below sit well under the measured gaps.
    """
    box_miou, box_ap = _scores(category)
    mask_miou, mask_ap = _scores(category, GroundTruthNoise(masks=True))
    assert box_miou >= 0.7 and box_ap >= 0.8, f"{category}: boxes mIoU {box_miou:.3f} AP50 {box_ap:.3f}"
    assert mask_miou >= 0.9 and mask_ap >= 0.8, f"{category}: masks mIoU {mask_miou:.3f} AP50 {mask_ap:.3f}"
    assert mask_miou >= box_miou + 0.02, f"{category}: masks {mask_miou:.3f} vs boxes {box_miou:.3f}"
    noisy = dict(jitter=0.1, drop_probability=0.3, false_positives_per_view=1)
    noisy_box_miou, _ = _scores(category, GroundTruthNoise(**noisy))
    noisy_mask_miou, _ = _scores(category, GroundTruthNoise(masks=True, **noisy))
    assert noisy_mask_miou >= noisy_box_miou + 0.04, \
        f"{category}: noisy masks {noisy_mask_miou:.3f} vs boxes {noisy_box_miou:.3f}"


def test_cabinet_large_parts_are_found_even_where_instances_fail():
    obj = make_object("cabinet", num_points=10000, seed=0)
    result = _run(obj)
    iou = [np.logical_and(result.point_label == p, obj.point_label == p).sum()
           / max(np.logical_or(result.point_label == p, obj.point_label == p).sum(), 1) for p in range(2)]
    assert min(iou) >= 0.6, f"door/drawer IoU {iou}"


def _door_drawer_ap(config):
    objects = [make_object("cabinet", num_points=10000, seed=seed) for seed in (0, 1, 2)]
    results = [_run(obj, config=config) for obj in objects]
    ap = average_precision_50([predictions_from_instances(r.instances) for r in results],
                              [o.point_instance for o in objects], [o.point_label for o in objects], 3)
    return float(np.mean(ap[:2])), results


def test_splitting_superpoints_separates_coplanar_cabinet_doors():
    reference_ap, reference = _door_drawer_ap(CONFIG)
    split_ap, split = _door_drawer_ap(config_from_dict({"render": {"image_size": 400},
                                                        "instances": {"split_extent": 0.2}}))
    assert reference_ap < 0.3 <= 0.6 <= split_ap, f"door/drawer AP50 {reference_ap:.2f} -> {split_ap:.2f}"
    for before, after in zip(reference, split):  # semantic labels are untouched by the split
        assert np.array_equal(before.point_label, after.point_label)


def test_quality_degrades_gracefully_with_noisy_boxes():
    obj = make_object("table", num_points=10000, seed=0)
    exact = shape_miou(_run(obj).point_label, obj.point_label, 2)
    jitter = shape_miou(_run(obj, GroundTruthNoise(jitter=0.15)).point_label, obj.point_label, 2)
    # one seed's drops can hit the few views that see a leg (seeds 0-3, box_noise model: 0.75, 0.97, 0.94, 0.98
    # at 10:50 UTC 2026-12-02): the mean over three detector seeds is what is held to the floor
    dropped = np.mean([shape_miou(_run(obj, GroundTruthNoise(drop_probability=0.3), seed).point_label,
                                  obj.point_label, 2) for seed in (0, 1, 2)])
    false_pos = shape_miou(_run(obj, GroundTruthNoise(false_positives_per_view=3)).point_label, obj.point_label, 2)
    most_dropped = shape_miou(_run(obj, GroundTruthNoise(drop_probability=0.9)).point_label, obj.point_label, 2)
    assert exact >= 0.95
    assert 0.85 <= jitter <= exact + 1e-6 and 0.8 <= dropped <= exact + 1e-6 and false_pos >= 0.85
    assert most_dropped < 0.6  # the test can tell a broken detector from a good one


def test_outputs_are_in_the_input_frame_and_order(synthetic_objects):
    obj = synthetic_objects["table"]
    base = _run(obj)
    offset, scale = np.array([12.0, -3.0, 0.7], np.float32), 2.5
    moved = type(obj)(**{**obj.__dict__, "xyz": obj.xyz * scale + offset})
    shifted = _run(moved)
    assert (shifted.point_label == base.point_label).mean() > 0.999
    for instance in shifted.instances:
        np.testing.assert_allclose(instance.centroid, moved.xyz[instance.point_indices].mean(axis=0), rtol=1e-5)
        assert np.all(instance.aabb_min <= instance.centroid) and np.all(instance.centroid <= instance.aabb_max)
        assert np.all(instance.obb_extent[:-1] >= instance.obb_extent[1:])  # longest first
        np.testing.assert_allclose(np.linalg.det(instance.obb_rotation), 1.0, atol=1e-6)
        assert (shifted.point_instance[instance.point_indices] == instance.instance_id).all()
    permutation = np.random.default_rng(0).permutation(obj.num_points)
    permuted = _run(type(obj)(**{**obj.__dict__, "xyz": obj.xyz[permutation], "rgb": obj.rgb[permutation],
                                 "normals": obj.normals[permutation], "point_label": obj.point_label[permutation],
                                 "point_instance": obj.point_instance[permutation]}))
    assert (permuted.point_label == base.point_label[permutation]).mean() > 0.97


class _NoBoxes:
    name = "nothing"

    def __init__(self, count=None):
        self.count = count

    def detect(self, views, part_names, point_fields=None):
        return [ViewDetections.empty()] * (self.count if self.count is not None else views.num_views)


def test_no_detections_leave_everything_unlabeled(synthetic_objects):
    obj = synthetic_objects["mug"]
    result = segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, CONFIG, _NoBoxes())
    assert (result.point_label == -1).all() and result.instances == [] and result.num_boxes == 0
    assert set(result.timings_ms) >= {"normalize", "render", "detect", "superpoints", "vote", "instances", "total"}


def test_detector_returning_wrong_view_count_is_an_error(synthetic_objects):
    obj = synthetic_objects["mug"]
    with pytest.raises(RuntimeError, match="returned 3 views"):
        segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, CONFIG, _NoBoxes(count=3))


@pytest.mark.parametrize("xyz, parts, message", [
    (np.zeros((0, 3)), ["a"], "empty"),
    (np.full((10, 3), np.nan), ["a"], "non-finite"),
    (np.zeros((10, 2)), ["a"], "shape"),
    (np.ones((50, 3)), ["a"], "coincide"),
    (np.random.default_rng(0).random((50, 3)), [], "part_names is empty"),
    (np.random.default_rng(0).random((50, 3)), ["leg", "leg"], "duplicates"),
    (np.random.default_rng(0).random((50, 3)), ["leg", " "], "empty name"),
    (np.random.default_rng(0).random((50, 3)), "leg,seat", "not one string"),
])
def test_bad_input_raises_input_error(xyz, parts, message):
    with pytest.raises(InputError, match=message):
        segment(PointCloud(xyz=np.asarray(xyz, np.float32)), parts, CONFIG, _NoBoxes())


def test_too_many_points_is_rejected_with_the_limit():
    config = config_from_dict({"normalize": {"max_points": 1000}})
    with pytest.raises(InputError, match="max_points=1000"):
        segment(PointCloud(xyz=np.random.default_rng(0).random((1001, 3)).astype(np.float32)), ["a"], config, _NoBoxes())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_request_without_cuda_is_a_clear_error(synthetic_objects):
    obj = synthetic_objects["mug"]
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        segment(PointCloud.from_arrays(obj.xyz), obj.part_names, config_from_dict({"device": "cuda"}), _NoBoxes())


def test_keep_views_and_progress(synthetic_objects):
    obj = synthetic_objects["bottle"]
    stages = []
    result = segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, CONFIG,
                     ProjectedGroundTruthDetector(obj.point_label, obj.point_instance), keep_views=True,
                     progress=stages.append)
    assert stages == ["normalize", "render", "detect", "superpoints", "vote", "instances"]
    assert result.views.images.shape == (10, 400, 400, 3) and len(result.detections) == 10
    summary = result.summary()
    assert sum(summary["points_per_part"].values()) + summary["unlabeled_points"] == obj.num_points
