"""Point-cloud filters for fusing sensor windows: finite/crop masks, voxel downsampling, outlier removal.

Voxel first: a 640 x 480 depth frame (307k pixels) becomes ~120k voxels at 5 mm, and everything after
works on voxels. The outlier statistics then run on the voxel grid itself (the voxel density of each
voxel's coarse-cell block, on a dense byte grid or with sorted packed keys), not on a kNN search: on the
shared 2-core VM a 20-NN query over those voxel centroids took 273-313 ms, the grid statistic 37-40 ms
with sorted keys and ~20 ms with the dense grid (``bench/bench_fusion.py``, numbers in bench/README.md).
The kNN rule (``statistical_inliers``) stays for clouds fused without voxels and as the reference.

Arrays: xyz (N, 3) float32; rgb (N, 3) float32 in [0, 1] or None; extras name -> (N,) any dtype;
masks (N,) bool; voxel cells (M, 3) int64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree


DENSE_GRID_CELLS = 32_000_000  # grid_neighborhood_sums: a dense grid (1 byte per cell for counts) up to this many
DENSE_GRID_RATIO = 512  # cells, and at most this many per occupied cell; sorted keys and binary searches beyond


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
    voxel's mean (ties: the earlier point). One sort of packed int64 keys, then segment sums.

    Column by column ((3, N) copies): gathering and summing one contiguous coordinate at a time is ~4x
    faster than on (N, 3) rows, with the same additions in the same order (float64 sums for xyz, float32
    for rgb), so the result is bit for bit that of the row form (``test_filters`` checks it)."""
    if voxel <= 0:
        raise ValueError(f"voxel size must be > 0; got {voxel}")
    if xyz.shape[0] == 0:
        return VoxelCloud(xyz, rgb, dict(extras))
    columns = np.ascontiguousarray(xyz.T)
    lower = np.array([c.min() for c in columns], xyz.dtype)
    upper = np.array([c.max() for c in columns], xyz.dtype)
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):  # NaN and Inf reach min/max
        raise ValueError("voxelize needs finite coordinates: drop NaN/Inf rows first (filters.finite_mask)")
    scale = np.asarray(1.0 / voxel, xyz.dtype)
    cells = ((columns - lower[:, None]) * scale).astype(np.int64)  # (3, N), >= 0, so truncation is floor
    dims = ((upper - lower) * scale).astype(np.int64) + 1  # the same arithmetic: the largest cell + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"cloud spans {dims.tolist()} voxels of {voxel} m: too many for int64 keys; crop it "
                         "or use a larger voxel size")
    key = (cells[0] * dims[1] + cells[1]) * dims[2] + cells[2]
    if float(np.prod(dims.astype(np.float64))) * key.shape[0] < 2.0 ** 62:
        order = np.argsort(key * key.shape[0] + np.arange(key.shape[0]))  # = a stable sort, ~2x faster
    else:
        order = np.argsort(key, kind="stable")  # stable: ties in distance below resolve to the earlier point
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    points = np.diff(np.r_[starts, key.shape[0]])

    def means(values: np.ndarray, dtype) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(sorted columns, per-voxel means as float32) of (3, N) ``values``, summed in ``dtype``."""
        in_order = [np.take(column, order) for column in values]
        return in_order, [(np.add.reduceat(c.astype(dtype, copy=False), starts) / points).astype(np.float32)
                          for c in in_order]

    sorted_xyz, centroids = means(columns, np.float64)
    colors = None if rgb is None else np.stack(means(np.ascontiguousarray(rgb.T, np.float32), np.float32)[1], 1)
    leaders = order[starts]  # first point of each voxel
    cloud = VoxelCloud(np.stack(centroids, axis=1), colors, {}, np.stack([c[leaders] for c in cells], axis=1), points)
    if extras:
        group = np.repeat(np.arange(starts.shape[0]), points)  # voxel of each sorted point
        ox, oy, oz = (s - c[group] for s, c in zip(sorted_xyz, centroids))
        distance = (ox * ox + oy * oy) + oz * oz  # float32, in einsum("ij,ij->i")'s order (bit for bit)
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

    Packed keys in a grid padded by one cell (so that +-1 never wraps into another row). Counts (non-negative
    integer weights) in a grid of at most ``DENSE_GRID_CELLS`` cells go through a dense grid (27 gathers;
    a depth frame's 69k coarse cells: 10 ms instead of 27 ms). Otherwise the keys are sorted once; the keys
    of a block column (dz = -1, 0, +1) form one range in that order, so two binary searches per column and
    a cumulative sum give each column's weight: 18 searches cover all 27 cells."""
    if cells.shape[0] == 0:
        return np.zeros(0, np.float64)
    lower = column_min(cells)
    shifted = cells - (lower - 1)
    dims = column_max(cells) - lower + 3
    key = _packed_keys(shifted, dims)
    volume = float(np.prod(dims.astype(np.float64)))
    weights = np.asarray(weights)
    if (weights.dtype.kind in "iub" and volume <= min(DENSE_GRID_CELLS, DENSE_GRID_RATIO * key.shape[0])
            and (weights.size == 0 or weights.min() >= 0)):
        return _dense_neighborhood_sums(key, dims, weights)
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


def _dense_neighborhood_sums(key: np.ndarray, dims: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``grid_neighborhood_sums`` for non-negative integer weights on a dense grid (``key``: packed keys in
    the padded grid of ``dims``): the weights scattered into a grid of the smallest unsigned type that holds a
    block's sum, then 27 gathers; exact integers, so equal to the sorted-key form (test_filters checks it)."""
    largest = int(weights.max()) * 27
    dtype = np.uint8 if largest <= 0xFF else np.uint16 if largest <= 0xFFFF else np.int64
    grid = np.zeros(int(np.prod(dims)), dtype)
    grid[key] = weights
    sums = np.zeros(key.shape[0], np.int64 if dtype == np.int64 else np.int32)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            column = key + (dx * dims[1] + dy) * dims[2]
            for dz in (-1, 0, 1):
                sums += np.take(grid, column + dz)
    return sums.astype(np.float64)


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
    dims = column_max(coarse) - lower + 3  # padded by one empty cell per side, as grid_neighborhood_sums pads
    unique_key, inverse, counts = np.unique(_packed_keys(coarse - (lower - 1), dims),
                                            return_inverse=True, return_counts=True)
    if float(np.prod(dims.astype(np.float64))) <= min(DENSE_GRID_CELLS, DENSE_GRID_RATIO * unique_key.shape[0]):
        block = _dense_neighborhood_sums(unique_key, dims, counts)  # the keys are already the padded ones
    else:
        coarse_cells = np.stack([unique_key // (dims[1] * dims[2]), unique_key // dims[2] % dims[1],
                                 unique_key % dims[2]], axis=1)  # sorted, as grid_neighborhood_sums likes them
        block = grid_neighborhood_sums(coarse_cells, counts)
    density = block[inverse.reshape(-1)]
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
