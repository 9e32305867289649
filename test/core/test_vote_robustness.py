"""Issue 8 voting options added for the cabinet and the noisy-box targets (docs/quality.md): per-part
uncovered weights from the detector's estimated miss rate (vote.adaptive_uncovered), point-level splits
of superpoints holding two parts' fronts (vote.refine_conflict_score), parts left on a sliver of points
(vote.min_part_points) and clearly more specific parts within a score margin (vote.specific_part_margin)."""

import numpy as np
import pytest
import torch

from partslip_core.config import PipelineConfig, VoteConfig
from partslip_core.detector_recall import part_miss_rates, weight_for_miss_rate
from partslip_core.types import RenderedViews, Superpoints, ViewDetections
from partslip_core.vote import vote
from partslip_core.vote_cleanup import drop_sparse_parts

BOX_A = [0, 40, 48, 60]  # holds points 0-4 of the line scene (x = 5 .. 45)
BOX_B = [52, 40, 100, 60]  # holds points 5-9 (x = 55 .. 95)
BOX_ALL = [0, 40, 100, 60]  # a box over both halves


def _views(num_views: int, num_points: int = 11) -> RenderedViews:
    """10 points on a row at x = 5, 15, ..., 95 (y = 50) and point 10 below them at (50, 90), in no box
    (so that no box holds every visible point: whole-object boxes are dropped); all visible in every view."""
    xs = np.arange(num_points) * 10 + 5.0
    row = np.stack([xs, np.full(num_points, 50.0)], 1)
    row[10] = [50.0, 90.0]
    screen = np.stack([row] * num_views).astype(np.float32)
    return RenderedViews(images=np.zeros((num_views, 100, 100, 3), np.uint8),
                         pixel_point_index=np.full((num_views, 100, 100), -1, np.int64), point_screen_xy=screen,
                         point_visible=np.ones((num_views, num_points), bool), view_angles=np.zeros((num_views, 2), np.float32))


def _superpoints(groups) -> Superpoints:
    """The given superpoint ids of points 0-9; point 10 is a superpoint of its own."""
    ids = np.asarray(list(groups) + [max(groups) + 1], np.int64)
    return Superpoints(point_superpoint=ids, num_superpoints=int(ids.max()) + 1)


def _dets(boxes, labels) -> ViewDetections:
    return ViewDetections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                          scores=np.full(len(labels), 0.9, np.float32))


def test_miss_rates_are_zero_for_consistent_boxes_and_grow_with_missed_ones():
    assert part_miss_rates([np.array([0, 1])] * 4, 4, 2).tolist() == [0.0, 0.0]
    # part 0 boxed in 3 of 4 views, part 1 in 1 of 4: 0.25 and 0.75 (each at least the median 0.5 -> 0.5, 0.75)
    rates = part_miss_rates([np.array([0, 1]), np.array([0]), np.array([0]), np.array([], np.int64)], 4, 2)
    np.testing.assert_allclose(rates, [0.5, 0.75])
    assert np.isnan(part_miss_rates([np.array([0])], 1, 2)[1])  # never detected


def test_uncovered_weight_is_one_for_a_reliable_detector_and_the_floor_for_a_poor_one():
    weight = weight_for_miss_rate(np.array([0.0, 0.05, 0.2, 0.4, 0.9, np.nan]), 0.25, 0.01)
    assert weight[0] == 1.0 and weight[-2] == 0.25 and weight[-1] == 0.25
    assert np.all(np.diff(weight[:5]) <= 0) and 0.25 < weight[1] < 1.0


def test_adaptive_weight_keeps_an_unlabeled_neighbour_unlabeled_with_reliable_boxes():
    """Points 0-4 are a door, boxed in all 4 views; points 5-9 are unlabeled structure, inside the door's box
    in one view only (seen through it). A fixed low uncovered weight labels them door (5 / (5 + 0.25 x 15)
    = 0.57); the adaptive weight sees a detector that never missed the door (weight 1: 5 / 20)."""
    sps = _superpoints([0] * 5 + [1] * 5)
    dets = [_dets([BOX_ALL], [0])] + [_dets([BOX_A], [0])] * 3
    fixed = vote(sps, _views(4), dets, ["door"], VoteConfig(uncovered_weight=0.25))
    adaptive = vote(sps, _views(4), dets, ["door"], VoteConfig(uncovered_weight=0.25, adaptive_uncovered=True))
    assert fixed.superpoint_label.tolist()[:2] == [0, 0]
    assert adaptive.superpoint_label.tolist()[:2] == [0, -1]
    np.testing.assert_allclose(adaptive.superpoint_scores[:2, 0], [1.0, 0.25], atol=1e-6)


def test_adaptive_weight_falls_to_the_floor_when_the_detector_misses_the_part():
    """The door's box is missing in 3 of 4 views: weight 1 would lose it (1/4), the floor keeps it."""
    sps = _superpoints([0] * 5 + [1] * 5)
    dets = [_dets([BOX_A], [0])] + [ViewDetections.empty()] * 3
    adaptive = vote(sps, _views(4), dets, ["door"], VoteConfig(uncovered_weight=0.25, adaptive_uncovered=True))
    np.testing.assert_allclose(adaptive.superpoint_scores[0, 0], 5 / (5 + 0.25 * 15), atol=1e-6)
    assert adaptive.superpoint_label.tolist()[:2] == [0, -1]


def _two_fronts(views: int, b_views: int):
    """One superpoint holding two coplanar fronts: points 0-4 in a's box, 5-9 in b's (equal sizes) in every view,
    b's box present in ``b_views`` of them."""
    sps = _superpoints([0] * 10)
    dets = [_dets([BOX_A, BOX_B], [0, 1]) if v < b_views else _dets([BOX_A], [0]) for v in range(views)]
    return sps, _views(views), dets


def test_conflicting_points_leave_a_superpoint_that_holds_two_fronts():
    base = dict(refine_points=True, prefer_smaller_boxes=True, adaptive_uncovered=True, uncovered_weight=0.25)
    sps, views, dets = _two_fronts(3, 3)
    plain = vote(sps, views, dets, ["a", "b"], VoteConfig(**base))
    assert len(set(plain.point_label.tolist()[:10])) == 1  # equal box sizes: refine_points alone does not split
    split = vote(sps, views, dets, ["a", "b"], VoteConfig(**base, refine_conflict_score=0.5))
    assert split.point_label.tolist()[:10] == [0] * 5 + [1] * 5


def test_conflict_splits_wait_for_a_detector_that_never_missed_either_part():
    base = dict(refine_points=True, prefer_smaller_boxes=True, adaptive_uncovered=True, uncovered_weight=0.25,
                refine_conflict_score=0.5)
    sps, views, dets = _two_fronts(4, 3)  # b missed in one view: its points' own evidence is not trusted
    votes = vote(sps, views, dets, ["a", "b"], VoteConfig(**base))
    assert len(set(votes.point_label.tolist()[:10])) == 1


def test_a_part_left_on_a_sliver_of_points_is_dropped():
    labels = torch.tensor([0, 0, 0, 1, 1, -1, 2])
    assert drop_sparse_parts(labels, 3, 3).tolist() == [0, 0, 0, -1, -1, -1, -1]
    assert drop_sparse_parts(labels, 3, 0).tolist() == labels.tolist()
    # through the vote: a false positive 'b' box over two points in two views, refined point by point
    sps = _superpoints([0] * 10)
    sliver = [50, 40, 68, 60]  # holds points 5 and 6
    dets = [_dets([BOX_ALL, sliver], [0, 1])] * 2
    config = dict(refine_points=True, prefer_smaller_boxes=True)
    kept = vote(sps, _views(2), dets, ["a", "b"], VoteConfig(**config))
    assert kept.point_label.tolist().count(1) == 2
    dropped = vote(sps, _views(2), dets, ["a", "b"], VoteConfig(**config, min_part_points=3))
    assert 1 not in dropped.point_label.tolist()


def test_a_clearly_more_specific_part_wins_within_the_margin():
    """Superpoint = points 0-4 (a bulb inside a shade): the shade's large box holds it in 4 views, the bulb's
    small box in 3 (one jittered off it): bulb 0.75 vs shade 1.0 loses by score, wins with a 0.3 margin."""
    sps = _superpoints([0] * 5 + [1] * 5)
    small = [0, 40, 48, 60]
    shade = [0, 20, 100, 80]  # over 6 times the bulb box's area (the rule wants at most a quarter)
    dets = [_dets([shade, small], [0, 1])] * 3 + [_dets([shade, [60, 40, 70, 60]], [0, 1])]
    base = dict(prefer_smaller_boxes=True)
    plain = vote(sps, _views(4), dets, ["shade", "bulb"], VoteConfig(**base))
    assert plain.superpoint_label[0] == 0
    margin = vote(sps, _views(4), dets, ["shade", "bulb"], VoteConfig(**base, specific_part_margin=0.3))
    assert margin.superpoint_label.tolist()[:2] == [1, 0]


def test_the_reference_preset_leaves_the_new_options_off():
    vote_config = PipelineConfig().vote
    assert not vote_config.adaptive_uncovered and vote_config.refine_conflict_score == 0.0
    assert vote_config.min_part_points == 0 and vote_config.specific_part_margin == 0.0
    assert not vote_config.estimate_background and vote_config.refine_tie_margin == 0.0
    assert vote_config.refine_conflict_min_weight == 1.0
    with pytest.raises(ValueError):
        VoteConfig(background_hit_rate=0.0)


def test_a_part_backed_only_by_boxes_full_of_other_parts_is_dropped():
    """Points 0-4 are part a (boxed in both views); a 'b' box in each view covers points 2-7, three of a and
    superpoint 1 (points 5-7), which the vote labels b. Each b box then holds 3 b points of its 6 labeled
    ones (agreement 0.5): b is kept with min_part_agreement 0.4 and dropped with 0.6."""
    sps = _superpoints([0] * 5 + [1] * 3 + [2] * 2)
    false_b = [22, 40, 78, 60]  # points 2-7: three of a, three of b
    dets = [_dets([BOX_A, false_b], [0, 1])] * 2
    plain = vote(sps, _views(2), dets, ["a", "b"], VoteConfig())
    assert 1 in plain.point_label.tolist()
    kept = vote(sps, _views(2), dets, ["a", "b"], VoteConfig(min_part_agreement=0.4))
    assert 1 in kept.point_label.tolist()  # each b box: 3 of its 6 labeled points are b (0.5)
    dropped = vote(sps, _views(2), dets, ["a", "b"], VoteConfig(min_part_agreement=0.6))
    assert 1 not in dropped.point_label.tolist() and kept.point_label.tolist()[:5] == [0] * 5


def test_instances_whose_points_the_vote_relabelled_are_removed():
    """A superpoint labelled b whose points all lose the label point by point (here: min_part_agreement)
    must not leave an empty b instance behind (building its box would fail)."""
    from partslip_core.instances import _without_empty

    groups = _without_empty(np.array([0, 0, -1, 2, 2]), np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7], np.float32))
    assert groups.point_instance.tolist() == [0, 0, -1, 1, 1]
    assert groups.instance_label.tolist() == [0, 1] and groups.instance_score.tolist() == pytest.approx([0.9, 0.7])


def test_conflict_splits_between_parts_missed_at_times_with_a_lower_weight_bar():
    """b is boxed in 3 of 4 views: uncovered weights a 0.46, b 0.32 (miss rates 0.125 / 0.25). The default bar
    (refine_conflict_min_weight 1) keeps the superpoint whole; a bar of 0.3 lets the fronts split, 0.4 does not."""
    base = dict(refine_points=True, prefer_smaller_boxes=True, adaptive_uncovered=True, uncovered_weight=0.25,
                refine_conflict_score=0.5)
    sps, views, dets = _two_fronts(4, 3)
    low_bar = vote(sps, views, dets, ["a", "b"], VoteConfig(**base, refine_conflict_min_weight=0.3))
    assert low_bar.point_label.tolist()[:10] == [0] * 5 + [1] * 5
    higher = vote(sps, views, dets, ["a", "b"], VoteConfig(**base, refine_conflict_min_weight=0.4))
    assert len(set(higher.point_label.tolist()[:10])) == 1


def test_tied_points_stay_with_their_superpoint_when_the_smaller_part_stands_out_elsewhere():
    """Body box over points 0-7 (superpoint 0), handle box (under half its area) over points 6-9 in 3 views:
    points 8-9 (superpoint 1) are clearly handle; points 6-7, the body at the handle's root, tie. The tie rule
    moves them to the handle; with refine_tie_margin the handle's clear points (2) are as many as its tied
    ones (2), so they stay body. A flush handle (box over points 6-7 only, no clear point) still gets them."""
    body, handle, flush = [0, 30, 78, 70], [58, 40, 100, 60], [58, 40, 78, 60]
    base = dict(refine_points=True, prefer_smaller_boxes=True)
    sps = _superpoints([0] * 8 + [1] * 2)
    dets = [_dets([body, handle], [0, 1])] * 3
    ties = vote(sps, _views(3), dets, ["body", "handle"], VoteConfig(**base))
    assert ties.point_label.tolist()[:10] == [0] * 6 + [1] * 4
    kept = vote(sps, _views(3), dets, ["body", "handle"], VoteConfig(**base, refine_tie_margin=0.5))
    assert kept.point_label.tolist()[:10] == [0] * 8 + [1] * 2
    flush_dets = [_dets([body, flush], [0, 1])] * 3
    flat = vote(_superpoints([0] * 10), _views(3), flush_dets, ["body", "handle"],
                VoteConfig(**base, refine_tie_margin=0.5))
    assert flat.point_label.tolist()[:8] == [0] * 6 + [1] * 2
