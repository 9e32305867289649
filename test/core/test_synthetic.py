"""Synthetic part-labeled objects: labels, instances, geometry, determinism and partial scans."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from partslip_core.synthetic import (CATEGORY_PARTS, OPTIONAL_PARTS, Annulus, Box, Cylinder, Frustum, Piece, TorusArc,
                                     assemble, make_object, partial_scan, sensor_positions, sensor_sequence,
                                     visibility_mask, write_dataset)

# Parts made of closed or nearly closed convex primitives: their normals must point away from their centre.
CONVEX_PARTS = {"chair": ["seat", "leg"], "table": ["tabletop", "leg"], "cabinet": ["door", "drawer"],
                "bottle": ["lid"], "lamp": ["base", "bulb"], "kettle": ["lid"]}


def test_arrays_have_documented_shapes_and_dtypes(synthetic_objects):
    for category, obj in synthetic_objects.items():
        n = obj.num_points
        assert n == 4000, category
        assert obj.part_names == CATEGORY_PARTS[category]
        assert obj.xyz.shape == (n, 3) and obj.xyz.dtype == np.float32
        assert obj.rgb.shape == (n, 3) and obj.rgb.dtype == np.float32
        assert obj.rgb.min() >= 0.0 and obj.rgb.max() <= 1.0
        assert obj.point_label.dtype == np.int64 and obj.point_instance.dtype == np.int64
        assert obj.point_label.min() >= -1 and obj.point_label.max() < len(obj.part_names)


def test_object_stands_on_floor_and_is_centred(synthetic_objects):
    for category, obj in synthetic_objects.items():
        lo, hi = obj.xyz.min(axis=0), obj.xyz.max(axis=0)
        assert abs(lo[2]) < 1e-6, category
        np.testing.assert_allclose((lo[:2] + hi[:2]) / 2, 0.0, atol=1e-5, err_msg=category)
        assert 0.03 < hi[2] < 2.0, category  # plausible real-world heights in metres


def test_every_required_part_is_present_in_every_seed():
    for category, parts in CATEGORY_PARTS.items():
        optional = OPTIONAL_PARTS.get(category, set())
        seen_optional = {name: 0 for name in optional}
        for seed in range(6):
            obj = make_object(category, num_points=3000, seed=seed)
            counts = np.bincount(obj.point_label[obj.point_label >= 0], minlength=len(parts))
            for index, name in enumerate(parts):
                if name in optional:
                    seen_optional[name] += counts[index] > 0
                else:
                    assert counts[index] > 0, f"{category} seed {seed}: part {name!r} has no points"
        for name, times in seen_optional.items():
            assert 0 < times < 6, f"{category}: optional part {name!r} present in {times}/6 seeds"


def test_instances_are_distinct_and_each_has_one_label(synthetic_objects):
    for category, obj in synthetic_objects.items():
        labeled = obj.point_instance >= 0
        assert np.array_equal(labeled, obj.point_label >= 0), category
        ids = np.unique(obj.point_instance[labeled])
        pairs = np.unique(np.stack([obj.point_instance[labeled], obj.point_label[labeled]]), axis=1)
        assert pairs.shape[1] == ids.size, f"{category}: an instance id spans several labels"


def test_legs_are_separate_instances(synthetic_objects):
    for category in ("chair", "table"):
        obj = synthetic_objects[category]
        leg = obj.point_label == obj.part_names.index("leg")
        leg_ids = np.unique(obj.point_instance[leg])
        assert leg_ids.size >= 3, f"{category}: {leg_ids.size} leg instances"
        centres = np.stack([obj.xyz[obj.point_instance == i, :2].mean(axis=0) for i in leg_ids])
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(leg_ids)) * 1e3
        assert gaps.min() > 0.1, f"{category}: two leg instances share a location"


def test_cabinet_handles_are_small_and_sit_on_fronts(synthetic_objects):
    obj = synthetic_objects["cabinet"]
    names = obj.part_names
    handle = obj.point_label == names.index("handle")
    fronts = np.isin(obj.point_label, [names.index("door"), names.index("drawer")])
    handle_ids = np.unique(obj.point_instance[handle])
    front_ids = np.unique(obj.point_instance[fronts])
    assert handle_ids.size == front_ids.size  # one handle per door and per drawer
    assert handle.sum() < 0.2 * fronts.sum()
    assert obj.xyz[handle, 0].mean() > obj.xyz[fronts, 0].mean()  # handles protrude from the fronts (+x)


def test_normals_are_unit_and_point_outward(synthetic_objects):
    for category, obj in synthetic_objects.items():
        np.testing.assert_allclose(np.linalg.norm(obj.normals, axis=1), 1.0, atol=1e-4, err_msg=category)
        for part in CONVEX_PARTS.get(category, []):
            label = obj.part_names.index(part)
            for instance in np.unique(obj.point_instance[obj.point_label == label]):
                sel = obj.point_instance == instance
                outward = np.einsum("ij,ij->i", obj.normals[sel], obj.xyz[sel] - obj.xyz[sel].mean(axis=0))
                assert (outward > 0).mean() > 0.95, f"{category}/{part} instance {instance}"


def test_sampling_is_area_weighted():
    """Even density: within a primitive (box faces) and across the pieces of an object."""
    rng = np.random.default_rng(0)
    xyz, normals = Box(size=[1.0, 1.0, 0.1]).sample(20000, rng)
    assert np.all(np.abs(xyz) <= [0.5, 0.5, 0.05 + 1e-12])
    on_big_faces = (np.abs(normals[:, 2]) == 1).mean()
    assert abs(on_big_faces - 2.0 / 2.4) < 0.02  # the two 1x1 faces hold 2 of the 2.4 m^2
    frustum_xyz, frustum_normals = Frustum(r0=0.2, r1=0.1, height=0.3).sample(20000, rng)
    assert abs((frustum_xyz[:, 2] < 0).mean() - 0.35 / 0.6) < 0.02  # the wider half has more area
    assert np.all(frustum_normals[:, 2] > 0)  # narrowing upwards: outward normals tilt up
    disc_xyz, _ = Annulus(r_out=1.0).sample(20000, rng)
    assert abs((np.linalg.norm(disc_xyz, axis=1) < np.sqrt(0.5)).mean() - 0.5) < 0.02  # inner half of the area
    small, large = Box(size=[0.1, 0.1, 0.1]), Cylinder(radius=0.3, height=0.5)
    obj = assemble("bottle", [Piece("lid", [small], np.zeros(3)), Piece("body", [large], np.ones(3))],
                   5000, rng, colour_noise=0.0)
    density = np.bincount(obj.point_label, minlength=2) / [large.area(), small.area()]
    assert abs(density[0] / density[1] - 1.0) < 0.05


def test_torus_arc_points_lie_on_the_tube_with_radial_normals():
    rng = np.random.default_rng(1)
    pts, nrm = TorusArc(major=0.1, minor=0.02, u0=0.0, u1=np.pi).sample(20000, rng)
    angle = np.arctan2(pts[:, 1], pts[:, 0])
    assert angle.min() >= -1e-9 and angle.max() <= np.pi + 1e-9
    centre = 0.1 * np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=1)
    np.testing.assert_allclose(pts - centre, 0.02 * nrm, atol=1e-9)
    # The area element grows with the distance from the axis: the outer half holds 1/2 + r/(pi R) of the area.
    outer = np.linalg.norm(pts[:, :2], axis=1) > 0.1
    assert abs(outer.mean() - (0.5 + 0.02 / (np.pi * 0.1))) < 0.015


def test_part_point_shares_follow_surface_area():
    obj = make_object("bottle", num_points=20000, seed=3)
    lid = obj.point_label == obj.part_names.index("lid")
    # the lid (a small cap) is a small share of the surface, but never empty
    assert 0.01 < lid.mean() < 0.3


def test_same_seed_same_object_different_seed_different_object():
    a, b = make_object("chair", 2000, seed=5), make_object("chair", 2000, seed=5)
    for field_name in ("xyz", "rgb", "normals", "point_label", "point_instance"):
        assert np.array_equal(getattr(a, field_name), getattr(b, field_name)), field_name
    c = make_object("chair", 2000, seed=6)
    assert not np.allclose(a.xyz.max(axis=0), c.xyz.max(axis=0))  # different dimensions
    assert not np.allclose(a.rgb.mean(axis=0), c.rgb.mean(axis=0), atol=1e-3)


def test_parts_have_distinct_but_noisy_colours():
    spreads, distances = [], []
    for seed in range(8):
        obj = make_object("chair", 3000, seed)
        means = np.stack([obj.rgb[obj.point_label == p].mean(axis=0) for p in np.unique(obj.point_label)])
        spreads.append(max(obj.rgb[obj.point_label == p].std(axis=0).mean() for p in np.unique(obj.point_label)))
        distances.append(np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(len(means), 1)])
    distances = np.concatenate(distances)
    assert min(spreads) > 0.005  # colour noise within a part
    assert (distances > 0.15).mean() > 0.4  # most part pairs differ clearly ...
    assert (distances < 0.12).any()  # ... but some objects have similar-coloured parts


def test_every_category_has_one_builder():
    from partslip_core.synthetic.catalog import _BUILDERS
    assert set(_BUILDERS) == set(CATEGORY_PARTS)  # a part list without a builder, or the reverse, is a bug
    assert set(OPTIONAL_PARTS) <= set(CATEGORY_PARTS)
    assert all(parts <= set(CATEGORY_PARTS[c]) for c, parts in OPTIONAL_PARTS.items())


def test_package_exports_its_public_names():
    import partslip_core.synthetic as synthetic
    missing = [name for name in synthetic.__all__ if not hasattr(synthetic, name)]
    assert not missing
    assert {"make_object", "make_scan", "fused_scan", "write_dataset", "SyntheticObject"} <= set(synthetic.__all__)


def test_unknown_category_and_too_few_points_raise():
    with pytest.raises(ValueError, match="unknown category"):
        make_object("spaceship")
    with pytest.raises(ValueError, match="num_points"):
        make_object("mug", num_points=3)


@pytest.mark.parametrize("method", ["auto", "zbuffer"])
def test_partial_scan_keeps_the_side_facing_the_sensor(synthetic_objects, method):
    for category, obj in synthetic_objects.items():
        sensor = sensor_positions(obj, 0.4, 0.45)[0]
        scan = partial_scan(obj, sensor, method=method)
        fraction = scan.num_points / obj.num_points
        # thin links (the robot arm's cylinders) show less than half their surface to a sensor: 0.15
        assert 0.15 <= fraction <= 0.7, f"{category}/{method}: kept {fraction:.2f}"
        rays = sensor - scan.xyz
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        facing = np.einsum("ij,ij->i", scan.normals, rays)
        assert facing.mean() > 0.2 and (facing > 0).mean() > 0.75, f"{category}/{method}"
        # a strict subset: every scan point is an object point with the same labels
        full = {tuple(row) for row in np.round(obj.xyz, 6).tolist()}
        assert all(tuple(row) in full for row in np.round(scan.xyz[:200], 6).tolist())
        assert scan.point_label.shape == (scan.num_points,)


def test_partial_scan_labels_follow_points_and_noise_is_along_rays():
    obj = make_object("table", 3000, seed=1)
    sensor = sensor_positions(obj, -0.3, 0.5)[0]
    clean = partial_scan(obj, sensor)
    noisy = partial_scan(obj, sensor, noise_std=0.01, seed=4)
    assert np.array_equal(clean.point_label, noisy.point_label)
    assert np.array_equal(clean.point_instance, noisy.point_instance)
    offset = noisy.xyz.astype(np.float64) - clean.xyz
    rays = clean.xyz - sensor
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    assert 0.007 < np.linalg.norm(offset, axis=1).mean() < 0.011  # E|N(0, 0.01)| = 0.008
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", offset, rays)), np.linalg.norm(offset, axis=1), atol=1e-5)
    index = np.flatnonzero(np.isin(obj.xyz[:, 0], clean.xyz[:, 0]))
    assert np.array_equal(obj.point_label[index][:50], clean.point_label[:50])


def test_zbuffer_agrees_with_hidden_point_removal(synthetic_objects):
    pytest.importorskip("open3d")
    for category in ("bottle", "cabinet", "table"):
        obj = synthetic_objects[category]
        sensor = sensor_positions(obj, 0.3, 0.4)[0]
        hpr = visibility_mask(obj.xyz, sensor, obj.normals, method="hpr")
        zbuf = visibility_mask(obj.xyz, sensor, obj.normals, method="zbuffer")
        jaccard = (hpr & zbuf).sum() / (hpr | zbuf).sum()
        assert jaccard > 0.7, f"{category}: {jaccard:.2f}"


def test_without_open3d_auto_falls_back_to_the_zbuffer(synthetic_objects, monkeypatch):
    obj = synthetic_objects["mug"]
    sensor = sensor_positions(obj, 0.0, 0.3)[0]
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` raise ImportError
    auto = partial_scan(obj, sensor)
    assert np.array_equal(auto.xyz, partial_scan(obj, sensor, method="zbuffer").xyz)
    with pytest.raises(ImportError, match="open3d"):
        partial_scan(obj, sensor, method="hpr")
    with pytest.raises(ValueError, match="method"):
        partial_scan(obj, sensor, method="raycast")


def test_sensor_sequence_arc_in_front(synthetic_objects):
    obj = synthetic_objects["chair"]
    frames = sensor_sequence(obj, num_frames=4, seed=2)
    assert len(frames) == 4
    positions = np.stack([p for p, _ in frames])
    assert np.all(positions[:, 0] > 0.5) and np.all(positions[:, 2] > 0.3)  # in front (+x) and above
    azimuth = np.arctan2(positions[:, 1], positions[:, 0])
    assert np.all(np.diff(azimuth) > 0)  # sweeping along the arc
    for position, scan in frames:
        assert scan.num_points < obj.num_points
        rays = position - scan.xyz
        assert np.einsum("ij,ij->i", scan.normals, rays).mean() > 0
    again = sensor_sequence(obj, num_frames=4, seed=2)
    assert all(np.array_equal(a[1].xyz, b[1].xyz) for a, b in zip(frames, again))


def test_write_dataset_layout(tmp_path):
    dirs = write_dataset(tmp_path / "d", categories=["mug", "table"], shapes_per_category=2, num_points=500, seed=1,
                         partial=True)
    assert len(dirs) == 4 and len({d.name for d in dirs}) == 4
    for shape_dir in dirs:
        assert (shape_dir / "pc.ply").is_file() and (shape_dir / "label.npy").is_file()
        semantic = np.load(shape_dir / "semantic_seg.npy")
        assert 100 < semantic.size < 500  # partial: a single scan keeps part of the 500 points
        label = np.load(shape_dir / "label.npy", allow_pickle=True).item()
        assert np.array_equal(label["semantic_seg"], semantic)
        assert np.array_equal(label["instance_seg"], np.load(shape_dir / "instance_seg.npy"))
    assert json.loads((tmp_path / "d" / "mug" / "part_names.json").read_text()) == CATEGORY_PARTS["mug"]
    with pytest.raises(ValueError, match="unknown categories"):
        write_dataset(tmp_path / "e", categories=["spaceship"])


# ---------------------------------------------------------------- robots and furniture for robustness (issue 8)

def test_robot_arm_is_one_dominant_part_with_a_small_gripper():
    for seed in range(3):
        obj = make_object("robot_arm", 6000, seed)
        share = np.bincount(obj.point_label, minlength=2) / obj.num_points
        assert share[0] > 0.9 and 0.01 < share[1] < 0.08, (seed, share)
        assert set(np.unique(obj.point_instance).tolist()) == {0, 1}


def test_cart_wheels_are_small_separate_instances():
    for seed in range(3):
        obj = make_object("cart", 6000, seed)
        wheel = obj.part_names.index("wheel")
        sizes = np.bincount(obj.point_instance[obj.point_label == wheel])
        sizes = sizes[sizes > 0]
        assert len(sizes) == 4 and (sizes >= 50).all() and (sizes <= 150).all(), sizes
        assert obj.xyz[obj.point_label == wheel, 2].max() < 0.13  # under the body


def test_workbench_top_is_thicker_than_the_adjacency_distance():
    for seed in range(3):
        obj = make_object("workbench", 6000, seed)
        top = obj.xyz[obj.point_label == obj.part_names.index("tabletop")]
        thickness = top[:, 2].max() - top[:, 2].min()
        radius = np.linalg.norm(obj.xyz - obj.xyz.mean(axis=0), axis=1).max()
        assert thickness / radius > 0.05, (seed, thickness, radius)  # > 0.02 normalized, the adjacency distance


def test_fused_scan_thins_the_union_of_scans():
    from partslip_core.synthetic import fused_scan, make_scan
    obj = make_object("chair", 6000, 1)
    fused = fused_scan(obj, 4, seed=1)
    single = make_scan(obj, "partial", 1)
    cells = np.unique(np.floor(fused.xyz / 0.005).astype(np.int64), axis=0)
    assert len(cells) == fused.num_points  # one point per 5 mm voxel
    assert single.num_points < fused.num_points < 4 * obj.num_points
    assert fused.point_label.shape == (fused.num_points,) and set(fused.part_names) == set(obj.part_names)
    assert make_scan(obj, "full", 1) is obj
    with pytest.raises(ValueError, match="scan kind"):
        make_scan(obj, "sideways", 1)
