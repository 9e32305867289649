"""vote.specific_margin_per_miss (docs/quality.md, "Third round"): a small part inside a big part's box wins
within a margin that grows with the detector's estimated miss rate of that part, and only when the boxes
fit the points voted for them loosely (a jittery detector); exact boxes keep the tie rule."""

import numpy as np
import torch

from partslip_core.config import PipelineConfig, VoteConfig
from partslip_core.types import RenderedViews, Superpoints, ViewDetections
from partslip_core.vote import vote
from partslip_core.vote_cleanup import box_looseness, nested_parts, specific_margins

# points 0-4: a bulb around (50, 50); 5-9: the shade around it; 10: a point in no box (so the shade's box is
# not a whole-object box)
SCREEN = np.array([[45, 45], [55, 45], [45, 55], [55, 55], [50, 50],
                   [20, 20], [80, 20], [20, 80], [80, 80], [50, 80], [98, 98]], np.float32)
BULB_BOX = [44, 44, 56, 56]
TIGHT_SHADE = [19.5, 19.5, 80.5, 80.5]  # edges half a pixel outside the shade's points: a gap of 0.008
LOOSE_SHADE = [5, 5, 95, 95]  # 15 px beyond them on every side: 15 / 90 = 0.167


def _views(num_views: int) -> RenderedViews:
    n = len(SCREEN)
    return RenderedViews(images=np.zeros((num_views, 100, 100, 3), np.uint8),
                         pixel_point_index=np.full((num_views, 100, 100), -1, np.int64),
                         point_screen_xy=np.stack([SCREEN] * num_views), point_visible=np.ones((num_views, n), bool),
                         view_angles=np.zeros((num_views, 2), np.float32))


def _dets(boxes, labels) -> ViewDetections:
    return ViewDetections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                          scores=np.full(len(labels), 0.9, np.float32))


def _scene(shade_box):
    """5 views; the bulb's box is missed in one: bulb score 0.8 against the shade's 1.0 on the bulb's points;
    the bulb's estimated miss rate is 1 - 4 / 5 = 0.2."""
    dets = [_dets([shade_box, BULB_BOX], [0, 1])] * 4 + [_dets([shade_box], [0])]
    sps = Superpoints(point_superpoint=np.array([0] * 5 + [1] * 5 + [2], np.int64), num_superpoints=3)
    return sps, _views(5), dets


def _bulb_label(shade_box, **options) -> int:
    sps, views, dets = _scene(shade_box)
    options = {"specific_margin_max": 0.5, **options}
    votes = vote(sps, views, dets, ["shade", "bulb"], VoteConfig(prefer_smaller_boxes=True, **options))
    assert votes.superpoint_label[1] == 0  # the shade keeps its own points in every case
    return int(votes.superpoint_label[0])


def test_a_missed_small_part_wins_within_its_miss_rate_margin_when_boxes_are_loose():
    assert _bulb_label(LOOSE_SHADE) == 0  # plain tie rule: 0.8 < 1.0
    assert _bulb_label(LOOSE_SHADE, specific_margin_per_miss=1.5) == 1  # margin 1.5 x 0.2 = 0.3 (cap 0.5 here)
    assert _bulb_label(LOOSE_SHADE, specific_margin_per_miss=0.5) == 0  # margin 0.1: 0.8 is not within it
    assert _bulb_label(LOOSE_SHADE, specific_margin_per_miss=1.5, specific_margin_max=0.1) == 0  # capped


def test_tight_boxes_keep_the_tie_rule():
    """Exact boxes that a detector sometimes drops: no margin, the shade keeps the bulb's points here; the
    looseness gate is what decides (gate 0 -> the margin applies)."""
    assert _bulb_label(TIGHT_SHADE, specific_margin_per_miss=1.5) == 0
    assert _bulb_label(TIGHT_SHADE, specific_margin_per_miss=1.5, specific_margin_looseness=0.0) == 1


def test_box_looseness_measures_the_gap_between_boxes_and_their_points():
    class Boxes:  # one view's kept boxes: the shade's box over every point, all labelled shade
        view, labels = 0, torch.tensor([0])
        inside = torch.ones((1, len(SCREEN)), dtype=torch.bool)

    labels = torch.zeros(len(SCREEN), dtype=torch.long)
    labels[10] = -1
    screen = torch.as_tensor(SCREEN)[None]
    tight = box_looseness([Boxes], [torch.tensor([TIGHT_SHADE])], screen, labels)
    loose = box_looseness([Boxes], [torch.tensor([LOOSE_SHADE], dtype=torch.float32)], screen, labels)
    assert abs(tight - 0.5 / 61) < 1e-4 and abs(loose - 15 / 90) < 1e-4
    assert np.isnan(box_looseness([Boxes], [torch.tensor([TIGHT_SHADE])], screen, torch.full_like(labels, 1)))


def test_margins_follow_the_miss_rate_and_are_capped():
    labels = [torch.tensor([0, 1])] * 4 + [torch.tensor([0])] * 6  # part 1 missed in 6 of 10 views
    config = VoteConfig(specific_margin_per_miss=0.5)
    margins = specific_margins(labels, 10, 2, config, torch.device("cpu"))
    np.testing.assert_allclose(margins.numpy(), [0.15, 0.15], atol=1e-6)  # part 0 at the median 0.3; 0.3 capped
    np.testing.assert_allclose(specific_margins(labels, 10, 2, VoteConfig(specific_margin_per_miss=0.2),
                                                torch.device("cpu")).numpy(), [0.06, 0.12], atol=1e-6)
    assert specific_margins(labels, 10, 2, VoteConfig(), torch.device("cpu")) is None
    assert PipelineConfig().vote.specific_margin_per_miss == 0.0  # off in the reference preset


# vote.nested_part_margin (docs/quality.md, "Fourth round"): the bulb's boxes lie inside the shade's box
BESIDE_SHADE = [70, 44, 110, 56]  # a box half outside the loose shade's box: not nested


def test_nested_parts_are_those_inside_another_parts_box_in_most_views():
    shade = torch.tensor([LOOSE_SHADE], dtype=torch.float32)
    inside = [torch.tensor([0, 1])] * 3, [torch.cat([shade, torch.tensor([BULB_BOX], dtype=torch.float32)])] * 3
    assert nested_parts(*inside, 2).tolist() == [False, True]  # the bulb in the shade, not the shade in the bulb
    beside = [torch.tensor([0, 1])] * 3, [torch.cat([shade, torch.tensor([BESIDE_SHADE], dtype=torch.float32)])] * 3
    assert nested_parts(*beside, 2).tolist() == [False, False]
    once = [torch.tensor([0, 1])], [torch.cat([shade, torch.tensor([BULB_BOX], dtype=torch.float32)])]
    assert nested_parts(*once, 2).tolist() == [False, False]  # one box is not enough to tell


def _nested_scene(shade_box):
    """5 views: the bulb is boxed in 4 (twice in one: a duplicate), so its estimated miss rate is
    1 - 5 / (5 x 2) = 0.5 and its score on its own points 0.8 against the shade's 1.0."""
    two = _dets([shade_box, BULB_BOX, BULB_BOX], [0, 1, 1])
    dets = [two] + [_dets([shade_box, BULB_BOX], [0, 1])] * 3 + [_dets([shade_box], [0])]
    sps = Superpoints(point_superpoint=np.array([0] * 5 + [1] * 5 + [2], np.int64), num_superpoints=3)
    return sps, _views(5), dets


def _nested_bulb_label(shade_box, **options) -> int:
    sps, views, dets = _nested_scene(shade_box)
    votes = vote(sps, views, dets, ["shade", "bulb"], VoteConfig(prefer_smaller_boxes=True, **options))
    assert votes.superpoint_label[1] == 0  # the shade keeps its own points in every case
    return int(votes.superpoint_label[0])


def test_a_nested_part_wins_within_its_margin_with_loose_boxes_and_enough_score():
    assert _nested_bulb_label(LOOSE_SHADE) == 0  # off: the tie rule, 0.8 < 1.0
    assert _nested_bulb_label(LOOSE_SHADE, nested_part_margin=0.25) == 1  # margin min(0.25, 0.5): 0.8 >= 0.75
    assert _nested_bulb_label(LOOSE_SHADE, nested_part_margin=0.1) == 0  # margin 0.1: 0.8 < 0.9
    assert _nested_bulb_label(LOOSE_SHADE, nested_part_margin=0.25, nested_part_min_score=0.85) == 0  # 0.8 < 0.85
    assert _nested_bulb_label(TIGHT_SHADE, nested_part_margin=0.25) == 0  # tight (exact) boxes: the tie rule
    assert PipelineConfig().vote.nested_part_margin == 0.0  # off in the reference preset
