"""PLY and dataset I/O: exact round trips, property name variants, clear errors on bad files."""

from __future__ import annotations

import shutil

import numpy as np
import plyfile
import pytest

from partslip_core.io import (finite_points, iter_dataset, read_labeled_shape, read_part_names, read_ply,
                              write_ply)
from partslip_core.synthetic import CATEGORY_PARTS
from partslip_core.types import InputError


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    n = 500
    return {
        "xyz": rng.normal(size=(n, 3)).astype(np.float32),
        "rgb_u8": rng.integers(0, 256, size=(n, 3)),
        "rgb_f": rng.random((n, 3)).astype(np.float32),
        "normals": rng.normal(size=(n, 3)).astype(np.float32),
        "label": rng.integers(-1, 5, n).astype(np.int32),
        "instance": rng.integers(-1, 40, n).astype(np.int32),
        "score": rng.random(n).astype(np.float32),
        "flag": rng.integers(0, 2, n).astype(np.uint8),
    }


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_uchar_colours_and_extras(tmp_path, arrays, binary):
    path = tmp_path / "cloud.ply"
    rgb = (arrays["rgb_u8"].astype(np.float32) / np.float32(255)).astype(np.float32)
    extra = {k: arrays[k] for k in ("label", "instance", "score", "flag")}
    write_ply(path, arrays["xyz"], rgb, extra=extra, binary=binary, normals=arrays["normals"])
    assert path.read_bytes().startswith(b"ply")
    cloud, props = read_ply(path)
    assert np.array_equal(cloud.xyz, arrays["xyz"]) and cloud.xyz.dtype == np.float32
    assert np.array_equal(np.round(cloud.rgb * 255).astype(int), arrays["rgb_u8"])
    assert np.array_equal(cloud.rgb, rgb)
    assert np.array_equal(cloud.normals, arrays["normals"])
    assert sorted(props) == sorted(extra)
    for name, values in extra.items():
        assert props[name].dtype == values.dtype, name
        assert np.array_equal(props[name], values), name


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_float_colours_and_double_xyz(tmp_path, arrays, binary):
    path = tmp_path / "cloud.ply"
    xyz64 = arrays["xyz"].astype(np.float64) + 1e-9  # not representable in float32
    write_ply(path, xyz64, arrays["rgb_f"], binary=binary, float_rgb=True)
    element = plyfile.PlyData.read(str(path))["vertex"]
    assert element.data.dtype["x"] == np.dtype("<f8") or element.data.dtype["x"] == np.dtype(">f8")
    assert element.data.dtype["red"].kind == "f"
    assert np.array_equal(element.data["x"], xyz64[:, 0])  # doubles are stored exactly
    cloud, props = read_ply(path)
    assert np.array_equal(cloud.rgb, arrays["rgb_f"]) and props == {}
    assert np.array_equal(cloud.xyz, xyz64.astype(np.float32))
    assert cloud.normals is None


def _write_raw(path, dtype, rows, text=True, extra_elements=()):
    vertex = np.array(rows, dtype=dtype)
    elements = [plyfile.PlyElement.describe(vertex, "vertex"), *extra_elements]
    plyfile.PlyData(elements, text=text).write(str(path))


def test_reads_short_colour_names_float_255_colours_and_skips_lists(tmp_path):
    path = tmp_path / "short.ply"
    _write_raw(path, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("r", "f4"), ("g", "f4"), ("b", "f4"), ("label", "i2")],
               [(0, 0, 0, 255.0, 0.0, 51.0, 3), (1, 2, 3, 0.0, 127.5, 255.0, -1)])
    cloud, props = read_ply(path)
    np.testing.assert_allclose(cloud.rgb, [[1.0, 0.0, 0.2], [0.0, 0.5, 1.0]], atol=1e-6)
    assert props["label"].tolist() == [3, -1]
    listed = tmp_path / "list.ply"
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("ids", "O")]
    vertex = np.empty(2, dtype=dtype)
    vertex["x"], vertex["y"], vertex["z"] = [0, 1], [0, 1], [0, 1]
    vertex["ids"] = [np.array([1, 2], np.int32), np.array([3], np.int32)]
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=True).write(str(listed))
    cloud, props = read_ply(listed)
    assert cloud.num_points == 2 and cloud.rgb is None and props == {}


def test_off_grid_float_colours_round_to_the_nearest_level(tmp_path, arrays):
    write_ply(tmp_path / "c.ply", arrays["xyz"], arrays["rgb_f"])
    cloud, _ = read_ply(tmp_path / "c.ply")
    assert np.abs(cloud.rgb - arrays["rgb_f"]).max() <= 0.5 / 255 + 1e-6
    write_ply(tmp_path / "d.ply", arrays["xyz"][:1], np.array([[0.999, 2.0, -1.0]]))  # clipped to 0..1
    assert np.array_equal(read_ply(tmp_path / "d.ply")[0].rgb, [[1.0, 1.0, 0.0]])


def test_non_finite_points_are_kept_and_masked(tmp_path):
    xyz = np.array([[0, 0, 0], [np.nan, 1, 1], [1, np.inf, 0], [2, 2, 2]], dtype=np.float32)
    write_ply(tmp_path / "nan.ply", xyz)
    cloud, _ = read_ply(tmp_path / "nan.ply")
    assert cloud.num_points == 4
    assert finite_points(cloud.xyz).tolist() == [True, False, False, True]
    with pytest.raises(InputError, match="shape"):
        finite_points(np.zeros((3, 2)))


def test_bad_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "notes.ply").write_text("hello world\n")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(tmp_path / "notes.ply")
    (tmp_path / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex two\nend_header\n")
    with pytest.raises(InputError, match="cannot parse"):
        read_ply(tmp_path / "broken.ply")
    face = np.array([(np.array([0, 1, 2], np.int32),)], dtype=[("vertex_indices", "O")])
    plyfile.PlyData([plyfile.PlyElement.describe(face, "face")], text=True).write(str(tmp_path / "faces.ply"))
    with pytest.raises(InputError, match="no 'vertex' element"):
        read_ply(tmp_path / "faces.ply")
    _write_raw(tmp_path / "noz.ply", [("x", "f4"), ("y", "f4")], [(0, 0), (1, 1)])
    with pytest.raises(InputError, match=r"lacks coordinate\(s\) \['z'\]"):
        read_ply(tmp_path / "noz.ply")
    _write_raw(tmp_path / "empty.ply", [("x", "f4"), ("y", "f4"), ("z", "f4")], [])
    with pytest.raises(InputError, match="zero vertices"):
        read_ply(tmp_path / "empty.ply")
    write_ply(tmp_path / "full.ply", np.zeros((100, 3), np.float32))
    data = (tmp_path / "full.ply").read_bytes()
    (tmp_path / "truncated.ply").write_bytes(data[:-50])
    with pytest.raises(InputError, match="cannot parse"):
        read_ply(tmp_path / "truncated.ply")
    with pytest.raises(InputError, match="not a file"):
        read_ply(tmp_path)


def test_write_rejects_bad_arrays(tmp_path, arrays):
    xyz = arrays["xyz"]
    with pytest.raises(InputError, match="must have shape"):
        write_ply(tmp_path / "a.ply", xyz, extra={"label": np.zeros(3, np.int32)})
    with pytest.raises(InputError, match="clashes"):
        write_ply(tmp_path / "a.ply", xyz, extra={"x": np.zeros(len(xyz), np.int32)})
    with pytest.raises(InputError, match="cannot be stored"):
        write_ply(tmp_path / "a.ply", xyz, extra={"big": np.full(len(xyz), 2 ** 40, np.int64)})
    with pytest.raises(InputError, match="rgb"):
        write_ply(tmp_path / "a.ply", xyz, rgb=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "a.ply", xyz[:, :2])
    write_ply(tmp_path / "b.ply", xyz, extra={"label": np.arange(len(xyz), dtype=np.int64)})
    assert read_ply(tmp_path / "b.ply")[1]["label"].tolist() == list(range(len(xyz)))  # int64 narrows to int32


def test_iter_dataset_and_labeled_shapes(tmp_dataset):
    entries = list(iter_dataset(tmp_dataset))
    assert [c for c, _, _ in entries] == [c for c in sorted(CATEGORY_PARTS) for _ in range(2)]
    assert entries == sorted(entries)
    for category, shape_id, shape_dir in entries:
        assert shape_dir.name == shape_id and shape_dir.parent.name == category
        cloud, semantic, instance = read_labeled_shape(shape_dir)
        assert cloud.num_points == 3000 == semantic.shape[0] == instance.shape[0]
        assert semantic.dtype == np.int64 and instance.dtype == np.int64
        assert semantic.max() < len(CATEGORY_PARTS[category]) and semantic.min() >= -1
        assert np.array_equal(semantic >= 0, instance >= 0)
        assert cloud.rgb is not None and 0.0 <= cloud.rgb.min() and cloud.rgb.max() <= 1.0
        assert read_part_names(shape_dir.parent) == CATEGORY_PARTS[category]


def test_pickled_label_is_read_only_when_allowed(tmp_dataset):
    _, _, shape_dir = next(iter(iter_dataset(tmp_dataset)))
    _, semantic, instance = read_labeled_shape(shape_dir)
    (shape_dir / "semantic_seg.npy").unlink()
    (shape_dir / "instance_seg.npy").unlink()
    _, semantic_pickle, instance_pickle = read_labeled_shape(shape_dir)  # PartNet-E's label.npy dict
    assert np.array_equal(semantic, semantic_pickle) and np.array_equal(instance, instance_pickle)
    with pytest.raises(InputError, match="allow_pickle=False"):
        read_labeled_shape(shape_dir, allow_pickle=False)
    np.save(shape_dir / "label.npy", np.array({"instance_seg": instance}, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="semantic_seg"):
        read_labeled_shape(shape_dir)
    (shape_dir / "label.npy").unlink()
    with pytest.raises(InputError, match="no labels"):
        read_labeled_shape(shape_dir)


def test_label_length_mismatch_and_missing_root(tmp_dataset, tmp_path):
    _, _, shape_dir = next(iter(iter_dataset(tmp_dataset)))
    np.save(shape_dir / "semantic_seg.npy", np.zeros(10, np.int64))
    with pytest.raises(InputError, match=r"\(3000,\)"):
        read_labeled_shape(shape_dir)
    np.save(shape_dir / "semantic_seg.npy", np.zeros(3000, np.float32))
    with pytest.raises(InputError, match="integer"):
        read_labeled_shape(shape_dir)
    with pytest.raises(InputError, match="not a directory"):
        list(iter_dataset(tmp_path / "nowhere"))
    (tmp_dataset / "chair" / "not_a_shape").mkdir()
    shutil.rmtree(shape_dir)
    assert len(list(iter_dataset(tmp_dataset))) == 2 * len(CATEGORY_PARTS) - 1
