"""The loop z-buffer of the reference: point by point, pixel by pixel, with partslip_core.render's cameras,
conventions and float32 rounding (the authors rasterize with pytorch3d's compiled kernel)."""

from __future__ import annotations

import math

import numpy as np
import torch

from partslip_core.config import RenderConfig
from partslip_core.render import look_at_cameras, project_points
from partslip_core.types import RenderedViews

F32 = np.float32  # numpy float32 scalars round like torch's float32


def reference_index_map(screen_xy: np.ndarray, depth: np.ndarray, image_size: int, radius_ndc: float,
                        znear: float) -> np.ndarray:
    """One view's z-buffer, point by point and pixel by pixel: (N, 2) f32 screen xy + (N,) f32 depth ->
    (H, W) int64 (-1 = none).

    A pixel is covered when its centre lies strictly within ``radius_ndc`` (NDC units) of the point;
    the nearest point wins, ties go to the lower index (points are visited in index order). The
    arithmetic is numpy float32 scalars, so boundary pixels round exactly as in the torch path.
    """
    scale, half = F32(image_size / 2.0), F32(0.5)
    reach = int(math.ceil(radius_ndc * (image_size / 2.0)))
    radius_sq, near = F32(radius_ndc * radius_ndc), F32(znear)
    zbuffer = [math.inf] * (image_size * image_size)
    owner = [-1] * (image_size * image_size)
    for point in range(screen_xy.shape[0]):
        if not depth[point] > near:
            continue
        x, y = screen_xy[point]
        col0, row0 = math.floor(x), math.floor(y)
        point_depth = float(depth[point])
        for row in range(max(row0 - reach, 0), min(row0 + reach, image_size - 1) + 1):
            dy = (F32(row) + half - y) / scale
            for col in range(max(col0 - reach, 0), min(col0 + reach, image_size - 1) + 1):
                dx = (F32(col) + half - x) / scale
                pixel = row * image_size + col
                if dx * dx + dy * dy < radius_sq and point_depth < zbuffer[pixel]:
                    zbuffer[pixel] = point_depth
                    owner[pixel] = point
    return np.asarray(owner, dtype=np.int64).reshape(image_size, image_size)


def reference_render(xyz: np.ndarray, rgb: np.ndarray, config: RenderConfig) -> RenderedViews:
    """K views with the loop z-buffer; same cameras and conventions as partslip_core.render (CPU)."""
    cameras = look_at_cameras(config.views, config.camera_distance, config.fov_degrees, config.znear,
                              torch.device("cpu"))
    screen_t, depth_t = project_points(torch.as_tensor(xyz, dtype=torch.float32), cameras, config.image_size)
    screen, depth = screen_t.numpy(), depth_t.numpy()
    maps = np.stack([reference_index_map(screen[k], depth[k], config.image_size, config.point_radius, config.znear)
                     for k in range(screen.shape[0])])
    num_points = xyz.shape[0]
    visible = np.zeros((maps.shape[0], num_points), dtype=bool)
    for view in range(maps.shape[0]):
        ids = np.unique(maps[view])
        visible[view, ids[ids >= 0]] = True
    colors = np.concatenate([np.asarray(rgb, np.float32) * F32(255.0),
                             np.asarray(config.background, np.float32)[None, :] * F32(255.0)])
    images = np.clip(np.round(colors[np.where(maps >= 0, maps, num_points)]), 0, 255).astype(np.uint8)
    return RenderedViews(images=images, pixel_point_index=maps, point_screen_xy=screen.astype(np.float32),
                         point_visible=visible, view_angles=np.asarray(config.views, dtype=np.float32))
