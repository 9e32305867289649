"""Instance grouping: adjacency, box-profile similarity, box confirmation."""

import numpy as np

from partslip_core.config import InstanceConfig, VoteConfig
from partslip_core.instances import group_instances
from partslip_core.types import RenderedViews, Superpoints, ViewDetections
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
