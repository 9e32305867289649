"""Instance grouping: adjacency, box-profile similarity, box confirmation, fallback for rejected merges, slabs."""

import numpy as np
import pytest
import torch

from partslip_core.config import InstanceConfig, VoteConfig
from partslip_core.instances import _split_by_boxes, box_profile_distance, group_instances
from partslip_core.types import RenderedViews, SemanticVotes, Superpoints, ViewDetections
from partslip_core.vote import vote


def _scene(gap: float):
    """Two 4 cm wide 'legs' along z, each split into a lower and an upper superpoint, ``gap`` apart.

    In the single view, screen x = 10 + 100 * x, y = 90 - 100 * z.
    """
    z = np.linspace(0.0, 0.6, 40)
    width = np.tile([0.0, 0.04], 20)  # each leg is 4 cm wide (two columns of points)
    legs = [np.stack([x0 + width, np.zeros_like(z), z], 1) for x0 in (0.0, 0.04 + gap)]
    xyz = np.concatenate(legs).astype(np.float32)
    sp = np.concatenate([np.repeat([0, 1], 20), np.repeat([2, 3], 20)])
    screen = np.stack([10 + 100 * xyz[:, 0], 90 - 100 * xyz[:, 2]], 1)[None].astype(np.float32)
    views = RenderedViews(images=np.zeros((1, 100, 100, 3), np.uint8), pixel_point_index=np.zeros((1, 100, 100), np.int64),
                          point_screen_xy=screen, point_visible=np.ones((1, 80), bool), view_angles=np.zeros((1, 2)))
    return xyz, Superpoints(point_superpoint=sp, num_superpoints=4), views


def _box_around(screen, mask, pad=1.0):
    pts = screen[0][mask]
    return [pts[:, 0].min() - pad, pts[:, 1].min() - pad, pts[:, 0].max() + pad, pts[:, 1].max() + pad]


def _run(xyz, sps, views, boxes, labels, config=InstanceConfig()):
    dets = [ViewDetections(boxes=boxes, labels=labels, scores=[0.9] * len(labels))]
    votes = vote(sps, views, dets, ["leg"], VoteConfig())
    return votes, group_instances(xyz, sps, votes, views, config)


def test_two_separate_legs_give_two_instances():
    xyz, sps, views = _scene(gap=0.5)
    a, b = np.arange(80) < 40, np.arange(80) >= 40
    votes, groups = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a), _box_around(views.point_screen_xy, b)], [0, 0])
    assert votes.superpoint_label.tolist() == [0, 0, 0, 0]
    assert len(groups.instance_label) == 2
    assert len(set(groups.point_instance[a])) == 1 and len(set(groups.point_instance[b])) == 1
    assert groups.point_instance[0] != groups.point_instance[79]
    np.testing.assert_allclose(groups.instance_score, [0.9, 0.9])


def test_touching_legs_with_separate_boxes_stay_apart():
    xyz, sps, views = _scene(gap=0.01)  # within adjacency distance
    a, b = np.arange(80) < 40, np.arange(80) >= 40
    _, groups = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a, 0.4),
                                       _box_around(views.point_screen_xy, b, 0.4)], [0, 0])
    assert len(groups.instance_label) == 2
    # with the box evidence ignored (huge tolerance) adjacency merges them into one
    _, merged = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a, 0.4),
                                       _box_around(views.point_screen_xy, b, 0.4)], [0, 0],
                     InstanceConfig(box_profile_distance=10.0, min_box_iou=0.0))
    assert len(merged.instance_label) == 1


def test_instance_without_matching_box_is_dropped():
    xyz, sps, views = _scene(gap=0.5)
    a, b = np.arange(80) < 40, np.arange(80) >= 40
    box_b = _box_around(views.point_screen_xy, b)
    box_b[0] -= 20  # a loose box: every point of leg B is inside (so B is labeled) but IoU with B's bounds < 0.5
    box_b[2] += 20
    votes, groups = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a), box_b], [0, 0])
    assert len(groups.instance_label) == 1
    assert (groups.point_instance[a] == 0).all()
    assert (groups.point_instance[b] == -1).all()


def test_unlabeled_superpoints_get_no_instance():
    xyz, sps, views = _scene(gap=0.5)
    _, groups = _run(xyz, sps, views, np.zeros((0, 4)), np.zeros(0, np.int64))
    assert len(groups.instance_label) == 0 and (groups.point_instance == -1).all()


# ---------------------------------------------------------------- issue 8: lost merges, slabs, profile distance

def _multi_view(xyz, sp, screens, visible, size=200):
    """Views of the given points plus a far 'floor' superpoint that every view sees outside every box (so a
    box around the part is not a whole-object box)."""
    k, floor = len(screens), 10
    xyz = np.concatenate([xyz, np.stack([np.linspace(3, 4, floor), np.zeros(floor), np.full(floor, -1.0)], 1)])
    sp = np.concatenate([sp, np.full(floor, sp.max() + 1)])
    screens = [np.concatenate([s, np.stack([np.linspace(150, 190, floor), np.full(floor, 195.0)], 1)]) for s in screens]
    visible = np.concatenate([np.asarray(visible, bool), np.ones((k, floor), bool)], axis=1)
    views = RenderedViews(images=np.zeros((k, size, size, 3), np.uint8), pixel_point_index=np.zeros((k, size, size), np.int64),
                          point_screen_xy=np.asarray(screens, np.float32), point_visible=np.asarray(visible, bool),
                          view_angles=np.zeros((k, 2)))
    return xyz.astype(np.float32), Superpoints(point_superpoint=sp, num_superpoints=int(sp.max()) + 1), views


def _bridged_legs():
    """Legs A (x 0-0.04) and B (x 0.15-0.19), 0.11 apart, and a leg-labelled piece X between them (x 0.05-0.14,
    adjacent to both). View 0 sees A and B (one box each); view 1 sees only X, under a loose box that labels it
    but matches its bounds poorly. No view sees X with A or B, so X links A and B into one group whose 2D
    bounds match no box: merge, then reject."""
    z = np.linspace(0.0, 0.6, 20)
    a = np.stack([np.tile([0.0, 0.04], 10), np.zeros(20), z], 1)
    b = a + [0.15, 0, 0]
    x = np.stack([np.linspace(0.05, 0.14, 10), np.zeros(10), np.full(10, 0.3)], 1)
    xyz = np.concatenate([a, b, x])
    sp = np.repeat([0, 1, 2], [20, 20, 10])
    screen = np.stack([10 + 500 * xyz[:, 0], 190 - 300 * xyz[:, 2]], 1)
    visible = np.stack([sp != 2, sp == 2])
    xyz, sps, views = _multi_view(xyz, sp, [screen, screen], visible)
    sp = sps.point_superpoint
    box = lambda m, pad: _box_around(views.point_screen_xy[:1], m, pad)  # noqa: E731
    loose = box(sp == 2, 1.0)
    loose[1] -= 60
    loose[3] += 60
    dets = [ViewDetections(boxes=[box(sp == 0, 1.0), box(sp == 1, 1.0)], labels=[0, 0], scores=[0.9, 0.8]),
            ViewDetections(boxes=[loose], labels=[0], scores=[0.7])]
    return xyz, sps, views, dets


def test_merge_then_reject_loses_both_legs_and_the_fallback_keeps_them():
    xyz, sps, views, dets = _bridged_legs()
    votes = vote(sps, views, dets, ["leg"], VoteConfig())
    assert votes.superpoint_label.tolist() == [0, 0, 0, -1]  # the floor is unlabeled
    reference = group_instances(xyz, sps, votes, views, InstanceConfig())
    assert len(reference.instance_label) == 0  # the merged group matches no box: both legs lost
    split = group_instances(xyz, sps, votes, views, InstanceConfig(unconfirmed="split"))
    assert len(split.instance_label) == 2
    a, b = split.point_instance[:20], split.point_instance[20:40]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0] and a[0] >= 0 and b[0] >= 0
    assert sorted(split.instance_score.tolist()) == pytest.approx([0.8, 0.9])


def test_split_by_boxes_assigns_superpoints_to_the_box_holding_most_of_them():
    """The last fallback: in the view whose boxes hold most of the failed group, each superpoint joins the box
    holding most of it; superpoints in no box of that view stay together."""
    votes = SemanticVotes(superpoint_scores=np.ones((4, 1), np.float32), superpoint_label=np.zeros(4, np.int64),
                          point_label=np.zeros(4, np.int64),
                          box_superpoint_fraction=np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.6, 0.3, 0.2],
                                                            [0.0, 0.0, 0.0]], np.float32),
                          box_view=np.array([0, 0, 1]), box_label=np.zeros(3, np.int64),
                          boxes=np.zeros((3, 4), np.float32), box_score=np.ones(3, np.float32))
    pieces = _split_by_boxes(np.zeros(4, np.int64), np.ones(4, bool), None, np.full(4, 10.0), votes)
    assert pieces[0] == pieces[2] and len({pieces[0], pieces[1], pieces[3]}) == 3


def _slab(gap: float = 0.05):
    """A tabletop's top face (z = 0.6) and bottom face (z = 0.6 - gap): view 0 (from above) sees only the top,
    view 1 (from below) only the bottom; each matches the tabletop box of its view."""
    x = np.linspace(0.0, 0.5, 20)
    top = np.stack([x, np.zeros(20), np.full(20, 0.6)], 1)
    bottom = top - [0, 0, gap]
    xyz = np.concatenate([top, bottom])
    sp = np.repeat([0, 1], 20)
    screen = np.stack([10 + 300 * xyz[:, 0], 100 + 100 * xyz[:, 1] + np.tile([0.0, 20.0], 20)], 1)
    xyz, sps, views = _multi_view(xyz, sp, [screen, screen], np.stack([sp == 0, sp == 1]))
    sp = sps.point_superpoint
    dets = [ViewDetections(boxes=[_box_around(views.point_screen_xy[:1], sp == k, 1.0)], labels=[0], scores=[0.9])
            for k in (0, 1)]
    return xyz, sps, views, dets


def test_slab_faces_stay_one_instance():
    xyz, sps, views, dets = _slab()
    votes = vote(sps, views, dets, ["tabletop"], VoteConfig())
    assert len(group_instances(xyz, sps, votes, views, InstanceConfig()).instance_label) == 2  # the reference splits it
    joined = group_instances(xyz, sps, votes, views, InstanceConfig(slab_distance=0.1))
    assert len(joined.instance_label) == 1 and (joined.point_instance[:40] == 0).all()
    assert len(group_instances(xyz, sps, votes, views, InstanceConfig(slab_distance=0.04)).instance_label) == 2


def test_slab_joining_keeps_neighbouring_legs_apart():
    """Two legs 5 cm apart, seen together with a box each: their union matches no box, so they stay two."""
    xyz, sps, views = _scene(gap=0.05)
    a, b = np.arange(80) < 40, np.arange(80) >= 40
    _, groups = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a), _box_around(views.point_screen_xy, b)],
                     [0, 0], InstanceConfig(slab_distance=0.1, unconfirmed="split"))
    assert len(groups.instance_label) == 2


def _profile_votes(fractions, box_view):
    fractions = np.asarray(fractions, np.float32)
    return SemanticVotes(superpoint_scores=np.ones((2, 1), np.float32), superpoint_label=np.zeros(2, np.int64),
                         point_label=np.zeros(2, np.int64), box_superpoint_fraction=fractions,
                         box_view=np.asarray(box_view, np.int64), box_label=np.zeros(len(box_view), np.int64),
                         boxes=np.zeros((len(box_view), 4), np.float32), box_score=np.ones(len(box_view), np.float32))


def test_box_profile_distance_normalizations():
    first, second = torch.tensor([0]), torch.tensor([1])
    votes = _profile_votes([[0.8, 0.2, 0.0], [0.4, 0.0, 0.0]], [0, 1, 1])
    both = torch.ones((2, 2), dtype=torch.bool)
    ours = box_profile_distance(votes, both, first, second, "active_boxes")
    authors = box_profile_distance(votes, both, first, second, "fraction_sum")
    np.testing.assert_allclose(ours.numpy(), [(0.4 + 0.2) / 2], atol=1e-6)  # the third box holds points of neither
    np.testing.assert_allclose(authors.numpy(), [0.6 / 1.0], atol=1e-6)
    apart = torch.tensor([[True, False], [False, True]])  # no view sees both superpoints
    assert box_profile_distance(votes, apart, first, second, "active_boxes").tolist() == [0.0]
    assert box_profile_distance(votes, apart, first, second, "fraction_sum").tolist() == [1.0]


def test_profile_normalization_decides_merging_without_shared_views():
    """Two adjacent superpoints of one leg, each seen in its own view only: ours merges them (adjacency decides),
    the authors' rule never merges without a view seeing both."""
    xyz, sps, views = _scene(gap=0.5)
    visible = np.zeros((2, 80), bool)
    visible[0, :20], visible[1, 20:40] = True, True
    xyz, sps, views = _multi_view(xyz, sps.point_superpoint, [views.point_screen_xy[0]] * 2, visible)
    leg = np.arange(90) < 40
    box = _box_around(views.point_screen_xy[:1], leg)
    dets = [ViewDetections(boxes=[box], labels=[0], scores=[0.9])] * 2
    votes = vote(sps, views, dets, ["leg"], VoteConfig())
    ours = group_instances(xyz, sps, votes, views, InstanceConfig(min_box_iou=0.0))
    authors = group_instances(xyz, sps, votes, views, InstanceConfig(min_box_iou=0.0, box_profile_normalization="fraction_sum"))
    assert len(set(ours.point_instance[:40])) == 1
    assert len(set(authors.point_instance[:40])) == 2


def test_sparse_fragments_of_one_leg_rejoin():
    """A far leg scanned sparsely: its two surviving fragments are 0.3 apart (not adjacent) and each too short
    to match the leg's box; a second leg's fragment nearby sits in its own box. regroup_distance joins the two
    fragments the boxes see alike, and only those."""
    z = np.concatenate([np.linspace(0.0, 0.15, 10), np.linspace(0.45, 0.6, 10)])
    leg = np.stack([np.tile([0.0, 0.04], 10), np.zeros(20), z], 1)
    other = np.stack([np.tile([0.3, 0.34], 5), np.zeros(10), np.linspace(0.0, 0.15, 10)], 1)
    xyz = np.concatenate([leg, other])
    sp = np.repeat([0, 1, 2], [10, 10, 10])
    screen = np.stack([10 + 300 * xyz[:, 0], 190 - 250 * xyz[:, 2]], 1)
    xyz, sps, views = _multi_view(xyz, sp, [screen], np.ones((1, 30), bool))
    sp = sps.point_superpoint
    dets = [ViewDetections(boxes=[_box_around(views.point_screen_xy, (sp == 0) | (sp == 1), 1.0),
                                  _box_around(views.point_screen_xy, sp == 2, 1.0)], labels=[0, 0], scores=[0.9, 0.8])]
    votes = vote(sps, views, dets, ["leg"], VoteConfig())
    assert votes.superpoint_label.tolist() == [0, 0, 0, -1]
    assert len(group_instances(xyz, sps, votes, views, InstanceConfig()).instance_label) == 1  # only the other leg
    joined = group_instances(xyz, sps, votes, views, InstanceConfig(regroup_distance=0.35))
    assert len(joined.instance_label) == 2
    assert len(set(joined.point_instance[:20])) == 1 and joined.point_instance[0] >= 0
    assert joined.point_instance[20] not in set(joined.point_instance[:20])
    assert len(group_instances(xyz, sps, votes, views, InstanceConfig(regroup_distance=0.2)).instance_label) == 1


def test_points_relabelled_one_by_one_leave_their_superpoints_instance():
    """vote.refine_points can give a point another label than its superpoint: it must not stay in an
    instance of the superpoint's label (an instance's points carry its label; the node checks this)."""
    xyz, sps, views = _scene(gap=0.5)
    a, b = np.arange(80) < 40, np.arange(80) >= 40
    votes, _ = _run(xyz, sps, views, [_box_around(views.point_screen_xy, a), _box_around(views.point_screen_xy, b)], [0, 0])
    votes.point_label = votes.point_label.copy()
    votes.point_label[:3] = 1  # refined to another part
    groups = group_instances(xyz, sps, votes, views, InstanceConfig())
    assert len(groups.instance_label) == 2 and (groups.point_instance[:3] == -1).all()
    assert (groups.point_instance[3:40] >= 0).all() and (groups.point_instance[40:] >= 0).all()


def test_bounds_gap_and_view_bounds_match_plain_formulas():
    """The vectorized helpers against their definitions (broadcast gap; a loop over groups and views)."""
    from partslip_core.instances import bounds_gap, instance_view_bounds
    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.random((30, 3)).astype(np.float32))
    high = low + torch.from_numpy(rng.random((30, 3)).astype(np.float32)) * 0.3
    gap = torch.maximum(low[:, None, :] - high[None, :, :], low[None, :, :] - high[:, None, :]).amax(dim=2)
    assert torch.equal(bounds_gap(low, high), gap) and (gap <= 0).any() and (gap > 0).any()
    screen = torch.from_numpy(rng.random((4, 200, 2)).astype(np.float32) * 100)
    visible = torch.from_numpy(rng.random((4, 200)) > 0.4)
    group = torch.from_numpy(rng.integers(-1, 6, 200))
    group[group == 5] = -1  # group 5 has no points: never seen
    bounds, seen = instance_view_bounds(group, 6, screen, visible)
    assert bounds.shape == (6, 4, 4) and seen.shape == (6, 4) and not seen[5].any()
    for g in range(6):
        for view in range(4):
            points = screen[view][(group == g) & visible[view]]
            assert bool(seen[g, view]) == (len(points) > 0)
            if len(points):
                expected = torch.cat([points.min(dim=0).values, points.max(dim=0).values])
                assert torch.equal(bounds[g, view], expected)


def test_pieces_vote_without_point_refinement_is_the_full_vote(rendered_objects):
    """split_for_instances re-votes on the grid pieces with refine_points off (their point labels are inherited)
    and with the first vote's box evidence: the same piece votes as the full re-vote."""
    from dataclasses import fields
    from partslip_core.config import PipelineConfig
    from partslip_core.pipeline import split_for_instances
    from partslip_core.superpoints import split_by_grid
    from partslip_core.vote_evidence import collect_box_evidence
    canonical, views, dets, sps, names = rendered_objects("cabinet")
    config = PipelineConfig()
    config.vote = VoteConfig(whole_object_rule="explained", uncovered_weight=0.25, prefer_smaller_boxes=True,
                             part_view_normalization=True, refine_points=True)  # config/segment.yaml's
    config.instances.split_extent = 0.2
    votes = vote(sps, views, dets, names, config.vote)
    evidence = collect_box_evidence(views, dets, names, config.vote)
    pieces, piece_votes, parent = split_for_instances(canonical.xyz, sps, votes, views, dets, names, config, "cpu",
                                                      evidence)
    grid = split_by_grid(canonical.xyz, sps.point_superpoint, 0.2)
    assert np.array_equal(pieces.point_superpoint, grid)
    full = vote(pieces, views, dets, names, config.vote)
    full.superpoint_label, full.point_label = votes.superpoint_label[parent], votes.point_label
    for field in fields(full):
        assert np.array_equal(getattr(piece_votes, field.name), getattr(full, field.name)), field.name
