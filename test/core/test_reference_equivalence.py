"""Our vectorized render / vote / instances give the SAME outputs as the loop reference implementation
(test/reference_impl/, written the way the authors' bbox2seg.py loops) on the same inputs.

Correctness only, no timing: small clouds, 128 px, 4 views.
"""

from __future__ import annotations

import numpy as np
import pytest

from test.reference_impl import compare, reference_lift, reference_render, same_partition
from partslip_core.config import PipelineConfig
from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.instances import group_instances
from partslip_core.normalize import normalize
from partslip_core.render import render_views
from partslip_core.superpoints import compute_superpoints
from partslip_core.synthetic import make_object
from partslip_core.types import PointCloud, ViewDetections
from partslip_core.vote import vote


def _config() -> PipelineConfig:
    config = PipelineConfig()
    config.render.image_size = 128
    config.render.views = config.render.views[:4]
    config.render.backend = "torch"
    return config


def _scene(category: str, noise: GroundTruthNoise | None = None, points: int = 2500, seed: int = 1):
    obj = make_object(category, points, seed=seed)
    config = _config()
    canonical = normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), config.normalize)
    views = render_views(canonical.xyz, canonical.rgb, config.render)
    detections = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, noise, seed=seed).detect(
        views, obj.part_names)
    superpoints = compute_superpoints(canonical.xyz, canonical.rgb, canonical.normals, config.superpoints)
    return obj, config, canonical, views, detections, superpoints


def _ours_and_reference(obj, config, canonical, views, detections, superpoints):
    votes = vote(superpoints, views, detections, obj.part_names, config.vote)
    groups = group_instances(canonical.xyz, superpoints, votes, views, config.instances)
    ref = reference_lift(canonical.xyz, superpoints.point_superpoint, superpoints.num_superpoints, views, detections,
                         obj.part_names, config.vote, config.instances)
    return votes, groups, ref


def test_loop_zbuffer_gives_our_index_maps():
    obj, config, canonical, views, _, _ = _scene("cabinet")
    ref_views = reference_render(canonical.xyz, canonical.rgb, config.render)
    assert (views.pixel_point_index >= 0).sum() > 1000  # the object covers the images
    np.testing.assert_array_equal(ref_views.pixel_point_index, views.pixel_point_index)
    np.testing.assert_array_equal(ref_views.point_visible, views.point_visible)
    np.testing.assert_array_equal(ref_views.point_screen_xy, views.point_screen_xy)


@pytest.mark.parametrize("category,seed,noise", [
    ("cabinet", 0, None),
    ("chair", 1, None),
    ("table", 1, GroundTruthNoise(jitter=0.05, drop_probability=0.2, false_positives_per_view=2.0)),
    ("mug", 1, GroundTruthNoise(masks=True, false_positives_per_view=1.0)),
])
def test_vote_and_instances_equal_reference(category, seed, noise):
    scene = _scene(category, noise, seed=seed)
    obj, _, _, _, _, superpoints = scene
    votes, groups, ref = _ours_and_reference(*scene)
    assert (votes.point_label >= 0).mean() > 0.2 and len(groups.instance_label) >= 1  # a non-trivial case
    result = compare(votes.point_label, votes.superpoint_scores, groups.point_instance, groups.instance_label,
                     groups.instance_score, ref)
    assert result.ok, result.problems
    np.testing.assert_array_equal(votes.superpoint_label, ref.votes.superpoint_label)
    assert len(votes.box_label) == len(ref.votes.boxes)


@pytest.mark.parametrize("category,seed", [("chair", 1), ("table", 2)])
def test_authors_profile_distance_equals_reference(category, seed):
    """instances.box_profile_normalization: fraction_sum (the authors' rule) on both sides."""
    obj, config, canonical, views, detections, superpoints = _scene(category, seed=seed)
    config.instances.box_profile_normalization = "fraction_sum"
    votes, groups, ref = _ours_and_reference(obj, config, canonical, views, detections, superpoints)
    assert len(groups.instance_label) >= 1
    result = compare(votes.point_label, votes.superpoint_scores, groups.point_instance, groups.instance_label,
                     groups.instance_score, ref)
    assert result.ok, result.problems


def test_whole_object_boxes_are_dropped_on_both_sides():
    obj, config, canonical, views, detections, superpoints = _scene("cabinet")
    height, width = views.image_size
    padded = [ViewDetections(boxes=np.concatenate([d.boxes, [[0, 0, width, height]]]),
                             labels=np.append(d.labels, 0), scores=np.append(d.scores, 0.99)) for d in detections]
    votes, groups, ref = _ours_and_reference(obj, config, canonical, views, padded, superpoints)
    assert len(votes.box_label) == sum(d.num_boxes for d in detections)  # every whole-image box dropped
    result = compare(votes.point_label, votes.superpoint_scores, groups.point_instance, groups.instance_label,
                     groups.instance_score, ref)
    assert result.ok, result.problems


def test_small_part_tie_rule_agrees():
    """Every door box duplicated as a handle box: door superpoints tie, and the small part must win on both sides."""
    obj, config, canonical, views, detections, superpoints = _scene("cabinet", seed=0)
    door, handle = obj.part_names.index("door"), obj.part_names.index("handle")
    doubled = []
    for d in detections:
        doors = d.labels == door
        doubled.append(ViewDetections(boxes=np.concatenate([d.boxes, d.boxes[doors]]),
                                      labels=np.concatenate([d.labels, np.full(doors.sum(), handle)]),
                                      scores=np.concatenate([d.scores, d.scores[doors]])))
    votes, groups, ref = _ours_and_reference(obj, config, canonical, views, doubled, superpoints)
    assert (votes.point_label == handle).sum() > 100 and not (votes.point_label == door).any()
    result = compare(votes.point_label, votes.superpoint_scores, groups.point_instance, groups.instance_label,
                     groups.instance_score, ref)
    assert result.ok, result.problems


def test_comparison_detects_a_difference():
    scene = _scene("chair")
    votes, groups, ref = _ours_and_reference(*scene)
    labels = votes.point_label.copy()
    labels[np.argmax(labels >= 0)] = -1
    instances = groups.point_instance.copy()
    first = np.nonzero(instances >= 0)[0][0]
    instances[first] = instances.max() + 1  # split one point off into its own instance
    changed = compare(labels, votes.superpoint_scores, instances, np.append(groups.instance_label, 0),
                      np.append(groups.instance_score, 1.0), ref)
    assert not changed.ok and changed.label_mismatches == 1 and not changed.partition_equal


def test_same_partition_ignores_numbering_only():
    assert same_partition(np.array([0, 0, 1, -1, 2]), np.array([5, 5, 3, -1, 0]))
    assert not same_partition(np.array([0, 0, 1, -1]), np.array([0, 1, 1, -1]))
    assert not same_partition(np.array([0, 1]), np.array([0, 0]))
    assert not same_partition(np.array([0, -1]), np.array([0, 1]))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_stages_equal_reference():
    """The same equality with our render, vote and instances running on the GPU."""
    obj, config, canonical, _, _, superpoints = _scene("chair", seed=1)
    views = render_views(canonical.xyz, canonical.rgb, config.render, "cuda")
    ref_views = reference_render(canonical.xyz, canonical.rgb, config.render)
    np.testing.assert_array_equal(views.pixel_point_index, ref_views.pixel_point_index)
    detections = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=1).detect(views, obj.part_names)
    votes = vote(superpoints, views, detections, obj.part_names, config.vote, "cuda")
    groups = group_instances(canonical.xyz, superpoints, votes, views, config.instances, "cuda")
    ref = reference_lift(canonical.xyz, superpoints.point_superpoint, superpoints.num_superpoints, views, detections,
                         obj.part_names, config.vote, config.instances)
    result = compare(votes.point_label, votes.superpoint_scores, groups.point_instance, groups.instance_label,
                     groups.instance_score, ref)
    assert result.ok, result.problems
