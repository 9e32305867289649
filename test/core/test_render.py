"""Rendering: pytorch3d camera conventions, z-buffer correctness, index maps vs screen coordinates."""

import numpy as np
import pytest
import torch

from partslip_core.config import RenderConfig
from partslip_core.render import look_at_cameras, project_points, pytorch3d_available, render_views


def _config(**kw):
    base = dict(views=[(0.0, 0.0)], image_size=64, point_radius=0.05, backend="torch")
    base.update(kw)
    return RenderConfig(**base)


def test_camera_conventions_match_pytorch3d():
    """From (elev 0, azim 0) the camera sits on +Z looking at the origin: +X appears right, +Y appears up."""
    cams = look_at_cameras([(0.0, 0.0)], 2.2, 60.0, 0.01, torch.device("cpu"))
    assert torch.allclose(cams.position[0], torch.tensor([0.0, 0.0, 2.2]), atol=1e-6)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    xy, depth = project_points(pts, cams, 100)
    assert torch.allclose(xy[0, 0], torch.tensor([50.0, 50.0]), atol=1e-4)
    assert xy[0, 1, 0] > 50 and abs(xy[0, 1, 1] - 50) < 1e-4
    assert xy[0, 2, 1] < 50 and abs(xy[0, 2, 0] - 50) < 1e-4
    # pinhole: offset = f * x / z with f = 1 / tan(30 deg) in NDC, 50 px per NDC unit
    expected = 50 + 50 * (0.5 / 2.2) / np.tan(np.radians(30))
    assert abs(float(xy[0, 1, 0]) - expected) < 1e-3
    assert torch.allclose(depth[0], torch.tensor([2.2, 2.2, 2.2]))


def test_azimuth_rotates_about_up_axis():
    cams = look_at_cameras([(0.0, 90.0), (90.0 - 1e-3, 0.0)], 2.2, 60.0, 0.01, torch.device("cpu"))
    assert torch.allclose(cams.position[0], torch.tensor([2.2, 0.0, 0.0]), atol=1e-5)
    assert cams.position[1, 1] > 2.19  # elevation 90: above the object
    rotation = cams.rotation
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(2), atol=1e-5)


def test_nearest_point_wins_and_background_is_minus_one():
    xyz = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5], [5.0, 5.0, 0.0]], np.float32)  # #1 in front of #0
    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    views = render_views(xyz, rgb, _config())
    index_map = views.pixel_point_index[0]
    assert index_map[32, 32] == 1
    assert views.point_visible[0].tolist() == [False, True, False]  # #0 hidden, #2 off-screen
    assert (index_map == -1).sum() > 0.9 * index_map.size
    assert views.images[0, 32, 32].tolist() == [0, 255, 0]
    assert views.images[0, 0, 0].tolist() == [255, 255, 255]


def test_index_map_agrees_with_screen_coordinates():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(20000, 3)).astype(np.float32)
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    config = _config(views=[(10.0, 0.0), (40.0, 120.0), (-20.0, 300.0)], image_size=96, point_radius=0.06)
    views = render_views(xyz, np.full_like(xyz, 0.5), config)
    k, rows, cols = np.nonzero(views.pixel_point_index >= 0)
    owner = views.pixel_point_index[k, rows, cols]
    centre = np.stack([cols + 0.5, rows + 0.5], axis=1)
    distance_ndc = np.linalg.norm(views.point_screen_xy[k, owner] - centre, axis=1) / (96 / 2)
    assert distance_ndc.max() < 0.06  # every owned pixel is within the point radius
    # the visible flags are exactly the owners of pixels
    for view in range(3):
        owners = np.unique(views.pixel_point_index[view][views.pixel_point_index[view] >= 0])
        assert np.array_equal(np.nonzero(views.point_visible[view])[0], owners)
    # a dense sphere seen from outside: visible points face the camera (no see-through gaps)
    cams = look_at_cameras(config.views, 2.2, 60.0, 0.01, torch.device("cpu"))
    facing = (xyz @ cams.position.numpy().T)  # (N, K) dot with camera position
    assert (facing[views.point_visible.T] > 0).mean() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-0.7, 0.7, size=(5000, 3)).astype(np.float32)
    config = _config(views=[(10.0, 0.0), (40.0, 120.0)], image_size=128, point_radius=0.01)
    cpu = render_views(xyz, np.full_like(xyz, 0.5), config, "cpu")
    gpu = render_views(xyz, np.full_like(xyz, 0.5), config, "cuda")
    assert (cpu.pixel_point_index == gpu.pixel_point_index).mean() > 0.999


@pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d not installed (it is in the Docker image)")
def test_torch_splatter_matches_pytorch3d():
    """Stated tolerance: >= 99% of pixels get the same index (differences come from float ties at radius edges)."""
    rng = np.random.default_rng(2)
    xyz = rng.uniform(-0.7, 0.7, size=(20000, 3)).astype(np.float32)
    torch_views = render_views(xyz, np.full_like(xyz, 0.5), RenderConfig(backend="torch", image_size=256))
    p3d_views = render_views(xyz, np.full_like(xyz, 0.5), RenderConfig(backend="pytorch3d", image_size=256))
    assert (torch_views.pixel_point_index == p3d_views.pixel_point_index).mean() >= 0.99


def _two_pass_zbuffer(screen_xy, depth, image_size, radius_ndc, znear):
    """Oracle: one view at a time, every footprint pixel of every point, nearest depth then lowest index.
    The unfused z-buffer the fused packed-key scatter replaced."""
    scale = image_size / 2.0
    reach = int(np.ceil(radius_ndc * scale))
    steps = torch.arange(-reach, reach + 1)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).reshape(-1, 2)
    maps = []
    for xy, z in zip(screen_xy, depth):
        base = torch.floor(xy).long()
        cols, rows = base[:, None, 0] + offsets[None, :, 1], base[:, None, 1] + offsets[None, :, 0]
        dx = (cols.float() + 0.5 - xy[:, None, 0]) / scale
        dy = (rows.float() + 0.5 - xy[:, None, 1]) / scale
        covered = (dx * dx + dy * dy < radius_ndc ** 2) & (z[:, None] > znear)
        covered &= (cols >= 0) & (cols < image_size) & (rows >= 0) & (rows < image_size)
        point = torch.arange(len(z))[:, None].expand_as(cols)[covered]
        pixel, pixel_depth = (rows * image_size + cols)[covered], z[:, None].expand_as(cols)[covered]
        nearest = torch.full((image_size ** 2,), float("inf")).scatter_reduce(0, pixel, pixel_depth, reduce="amin")
        winner = pixel_depth <= nearest[pixel]
        index = torch.full((image_size ** 2,), len(z)).scatter_reduce(0, pixel[winner], point[winner], reduce="amin")
        maps.append(torch.where(index == len(z), -1, index).view(image_size, image_size))
    return torch.stack(maps)


@pytest.mark.parametrize("views_per_batch_limit", [None, 1])
def test_fused_splat_equals_the_two_pass_zbuffer(views_per_batch_limit, monkeypatch):
    """Exact equality, including depth ties (duplicated points: the lower index wins), points behind the
    camera and off-screen, and view batching (a z-buffer budget of one view per scatter)."""
    from partslip_core import render
    if views_per_batch_limit is not None:
        monkeypatch.setattr(render, "_ZBUFFER_PER_BATCH", 1)
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-1.4, 1.4, size=(3000, 3)).astype(np.float32)
    xyz = np.concatenate([xyz, xyz[:500]])  # exact depth ties
    xyz[500:550, 2] = 3.0  # behind the camera of view (0, 0)
    cams = look_at_cameras([(0.0, 0.0), (40.0, 120.0), (-20.0, 300.0)], 2.2, 60.0, 0.01, torch.device("cpu"))
    screen_xy, depth = project_points(torch.from_numpy(xyz), cams, 96)
    fused = render.splat_index_maps(screen_xy, depth, 96, 0.04, 0.01)
    expected = _two_pass_zbuffer(screen_xy, depth, 96, 0.04, 0.01)
    assert torch.equal(fused, expected)
    assert (fused >= 3000).sum() == 0  # duplicates never win a tie against their lower-index twin
    assert (fused >= 0).float().mean() > 0.2


def test_auto_backend_is_the_splatter_on_cpu_and_pytorch3d_on_cuda(monkeypatch):
    """pytorch3d's CPU rasterizer is a naive loop (minutes per object at 800 px): auto never picks it on CPU."""
    from partslip_core import render
    monkeypatch.setattr(render, "pytorch3d_available", lambda: True)
    assert render.choose_backend(RenderConfig(backend="auto"), "cpu") == "torch"
    assert render.choose_backend(RenderConfig(backend="auto"), "cuda") == "pytorch3d"
    assert render.choose_backend(RenderConfig(backend="pytorch3d"), "cpu") == "pytorch3d"  # explicit choice kept
    monkeypatch.setattr(render, "pytorch3d_available", lambda: False)
    assert render.choose_backend(RenderConfig(backend="auto"), "cuda") == "torch"
    with pytest.raises(RuntimeError, match="pytorch3d cannot be imported"):
        render.choose_backend(RenderConfig(backend="pytorch3d"), "cuda")


def test_uncoloured_cloud_is_shaded_by_its_angle_to_the_camera():
    """Two square patches seen from (0, 0): one facing the camera, one tilted by 75 degrees. Without
    rgb the facing one is drawn brighter; the index maps do not depend on colour; flat = mid grey."""
    grid = np.stack(np.meshgrid(np.linspace(-0.25, 0.25, 60), np.linspace(-0.25, 0.25, 60)), -1).reshape(-1, 2)
    facing = np.c_[grid[:, 0] - 0.4, grid[:, 1], np.zeros(len(grid))]
    tilt = np.radians(75)
    tilted = np.c_[grid[:, 0] * np.cos(tilt) + 0.4, grid[:, 1], grid[:, 0] * np.sin(tilt)]
    xyz = np.concatenate([facing, tilted]).astype(np.float32)
    config = _config(image_size=128, point_radius=0.02)
    shaded = render_views(xyz, None, config)
    coloured = render_views(xyz, np.full_like(xyz, 0.3), config)
    assert np.array_equal(shaded.pixel_point_index, coloured.pixel_point_index)
    index, grey = shaded.pixel_point_index[0], shaded.images[0, ..., 0].astype(float)
    bright, dim = grey[(index >= 0) & (index < len(facing))], grey[index >= len(facing)]
    assert bright.mean() > dim.mean() + 80  # |cos| 1 vs 0.26: 0.7 * 0.74 * 255 = 132 levels apart
    assert (shaded.images[0][index < 0] == 255).all()  # background untouched
    flat = render_views(xyz, None, _config(image_size=128, point_radius=0.02, uncoloured="flat"))
    assert (flat.images[0][index >= 0] == 128).all()


def test_segment_shades_a_cloud_without_rgb(synthetic_objects):
    """The pipeline tells the renderer that the input had no colour (PointCloud.rgb is None)."""
    from partslip_core import PipelineConfig, PointCloud, segment
    from partslip_core.detect import ProjectedGroundTruthDetector
    obj = synthetic_objects["mug"]
    config = PipelineConfig()
    config.render.image_size, config.render.views = 96, [(10.0, 0.0)]
    detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=0)
    result = segment(PointCloud.from_arrays(obj.xyz), obj.part_names, config, detector, keep_views=True)
    grey = result.views.images[0][result.views.pixel_point_index[0] >= 0]
    assert (grey[:, 0] == grey[:, 1]).all() and grey[:, 0].std() > 10  # grey, and not one flat level
