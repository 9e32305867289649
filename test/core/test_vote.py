"""Voting: the reference score definition, whole-object box removal, thresholds, small-part precedence, masks."""

import numpy as np
import pytest

from partslip_core.config import VoteConfig
from partslip_core.types import RenderedViews, Superpoints, ViewDetections
from partslip_core.vote import choose_labels, vote
import torch


def _views(screen_xy, visible, size=100):
    k, n = visible.shape
    return RenderedViews(images=np.zeros((k, size, size, 3), np.uint8),
                         pixel_point_index=np.full((k, size, size), -1, np.int64),
                         point_screen_xy=np.asarray(screen_xy, np.float32), point_visible=np.asarray(visible, bool),
                         view_angles=np.zeros((k, 2), np.float32))


def _line_scene():
    """10 points on a row at x = 5, 15, ..., 95 (y = 50), in 2 views. Superpoint A = points 0-4, B = 5-9."""
    xs = np.arange(10) * 10 + 5.0
    screen = np.stack([np.stack([xs, np.full(10, 50.0)], 1)] * 2)
    superpoints = Superpoints(point_superpoint=np.repeat([0, 1], 5), num_superpoints=2)
    return screen, superpoints


def test_scores_are_inside_over_visible_summed_over_views():
    screen, sps = _line_scene()
    visible = np.ones((2, 10), bool)
    visible[1, 7:] = False  # view 1 does not see points 7, 8, 9
    dets = [ViewDetections(boxes=[[0, 40, 32, 60]], labels=[0], scores=[0.9]),   # points 0,1,2 -> part 0
            ViewDetections(boxes=[[60, 40, 100, 60]], labels=[1], scores=[0.9])]  # points 6..9 box, 6 visible only
    votes = vote(sps, _views(screen, visible), dets, ["a", "b"], VoteConfig())
    # A: part 0 -> 3 inside / (5 + 5) visible; part 1 -> 0. B: part 1 -> 1 / (5 + 2)
    np.testing.assert_allclose(votes.superpoint_scores, [[0.3, 0.0], [0.0, 1 / 7]], atol=1e-6)
    assert votes.superpoint_label.tolist() == [-1, -1]  # nothing passes 0.5
    assert votes.box_superpoint_fraction.shape == (2, 2)
    np.testing.assert_allclose(votes.box_superpoint_fraction[:, 0], [3 / 5, 0.0], atol=1e-6)
    np.testing.assert_allclose(votes.box_superpoint_fraction[:, 1], [0.0, 1 / 2], atol=1e-6)


def test_labels_pass_threshold_and_points_inherit_them():
    screen, sps = _line_scene()
    visible = np.ones((2, 10), bool)
    dets = [ViewDetections(boxes=[[0, 40, 48, 60], [48, 40, 100, 60]], labels=[0, 1], scores=[0.9, 0.8])] * 2
    votes = vote(sps, _views(screen, visible), dets, ["a", "b"], VoteConfig())
    assert votes.superpoint_label.tolist() == [0, 1]
    assert votes.point_label.tolist() == [0] * 5 + [1] * 5
    assert votes.box_view.tolist() == [0, 0, 1, 1] and votes.box_label.tolist() == [0, 1, 0, 1]


def test_whole_object_boxes_are_dropped():
    screen, sps = _line_scene()
    visible = np.ones((2, 10), bool)
    dets = [ViewDetections(boxes=[[0, 0, 100, 100]], labels=[0], scores=[0.9])] * 2
    votes = vote(sps, _views(screen, visible), dets, ["a"], VoteConfig())
    assert votes.superpoint_label.tolist() == [-1, -1] and len(votes.box_label) == 0
    nine_of_ten = [ViewDetections(boxes=[[0, 0, 90, 100]], labels=[0], scores=[0.9])] * 2
    kept = vote(sps, _views(screen, visible), nine_of_ten, ["a"], VoteConfig())
    assert kept.superpoint_label.tolist() == [0, 0] and len(kept.box_label) == 2
    strict = vote(sps, _views(screen, visible), nine_of_ten, ["a"], VoteConfig(whole_object_fraction=0.9))
    assert strict.superpoint_label.tolist() == [-1, -1]


def test_boundary_points_are_outside_strict_rule():
    screen, sps = _line_scene()
    dets = [ViewDetections(boxes=[[5, 40, 45, 60]], labels=[0], scores=[1.0])]  # x = 5 and 45 on the edges
    votes = vote(sps, _views(screen[:1], np.ones((1, 10), bool)), dets, ["a"], VoteConfig())
    np.testing.assert_allclose(votes.superpoint_scores[0, 0], 3 / 5)


def test_small_parts_win_ties_only():
    scores = torch.tensor([[1.0, 1.0], [0.9, 0.6], [0.6, 0.9], [0.2, 0.3], [0.5, 0.5]])
    labels = choose_labels(scores, ["door", "handle"], VoteConfig())
    assert labels.tolist() == [1, 0, 1, -1, 1]
    plain = choose_labels(scores, ["door", "lid"], VoteConfig())
    assert plain.tolist() == [0, 0, 1, -1, 0]


def test_priority_rule_reproduces_the_authors_code():
    """bbox2seg.py: any small part >= 0.5 wins, scanning parts in reverse order; else argmax."""
    scores = torch.tensor([[0.9, 0.6, 0.7], [0.9, 0.4, 0.2], [0.2, 0.3, 0.1], [0.5, 0.5, 0.9]])
    config = VoteConfig(small_part_rule="priority")
    assert choose_labels(scores, ["door", "handle", "knob"], config).tolist() == [2, 0, -1, 2]
    assert choose_labels(scores, ["door", "handle", "lid"], config).tolist() == [1, 0, -1, 1]  # handle beats lid 0.9


def test_masks_replace_boxes():
    screen, sps = _line_scene()
    mask = np.zeros((1, 100, 100), bool)
    mask[0, :, 50:] = True  # right half only, although the box covers everything but the last point
    dets = [ViewDetections(boxes=[[0, 40, 90, 60]], labels=[0], scores=[1.0], masks=mask)]
    votes = vote(sps, _views(screen[:1], np.ones((1, 10), bool)), dets, ["a"], VoteConfig())
    assert votes.superpoint_label.tolist() == [-1, 0]


def test_empty_detections_leave_everything_unlabeled():
    screen, sps = _line_scene()
    votes = vote(sps, _views(screen, np.ones((2, 10), bool)), [ViewDetections.empty()] * 2, ["a"], VoteConfig())
    assert (votes.point_label == -1).all() and votes.boxes.shape == (0, 4)
    assert votes.box_superpoint_fraction.shape == (2, 0)


def test_out_of_range_labels_are_ignored():
    screen, sps = _line_scene()
    dets = [ViewDetections(boxes=[[0, 40, 100, 60]], labels=[7], scores=[1.0])]
    votes = vote(sps, _views(screen[:1], np.ones((1, 10), bool)), dets, ["a"], VoteConfig(whole_object_fraction=1.0))
    assert (votes.point_label == -1).all()


def test_mismatched_detection_arrays_raise():
    with pytest.raises(ValueError, match="lengths differ"):
        ViewDetections(boxes=[[0, 0, 1, 1]], labels=[0, 1], scores=[1.0])
