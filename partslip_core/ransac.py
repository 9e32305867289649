"""Plane RANSAC that returns exactly what open3d's ``PointCloud.segment_plane`` returns on one thread.

open3d 0.20 (``PointCloudSegmentation.cpp``; the installed version, checked by ``test/core/test_ransac.py``):
``utility.random.seed(s)`` seeds a ``std::mt19937``; all ``num_iterations`` triples are drawn first
(``std::uniform_int_distribution<size_t>(0, N - 1)``, which libstdc++ maps with Lemire's multiply-shift; a
triple redraws an index it already holds); the plane through
each triple (unit normal, ``d = -n . p0``; colinear triples are skipped and not counted) scores its inliers
``|n . p + d| < distance``; a larger count wins, an equal count with a smaller ``sqrt(sum d^2 / count)``
wins; after each new best the loop stops once more than ``log(1 - p) / log(1 - fitness^3)`` planes were
scored (p = 0.99999999); the final plane is refitted to the best plane's inliers (cross-product of the
covariance rows, ``GetPlaneFromPoints``). With more than one thread open3d scores the iterations in
parallel chunks, so where the early stop triggers its answer depends on thread timing (measured: 2750 or
2782 inliers, run to run, on a 5000-point table-top sample); this module is the deterministic one-thread
answer, on every install.

Speed: instead of scoring every plane on every point in float64 (open3d: ~45 ms for 1000 planes x 5000
points here), all planes of a batch are scored at once in float32 with a bound on the rounding error,
which gives for each plane an upper bound on its inlier count; only a plane whose bound reaches the best
count so far can change the result, and only those (a few dozen of 1000) are scored exactly, in float64
with open3d's order of operations. Arrays: points (N, 3) float64.
"""

from __future__ import annotations

import math

import numpy as np

PROBABILITY = 0.99999999  # open3d's default for segment_plane
_BATCH = 64  # planes scored per float32 batch: (64, N) stays in cache, and the early stop is seen soon


def open3d_triples(seed: int, num_points: int, iterations: int) -> np.ndarray:
    """(iterations, 3) int64: the point indices open3d's RANSAC draws after ``utility.random.seed(seed)``."""
    if num_points < 3:
        raise ValueError(f"a plane needs at least 3 points; got {num_points}")
    generator = np.random.RandomState(int(seed) & 0xFFFFFFFF)  # MT19937 seeded by init_genrand = std::mt19937(seed)
    span = np.uint64(num_points)
    threshold = np.uint64(((1 << 32) - num_points) % num_points)

    def draws(count: int) -> np.ndarray:  # uniform_int_distribution: Lemire's nearly divisionless method
        raw = generator.randint(0, 1 << 32, size=count, dtype=np.uint32)  # full range: the raw 32-bit outputs
        product = raw.astype(np.uint64) * span
        accepted = (product & np.uint64(0xFFFFFFFF)) >= threshold
        return (product[accepted] >> np.uint64(32)).astype(np.int64)

    stream = draws(3 * iterations + 16)
    triples = np.empty((iterations, 3), np.int64)
    done, position = 0, 0
    while done < iterations:  # one pass per triple that drew an index twice (rare: ~3/N per triple)
        need = iterations - done
        if stream.size - position < 3 * need + 3:
            stream = np.r_[stream[position:], draws(3 * need + 16)]
            position = 0
        block = stream[position:position + 3 * need].reshape(need, 3)
        repeated = (block[:, 0] == block[:, 1]) | (block[:, 0] == block[:, 2]) | (block[:, 1] == block[:, 2])
        clean = int(np.argmax(repeated)) if repeated.any() else need
        triples[done:done + clean] = block[:clean]
        done, position = done + clean, position + 3 * clean
        if done == iterations:
            break
        chosen: list[int] = []  # the triple with a repeat: draw one index at a time, skipping repeats
        while len(chosen) < 3:
            if position >= stream.size:
                stream, position = draws(64), 0
            value = int(stream[position])
            position += 1
            if value not in chosen:
                chosen.append(value)
        triples[done] = chosen
        done += 1
    return triples


def _triangle_planes(points: np.ndarray, triples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 4) planes (unit normal, d) through each triple as open3d computes them, and (T,) bool valid."""
    p0, p1, p2 = points[triples[:, 0]], points[triples[:, 1]], points[triples[:, 2]]
    e0, e1 = p1 - p0, p2 - p0
    normal = np.stack([e0[:, 1] * e1[:, 2] - e0[:, 2] * e1[:, 1], e0[:, 2] * e1[:, 0] - e0[:, 0] * e1[:, 2],
                       e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]], axis=1)
    norm = np.sqrt(normal[:, 0] * normal[:, 0] + normal[:, 1] * normal[:, 1] + normal[:, 2] * normal[:, 2])
    valid = norm != 0
    normal = normal / np.where(valid, norm, 1.0)[:, None]
    offset = -(normal[:, 0] * p0[:, 0] + normal[:, 1] * p0[:, 1] + normal[:, 2] * p0[:, 2])
    return np.c_[normal, offset], valid


def plane_distances(points: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(N, K) |n . p + d| in open3d's (Eigen 4-vector dot) order of operations, float64."""
    a, b, c, d = planes.T
    x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    return np.abs((x * a + z * c) + (y * b + d))


def _pair_distances(points: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(M,) |n . p + d| of point i and plane i, in the order of ``plane_distances``."""
    return np.abs((points[:, 0] * planes[:, 0] + points[:, 2] * planes[:, 2])
                  + (points[:, 1] * planes[:, 1] + planes[:, 3]))


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """Left-to-right sum along axis 0 (C++ ``+=`` loop order; numpy's ``sum`` adds pairwise)."""
    return np.cumsum(values, axis=0)[-1] if values.shape[0] else np.zeros(values.shape[1:])


def refit_plane(points: np.ndarray) -> np.ndarray:
    """(4,) least-squares plane of (M, 3) points, open3d's ``GetPlaneFromPoints`` (zeros if they span none)."""
    if points.shape[0] == 0:
        return np.full(4, np.nan)
    centroid = _sequential_sum(points) / float(points.shape[0])
    r = points - centroid
    xx, xy, xz, yy, yz, zz = _sequential_sum(np.stack([r[:, 0] * r[:, 0], r[:, 0] * r[:, 1], r[:, 0] * r[:, 2],
                                                       r[:, 1] * r[:, 1], r[:, 1] * r[:, 2], r[:, 2] * r[:, 2]], 1))
    det_x, det_y, det_z = yy * zz - yz * yz, xx * zz - xz * xz, xx * yy - xy * xy
    if det_x > det_y and det_x > det_z:
        abc = np.array([det_x, xz * yz - xy * zz, xy * yz - xz * yy])
    elif det_y > det_z:
        abc = np.array([xz * yz - xy * zz, det_y, xy * xz - yz * xx])
    else:
        abc = np.array([xy * yz - xz * yy, xy * xz - yz * xx, det_z])
    norm = math.sqrt(abc[0] * abc[0] + abc[1] * abc[1] + abc[2] * abc[2])
    if norm == 0:
        return np.zeros(4)
    abc = abc / norm
    return np.r_[abc, -(abc[0] * centroid[0] + abc[1] * centroid[1] + abc[2] * centroid[2])]


def _inlier_rmse(points: np.ndarray, plane: np.ndarray, distance: float) -> float:
    """open3d's inlier RMSE of one plane: sqrt(sum of squared inlier distances, in point order / count)."""
    exact = plane_distances(points, plane[None])[:, 0]
    inside = exact < distance
    return math.sqrt(float(_sequential_sum(exact[inside] * exact[inside])) / max(int(inside.sum()), 1))


def _break_after(fitness: float, iterations: int) -> int:
    """open3d's early-stop bound after a new best plane of this inlier share (size_t of a double)."""
    if fitness >= 1.0:
        return 0
    return int(min(math.log(1 - PROBABILITY) / math.log(1 - math.pow(fitness, 3)), float(iterations)))


def segment_plane(points: np.ndarray, distance: float, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """((4,) plane: unit normal and offset, (K,) int64 inlier indices) of open3d's ``segment_plane(distance,
    3, iterations)`` after ``utility.random.seed(seed)``, as it runs on one thread; (N, 3) float64 points."""
    points = np.ascontiguousarray(points, np.float64)
    num_points = points.shape[0]
    planes, valid = _triangle_planes(points, open3d_triples(seed, num_points, iterations))
    scored_before = np.r_[0, np.cumsum(valid)]  # open3d's iteration_count at the top of each iteration

    centre = points.mean(axis=0)
    local = np.ones((num_points, 4), np.float32)  # homogeneous centred points: one matmul scores a batch
    local[:, :3] = points - centre
    radius = float(np.sqrt(((points - centre) ** 2).sum(axis=1).max()))
    shifted = np.c_[planes[:, :3], planes[:, 3] + planes[:, :3] @ centre].astype(np.float32)  # (T, 4)
    slack = 2.0 ** -24 * 16 * (2 * radius + abs(distance))  # > the float32 rounding error of |n . p + d|
    bound, inner = np.float32(distance + slack), np.float32(distance - slack)
    local_t = np.ascontiguousarray(local.T)

    best_count, best_index, best_rmse = 0, -1, None  # best_rmse: computed when an equal count shows up
    end = iterations  # iterations from here on are skipped (open3d's break_iteration test)
    start = 0
    buffer = np.empty((min(_BATCH, iterations), num_points), np.float32)
    mask = np.empty(buffer.shape, bool)
    while start < end:
        stop = min(end, start + _BATCH)
        scores, inside = buffer[:stop - start], mask[:stop - start]
        np.matmul(shifted[start:stop], local_t, out=scores)  # (B, N): |score - (n . p + d)| < slack
        np.abs(scores, out=scores)
        upper = np.less(scores, bound, out=inside).view(np.uint8).sum(axis=1, dtype=np.int32)  # >= exact count
        reached = np.full(stop - start, best_count)
        if start == 0:  # nothing to compare with yet: a plane sure to hold more prunes the ones after it
            lower = np.less(scores, inner, out=inside).view(np.uint8).sum(axis=1, dtype=np.int32)
            lower[~valid[start:stop]] = 0
            reached = np.maximum(reached, np.maximum.accumulate(np.r_[0, lower[:-1]]))
        contenders = np.flatnonzero(valid[start:stop] & (upper >= reached))
        if contenders.size:
            rows = scores[contenders]
            near = np.nonzero((rows >= inner) & (rows < bound))  # float32 cannot tell: score exactly
            settled = _pair_distances(points[near[1]], planes[contenders[near[0]] + start]) < distance
            counts = np.count_nonzero(rows < inner, axis=1) + np.bincount(near[0], weights=settled,
                                                                           minlength=contenders.size).astype(np.int64)
            for column, index in enumerate((contenders + start).tolist()):  # iterations, not points: a few dozen
                if index >= end:
                    break
                count = int(counts[column])
                if count < best_count or count == 0:
                    continue
                if count == best_count:  # open3d keeps the smaller inlier RMSE
                    best_rmse = _inlier_rmse(points, planes[best_index], distance) if best_rmse is None else best_rmse
                    rmse = _inlier_rmse(points, planes[index], distance)
                    if not rmse < best_rmse:
                        continue
                    best_rmse = rmse
                else:
                    best_rmse = None
                best_count, best_index = count, index
                limit = _break_after(count / num_points, iterations)
                over = int(np.searchsorted(scored_before, limit + 1, side="left"))  # first count > limit
                end = min(end, max(index + 1, over))
        start = stop
    if best_index < 0:  # every triple colinear: open3d refits on no inliers, which gives NaN
        return np.full(4, np.nan), np.zeros(0, np.int64)
    best_plane = planes[best_index]
    inliers = np.flatnonzero(plane_distances(points, best_plane[None])[:, 0] < distance)
    return refit_plane(points[inliers]), inliers
