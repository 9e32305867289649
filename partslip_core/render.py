"""Stage 2: render K views of the normalized cloud with a point rasterizer.

Two backends give the same index maps: pytorch3d's ``PointsRasterizer`` (the reference) and a
pure-torch z-buffer point splatter (``partslip_core.splat``: CPU and CUDA, no compiled code, one packed-key
scatter per batch of views). ``render.backend: auto`` picks by device: the splatter on CPU, pytorch3d on
CUDA when it imports.
Both follow pytorch3d's conventions exactly: ``look_at_view_transform(dist, elev, azim)`` with +Y up,
``FoVPerspectiveCameras`` (aspect 1), NDC with +X left / +Y up, a point covers a pixel when the
pixel centre lies strictly within ``radius`` (NDC units) of the projected point, and the nearest
covering point wins (points_per_pixel = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from partslip_core.config import RenderConfig
from partslip_core.splat import Splat, splat_views
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


def _rasterize_torch(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig, screen_xy: torch.Tensor,
                     depth: torch.Tensor, out: torch.Tensor) -> Splat:
    return splat_views(screen_xy, depth, config.image_size, config.point_radius, config.znear, out)


def pytorch3d_available() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except Exception:  # ImportError, or a broken compiled extension
        return False
    return True


def _rasterize_pytorch3d(xyz: torch.Tensor, cameras: Cameras, config: RenderConfig, screen_xy: torch.Tensor,
                         depth: torch.Tensor, out: torch.Tensor) -> Splat:
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
    out.copy_(torch.where(packed >= 0, packed - offsets, packed))
    pixels = [torch.nonzero(view.view(-1) >= 0).view(-1) + k * view.numel() for k, view in enumerate(out)]
    return Splat(out, pixels, [out.view(-1).index_select(0, pixel) for pixel in pixels])


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
                config: RenderConfig, intensity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(K, N) grey levels in [0, 1] for a cloud without colour: 0.15 + 0.7 |cos| of the angle between
    the normal and the ray to the camera (a headlight; normals are estimated from 16 neighbours when
    not given, their sign does not matter) + 0.15 for the nearest depth fading to 0 at the farthest.
    With ``intensity`` (N,) and ``config.intensity_albedo`` w > 0, times the albedo ``intensity_albedo(...)``."""
    if normals is None:
        from partslip_core.superpoints_torch import knn_query, normals_from_neighbors
        distance, index = knn_query(xyz, 16)
        normals = normals_from_neighbors(xyz, distance, index, radius=0.1)
    to_camera = torch.nn.functional.normalize(cameras.position[:, None, :] - xyz[None, :, :], dim=2)
    facing = (to_camera * normals[None, :, :]).sum(dim=2).abs()
    nearness = ((config.camera_distance + 1.0 - depth) / 2.0).clamp(0.0, 1.0)
    grey = (0.15 + 0.7 * facing + 0.15 * nearness).clamp(0.0, 1.0)
    if intensity is None or config.intensity_albedo == 0.0:
        return grey
    return grey * intensity_albedo(intensity, config.intensity_albedo)[None, :]


def intensity_albedo(intensity: torch.Tensor, weight: float) -> torch.Tensor:
    """(N,) albedo 1 - weight + weight * i in [1 - weight, 1], i = intensity scaled to [0, 1] between its 2nd
    and 98th percentile (robust to the few saturated returns of retro-reflectors and to any sensor's unit:
    uint8, 0-1, 0-65535). A cloud of constant intensity gets albedo 1, i.e. the plain shading."""
    values = intensity.float()
    low, high = torch.quantile(values, torch.tensor([0.02, 0.98], dtype=values.dtype, device=values.device)).tolist()
    if not high > low:
        return torch.ones_like(values)
    scaled = ((values - low) / (high - low)).clamp(0.0, 1.0)
    return (1.0 - weight) + weight * scaled


def _host_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialized tensor for a large output. On CPU it is numpy's memory: numpy asks the kernel for
    huge pages on big arrays, which halves the page-fault time of a fresh 51 MB index map (measured 16 -> 9 ms)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


def render_views(xyz: np.ndarray | torch.Tensor, rgb: Optional[np.ndarray | torch.Tensor], config: RenderConfig,
                 device: torch.device | str = "cpu", normals: Optional[np.ndarray | torch.Tensor] = None,
                 intensity: Optional[np.ndarray | torch.Tensor] = None) -> RenderedViews:
    """Render the normalized cloud (xyz (N, 3), rgb (N, 3) in [0, 1]) from ``config.views``.

    rgb None = the cloud has no colour: drawn per ``config.uncoloured`` (shaded grey from normals,
    optional (N, 3), and depth, times an albedo from ``intensity`` (N,) when given (lidar XYZI,
    ``config.intensity_albedo``); or flat mid grey). With rgb, normals and intensity are not used.
    After the z-buffer, only the covered pixels are touched (an object covers 10-20% of an image).
    """
    device = torch.device(device)
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32, device=device)
    rgb_t = None if rgb is None else torch.as_tensor(rgb, dtype=torch.float32, device=device)
    cameras = look_at_cameras(config.views, config.camera_distance, config.fov_degrees, config.znear, device)
    screen_xy, depth = project_points(xyz_t, cameras, config.image_size)
    num_views, num_points, size = len(config.views), xyz_t.shape[0], config.image_size
    index_map = _host_empty((num_views, size, size), torch.int64, device)
    rasterize = _rasterize_pytorch3d if choose_backend(config, device) == "pytorch3d" else _rasterize_torch
    splat = rasterize(xyz_t, cameras, config, screen_xy, depth, index_map)
    images = _host_empty((num_views, size, size, 3), torch.uint8, device)
    background = [int(round(channel * 255.0)) for channel in config.background]
    if len(set(background)) == 1:
        images.fill_(background[0])  # one memset (white, grey): cheaper than a strided per-channel copy
    else:
        images.copy_(torch.tensor(background, dtype=torch.uint8, device=device).expand_as(images))
    if rgb_t is not None or config.uncoloured == "flat":
        rgb_t = torch.full_like(xyz_t, 0.5) if rgb_t is None else rgb_t
        colour = (rgb_t * 255.0).round().clamp(0, 255).to(torch.uint8)  # (N, 3), the same for every view
        grey = None
    else:
        normals_t = None if normals is None else torch.as_tensor(normals, dtype=torch.float32, device=device)
        intensity_t = None if intensity is None else torch.as_tensor(intensity, device=device).reshape(-1)
        grey = shaded_grey(xyz_t, normals_t, cameras, depth, config, intensity_t)
        grey = (grey * 255.0).round().to(torch.uint8)  # (K, N)
    visible = torch.zeros((num_views, num_points), dtype=torch.bool, device=device)
    for view, (pixel, owner) in enumerate(zip(splat.pixels, splat.owners)):
        visible[view].index_fill_(0, owner, True)
        drawn = (colour.index_select(0, owner) if grey is None
                 else grey[view].index_select(0, owner)[:, None].expand(-1, 3))
        images.view(-1, 3).index_copy_(0, pixel, drawn)
    rendered = RenderedViews(
        images=images.cpu().numpy(),
        pixel_point_index=index_map.cpu().numpy(),
        point_screen_xy=screen_xy.cpu().numpy().astype(np.float32, copy=False),
        point_visible=visible.cpu().numpy(),
        view_angles=np.asarray(config.views, dtype=np.float32),
    )
    rendered.cache_covered_pixels(torch.cat(splat.pixels).cpu().numpy())  # the z-buffer found them: free here
    return rendered
