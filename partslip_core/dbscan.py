"""DBSCAN that returns exactly open3d's ``PointCloud.cluster_dbscan`` labels, without open3d.

open3d (``PointCloudCluster.cpp``): a point's neighbours are the points with squared distance < eps^2
(nanoflann radius search, the point itself included); a point with at least ``min_points`` neighbours is
a core point; clusters grow from core points only, are numbered in the order of their first core point,
and a non-core point next to several clusters joins the one numbered first (-1: next to no core point).
Here: the neighbour pairs from one ``cKDTree.query_pairs`` (a hair wider, then the exact test in open3d's
arithmetic), connected components of the core-core pairs (scipy), the smallest neighbouring label for
the others. Equal to open3d's labels on every scene the tests try (``test/core/test_scene.py``); the
cost is about open3d's on one thread (both spend it on the radius search). Arrays: xyz (N, 3) float64.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def neighbour_pairs(xyz: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(P,) int64 first < second: every pair with squared distance < eps^2, computed as nanoflann does."""
    tree = cKDTree(xyz, balanced_tree=False, compact_nodes=False)  # ~2x faster to build, same answers
    pairs = tree.query_pairs(eps * (1 + 1e-9), output_type="ndarray")  # a superset: its test is <= and rounds
    first, second = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    columns = np.ascontiguousarray(xyz.T)
    squared = np.zeros(first.shape[0])
    for column in columns:  # ((0 + dx^2) + dy^2) + dz^2, as nanoflann's L2 metric adds them
        delta = column[first] - column[second]
        squared += delta * delta
    close = squared < eps * eps
    return first[close], second[close]


def dbscan_labels(xyz: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """(N,) int64 open3d ``cluster_dbscan(eps, min_points)`` labels: 0, 1, ... per cluster, -1 for noise."""
    num = xyz.shape[0]
    labels = np.full(num, -1, np.int64)
    if num == 0:
        return labels
    first, second = neighbour_pairs(np.asarray(xyz, np.float64), eps)
    core = 1 + np.bincount(first, minlength=num) + np.bincount(second, minlength=num) >= min_points
    if not core.any():
        return labels
    both = core[first] & core[second]
    rows, cols = first[both], second[both]
    order = np.argsort(rows, kind="stable")
    row_starts = np.r_[0, np.cumsum(np.bincount(rows, minlength=num))]
    graph = csr_matrix((np.ones(rows.size, np.int8), cols[order], row_starts), shape=(num, num))
    _, component = connected_components(graph, directed=False)
    core_index = np.flatnonzero(core)
    ids, first_seen = np.unique(component[core_index], return_index=True)
    rank = np.empty(int(component.max()) + 1, np.int64)
    rank[ids[np.argsort(first_seen)]] = np.arange(ids.size)  # clusters numbered by their first core point
    labels[core_index] = rank[component[core_index]]
    mixed = core[first] != core[second]  # a core point and a non-core one: the latter joins the lowest label
    border = np.where(core[first[mixed]], second[mixed], first[mixed])
    offered = labels[np.where(core[first[mixed]], first[mixed], second[mixed])]
    if border.size:
        lowest = np.full(num, np.iinfo(np.int64).max)
        np.minimum.at(lowest, border, offered)
        labels[border] = lowest[border]
    return labels
