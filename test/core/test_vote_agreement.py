"""vote.view_agreement_fill (partslip_core/vote_evidence.agreeing_views): part_view_normalization keeps a part's
per-part denominator only when one of its boxes agrees in 3D with its other views' boxes. A real part's boxes enclose the same
points in every view, so the points they share span each box; random false positives of a part the object does
not have (one random-label box per view, docs/quality.md) overlap on a corner at most."""

import numpy as np

from partslip_core.config import PipelineConfig, VoteConfig
from partslip_core.types import RenderedViews, Superpoints, ViewDetections
from partslip_core.vote import vote
from partslip_core.vote_evidence import collect_box_evidence

NUM_VIEWS = 10
SEAT = [80, 0, 100, 100]  # boxed in every view: the points at x = 85, 95
ARM = [0, 0, 50, 50]  # the 25 points with x, y < 50
ARM_JITTERED = [[0, 0, 50, 50], [2, 3, 55, 48], [0, 0, 46, 52]]  # a real part, edges moved by up to 10%
ARM_FALSE = [[0, 0, 50, 50], [30, 30, 80, 80], [20, 35, 60, 95]]  # three random boxes: they share 2 points


def _grid_views() -> RenderedViews:
    """A 10 x 10 grid of points at x, y = 5, 15, ..., 95, at the same pixels and visible in every view (so a
    point's view-to-view agreement is its boxes' overlap on screen)."""
    xs, ys = np.meshgrid(np.arange(10) * 10 + 5.0, np.arange(10) * 10 + 5.0)
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    return RenderedViews(images=np.zeros((NUM_VIEWS, 100, 100, 3), np.uint8),
                         pixel_point_index=np.full((NUM_VIEWS, 100, 100), -1, np.int64),
                         point_screen_xy=np.stack([grid] * NUM_VIEWS).astype(np.float32),
                         point_visible=np.ones((NUM_VIEWS, 100), bool), view_angles=np.zeros((NUM_VIEWS, 2), np.float32))


def _detections(arm_boxes) -> list[ViewDetections]:
    """"seat" (label 1) boxed in every view, "arm" (label 0) in the first len(arm_boxes) views."""
    dets = []
    for view in range(NUM_VIEWS):
        boxes = [SEAT] + ([arm_boxes[view]] if view < len(arm_boxes) else [])
        dets.append(ViewDetections(boxes=np.asarray(boxes, np.float32), labels=np.asarray([1, 0][:len(boxes)], np.int64),
                                   scores=np.full(len(boxes), 0.9, np.float32)))
    return dets


def _config(fill: float) -> VoteConfig:
    return VoteConfig(part_view_normalization=True, min_part_views=3, view_agreement_fill=fill)


def _arm_points(arm_boxes, fill: float) -> int:
    points = Superpoints(point_superpoint=np.arange(100), num_superpoints=100)  # every point votes alone
    labels = vote(points, _grid_views(), _detections(arm_boxes), ["arm", "seat"], _config(fill)).point_label
    return int((labels == 0).sum())


def test_agreeing_views_count_a_real_parts_views_and_not_random_boxes():
    for arm_boxes, expected in (([ARM] * 3, [3, 10]), (ARM_JITTERED, [3, 10]), (ARM_FALSE, [0, 10])):
        evidence = collect_box_evidence(_grid_views(), _detections(arm_boxes), ["arm", "seat"], _config(0.3)).evidence
        assert evidence.agreeing_views.tolist() == expected, arm_boxes
    # off (0, the reference): not computed, every view with a box counts
    assert collect_box_evidence(_grid_views(), _detections(ARM_FALSE), ["arm", "seat"], _config(0.0)).evidence \
        .agreeing_views is None


def test_a_part_seen_in_three_views_keeps_its_points_when_its_boxes_agree():
    """A part boxed in 3 of 10 views (the detector missed it in the rest) keeps the per-part normalisation."""
    assert _arm_points(ARM_JITTERED, 0.3) == _arm_points(ARM_JITTERED, 0.0) == 25  # each in 2 or 3 of the boxes


def test_false_positives_that_overlap_on_a_corner_label_nothing():
    """Three random "arm" boxes: 15 points lie in two or three of them and, normalised over the 3 views, score
    2/3 or 1 and become arm. With the agreement rule (the 2 points all three share span a corner of each box)
    the part keeps the plain denominator: at most 3 of 10 views, below the threshold."""
    assert _arm_points(ARM_FALSE, 0.0) == 15
    assert _arm_points(ARM_FALSE, 0.3) == 0


def test_the_reference_preset_leaves_view_agreement_off():
    assert PipelineConfig().vote.view_agreement_fill == 0.0
