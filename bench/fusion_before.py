"""The fusion path as it was before issue 11's second fusion pass (commit be00afa), verbatim, for
``bench_fusion.py``'s "before" column and nothing else: row-form ``voxelize``, the sorted-key
``grid_neighborhood_sums`` / ``voxel_inliers``, and the open3d RANSAC / DBSCAN of ``scene.fit_plane`` /
``scene.cluster_labels`` (their numpy fallbacks, which gave other planes and clusters, left out).
``isolate_object`` below runs today's ``partslip_core.scene.isolate_object`` with these two swapped in, so
everything else (planes loop, hull tests, cluster choice) is shared by both columns.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import open3d as o3d

from partslip_core import scene
from partslip_core.filters import VoxelCloud, _packed_keys, column_max, column_min

RANSAC_SAMPLE = scene.RANSAC_SAMPLE


def voxelize(xyz: np.ndarray, rgb: Optional[np.ndarray], extras: dict[str, np.ndarray], voxel: float) -> VoxelCloud:
    """Average xyz/rgb per voxel of edge ``voxel`` (> 0); extras take the value of the point nearest the
    voxel's mean (ties: the earlier point). One sort of packed int64 keys, then segment sums."""
    if voxel <= 0:
        raise ValueError(f"voxel size must be > 0; got {voxel}")
    if xyz.shape[0] == 0:
        return VoxelCloud(xyz, rgb, dict(extras))
    lower, upper = column_min(xyz), column_max(xyz)
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):  # NaN and Inf reach min/max
        raise ValueError("voxelize needs finite coordinates: drop NaN/Inf rows first (filters.finite_mask)")
    scale = np.asarray(1.0 / voxel, xyz.dtype)
    cells = ((xyz - lower) * scale).astype(np.int64)  # >= 0, so truncation is floor
    dims = ((upper - lower) * scale).astype(np.int64) + 1  # the same arithmetic: the largest cell + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"cloud spans {dims.tolist()} voxels of {voxel} m: too many for int64 keys; crop it "
                         "or use a larger voxel size")
    key = _packed_keys(cells, dims)
    if float(np.prod(dims.astype(np.float64))) * key.shape[0] < 2.0 ** 62:
        order = np.argsort(key * key.shape[0] + np.arange(key.shape[0]))  # = a stable sort, ~2x faster
    else:
        order = np.argsort(key, kind="stable")  # stable: ties in distance below resolve to the earlier point
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    points = np.diff(np.r_[starts, key.shape[0]])

    sorted_xyz = xyz[order]

    def mean(values: np.ndarray, dtype) -> np.ndarray:
        return (np.add.reduceat(values.astype(dtype), starts, axis=0) / points[:, None]).astype(np.float32)

    centroids = mean(sorted_xyz, np.float64)
    colors = None if rgb is None else mean(rgb[order], np.float32)  # colour sums need no float64
    cloud = VoxelCloud(centroids, colors, {}, cells[order[starts]], points)
    if extras:
        group = np.repeat(np.arange(starts.shape[0]), points)  # voxel of each sorted point
        offset = sorted_xyz - centroids[group]
        distance = np.einsum("ij,ij->i", offset, offset)
        nearest = distance == np.minimum.reduceat(distance, starts)[group]
        hits = np.flatnonzero(nearest)
        first = hits[np.r_[True, group[hits][1:] != group[hits][:-1]]]  # earliest nearest point per voxel
        cloud.extras = {name: values[order[first]] for name, values in extras.items()}
    return cloud


def grid_neighborhood_sums(cells: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M,) float64: for each of (M, 3) unique integer cells, the sum of ``weights`` over the 27 cells of
    its 3 x 3 x 3 block (itself included; empty cells weigh 0).

    Packed keys in a grid padded by one cell (so that +-1 never wraps into another row), sorted once;
    the keys of a block column (dz = -1, 0, +1) form one range in that order, so two binary searches per
    column and a cumulative sum give each column's weight: 18 searches cover all 27 cells."""
    if cells.shape[0] == 0:
        return np.zeros(0, np.float64)
    lower = column_min(cells)
    shifted = cells - (lower - 1)
    dims = column_max(cells) - lower + 3
    key = _packed_keys(shifted, dims)
    order = None if np.all(key[1:] > key[:-1]) else np.argsort(key)  # cells from np.unique come sorted
    key = key if order is None else key[order]
    weights = np.asarray(weights, np.float64) if order is None else np.asarray(weights, np.float64)[order]
    sums = np.zeros(key.shape[0], np.float64)
    cumulative = np.r_[0.0, np.cumsum(weights)]  # cumulative[i]: the weight of key[:i]
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            column = key + (dx * dims[1] + dy) * dims[2]
            sums += cumulative[np.searchsorted(key, column + 1, side="right")]
            sums -= cumulative[np.searchsorted(key, column - 1)]
    if order is None:
        return sums
    result = np.empty(key.shape[0], np.float64)
    result[order] = sums
    return result


def density_scale(neighbors: int) -> int:
    """Coarse cell edge, in voxels, whose 3 x 3 x 3 block holds about ``neighbors`` voxels of a surface."""
    return max(1, int(np.ceil(np.sqrt(max(neighbors, 1)) / 3.0)))


def voxel_inliers(cells: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """(M,) bool: statistical outlier removal on the voxel grid, for (M, 3) unique voxel cells.

    kNN-free form of "mean distance to the k nearest <= mean + ratio * std": voxels are counted per coarse
    cell of ``density_scale(neighbors)`` voxels, each voxel's neighbourhood density D is the count over its
    coarse cell's 3 x 3 x 3 block (about ``neighbors`` voxels on a densely seen surface), and its spacing
    estimate 1 / sqrt(D) (points on a surface) takes the place of the mean kNN distance. Lone returns,
    flying pixels at depth edges and the sparsest far background go, as with the kNN rule."""
    if neighbors <= 0 or cells.shape[0] <= neighbors:
        return np.ones(cells.shape[0], bool)
    coarse = np.floor_divide(cells, density_scale(neighbors))
    lower = column_min(coarse)
    dims = column_max(coarse) - lower + 1
    unique_key, inverse, counts = np.unique(_packed_keys(coarse - lower, dims),
                                            return_inverse=True, return_counts=True)
    coarse_cells = np.stack([unique_key // (dims[1] * dims[2]), unique_key // dims[2] % dims[1],
                             unique_key % dims[2]], axis=1)  # sorted, as grid_neighborhood_sums likes them
    density = grid_neighborhood_sums(coarse_cells, counts)[inverse.reshape(-1)]
    spacing = 1.0 / np.sqrt(density)
    return spacing <= spacing.mean() + std_ratio * spacing.std()


def fit_plane(xyz: np.ndarray, distance: float, iterations: int, seed: int) -> np.ndarray:
    if xyz.shape[0] > RANSAC_SAMPLE:
        xyz = xyz[np.random.default_rng(seed).choice(xyz.shape[0], RANSAC_SAMPLE, replace=False)]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    o3d.utility.random.seed(seed)
    plane, _ = cloud.segment_plane(distance_threshold=distance, ransac_n=3, num_iterations=iterations)
    plane = np.asarray(plane, np.float64)
    return plane / np.linalg.norm(plane[:3])


def cluster_labels(xyz: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    if xyz.shape[0] == 0:
        return np.zeros(0, np.int64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    return np.asarray(cloud.cluster_dbscan(eps=eps, min_points=min_points), np.int64)


@contextlib.contextmanager
def open3d_threads(count: int):
    """open3d's thread count (it ignores OMP_NUM_THREADS; on several threads its RANSAC is not reproducible)."""
    previous = o3d.utility.get_max_threads()
    o3d.utility.set_max_threads(count)
    try:
        yield
    finally:
        o3d.utility.set_max_threads(previous)


def isolate_object(xyz: np.ndarray, config: scene.IsolationConfig, up=(0.0, 0.0, 1.0)) -> scene.IsolationResult:
    """Today's ``scene.isolate_object`` with the open3d plane fit and clustering it had before."""
    saved = scene.fit_plane, scene.cluster_labels
    scene.fit_plane, scene.cluster_labels = fit_plane, cluster_labels
    try:
        return scene.isolate_object(xyz, config, up)
    finally:
        scene.fit_plane, scene.cluster_labels = saved
