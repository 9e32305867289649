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


_ORACLE_MAPS: dict[float, torch.Tensor] = {}


@pytest.mark.parametrize("radius", [0.004, 0.04, 0.1])  # 0.19, 1.92, 4.8 px at 96 px
@pytest.mark.parametrize("batching", ["default", "one view per z-buffer", "chunks of points"])
def test_fused_splat_equals_the_two_pass_zbuffer(radius, batching, monkeypatch):
    """Exact equality, including depth ties (duplicated points: the lower index wins), points behind the
    camera and off-screen, a view that sees no point at all, splat radii with different footprints, and
    view batching (budgets of one view per z-buffer, of a few hundred points per scatter)."""
    from partslip_core import splat
    if batching == "one view per z-buffer":
        monkeypatch.setattr(splat, "_ZBUFFER_PER_BATCH", {"cpu": 1, "cuda": 1})
    elif batching == "chunks of points":  # one view per batch, its points in chunks of ~250 (several scatters)
        monkeypatch.setattr(splat, "_CANDIDATES_PER_BATCH", {"cpu": 5000, "cuda": 5000})
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-1.4, 1.4, size=(3000, 3)).astype(np.float32)
    xyz = np.concatenate([xyz, xyz[:500]])  # exact depth ties
    xyz[500:550, 2] = 3.0  # behind the camera of view (0, 0)
    views = [(0.0, 0.0), (40.0, 120.0), (-20.0, 300.0), (0.0, 180.0)]
    cams = look_at_cameras(views, 2.2, 60.0, 0.01, torch.device("cpu"))
    screen_xy, depth = project_points(torch.from_numpy(xyz), cams, 96)
    depth[3] = -1.0  # the last view sees nothing: every point behind its camera
    fused = splat.splat_index_maps(screen_xy, depth, 96, radius, 0.01)
    if radius not in _ORACLE_MAPS:  # the same scene for every batching: compute the slow oracle once per radius
        _ORACLE_MAPS[radius] = _two_pass_zbuffer(screen_xy, depth, 96, radius, 0.01)
    expected = _ORACLE_MAPS[radius]
    assert torch.equal(fused, expected)
    assert (fused >= 3000).sum() == 0  # duplicates never win a tie against their lower-index twin
    assert (fused[:3] >= 0).float().mean() > (0.01 if radius < 0.01 else 0.2) and (fused[3] == -1).all()


@pytest.mark.parametrize("radius_px", [0.3, 1.0, 1.5, 2.0, 2.4, 3.36])
def test_footprint_holds_every_covered_offset_and_its_certain_ones_are_always_covered(radius_px):
    """Random sub-pixel positions, the renderer's float32 test: covered offsets lie in the footprint, and the
    offsets the footprint calls certain (not tested per candidate) are covered at every position."""
    from partslip_core.splat import Footprint
    footprint = Footprint.of(radius_px)
    offsets = list(zip(footprint.rows, footprint.cols))
    certain = set(offsets[footprint.num_tested:])
    assert len(set(offsets)) == len(offsets) and footprint.reach <= int(np.ceil(radius_px))
    rng = np.random.default_rng(0)
    xy = torch.from_numpy(rng.uniform(0, 400, size=(20000, 2)).astype(np.float32))
    scale, radius_ndc = 200.0, radius_px / 200.0
    base = torch.floor(xy).long()
    reach = int(np.ceil(radius_px)) + 1
    for row in range(-reach, reach + 1):
        for col in range(-reach, reach + 1):
            dx = ((base[:, 0] + col).float() + 0.5 - xy[:, 0]) / scale
            dy = ((base[:, 1] + row).float() + 0.5 - xy[:, 1]) / scale
            covered = dx * dx + dy * dy < radius_ndc * radius_ndc
            if (row, col) in certain:
                assert covered.all(), (row, col)
            elif covered.any():
                assert (row, col) in offsets, (row, col)
    if radius_px == 2.0:  # the reference settings (0.005 NDC at 800 px): 21 offsets, 5 of them certain
        assert len(offsets) == 21 and len(certain) == 5


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


def test_covered_pixels_are_handed_over_by_the_renderer_and_recomputed_after_replace():
    import dataclasses
    rng = np.random.default_rng(4)
    xyz = rng.uniform(-0.8, 0.8, size=(3000, 3)).astype(np.float32)
    views = render_views(xyz, None, _config(views=[(10.0, 0.0), (40.0, 120.0)], image_size=96, point_radius=0.03))
    scan = np.flatnonzero(views.pixel_point_index.reshape(-1) >= 0)
    assert views._covered_pixels is not None and np.array_equal(views.covered_pixels(), scan)
    blank = dataclasses.replace(views, pixel_point_index=np.full_like(views.pixel_point_index, -1))
    assert blank.covered_pixels().size == 0  # a replaced map never reuses the old list


def _two_facing_patches():
    """Two flat patches facing the camera of view (0, 0), side by side: left = points 0..3599, right = 3600.."""
    grid = np.stack(np.meshgrid(np.linspace(-0.25, 0.25, 60), np.linspace(-0.25, 0.25, 60)), -1).reshape(-1, 2)
    left = np.c_[grid[:, 0] - 0.4, grid[:, 1], np.zeros(len(grid))]
    right = np.c_[grid[:, 0] + 0.4, grid[:, 1], np.zeros(len(grid))]
    return np.concatenate([left, right]).astype(np.float32), len(grid)


def test_intensity_is_the_albedo_of_an_uncoloured_cloud():
    """Same geometry, left patch bright returns (intensity 200), right patch dark (10), a few saturated
    retro-reflector points (4000) that the robust scaling ignores: with w = 0.5 the dark patch is drawn at
    half the grey of the bright one, each pixel exactly grey x albedo."""
    from partslip_core.render import intensity_albedo, shaded_grey
    xyz, half = _two_facing_patches()
    intensity = np.r_[np.full(half, 200.0), np.full(half, 10.0)].astype(np.float32)
    intensity[::500] = 4000.0  # 2% outliers above the 98th percentile
    config = _config(image_size=128, point_radius=0.02)
    views = render_views(xyz, None, config, intensity=intensity)
    plain = render_views(xyz, None, config)
    index, grey = views.pixel_point_index[0], views.images[0, ..., 0].astype(float)
    bright, dark = grey[(index >= 0) & (index < half)], grey[index >= half]
    assert abs(dark.mean() / bright.mean() - 0.5) < 0.02
    # exact: the shading without intensity times the albedo (1 for the bright points, 0.5 for the dark ones)
    cams = look_at_cameras(config.views, config.camera_distance, config.fov_degrees, config.znear, torch.device("cpu"))
    screen, depth = project_points(torch.from_numpy(xyz), cams, config.image_size)
    albedo = intensity_albedo(torch.from_numpy(intensity), 0.5)
    assert torch.allclose(albedo[:half][intensity[:half] == 200], torch.ones(1)) and torch.allclose(
        albedo[half:][intensity[half:] == 10], torch.full((1,), 0.5))
    level = (shaded_grey(torch.from_numpy(xyz), None, cams, depth, config) * albedo * 255.0).round()[0]
    covered = index >= 0
    assert np.array_equal(grey[covered], level.numpy()[index[covered]])
    assert np.array_equal(views.pixel_point_index, plain.pixel_point_index)
    assert not np.array_equal(views.images, plain.images)


def test_clouds_without_intensity_render_exactly_as_before():
    """No intensity, constant intensity or intensity_albedo 0 give the plain shading, bit for bit; a cloud with
    rgb ignores intensity; the plain shading is 0.15 + 0.7 |cos| + 0.15 nearness, rounded (the formula of
    the previous release)."""
    xyz, half = _two_facing_patches()
    config = _config(image_size=128, point_radius=0.02)
    plain = render_views(xyz, None, config)
    varied = np.random.default_rng(0).uniform(0, 255, len(xyz)).astype(np.float32)
    assert np.array_equal(render_views(xyz, None, config, intensity=np.full(len(xyz), 7.0)).images, plain.images)
    assert np.array_equal(render_views(xyz, None, _config(image_size=128, point_radius=0.02, intensity_albedo=0.0),
                                       intensity=varied).images, plain.images)
    rgb = np.full_like(xyz, 0.3)
    assert np.array_equal(render_views(xyz, rgb, config, intensity=varied).images, render_views(xyz, rgb, config).images)
    cams = look_at_cameras(config.views, 2.2, 60.0, 0.01, torch.device("cpu"))
    position = cams.position[0].numpy().astype(np.float64)
    to_camera = position - xyz
    facing = np.abs(to_camera[:, 2] / np.linalg.norm(to_camera, axis=1))  # patch normals are +-Z
    depth = (xyz - position) @ cams.rotation[0].numpy()[:, 2]
    expected = np.round(255 * np.clip(0.15 + 0.7 * facing + 0.15 * np.clip((3.2 - depth) / 2, 0, 1), 0, 1))
    index = plain.pixel_point_index[0]
    covered = index >= 0
    assert np.abs(plain.images[0, ..., 0][covered] - expected[index[covered]]).max() <= 1  # float32 rounding


def test_segment_passes_the_cloud_intensity_to_the_renderer(synthetic_objects):
    from partslip_core import PipelineConfig, PointCloud, segment
    from partslip_core.detect import ProjectedGroundTruthDetector
    from partslip_core.types import InputError
    obj = synthetic_objects["mug"]
    config = PipelineConfig()
    config.render.image_size, config.render.views = 96, [(10.0, 0.0)]
    intensity = np.where(obj.point_label == obj.point_label.max(), 255.0, 20.0).astype(np.float32)

    def images(cloud):
        detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=0)
        return segment(cloud, obj.part_names, config, detector, keep_views=True).views.images

    plain = images(PointCloud.from_arrays(obj.xyz))
    assert not np.array_equal(images(PointCloud.from_arrays(obj.xyz, intensity=intensity)), plain)
    assert np.array_equal(images(PointCloud(obj.xyz, intensity=np.full(len(obj.xyz), 3.0))), plain)
    with pytest.raises(InputError, match="intensity must be numeric with shape"):
        PointCloud.from_arrays(obj.xyz, intensity=intensity[:-1])
    with pytest.raises(InputError, match="intensity has non-finite"):
        PointCloud.from_arrays(obj.xyz, intensity=np.r_[np.nan, intensity[1:]])
