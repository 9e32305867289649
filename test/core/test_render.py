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
