"""Synthetic sensor views of a scene: one object on a table standing on a floor.

What a robot really sees, for testing object isolation: an organized RGB-D frame (RealSense-like
640 x 480 pinhole, depth noise growing with distance, NaN where nothing is hit) or a 128-ring lidar
sweep (Ouster-like, 45 degree vertical field of view), both in the world frame (Z up, floor at z = 0).
The table (top and four legs) and the floor are ray cast exactly; the object (``partslip_core.synthetic``)
is a dense surface sample z-buffered into the same image, so it occludes and is occluded correctly.

``TabletopScan`` arrays are organized (H, W[, 3]); ``label``/``instance`` are the object's part labels
and instances, -1 for table, floor and no-return pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLE_HEIGHT = 0.72
TABLE_SIZE = (1.2, 0.8)
TABLE_THICKNESS = 0.03
LEG_WIDTH = 0.05
FLOOR_HALF_SIZE = 3.0
TABLE_RGB = np.array([0.55, 0.40, 0.25], np.float32)
FLOOR_RGB = np.array([0.45, 0.45, 0.47], np.float32)


@dataclass
class TabletopScan:
    """One organized scan: xyz (H, W, 3) float32 with NaN for no return, rgb (H, W, 3) float32 in [0, 1],
    label / instance (H, W) int32 (-1 = not the object), part_names of the object."""

    xyz: np.ndarray
    rgb: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    part_names: list[str]

    @property
    def is_object(self) -> np.ndarray:
        return self.label >= 0


def _boxes() -> np.ndarray:
    """(B, 2, 3) min/max corners: the table top, its four legs, and the floor slab (top face at z = 0)."""
    half_x, half_y = TABLE_SIZE[0] / 2, TABLE_SIZE[1] / 2
    boxes = [[[-half_x, -half_y, TABLE_HEIGHT - TABLE_THICKNESS], [half_x, half_y, TABLE_HEIGHT]]]
    inset = LEG_WIDTH
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (half_x - inset), sy * (half_y - inset)
            boxes.append([[cx - LEG_WIDTH / 2, cy - LEG_WIDTH / 2, 0.0],
                          [cx + LEG_WIDTH / 2, cy + LEG_WIDTH / 2, TABLE_HEIGHT - TABLE_THICKNESS]])
    boxes.append([[-FLOOR_HALF_SIZE, -FLOOR_HALF_SIZE, -0.05], [FLOOR_HALF_SIZE, FLOOR_HALF_SIZE, 0.0]])
    return np.asarray(boxes, np.float64)


def raycast_boxes(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab-method ray casting: (R,) distance to the nearest box hit (inf = none) and (R,) box index.
    Memory: R x B x 3 float64 (a 640 x 480 frame with 6 boxes: 44 MB)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions  # (R, 3)
        t0 = (boxes[None, :, 0, :] - origin) * inverse[:, None, :]  # (R, B, 3)
        t1 = (boxes[None, :, 1, :] - origin) * inverse[:, None, :]
    near = np.nanmax(np.minimum(t0, t1), axis=2)
    far = np.nanmin(np.maximum(t0, t1), axis=2)
    hit = (far >= near) & (far > 0)
    distance = np.where(hit, np.maximum(near, 0.0), np.inf)
    index = np.argmin(distance, axis=1)
    return distance[np.arange(len(index)), index], index


def _zbuffer(pixel: np.ndarray, depth: np.ndarray, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the smallest depth and the index of the sample that has it (-1 = none)."""
    best = np.full(num_pixels, np.inf)
    owner = np.full(num_pixels, -1, np.int64)
    if pixel.size:
        order = np.lexsort((depth, pixel))
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]]
        best[pixel[first]], owner[pixel[first]] = depth[first], first
    return best, owner


def _render(origin: np.ndarray, directions: np.ndarray, project, obj, object_offset: np.ndarray,
            noise_std, rng: np.random.Generator, shape: tuple[int, int], part_names) -> TabletopScan:
    """Ray cast the table and floor, z-buffer the object samples, keep the nearer surface per pixel."""
    boxes = _boxes()
    distance, box = raycast_boxes(origin, directions, boxes)
    samples = obj.xyz.astype(np.float64) + object_offset
    pixel, depth, sample_index = project(samples)
    object_depth, owner = _zbuffer(pixel, depth, directions.shape[0])
    owner = np.where(owner >= 0, sample_index[np.maximum(owner, 0)], -1)
    use_object = object_depth < distance
    distance = np.where(use_object, object_depth, distance)
    hit = np.isfinite(distance)
    distance = np.where(hit, distance + noise_std(np.where(hit, distance, 0.0)) * rng.standard_normal(hit.shape), 0.0)
    xyz = (origin + directions * distance[:, None]).astype(np.float32)
    xyz[~hit] = np.nan
    rgb = np.where((box == len(boxes) - 1)[:, None], FLOOR_RGB, TABLE_RGB).astype(np.float32)
    label = np.full(distance.shape, -1, np.int32)
    instance = np.full(distance.shape, -1, np.int32)
    on_object = use_object & hit
    rgb[on_object] = obj.rgb[owner[on_object]]
    label[on_object] = obj.point_label[owner[on_object]]
    instance[on_object] = obj.point_instance[owner[on_object]]
    rgb[~hit] = 0.0
    h, w = shape
    return TabletopScan(xyz.reshape(h, w, 3), rgb.reshape(h, w, 3), label.reshape(h, w), instance.reshape(h, w),
                        list(part_names))


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are the optical frame's x (right), y (down), z (forward) in the world."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward], axis=1)


def _place_object(category: str, seed: int, num_samples: int):
    from partslip_core.synthetic import make_object
    obj = make_object(category, num_samples, seed)
    rng = np.random.default_rng(seed)
    offset = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), TABLE_HEIGHT])
    return obj, offset


def rgbd_tabletop_scan(category: str = "mug", seed: int = 0, width: int = 640, height: int = 480,
                       focal: float = 600.0, num_samples: int = 200_000) -> TabletopScan:
    """An organized RGB-D frame of the object on the table, from a camera about 1 m away looking down."""
    obj, offset = _place_object(category, seed, num_samples)
    rng = np.random.default_rng(seed + 1)
    angle = rng.uniform(-0.6, 0.6)
    target = offset + np.array([0.0, 0.0, 0.05])
    eye = target + np.array([-0.75 * np.cos(angle), -0.75 * np.sin(angle), 0.55])
    rotation = _look_at(eye, target)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(u - width / 2 + 0.5) / focal, (v - height / 2 + 0.5) / focal, np.ones_like(u, float)], -1)
    rays = rays.reshape(-1, 3) / np.linalg.norm(rays.reshape(-1, 3), axis=1, keepdims=True)
    directions = rays @ rotation.T

    def project(points: np.ndarray):
        camera = (points - eye) @ rotation
        front = camera[:, 2] > 0.05
        px = np.floor(camera[:, 0] / camera[:, 2] * focal + width / 2).astype(np.int64)
        py = np.floor(camera[:, 1] / camera[:, 2] * focal + height / 2).astype(np.int64)
        ok = front & (px >= 0) & (px < width) & (py >= 0) & (py < height)
        return (py * width + px)[ok], np.linalg.norm(points - eye, axis=1)[ok], np.flatnonzero(ok)

    return _render(eye, directions, project, obj, offset,
                   lambda d: 0.0015 * d ** 2, rng, (height, width), obj.part_names)


def lidar_tabletop_scan(category: str = "mug", seed: int = 0, rings: int = 128, columns: int = 2048,
                        vertical_fov_deg: float = 45.0, num_samples: int = 200_000) -> TabletopScan:
    """A 360 degree 128-ring sweep from a sensor 1.1 m high, 1.3-1.7 m from the object: floor, table and object."""
    obj, offset = _place_object(category, seed, num_samples)
    rng = np.random.default_rng(seed + 2)
    bearing = rng.uniform(0, 2 * np.pi)
    reach = rng.uniform(1.3, 1.7)
    eye = np.array([offset[0] + reach * np.cos(bearing), offset[1] + reach * np.sin(bearing), 1.1])
    elevation = np.deg2rad(np.linspace(vertical_fov_deg / 2, -vertical_fov_deg / 2, rings))
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    ring_step = vertical_fov_deg / (rings - 1)

    def project(points: np.ndarray):
        rel = points - eye
        rng_m = np.linalg.norm(rel, axis=1)
        ring = np.rint((vertical_fov_deg / 2 - np.rad2deg(np.arcsin(rel[:, 2] / rng_m))) / ring_step).astype(np.int64)
        col = np.rint((np.arctan2(rel[:, 1], rel[:, 0]) + np.pi) / (2 * np.pi) * columns).astype(np.int64) % columns
        ok = (ring >= 0) & (ring < rings)
        return (ring * columns + col)[ok], rng_m[ok], np.flatnonzero(ok)

    return _render(eye, directions, project, obj, offset,
                   lambda d: np.full_like(d, 0.003), rng, (rings, columns), obj.part_names)


def flatten(scan: TabletopScan) -> dict[str, np.ndarray]:
    """Row-major (H*W,) columns of a scan (NaN rows kept, as in an organized PointCloud2)."""
    return {"xyz": scan.xyz.reshape(-1, 3), "rgb": scan.rgb.reshape(-1, 3), "label": scan.label.reshape(-1),
            "instance": scan.instance.reshape(-1)}
