"""Superpoints: both backends give pure, reasonably sized segments; helpers behave."""

import numpy as np
import pytest

from partslip_core.config import NormalizeConfig, SuperpointConfig
from partslip_core.evaluate import superpoint_purity as purity
from partslip_core.normalize import normalize
from partslip_core.superpoints import (compute_superpoints, cut_pursuit_available, edge_weights, estimate_normals,
                                       knn_graph, merge_small_components)
from partslip_core.types import PointCloud


def _canonical(obj):
    return normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), NormalizeConfig())


@pytest.mark.parametrize("backend", ["cut_pursuit", "graph"])
@pytest.mark.parametrize("category", ["chair", "table", "mug", "lamp"])
def test_superpoints_are_pure_and_not_trivial(backend, category, synthetic_objects):
    if backend == "cut_pursuit" and not cut_pursuit_available():
        pytest.skip("pycut-pursuit not importable")
    obj = synthetic_objects[category]
    canonical = _canonical(obj)
    sps = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(backend=backend))
    assert sps.point_superpoint.shape == (obj.num_points,) and sps.point_superpoint.min() == 0
    assert sps.num_superpoints == sps.point_superpoint.max() + 1 == len(np.unique(sps.point_superpoint))
    assert 5 <= sps.num_superpoints <= obj.num_points // 11
    assert np.bincount(sps.point_superpoint).min() > 10  # small components were merged
    assert purity(sps.point_superpoint, obj.point_label) >= 0.93


def test_cut_pursuit_is_deterministic(synthetic_objects):
    if not cut_pursuit_available():
        pytest.skip("pycut-pursuit not importable")
    canonical = _canonical(synthetic_objects["chair"])
    first = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(backend="cut_pursuit"))
    second = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(backend="cut_pursuit"))
    assert np.array_equal(first.point_superpoint, second.point_superpoint)


def test_regularization_controls_granularity(synthetic_objects):
    if not cut_pursuit_available():
        pytest.skip("pycut-pursuit not importable")
    canonical = _canonical(synthetic_objects["chair"])
    fine = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(regularization=0.01))
    coarse = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(regularization=0.5))
    assert fine.num_superpoints > coarse.num_superpoints


def test_normals_of_a_plane_and_a_sphere():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.random((2000, 2)), np.zeros(2000)]
    normals = estimate_normals(plane, radius=0.1, max_nn=30)
    np.testing.assert_allclose(np.abs(normals[:, 2]), 1.0, atol=1e-4)
    sphere = rng.normal(size=(3000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    normals = estimate_normals(sphere, radius=0.2, max_nn=30)
    assert (np.einsum("nd,nd->n", normals, sphere) > 0.95).mean() > 0.99  # outward


def test_knn_graph_and_edge_weights():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0]], np.float32)
    source, target, length = knn_graph(xyz, k=1)
    assert source.tolist() == [0, 1, 2] and target.tolist() == [1, 0, 1]
    np.testing.assert_allclose(length, [1, 1, 2])
    features = np.array([[0.0], [0.0], [1.0]], np.float32)
    weights = edge_weights(features, source, target, length)
    # edge 0-1: d/mean(d) = 0.75, f = 0 -> (1 / 1.75)^2 ; edge 2-1: d 1.5, f/mean(f) = 3
    np.testing.assert_allclose(weights, [(1 / 1.75) ** 2, (1 / 1.75) ** 2, (1 / 5.5) ** 2], rtol=1e-5)


def test_small_components_join_their_nearest_large_neighbour():
    xyz = np.r_[np.zeros((20, 3)), np.ones((20, 3)) * 5, [[0.1, 0, 0], [4.9, 5, 5]]]
    component = np.r_[np.zeros(20, int), np.ones(20, int), [2, 3]]
    merged = merge_small_components(xyz, component, min_size=10)
    assert merged[-2] == merged[0] and merged[-1] == merged[20] and merged.max() == 1


def test_tiny_cloud_is_one_superpoint():
    sps = compute_superpoints(np.random.default_rng(0).random((5, 3)).astype(np.float32), np.zeros((5, 3), np.float32),
                              None, SuperpointConfig())
    assert sps.num_superpoints == 1 and (sps.point_superpoint == 0).all()


def test_cut_pursuit_does_not_depend_on_thread_settings(synthetic_objects):
    """pycut-pursuit's parallel and sequential splits differ; we always run the parallel one."""
    if not cut_pursuit_available():
        pytest.skip("pycut-pursuit not importable")
    import torch
    canonical = _canonical(synthetic_objects["cabinet"])
    previous = torch.get_num_threads()
    results = []
    try:
        for torch_threads, budget in [(1, 1), (2, 2), (1, 0), (3, 1)]:
            torch.set_num_threads(torch_threads)
            results.append(compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(),
                                               threads=budget).point_superpoint)
            assert torch.get_num_threads() == torch_threads  # restored
    finally:
        torch.set_num_threads(previous)
    assert all(np.array_equal(results[0], other) for other in results[1:])


def test_purity_counts_the_majority_label_of_each_superpoint():
    superpoints = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([5, 5, -1, 7, 7, -1])
    assert purity(superpoints, labels) == pytest.approx(5 / 6)
    assert purity(np.arange(6), labels) == 1.0 and purity(np.zeros(6, int), labels) == pytest.approx(2 / 6)
