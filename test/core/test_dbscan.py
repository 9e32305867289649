"""DBSCAN (partslip_core.dbscan): open3d's cluster_dbscan labels exactly, and its core / border / noise rules
on a hand-made cloud (no open3d needed for that one)."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core.dbscan import dbscan_labels

from .conftest import scene_points


@pytest.mark.parametrize("kind, category, seed", [
    ("object", "chair", 0), ("object", "table", 2), ("object", "cart", 4), ("rgbd", "kettle", 1),
    ("lidar", "bottle", 2),
])
def test_labels_are_open3d_labels(kind, category, seed):
    o3d = pytest.importorskip("open3d")
    xyz = scene_points(kind, category, seed)
    top = xyz[xyz[:, 2] > np.median(xyz[:, 2])]  # the upper half: several clusters, noise and border points
    for points in (top, xyz[::3]):
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        for eps, min_points in ((0.02, 10), (0.01, 10), (0.03, 40)):
            expected = np.asarray(cloud.cluster_dbscan(eps=eps, min_points=min_points), np.int64)
            np.testing.assert_array_equal(dbscan_labels(points, eps, min_points), expected)


def test_core_border_and_noise_rules():
    """eps 1.5, min_points 4 (the point itself included). Two chains 0.7 apart along x, 2.4 apart end to end; a
    point P midway has 2 neighbours (one core point of each chain) + itself: a border point of both, so it joins
    the cluster numbered first, i.e. the chain whose first core point comes first. Chain ends (3 neighbours)
    are border points of their own chain; a lone point is noise."""
    right = np.c_[[4.0, 3.3, 2.6, 1.9, 1.2], np.zeros(5), np.zeros(5)]
    left = -right
    middle, lone = [[0.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]]
    labels = dbscan_labels(np.concatenate([right, left, middle, lone]), 1.5, 4)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [0, -1]
    labels = dbscan_labels(np.concatenate([left, right, middle, lone]), 1.5, 4)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [0, -1]  # P follows the chain listed first
    labels = dbscan_labels(np.concatenate([middle, left, right]), 1.5, 4)
    assert labels.tolist() == [0] + [0] * 5 + [1] * 5  # P first, but not core: it starts nothing
    assert dbscan_labels(np.zeros((0, 3)), 1.0, 3).shape == (0,)
    assert (dbscan_labels(np.eye(3) * 10, 1.0, 2) == -1).all()
