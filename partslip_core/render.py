"""Stage 2: render K views of the normalized cloud with a point rasterizer.

Two backends give the same index maps: pytorch3d's ``PointsRasterizer`` (the reference) and a
pure-torch z-buffer point splatter (CPU and CUDA, no compiled code, one packed-key scatter per batch
of views). ``render.backend: auto`` picks by device: the splatter on CPU, pytorch3d on CUDA when it imports.
Both follow pytorch3d's conventions exactly: ``look_at_view_transform(dist, elev, azim)`` with +Y up,
``FoVPerspectiveCameras`` (aspect 1), NDC with +X left / +Y up, a point covers a pixel when the
pixel centre lies strictly within ``radius`` (NDC units) of the projected point, and the nearest
covering point wins (points_per_pixel = 1).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Optional

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


_NO_POINT = torch.iinfo(torch.int64).max  # z-buffer value of an uncovered pixel
_CANDIDATES_PER_BATCH = 24 * 2 ** 20  # (view, point, footprint pixel) tests per batch: bounds peak memory
# z-buffer entries per batch (16 MiB): small enough for the allocator to reuse the buffer across batches
# and calls instead of mapping fresh pages (page faults on a 10-view 800 px buffer cost more than the splat).
_ZBUFFER_PER_BATCH = 2 * 2 ** 20


def splat_reach(radius_px: float) -> int:
    """Reach in pixels: pixel centres within radius_px of x lie within ceil(radius_px) of floor(x)."""
    return int(math.ceil(radius_px))


def splat_index_maps(screen_xy: torch.Tensor, depth: torch.Tensor, image_size: int, radius_ndc: float,
                     znear: float) -> torch.Tensor:
    """Z-buffer K views at once: (K, N, 2) screen coords + (K, N) depth -> (K, H, W) int64 index of
    the nearest covering point (ties in depth go to the lower index), -1 = background.

    One scatter per batch of views: each candidate (point, pixel) carries the key
    (float32 bits of its depth << 32 | point index), and ``amin`` over the keys of a pixel is the
    nearest point with the lowest index, because positive floats order like their bit patterns.
    The z-buffer has a margin of 2 * reach pixels, so candidates need no bounds test.
    """
    num_views, num_points = depth.shape
    scale = image_size / 2.0
    reach = splat_reach(radius_ndc * scale)
    footprint = (2 * reach + 1) ** 2
    padded = image_size + 4 * reach
    index_maps = torch.empty((num_views, image_size, image_size), dtype=torch.int64, device=screen_xy.device)
    views_per_batch = max(1, min(_CANDIDATES_PER_BATCH // max(1, num_points * footprint),
                                 _ZBUFFER_PER_BATCH // (padded * padded)))
    if screen_xy.device.type == "cuda":  # page faults do not apply there: all views in one launch up to 8x the budget
        views_per_batch = max(1, 8 * _CANDIDATES_PER_BATCH // max(1, num_points * footprint))
    views_per_batch = min(views_per_batch, num_views)
    zbuffer = torch.empty(views_per_batch * padded * padded, dtype=torch.int64, device=screen_xy.device)
    for first in range(0, num_views, views_per_batch):
        last = min(first + views_per_batch, num_views)
        _splat_batch(screen_xy[first:last], depth[first:last], image_size, scale, radius_ndc, znear, reach,
                     zbuffer[:(last - first) * padded * padded], index_maps[first:last])
    return index_maps


def _splat_batch(screen_xy: torch.Tensor, depth: torch.Tensor, image_size: int, scale: float, radius_ndc: float,
                 znear: float, reach: int, zbuffer: torch.Tensor, out: torch.Tensor) -> None:
    num_views, num_points = depth.shape
    device = screen_xy.device
    margin = 2 * reach
    padded = image_size + 2 * margin
    base = torch.floor(screen_xy).long()  # (V, N, 2) as (col, row)
    near_image = (depth > znear) & (base >= -reach).all(dim=2) & (base < image_size + reach).all(dim=2)
    pair = torch.nonzero(near_image.reshape(-1)).view(-1)  # (view, point) pairs that may cover a pixel
    view, point = torch.div(pair, num_points, rounding_mode="floor"), pair % num_points
    xy, base = screen_xy.reshape(-1, 2).index_select(0, pair), base.reshape(-1, 2).index_select(0, pair)
    steps = torch.arange(-reach, reach + 1, device=device)
    # Same arithmetic as a per-pixel test ((c + 0.5 - x) / scale)^2 + (...)^2 < r^2, computed per axis.
    dx = ((base[:, 0:1] + steps).to(xy.dtype) + 0.5 - xy[:, 0:1]) / scale  # (M, 2r+1) per column offset
    dy = ((base[:, 1:2] + steps).to(xy.dtype) + 0.5 - xy[:, 1:2]) / scale  # per row offset
    covered = (dy * dy)[:, :, None] + (dx * dx)[:, None, :] < radius_ndc * radius_ndc  # (M, rows, cols)
    candidate, offset = torch.nonzero(covered.view(covered.shape[0], -1), as_tuple=True)
    origin = (view * padded + base[:, 1] + margin - reach) * padded + base[:, 0] + margin - reach
    step = steps + reach  # 0 .. 2r: a row-major footprint offset -> its z-buffer offset
    pixel = origin[candidate] + (step[:, None] * padded + step[None, :]).reshape(-1)[offset]
    key = (depth.reshape(-1).index_select(0, pair).view(torch.int32).to(torch.int64) << 32) | point
    zbuffer.fill_(_NO_POINT)
    zbuffer.scatter_reduce_(0, pixel, key[candidate], reduce="amin")
    crop = (slice(None), slice(margin, margin + image_size), slice(margin, margin + image_size))
    if sys.byteorder == "little":  # the low 32-bit word is the index, and 0xFFFFFFFF (= -1) for _NO_POINT
        out.copy_(zbuffer.view(torch.int32)[0::2].view(num_views, padded, padded)[crop])
    else:
        inside = zbuffer.view(num_views, padded, padded)[crop]
        out.copy_(torch.where(inside == _NO_POINT, -1, inside & 0xFFFFFFFF))


def _rasterize_torch(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig, screen_xy: torch.Tensor,
                     depth: torch.Tensor) -> torch.Tensor:
    return splat_index_maps(screen_xy, depth, config.image_size, config.point_radius, config.znear)


def pytorch3d_available() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except Exception:  # ImportError, or a broken compiled extension
        return False
    return True


def _rasterize_pytorch3d(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig, screen_xy: torch.Tensor,
                         depth: torch.Tensor) -> torch.Tensor:
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


def choose_backend(config: RenderConfig, device: torch.device | str = "cpu") -> str:
    """The rasterizer that runs. ``auto``: the torch splatter on CPU (pytorch3d's CPU rasterizer is
    a naive loop, 16.8 s per 20k-point object at 200 px against 0.36 s at 800 px for the splatter);
    on CUDA pytorch3d when importable (the design's renderer; bench/run_gpu_checks.sh times both), else torch.
    """
    if config.backend == "pytorch3d" and not pytorch3d_available():
        raise RuntimeError("render.backend=pytorch3d but pytorch3d cannot be imported; use 'torch' or 'auto'")
    if config.backend == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return "pytorch3d" if on_cuda and pytorch3d_available() else "torch"
    return config.backend


def shaded_grey(xyz: torch.Tensor, normals: Optional[torch.Tensor], cameras: Cameras, depth: torch.Tensor,
                config: RenderConfig) -> torch.Tensor:
    """(K, N) grey levels in [0, 1] for a cloud without colour: 0.15 + 0.7 |cos| of the angle between
    the normal and the ray to the camera (a headlight; normals are estimated from 16 neighbours when
    not given, their sign does not matter) + 0.15 for the nearest depth fading to 0 at the farthest."""
    if normals is None:
        from partslip_core.superpoints_torch import knn_query, normals_from_neighbors
        distance, index = knn_query(xyz, 16)
        normals = normals_from_neighbors(xyz, distance, index, radius=0.1)
    to_camera = torch.nn.functional.normalize(cameras.position[:, None, :] - xyz[None, :, :], dim=2)
    facing = (to_camera * normals[None, :, :]).sum(dim=2).abs()
    nearness = ((config.camera_distance + 1.0 - depth) / 2.0).clamp(0.0, 1.0)
    return (0.15 + 0.7 * facing + 0.15 * nearness).clamp(0.0, 1.0)


def render_views(xyz: np.ndarray | torch.Tensor, rgb: Optional[np.ndarray | torch.Tensor], config: RenderConfig,
                 device: torch.device | str = "cpu", normals: Optional[np.ndarray | torch.Tensor] = None
                 ) -> RenderedViews:
    """Render the normalized cloud (xyz (N, 3), rgb (N, 3) in [0, 1]) from ``config.views``.

    rgb None = the cloud has no colour: drawn per ``config.uncoloured`` (shaded grey from normals,
    optional (N, 3), and depth; or flat mid grey). After the z-buffer, only covered pixels are touched
    (most of an image is background).
    """
    device = torch.device(device)
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32, device=device)
    rgb_t = None if rgb is None else torch.as_tensor(rgb, dtype=torch.float32, device=device)
    cameras = look_at_cameras(config.views, config.camera_distance, config.fov_degrees, config.znear, device)
    screen_xy, depth = project_points(xyz_t, cameras, config.image_size)
    rasterize = _rasterize_pytorch3d if choose_backend(config, device) == "pytorch3d" else _rasterize_torch
    index_map = rasterize(xyz_t, cameras, config, screen_xy, depth)
    num_views, num_points = index_map.shape[0], xyz_t.shape[0]
    flat = index_map.reshape(-1)
    covered = torch.nonzero(flat >= 0).reshape(-1)
    owner = flat[covered]
    pixels_per_view = config.image_size * config.image_size
    visible = torch.zeros((num_views, num_points), dtype=torch.bool, device=device)
    visible[covered // pixels_per_view, owner] = True
    background = [int(round(channel * 255.0)) for channel in config.background]
    images = torch.empty((flat.shape[0], 3), dtype=torch.uint8, device=device)
    if len(set(background)) == 1:
        images.fill_(background[0])  # one memset (white, grey): cheaper than a strided per-channel copy
    else:
        images.copy_(torch.tensor(background, dtype=torch.uint8, device=device).expand_as(images))
    if rgb_t is not None or config.uncoloured == "flat":
        rgb_t = torch.full_like(xyz_t, 0.5) if rgb_t is None else rgb_t
        images[covered] = (rgb_t * 255.0).round().clamp(0, 255).to(torch.uint8)[owner]
    else:
        normals_t = None if normals is None else torch.as_tensor(normals, dtype=torch.float32, device=device)
        grey = shaded_grey(xyz_t, normals_t, cameras, depth, config)  # (K, N)
        level = (grey * 255.0).round().to(torch.uint8).reshape(-1)
        images[covered] = level[(covered // pixels_per_view) * num_points + owner][:, None].expand(-1, 3)
    return RenderedViews(
        images=images.view(num_views, config.image_size, config.image_size, 3).cpu().numpy(),
        pixel_point_index=index_map.cpu().numpy(),
        point_screen_xy=screen_xy.cpu().numpy().astype(np.float32),
        point_visible=visible.cpu().numpy(),
        view_angles=np.asarray(config.views, dtype=np.float32),
    )
