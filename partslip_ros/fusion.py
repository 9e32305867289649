"""A short window of input clouds in one fixed frame, fused into one object cloud.

Frames: ``FrameTransformer`` uses tf2_ros when it is importable (a ROS 2 install); otherwise it
accepts only clouds already in the fixed frame and says why it rejects the others. Fusion:
optional ICP refinement of the window (open3d), crop box, voxel downsample, statistical outlier
removal, optional table-plane removal and largest-cluster extraction (open3d when importable,
numpy/scipy otherwise). Extra per-point integer fields (the ground-truth labels of the demo
detector) survive voxelization by taking the value of the point nearest to each voxel centroid.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

try:
    import open3d as _o3d
except ImportError:  # pragma: no cover - depends on the install
    _o3d = None

try:  # present in a ROS 2 install, not on PyPI
    import tf2_ros as _tf2_ros
except ImportError:  # pragma: no cover - depends on the install
    _tf2_ros = None


class FusionError(ValueError):
    """A frame cannot join the window, or the window cannot be fused. ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def has_open3d() -> bool:
    return _o3d is not None


def has_tf2() -> bool:
    return _tf2_ros is not None


@dataclass
class Frame:
    """One input cloud, already in the fixed frame.

    xyz: (N, 3) float32; rgb: (N, 3) float32 in [0, 1] or None; extras: name -> (N,) array;
    stamp_ns: the message stamp in nanoseconds; source_frame: the message's frame_id.
    """

    stamp_ns: int
    source_frame: str
    xyz: np.ndarray
    rgb: Optional[np.ndarray] = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


@dataclass
class FusionConfig:
    """How a window is fused; distances in metres of the fixed frame. 0 disables a count/size stage."""

    voxel_size: float = 0.005
    outlier_neighbors: int = 20
    outlier_std_ratio: float = 2.0
    crop_enabled: bool = False
    crop_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    crop_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    remove_plane: bool = False
    plane_distance: float = 0.01
    largest_cluster: bool = False
    cluster_eps: float = 0.02
    cluster_min_points: int = 10
    icp: bool = False
    icp_max_distance: float = 0.02
    max_points: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.voxel_size >= 0, f"fusion.voxel_size must be >= 0; got {self.voxel_size}"),
            (self.outlier_neighbors >= 0, f"fusion.outlier_neighbors must be >= 0; got {self.outlier_neighbors}"),
            (self.outlier_std_ratio > 0, f"fusion.outlier_std_ratio must be > 0; got {self.outlier_std_ratio}"),
            (len(self.crop_min) == 3 and len(self.crop_max) == 3, "fusion.crop_min/crop_max need 3 values each"),
            (self.plane_distance > 0, f"fusion.plane_distance must be > 0; got {self.plane_distance}"),
            (self.cluster_eps > 0, f"fusion.cluster_eps must be > 0; got {self.cluster_eps}"),
            (self.cluster_min_points >= 1, f"fusion.cluster_min_points must be >= 1; got {self.cluster_min_points}"),
            (self.icp_max_distance > 0, f"fusion.icp_max_distance must be > 0; got {self.icp_max_distance}"),
            (self.max_points > 0, f"fusion.max_points must be > 0; got {self.max_points}"),
            (not self.icp or has_open3d(), "fusion.icp needs open3d, which is not importable"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.crop_enabled and not np.all(np.asarray(self.crop_max) > np.asarray(self.crop_min)):
            raise ValueError(f"fusion.crop_max {self.crop_max} must exceed crop_min {self.crop_min} on every axis")


@dataclass
class FusedCloud:
    """The fused object cloud in the fixed frame: xyz (N, 3) float32, rgb (N, 3) or None, extras name -> (N,).

    counts: points left after each stage (for diagnostics); timings_ms: stage -> milliseconds.
    """

    xyz: np.ndarray
    rgb: Optional[np.ndarray]
    extras: dict[str, np.ndarray]
    stamp_ns: int
    window_start_ns: int
    num_frames: int
    counts: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


class FrameWindow:
    """The last ``max_frames`` frames not older than ``max_age_s`` (0 = no age limit)."""

    def __init__(self, max_frames: int, max_age_s: float) -> None:
        self._frames: deque[Frame] = deque()
        self.configure(max_frames, max_age_s)

    def configure(self, max_frames: int, max_age_s: float) -> None:
        if max_frames < 1:
            raise ValueError(f"window size must be >= 1; got {max_frames}")
        self.max_frames = int(max_frames)
        self.max_age_ns = int(max(max_age_s, 0.0) * 1e9)
        while len(self._frames) > self.max_frames:
            self._frames.popleft()

    def __len__(self) -> int:
        return len(self._frames)

    def is_too_old(self, stamp_ns: int, now_ns: int) -> bool:
        return self.max_age_ns > 0 and now_ns - stamp_ns > self.max_age_ns

    def add(self, frame: Frame) -> None:
        """Append a frame (out-of-order stamps are kept sorted); the oldest leaves when the window is full."""
        self._frames.append(frame)
        if len(self._frames) > 1 and self._frames[-2].stamp_ns > frame.stamp_ns:
            self._frames = deque(sorted(self._frames, key=lambda f: f.stamp_ns))
        while len(self._frames) > self.max_frames:
            self._frames.popleft()

    def frames(self, now_ns: int) -> list[Frame]:
        """Frames still inside the age limit at ``now_ns`` (older ones are dropped for good)."""
        while self._frames and self.is_too_old(self._frames[0].stamp_ns, now_ns):
            self._frames.popleft()
        return list(self._frames)

    def clear(self) -> None:
        self._frames.clear()


def quaternion_matrix(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """(4, 4) float64 homogeneous transform from a translation and an (x, y, z, w) quaternion."""
    x, y, z, w = (float(v) for v in quaternion_xyzw)
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(norm) or norm < 1e-9:
        raise FusionError("bad_transform", f"quaternion {quaternion_xyzw} has no valid rotation")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    matrix[:3, 3] = [float(v) for v in translation]
    return matrix


def transform_points(xyz: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (N, 3) points; returns float32."""
    return (xyz.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)


class FrameTransformer:
    """source frame -> fixed frame transforms: tf2_ros when importable, else identity for the fixed frame only.

    ``fixed_frame`` "" adopts the first cloud's frame. ``lookup`` raises FusionError("unknown_frame", why).
    """

    def __init__(self, node, fixed_frame: str, use_tf: bool = True, timeout_s: float = 0.1) -> None:
        self.fixed_frame = fixed_frame
        self.timeout_s = timeout_s
        self._buffer = None
        self._listener = None
        if use_tf and _tf2_ros is not None and node is not None:
            self._buffer = _tf2_ros.Buffer()
            self._listener = _tf2_ros.TransformListener(self._buffer, node)

    @property
    def uses_tf(self) -> bool:
        return self._buffer is not None

    def resolve_fixed_frame(self, source_frame: str) -> str:
        if not self.fixed_frame:
            self.fixed_frame = source_frame
        return self.fixed_frame

    def lookup(self, source_frame: str, stamp_ns: int) -> Optional[np.ndarray]:
        """None when the cloud is already in the fixed frame, else the (4, 4) source -> fixed transform."""
        if not source_frame:
            raise FusionError("unknown_frame", "the cloud has an empty header.frame_id")
        fixed = self.resolve_fixed_frame(source_frame)
        if source_frame.lstrip("/") == fixed.lstrip("/"):
            return None
        if self._buffer is None:
            raise FusionError("unknown_frame", f"cloud frame {source_frame!r} is not the fixed frame {fixed!r} "
                                               "and tf2_ros is not installed: publish clouds in the fixed frame")
        return self._lookup_tf(fixed, source_frame, stamp_ns)

    def _lookup_tf(self, fixed: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        from rclpy.duration import Duration
        from rclpy.time import Time
        try:
            tf = self._buffer.lookup_transform(fixed, source_frame, Time(nanoseconds=stamp_ns),
                                               timeout=Duration(seconds=self.timeout_s))
        except Exception as error:  # tf2 raises several exception types; all mean "no transform"
            raise FusionError("unknown_frame", f"no transform {source_frame!r} -> {fixed!r} at the cloud's "
                                               f"stamp: {error}") from error
        t, q = tf.transform.translation, tf.transform.rotation
        return quaternion_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def voxel_downsample(xyz: np.ndarray, rgb: Optional[np.ndarray], extras: dict[str, np.ndarray],
                     voxel: float) -> tuple[np.ndarray, Optional[np.ndarray], dict[str, np.ndarray]]:
    """Average xyz/rgb per voxel; extras take the value of the point nearest the voxel centroid."""
    if voxel <= 0 or xyz.shape[0] == 0:
        return xyz, rgb, extras
    cells = np.floor((xyz - xyz.min(axis=0)) / voxel).astype(np.int64)
    dims = cells.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) < 2.0 ** 62:  # one int64 key per voxel: ~25x faster than axis=0
        key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    num = counts.shape[0]

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.stack([np.bincount(inverse, weights=values[:, d], minlength=num) for d in range(values.shape[1])], 1)
        return (sums / counts[:, None]).astype(np.float32)

    centroids = mean(xyz)
    colors = None if rgb is None else mean(rgb)
    if not extras:
        return centroids, colors, {}
    dist = np.linalg.norm(xyz - centroids[inverse], axis=1)
    order = np.lexsort((dist, inverse))  # grouped by voxel, nearest first
    first = order[np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]]
    return centroids, colors, {name: values[first] for name, values in extras.items()}


def statistical_inliers(xyz: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """(N,) bool: points whose mean distance to ``neighbors`` nearest points is within mean + ratio * std."""
    if neighbors <= 0 or xyz.shape[0] <= neighbors:
        return np.ones(xyz.shape[0], bool)
    dist, _ = cKDTree(xyz).query(xyz, k=neighbors + 1)
    mean_dist = dist[:, 1:].mean(axis=1)
    return mean_dist <= mean_dist.mean() + std_ratio * mean_dist.std()


def crop_mask(xyz: np.ndarray, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    return np.all((xyz >= np.asarray(lower, np.float32)) & (xyz <= np.asarray(upper, np.float32)), axis=1)


def _ransac_plane_numpy(xyz: np.ndarray, distance: float, iterations: int, seed: int) -> np.ndarray:
    """(4,) plane (unit normal, offset) with the most inliers among random 3-point samples."""
    rng = np.random.default_rng(seed)
    sample = xyz[rng.integers(0, xyz.shape[0], size=(iterations, 3))]  # (T, 3, 3)
    normals = np.cross(sample[:, 1] - sample[:, 0], sample[:, 2] - sample[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    valid = lengths > 1e-12
    normals = normals[valid] / lengths[valid, None]
    offsets = -np.einsum("ij,ij->i", normals, sample[valid, 0])
    probe = xyz[rng.choice(xyz.shape[0], size=min(xyz.shape[0], 5000), replace=False)]
    inliers = (np.abs(probe @ normals.T + offsets) <= distance).sum(axis=0)
    best = int(np.argmax(inliers))
    return np.r_[normals[best], offsets[best]]


def plane_removal_mask(xyz: np.ndarray, distance: float, seed: int = 0) -> np.ndarray:
    """(N,) bool keep-mask: drops the dominant plane (a table) and everything on its far side."""
    if xyz.shape[0] < 10:
        return np.ones(xyz.shape[0], bool)
    if _o3d is not None:
        cloud = _o3d.geometry.PointCloud(_o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        _o3d.utility.random.seed(seed)
        plane, _ = cloud.segment_plane(distance_threshold=distance, ransac_n=3, num_iterations=200)
        plane = np.asarray(plane, np.float64)
    else:
        plane = _ransac_plane_numpy(xyz.astype(np.float64), distance, 200, seed)
    signed = xyz.astype(np.float64) @ plane[:3] + plane[3]
    off_plane = np.abs(signed) > distance
    if (signed[off_plane] < 0).sum() > (signed[off_plane] > 0).sum():
        signed = -signed  # the object is on the side with more points
    return signed > distance


def largest_cluster_mask(xyz: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """(N,) bool: the biggest connected cluster (points within ``eps`` chain together)."""
    if xyz.shape[0] == 0:
        return np.ones(0, bool)
    if _o3d is not None:
        cloud = _o3d.geometry.PointCloud(_o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        labels = np.asarray(cloud.cluster_dbscan(eps=eps, min_points=min_points))
    else:
        pairs = cKDTree(xyz).query_pairs(eps, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xyz), len(xyz)))
        _, labels = connected_components(graph, directed=False)
        sizes = np.bincount(labels)
        labels = np.where(sizes[labels] >= min_points, labels, -1)
    if (labels >= 0).sum() == 0:
        return np.ones(xyz.shape[0], bool)
    biggest = np.argmax(np.bincount(labels[labels >= 0]))
    return labels == biggest


def icp_align(frames: list[Frame], max_distance: float) -> list[Frame]:
    """Refine every frame onto the newest one with point-to-point ICP (open3d); poor fits stay as they are."""
    if _o3d is None or len(frames) < 2:
        return frames
    reg = _o3d.pipelines.registration
    target = _o3d.geometry.PointCloud(_o3d.utility.Vector3dVector(frames[-1].xyz.astype(np.float64)))
    aligned = []
    for frame in frames[:-1]:  # one registration per frame: the window holds a handful
        source = _o3d.geometry.PointCloud(_o3d.utility.Vector3dVector(frame.xyz.astype(np.float64)))
        fit = reg.registration_icp(source, target, max_distance, np.eye(4),
                                   reg.TransformationEstimationPointToPoint())
        matrix = fit.transformation if fit.fitness >= 0.3 else np.eye(4)
        aligned.append(Frame(frame.stamp_ns, frame.source_frame, transform_points(frame.xyz, matrix),
                             frame.rgb, frame.extras))
    return aligned + [frames[-1]]


def _concatenate(frames: list[Frame]) -> tuple[np.ndarray, Optional[np.ndarray], dict[str, np.ndarray]]:
    xyz = np.concatenate([f.xyz for f in frames])
    rgb = None
    if all(f.rgb is not None for f in frames):
        rgb = np.concatenate([f.rgb for f in frames])
    names = set(frames[0].extras).intersection(*(f.extras.keys() for f in frames[1:]))
    extras = {n: np.concatenate([f.extras[n] for f in frames]) for n in sorted(names)}
    return xyz, rgb, extras


class _Cloud:
    """Mutable (xyz, rgb, extras) triple filtered stage by stage, recording counts and timings."""

    def __init__(self, xyz, rgb, extras) -> None:
        self.xyz, self.rgb, self.extras = xyz, rgb, extras
        self.counts: dict[str, int] = {"input": int(xyz.shape[0])}
        self.timings: dict[str, float] = {}

    def keep(self, mask: np.ndarray) -> None:
        self.xyz = self.xyz[mask]
        self.rgb = None if self.rgb is None else self.rgb[mask]
        self.extras = {n: v[mask] for n, v in self.extras.items()}

    def stage(self, name: str, action: Callable[["_Cloud"], None]) -> None:
        start = time.perf_counter()
        action(self)
        self.timings[name] = (time.perf_counter() - start) * 1e3
        self.counts[name] = int(self.xyz.shape[0])


def fuse(frames: list[Frame], config: FusionConfig) -> FusedCloud:
    """Fuse a window into one cloud; raises FusionError("empty_window" / "empty_after_fusion")."""
    if not frames:
        raise FusionError("empty_window", "no frames in the window (none received, or all older than window.max_age_s)")
    if config.icp:
        frames = icp_align(frames, config.icp_max_distance)
    cloud = _Cloud(*_concatenate(frames))
    if config.crop_enabled:
        cloud.stage("crop", lambda c: c.keep(crop_mask(c.xyz, config.crop_min, config.crop_max)))

    def voxelize(c: _Cloud) -> None:
        c.xyz, c.rgb, c.extras = voxel_downsample(c.xyz, c.rgb, c.extras, config.voxel_size)

    cloud.stage("voxel", voxelize)
    cloud.stage("outliers", lambda c: c.keep(statistical_inliers(c.xyz, config.outlier_neighbors,
                                                                   config.outlier_std_ratio)))
    if config.remove_plane:
        cloud.stage("plane", lambda c: c.keep(plane_removal_mask(c.xyz, config.plane_distance, config.seed)))
    if config.largest_cluster:
        cloud.stage("cluster", lambda c: c.keep(largest_cluster_mask(c.xyz, config.cluster_eps,
                                                                     config.cluster_min_points)))
    if cloud.xyz.shape[0] > config.max_points:
        rng = np.random.default_rng(config.seed)
        cloud.keep(np.sort(rng.choice(cloud.xyz.shape[0], config.max_points, replace=False)))
        cloud.counts["max_points"] = config.max_points
    if cloud.xyz.shape[0] == 0:
        raise FusionError("empty_after_fusion", f"no points left after fusion (counts per stage: {cloud.counts})")
    return FusedCloud(cloud.xyz, cloud.rgb, cloud.extras, stamp_ns=frames[-1].stamp_ns,
                      window_start_ns=frames[0].stamp_ns, num_frames=len(frames),
                      counts=cloud.counts, timings_ms=cloud.timings)
