"""Stage 2: render K views of the normalized cloud with a point rasterizer.

Two backends give the same index maps: pytorch3d's ``PointsRasterizer`` (the reference, used when
pytorch3d is importable) and a pure-torch z-buffer point splatter (CPU and CUDA, no compiled code).
Both follow pytorch3d's conventions exactly: ``look_at_view_transform(dist, elev, azim)`` with +Y up,
``FoVPerspectiveCameras`` (aspect 1), NDC with +X left / +Y up, a point covers a pixel when the
pixel centre lies strictly within ``radius`` (NDC units) of the projected point, and the nearest
covering point wins (points_per_pixel = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from partslip_core.config import RenderConfig
from partslip_core.types import RenderedViews


@dataclass
class Cameras:
    """K pytorch3d-convention cameras. rotation: (K, 3, 3), columns = camera x/y/z axes in world;
    position: (K, 3). World -> view: (X - position) @ rotation."""

    rotation: torch.Tensor
    position: torch.Tensor
    fov_degrees: float
    znear: float


def look_at_cameras(views: list[tuple[float, float]], distance: float, fov_degrees: float, znear: float,
                    device: torch.device) -> Cameras:
    """Cameras on a sphere looking at the origin, as pytorch3d's look_at_view_transform (degrees, up = +Y)."""
    angles = torch.tensor(views, dtype=torch.float64, device=device) * (math.pi / 180.0)
    elev, azim = angles[:, 0], angles[:, 1]
    position = distance * torch.stack([torch.cos(elev) * torch.sin(azim), torch.sin(elev),
                                       torch.cos(elev) * torch.cos(azim)], dim=1)
    z_axis = torch.nn.functional.normalize(-position, dim=1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64, device=device).expand_as(z_axis)
    x_axis = torch.nn.functional.normalize(torch.cross(up, z_axis, dim=1), dim=1)
    # pytorch3d replaces a degenerate x axis (camera looking along up) by the cross with +Z.
    degenerate = torch.isclose(x_axis.norm(dim=1), torch.zeros(1, dtype=torch.float64, device=device), atol=5e-3)
    if degenerate.any():
        alt = torch.nn.functional.normalize(torch.cross(up + torch.tensor([0.0, 0.0, 1.0], device=device,
                                                                         dtype=torch.float64), z_axis, dim=1), dim=1)
        x_axis = torch.where(degenerate[:, None], alt, x_axis)
    y_axis = torch.nn.functional.normalize(torch.cross(z_axis, x_axis, dim=1), dim=1)
    rotation = torch.stack([x_axis, y_axis, z_axis], dim=2)
    return Cameras(rotation=rotation.float(), position=position.float(), fov_degrees=fov_degrees, znear=znear)


def project_points(xyz: torch.Tensor, cameras: Cameras, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, 3) world points into every camera.

    Returns screen_xy: (K, N, 2) float32 pixels (x right, y down; pixel (r, c) spans [c, c+1] x [r, r+1]),
    depth: (K, N) float32 view-space z (points with depth <= znear are behind the near plane).
    """
    view = torch.einsum("nd,kde->kne", xyz, cameras.rotation) - torch.einsum(
        "kd,kde->ke", cameras.position, cameras.rotation)[:, None, :]
    depth = view[..., 2]
    focal = 1.0 / math.tan(math.radians(cameras.fov_degrees) / 2.0)
    safe_depth = torch.where(depth.abs() > 1e-9, depth, torch.full_like(depth, 1e-9))
    ndc = view[..., :2] * focal / safe_depth[..., None]
    screen_xy = (1.0 - ndc) * (image_size / 2.0)
    return screen_xy, depth


def _splat_offsets(radius_px: float, device: torch.device) -> torch.Tensor:
    reach = int(math.ceil(radius_px))  # pixel centres within radius_px of a point lie within ceil(r) of floor(x)
    steps = torch.arange(-reach, reach + 1, device=device)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).reshape(-1, 2)
    return grid  # (F, 2) (drow, dcol)


def splat_index_map(screen_xy: torch.Tensor, depth: torch.Tensor, image_size: int, radius_ndc: float,
                    znear: float) -> torch.Tensor:
    """Z-buffer one view: (N, 2) screen coords + (N,) depth -> (H, W) int64 index of the nearest covering point.

    Ties in depth go to the lower point index. Background = -1.
    """
    num_points = screen_xy.shape[0]
    device = screen_xy.device
    scale = image_size / 2.0
    offsets = _splat_offsets(radius_ndc * scale, device)
    base = torch.floor(screen_xy).long()  # (N, 2) as (col, row)
    cols = base[:, None, 0] + offsets[None, :, 1]
    rows = base[:, None, 1] + offsets[None, :, 0]
    dx = (cols.to(screen_xy.dtype) + 0.5 - screen_xy[:, None, 0]) / scale
    dy = (rows.to(screen_xy.dtype) + 0.5 - screen_xy[:, None, 1]) / scale
    covered = (dx * dx + dy * dy < radius_ndc * radius_ndc) & (depth[:, None] > znear)
    covered &= (cols >= 0) & (cols < image_size) & (rows >= 0) & (rows < image_size)
    point_index = torch.arange(num_points, device=device)[:, None].expand_as(cols)[covered]
    pixel = (rows * image_size + cols)[covered]
    pixel_depth = depth[:, None].expand_as(cols)[covered]
    num_pixels = image_size * image_size
    nearest = torch.full((num_pixels,), float("inf"), device=device, dtype=depth.dtype)
    nearest.scatter_reduce_(0, pixel, pixel_depth, reduce="amin")
    winner = pixel_depth <= nearest[pixel]
    index_map = torch.full((num_pixels,), num_points, device=device, dtype=torch.long)
    index_map.scatter_reduce_(0, pixel[winner], point_index[winner], reduce="amin")
    index_map[index_map == num_points] = -1
    return index_map.view(image_size, image_size)


def _rasterize_torch(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig) -> torch.Tensor:
    screen_xy, depth = project_points(xyz, cameras, config.image_size)
    maps = [splat_index_map(screen_xy[k], depth[k], config.image_size, config.point_radius, config.znear)
            for k in range(screen_xy.shape[0])]  # one z-buffer per view bounds memory at K x smaller
    return torch.stack(maps)


def pytorch3d_available() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except Exception:  # ImportError, or a broken compiled extension
        return False
    return True


def _rasterize_pytorch3d(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig) -> torch.Tensor:
    """The reference rasterizer (pytorch3d). Same cameras, radius and nearest-point rule as the torch path."""
    from pytorch3d.renderer import (FoVPerspectiveCameras, PointsRasterizationSettings, PointsRasterizer,
                                    look_at_view_transform)
    from pytorch3d.structures import Pointclouds

    angles = torch.tensor(config.views, dtype=torch.float32)
    rotation, translation = look_at_view_transform(config.camera_distance, angles[:, 0], angles[:, 1])
    p3d_cameras = FoVPerspectiveCameras(device=xyz.device, R=rotation.to(xyz.device), T=translation.to(xyz.device),
                                        fov=config.fov_degrees, znear=config.znear)
    settings = PointsRasterizationSettings(image_size=config.image_size, radius=config.point_radius,
                                           points_per_pixel=1, bin_size=0)
    clouds = Pointclouds(points=[xyz] * len(config.views))
    fragments = PointsRasterizer(cameras=p3d_cameras, raster_settings=settings)(clouds)
    packed = fragments.idx[..., 0]  # (K, H, W) indices into the packed batch
    offsets = torch.arange(len(config.views), device=xyz.device)[:, None, None] * xyz.shape[0]
    return torch.where(packed >= 0, packed - offsets, packed).long()


def choose_backend(config: RenderConfig) -> str:
    if config.backend == "pytorch3d" and not pytorch3d_available():
        raise RuntimeError("render.backend=pytorch3d but pytorch3d cannot be imported; use 'torch' or 'auto'")
    if config.backend == "auto":
        return "pytorch3d" if pytorch3d_available() else "torch"
    return config.backend


def render_views(xyz: np.ndarray | torch.Tensor, rgb: np.ndarray | torch.Tensor, config: RenderConfig,
                 device: torch.device | str = "cpu") -> RenderedViews:
    """Render the normalized cloud (xyz (N, 3), rgb (N, 3) in [0, 1]) from ``config.views``."""
    device = torch.device(device)
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32, device=device)
    rgb_t = torch.as_tensor(rgb, dtype=torch.float32, device=device)
    cameras = look_at_cameras(config.views, config.camera_distance, config.fov_degrees, config.znear, device)
    rasterize = _rasterize_pytorch3d if choose_backend(config) == "pytorch3d" else _rasterize_torch
    index_map = rasterize(xyz_t, cameras, config)
    screen_xy, _ = project_points(xyz_t, cameras, config.image_size)
    num_views, num_points = index_map.shape[0], xyz_t.shape[0]
    flat = index_map.reshape(num_views, -1)
    covered = flat >= 0
    view_ids = torch.arange(num_views, device=device)[:, None].expand_as(flat)[covered]
    visible = torch.zeros((num_views, num_points), dtype=torch.bool, device=device)
    visible[view_ids, flat[covered]] = True  # only covered pixels: most of an image is background
    background = torch.tensor(config.background, device=device)
    colors = (torch.cat([rgb_t, background[None, :]], dim=0) * 255.0).round().clamp(0, 255).to(torch.uint8)
    images = colors[torch.where(index_map >= 0, index_map, num_points)]  # gather uint8: no per-pixel float work
    return RenderedViews(
        images=images.cpu().numpy(),
        pixel_point_index=index_map.cpu().numpy(),
        point_screen_xy=screen_xy.cpu().numpy().astype(np.float32),
        point_visible=visible.cpu().numpy(),
        view_angles=np.asarray(config.views, dtype=np.float32),
    )
