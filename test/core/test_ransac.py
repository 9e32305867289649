"""Plane RANSAC (partslip_core.ransac): the same plane and inliers as open3d's segment_plane on one thread, on
object-only scans, RGB-D and lidar scenes and small clouds, and sane behaviour without open3d."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core import ransac

from .conftest import open3d_plane, scene_points


def test_the_triples_are_open3d_draws(open3d_one_thread):
    """One iteration: the plane is the one through the first triple, so the inliers show which points were drawn
    (seeds 230, 711, ...: libstdc++'s Lemire mapping and a division-based one disagree on the first triple)."""
    points = np.random.default_rng(5).normal(size=(5000, 3))
    for seed in (0, 1, 230, 711, 828, 1199, 2 ** 31 - 1):
        _, expected = open3d_plane(open3d_one_thread, points, 0.3, 1, seed)
        triple = ransac.open3d_triples(seed, len(points), 1)[0]
        assert len(set(triple.tolist())) == 3
        plane, valid = ransac._triangle_planes(points, triple[None])
        np.testing.assert_array_equal(np.flatnonzero(ransac.plane_distances(points, plane)[:, 0] < 0.3), expected)


@pytest.mark.parametrize("kind, category, seed", [
    ("object", "chair", 0), ("object", "lamp", 3), ("object", "cart", 4), ("object", "table", 2),
    ("rgbd", "mug", 0), ("rgbd", "kettle", 1), ("lidar", "bottle", 2),
])
def test_segment_plane_is_open3d_on_one_thread(open3d_one_thread, kind, category, seed):
    """Bit for bit: the refitted plane and the inlier list, for 5000-point samples (the early stop triggers on
    the scenes, not on the objects), small samples (index redraws) and few iterations."""
    xyz = scene_points(kind, category, seed)
    rng = np.random.default_rng(seed)
    for size, iterations in ((5000, 1000), (300, 200), (40, 50)):
        sample = xyz[rng.choice(len(xyz), min(size, len(xyz)), replace=False)]
        expected_plane, expected_inliers = open3d_plane(open3d_one_thread, sample, 0.01, iterations, seed + size)
        plane, inliers = ransac.segment_plane(sample, 0.01, iterations, seed + size)
        np.testing.assert_array_equal(inliers, expected_inliers)
        np.testing.assert_array_equal(plane, expected_plane)


def test_segment_plane_finds_a_noisy_plane_and_handles_degenerate_input():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(-1, 1, (3000, 2)), rng.normal(0, 0.002, 3000)]
    clutter = rng.uniform(-1, 1, (1000, 3))
    plane, inliers = ransac.segment_plane(np.concatenate([floor, clutter]), 0.01, 200, 0)
    assert abs(abs(plane[2]) - 1) < 1e-4 and abs(plane[3]) < 1e-3
    assert (inliers < 3000).mean() > 0.99 and len(inliers) > 2900
    again = ransac.segment_plane(np.concatenate([floor, clutter]), 0.01, 200, 0)
    np.testing.assert_array_equal(again[1], inliers)  # deterministic given the seed
    line = np.c_[np.linspace(0, 1, 50), np.zeros(50), np.zeros(50)]  # every triple colinear: no plane
    plane, inliers = ransac.segment_plane(line, 0.01, 20, 0)
    assert np.isnan(plane).all() and inliers.size == 0
    assert np.unique(ransac.open3d_triples(3, 4, 100), axis=None).size == 4  # 4 points: many redraws, all distinct
    assert (np.diff(np.sort(ransac.open3d_triples(3, 4, 100), axis=1), axis=1) > 0).all()
    with pytest.raises(ValueError, match="at least 3"):
        ransac.open3d_triples(0, 2, 10)
