"""Point-cloud filters for fusing sensor windows: finite/crop masks, voxel downsampling, outlier removal.

Voxel first: a 640 x 480 depth frame (307k pixels) becomes ~120k voxels at 5 mm, and everything after
works on voxels. The outlier statistics then run on the voxel grid itself (the voxel density of each
voxel's coarse-cell block, found with sorted packed keys), not on a kNN search: on the shared 2-core VM
a 20-NN query over those voxel centroids took 273-313 ms, the grid statistic 37-40 ms (``bench/bench_fusion.py``,
numbers in bench/README.md).
The kNN rule (``statistical_inliers``) stays for clouds fused without voxels and as the reference.

Arrays: xyz (N, 3) float32; rgb (N, 3) float32 in [0, 1] or None; extras name -> (N,) any dtype;
masks (N,) bool; voxel cells (M, 3) int64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class VoxelCloud:
    """One point per occupied voxel: xyz / rgb the mean of its points (float32), extras the value of the
    point nearest that mean; ``cells`` (M, 3) int64 the voxel's integer grid index (origin at the input's
    minimum corner), ``points`` (M,) int64 how many input points fell into it. Rows are sorted by cell."""

    xyz: np.ndarray
    rgb: Optional[np.ndarray]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    cells: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def column_min(values: np.ndarray) -> np.ndarray:
    """(D,) minimum of each column of (N, D) values: per column, ~8x faster than ``min(axis=0)`` for D = 3."""
    return np.array([values[:, d].min() for d in range(values.shape[1])], values.dtype)


def column_max(values: np.ndarray) -> np.ndarray:
    """(D,) maximum of each column of (N, D) values (see ``column_min``)."""
    return np.array([values[:, d].max() for d in range(values.shape[1])], values.dtype)


def finite_mask(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool: rows with finite x, y and z (an organized depth frame has NaN where nothing was hit)."""
    return np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])


def crop_mask(xyz: np.ndarray, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    """(N,) bool: points inside the axis-aligned box [lower, upper] (inclusive)."""
    return np.all((xyz >= np.asarray(lower, np.float32)) & (xyz <= np.asarray(upper, np.float32)), axis=1)


def _packed_keys(cells: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """(N,) int64 row-major key of each (N, 3) cell in a grid of ``dims`` cells (lexicographic order kept)."""
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]


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


def voxel_downsample(xyz: np.ndarray, rgb: Optional[np.ndarray], extras: dict[str, np.ndarray],
                     voxel: float) -> tuple[np.ndarray, Optional[np.ndarray], dict[str, np.ndarray]]:
    """(xyz, rgb, extras) of ``voxelize``; ``voxel`` <= 0 or an empty cloud returns the input unchanged."""
    if voxel <= 0 or xyz.shape[0] == 0:
        return xyz, rgb, extras
    cloud = voxelize(xyz, rgb, extras, voxel)
    return cloud.xyz, cloud.rgb, cloud.extras


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


def statistical_inliers(xyz: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """(N,) bool: points whose mean distance to ``neighbors`` nearest points is within mean + ratio * std
    (kNN over the given points: use it on voxels or small clouds; it costs ~2 us per point and neighbour)."""
    if neighbors <= 0 or xyz.shape[0] <= neighbors:
        return np.ones(xyz.shape[0], bool)
    dist, _ = cKDTree(xyz).query(xyz, k=neighbors + 1)
    mean_dist = dist[:, 1:].mean(axis=1)
    return mean_dist <= mean_dist.mean() + std_ratio * mean_dist.std()
