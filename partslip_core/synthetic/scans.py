"""Single-sensor scans of a complete object: visibility (open3d hidden point removal or a numpy z-buffer),
range noise, sensor arcs, fused multi-frame scans, and the ``full | partial | fused`` benchmark views."""

from __future__ import annotations

from typing import Optional

import numpy as np

from partslip_core.synthetic.assembly import SyntheticObject


def _visible_hpr(xyz: np.ndarray, sensor: np.ndarray) -> Optional[np.ndarray]:
    """Katz et al. hidden point removal through open3d; None if open3d is not importable."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    diameter = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
    distance = float(np.linalg.norm(xyz.mean(axis=0) - sensor))
    _, index = pcd.hidden_point_removal(sensor.astype(np.float64), 100.0 * max(diameter, distance))
    mask = np.zeros(len(xyz), dtype=bool)
    mask[np.asarray(index, dtype=np.int64)] = True
    return mask


def visible_zbuffer(xyz: np.ndarray, sensor: np.ndarray, normals: Optional[np.ndarray] = None,
                    grid: Optional[int] = None, depth_tolerance: float = 0.01) -> np.ndarray:
    """(N,) bool visibility without open3d: a pinhole z-buffer from ``sensor`` (looking at the
    centroid). A point is visible if it is within ``depth_tolerance`` x object diameter of the
    nearest point in its image cell; with normals, back faces are culled and the tolerance grows
    with the incidence angle (a grazing surface spans a range of depths within one cell)."""
    rays = xyz.astype(np.float64) - sensor
    forward = xyz.mean(axis=0) - sensor
    forward /= np.linalg.norm(forward)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    depth = rays @ forward
    if np.any(depth <= 0):
        raise ValueError("the sensor is inside or among the points; place it outside the object")
    uv = np.stack([rays @ right, rays @ np.cross(right, forward)], axis=1) / depth[:, None]
    grid = int(np.clip(np.sqrt(len(xyz) / 6.0), 16, 512)) if grid is None else grid
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    cell = np.minimum(((uv - lo) / np.maximum(hi - lo, 1e-12) * grid).astype(np.int64), grid - 1)
    flat = cell[:, 0] * grid + cell[:, 1]
    distance = np.linalg.norm(rays, axis=1)
    diameter = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
    tolerance = np.full(len(xyz), depth_tolerance * diameter)
    facing = np.ones(len(xyz), dtype=bool)
    if normals is not None:
        cos = np.einsum("ij,ij->i", normals, -rays) / distance
        facing = cos > 0
        tan = np.sqrt(np.clip(1.0 - cos ** 2, 0.0, 1.0)) / np.maximum(cos, 0.1)
        tolerance += 1.5 * float(np.max(hi - lo)) / grid * depth * tan
    nearest = np.full(grid * grid, np.inf)
    np.minimum.at(nearest, flat[facing], distance[facing])
    return facing & (distance <= nearest[flat] + tolerance)


def visibility_mask(xyz: np.ndarray, sensor_position: np.ndarray, normals: Optional[np.ndarray] = None,
                    method: str = "auto") -> np.ndarray:
    """(N,) bool: points a sensor at ``sensor_position`` sees. method: auto (open3d hidden point
    removal, else the numpy z-buffer) | hpr | zbuffer."""
    sensor = np.asarray(sensor_position, dtype=np.float64).reshape(3)
    if method not in ("auto", "hpr", "zbuffer"):
        raise ValueError(f"method must be auto, hpr or zbuffer; got {method!r}")
    mask = None if method == "zbuffer" else _visible_hpr(xyz, sensor)
    if mask is None:
        if method == "hpr":
            raise ImportError("method='hpr' needs open3d, which cannot be imported")
        mask = visible_zbuffer(xyz, sensor, normals)
    return mask


def partial_scan(obj: SyntheticObject, sensor_position: np.ndarray, noise_std: float = 0.0, seed: int = 0,
                 method: str = "auto") -> SyntheticObject:
    """What one depth sensor at ``sensor_position`` (object frame) sees: the visible points with
    Gaussian noise of ``noise_std`` metres along each sensor ray. Labels and normals follow the
    points; point order is kept. method: see ``visibility_mask``."""
    sensor = np.asarray(sensor_position, dtype=np.float64).reshape(3)
    scan = obj.subset(visibility_mask(obj.xyz, sensor, obj.normals, method))
    if noise_std > 0:
        rays = scan.xyz.astype(np.float64) - sensor
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        noise = np.random.default_rng(seed).normal(0.0, noise_std, len(rays))
        scan.xyz = (scan.xyz + rays * noise[:, None]).astype(np.float32)
    return scan


def sensor_positions(obj: SyntheticObject, azimuths: np.ndarray, elevations: np.ndarray) -> np.ndarray:
    """(F, 3) sensor positions at the given azimuths (radians from +x, about z) and elevations,
    1.5 diameters + 0.5 m from the object's bounding-box centre."""
    lo, hi = obj.xyz.min(axis=0).astype(np.float64), obj.xyz.max(axis=0).astype(np.float64)
    centre, diameter = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    azimuths, elevations = np.broadcast_arrays(np.asarray(azimuths, float), np.asarray(elevations, float))
    directions = np.stack([np.cos(elevations) * np.cos(azimuths), np.cos(elevations) * np.sin(azimuths),
                           np.sin(elevations)], axis=-1).reshape(-1, 3)
    return centre + directions * (1.5 * diameter + 0.5)


def sensor_sequence(obj: SyntheticObject, num_frames: int, seed: int = 0, noise_std: float = 0.002,
                    arc_degrees: float = 100.0) -> list[tuple[np.ndarray, SyntheticObject]]:
    """Scans from sensor positions on an arc in front (+x) of the object, looking at its centre,
    as a robot walking past it would get: [(sensor_position (3,) float64, scan), ...]."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    rng = np.random.default_rng(seed)
    half = np.deg2rad(arc_degrees) / 2
    azimuths = np.linspace(-half, half, num_frames) + rng.uniform(-0.05, 0.05, num_frames)
    elevations = np.deg2rad(rng.uniform(20, 35)) + rng.uniform(-0.03, 0.03, num_frames)
    positions = sensor_positions(obj, azimuths, elevations)
    frame_seeds = rng.integers(0, 2 ** 31 - 1, num_frames)
    return [(p, partial_scan(obj, p, noise_std, int(s))) for p, s in zip(positions, frame_seeds)]


def fused_scan(obj: SyntheticObject, num_frames: int = 4, seed: int = 0, noise_std: float = 0.002,
               arc_degrees: float = 100.0, voxel_size: float = 0.005) -> SyntheticObject:
    """``num_frames`` scans along an arc in front of the object (``sensor_sequence``), concatenated and
    thinned to one point per ``voxel_size`` voxel (metres; 0 = keep all), as the node's window fusion
    does with perfectly registered frames."""
    scans = [scan for _, scan in sensor_sequence(obj, num_frames, seed, noise_std, arc_degrees)]
    fused = SyntheticObject(obj.category, list(obj.part_names), *(np.concatenate([getattr(s, name) for s in scans])
                            for name in ("xyz", "rgb", "normals", "point_label", "point_instance")))
    if voxel_size > 0 and fused.num_points:
        cells = np.floor(fused.xyz / voxel_size).astype(np.int64)
        _, first = np.unique(cells, axis=0, return_index=True)
        fused = fused.subset(np.sort(first))
    return fused


SCAN_KINDS = ("full", "partial", "fused")


def make_scan(obj: SyntheticObject, kind: str, seed: int) -> SyntheticObject:
    """The object as a benchmark sees it: ``full`` surface, one noisy ``partial`` scan from a random pose
    in front, or 4 scans ``fused`` along an arc in front."""
    if kind == "full":
        return obj
    if kind == "partial":
        return _random_front_scan(obj, seed)
    if kind == "fused":
        return fused_scan(obj, 4, seed)
    raise ValueError(f"scan kind must be one of {', '.join(SCAN_KINDS)}; got {kind!r}")


def _random_front_scan(obj: SyntheticObject, seed: int) -> SyntheticObject:
    """One noisy scan from a random sensor pose in front of the object."""
    rng = np.random.default_rng(seed)
    position = sensor_positions(obj, rng.uniform(-np.pi / 3, np.pi / 3), np.deg2rad(rng.uniform(15, 40)))[0]
    return partial_scan(obj, position, noise_std=0.002, seed=seed)
