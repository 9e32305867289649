"""PLY and PartNet-Ensembled dataset I/O (vectorized through plyfile's structured arrays).

Dataset layout (PartNet-Ensembled, and what ``synthetic.write_dataset`` writes)::

    root/<category>/part_names.json          (ours; PartNet-E keeps part lists in PartNetE_meta.json)
    root/<category>/<shape_id>/pc.ply        xyz + rgb
    root/<category>/<shape_id>/label.npy     pickled dict {"semantic_seg": (N,) int, "instance_seg": (N,) int}
    root/<category>/<shape_id>/semantic_seg.npy, instance_seg.npy   (ours: plain int arrays, no pickle)

Security: ``label.npy`` is a pickle, and unpickling runs code chosen by whoever wrote the file.
``read_labeled_shape`` prefers the pickle-free pair and unpickles only a file named ``label.npy``
inside the shape folder it was given, and only when ``allow_pickle`` is True: load only datasets
you trust (e.g. the official PartNet-E release), or pass allow_pickle=False.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import plyfile

from partslip_core.types import InputError, PointCloud

PathLike = Union[str, Path]
_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_NAMES = ("nx", "ny", "nz")
# numpy dtype kind+size -> PLY scalar type written by write_ply (int64 is not a PLY type).
_PLY_TYPES = {"i1": "i1", "u1": "u1", "i2": "i2", "u2": "u2", "i4": "i4", "u4": "u4", "f4": "f4", "f8": "f8",
              "b1": "u1"}


def finite_points(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool mask of rows whose three coordinates are all finite (drop NaN/Inf returns)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(f"xyz must have shape (N, 3); got {xyz.shape}")
    return np.isfinite(xyz).all(axis=1)


def _load_vertex_element(path: Path) -> plyfile.PlyElement:
    if not path.exists():
        raise InputError(f"PLY file not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic[:3] != b"ply":
        raise InputError(f"{path} is not a PLY file (it does not start with 'ply')")
    try:
        data = plyfile.PlyData.read(str(path))
    except (plyfile.PlyParseError, ValueError, EOFError, UnicodeDecodeError, IndexError) as exc:
        raise InputError(f"cannot parse PLY file {path}: {exc}") from exc
    names = [el.name for el in data.elements]
    if "vertex" not in names:
        raise InputError(f"{path} has no 'vertex' element (elements: {names})")
    return data["vertex"]


def _colours(vertex: np.ndarray, names: set[str]) -> tuple[Optional[np.ndarray], tuple[str, ...]]:
    """rgb (N, 3) float32 in [0, 1] from integer (0..max of the type) or float (0..1) channels."""
    for triple in _COLOUR_NAMES:
        if set(triple) <= names:
            raw = np.stack([vertex[name] for name in triple], axis=1)
            if np.issubdtype(raw.dtype, np.integer):
                scale = np.float32(np.iinfo(raw.dtype).max)
                return raw.astype(np.float32) / scale, triple
            rgb = raw.astype(np.float32)
            if rgb.size and np.nanmax(rgb) > 1.0:  # float colours written on a 0..255 scale
                rgb = rgb / np.float32(255.0)
            return rgb, triple
    return None, ()


def read_ply(path: PathLike) -> tuple[PointCloud, dict[str, np.ndarray]]:
    """Read a PLY point cloud (ascii or binary). Returns the cloud and every other scalar vertex
    property by name (e.g. label, instance). Non-finite points are kept: see ``finite_points``."""
    path = Path(path)
    element = _load_vertex_element(path)
    vertex = element.data
    names = [prop.name for prop in element.properties]
    missing = [axis for axis in ("x", "y", "z") if axis not in names]
    if missing:
        raise InputError(f"{path}: vertex element lacks coordinate(s) {missing} (properties: {names})")
    if len(vertex) == 0:
        raise InputError(f"{path} has zero vertices")
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    rgb, used = _colours(vertex, set(names))
    normals = None
    if set(_NORMAL_NAMES) <= set(names):
        normals = np.stack([vertex[name] for name in _NORMAL_NAMES], axis=1).astype(np.float32)
        used += _NORMAL_NAMES
    scalar = {prop.name for prop in element.properties if not isinstance(prop, plyfile.PlyListProperty)}
    skip = {"x", "y", "z", *used}
    extra = {name: np.ascontiguousarray(vertex[name]) for name in names if name in scalar and name not in skip}
    return PointCloud(xyz=xyz, rgb=rgb, normals=normals), extra


def _ply_type(name: str, values: np.ndarray) -> str:
    """PLY type for a per-vertex array; int64 narrows to int32 when the values fit."""
    key = f"{values.dtype.kind}{values.dtype.itemsize}"
    if key in _PLY_TYPES:
        return _PLY_TYPES[key]
    int32 = np.iinfo(np.int32)
    if values.dtype.kind in "iu" and (values.size == 0 or (values.min() >= int32.min and values.max() <= int32.max)):
        return "i4"
    raise InputError(f"extra property {name!r}: dtype {values.dtype} cannot be stored in a PLY "
                     "(use int8..int32, uint8..uint32, float32 or float64)")


def _vertex_columns(xyz: np.ndarray, rgb: Optional[np.ndarray], normals: Optional[np.ndarray],
                    extra: dict[str, np.ndarray], float_rgb: bool) -> list[tuple[str, str, np.ndarray]]:
    n = xyz.shape[0]
    columns = [(axis, "f8" if xyz.dtype == np.float64 else "f4", xyz[:, i]) for i, axis in enumerate("xyz")]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise InputError(f"rgb must have shape ({n}, 3); got {rgb.shape}")
        if float_rgb:
            values, kind = rgb.astype(np.float32), "f4"
        elif np.issubdtype(rgb.dtype, np.integer):
            values, kind = np.clip(rgb, 0, 255).astype(np.uint8), "u1"
        else:
            values, kind = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), "u1"
        columns += [(name, kind, values[:, i]) for i, name in enumerate(("red", "green", "blue"))]
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape != (n, 3):
            raise InputError(f"normals must have shape ({n}, 3); got {normals.shape}")
        columns += [(name, "f4", normals[:, i]) for i, name in enumerate(_NORMAL_NAMES)]
    taken = {name for name, _, _ in columns}
    for name, values in extra.items():
        values = np.asarray(values)
        if name in taken:
            raise InputError(f"extra property {name!r} clashes with a coordinate/colour/normal property")
        if values.shape != (n,):
            raise InputError(f"extra property {name!r} must have shape ({n},); got {values.shape}")
        columns.append((name, _ply_type(name, values), values))
    return columns


def write_ply(path: PathLike, xyz: np.ndarray, rgb: Optional[np.ndarray] = None,
              extra: Optional[dict[str, np.ndarray]] = None, binary: bool = True,
              normals: Optional[np.ndarray] = None, float_rgb: bool = False) -> None:
    """Write a PLY point cloud in one vectorized call. rgb: float 0..1 (stored as uchar 0..255
    unless float_rgb) or integer 0..255. extra: name -> (N,) int/float per-vertex property."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.issubdtype(xyz.dtype, np.number):
        raise InputError(f"xyz must be a numeric (N, 3) array; got shape {xyz.shape}, dtype {xyz.dtype}")
    if xyz.dtype != np.float64:
        xyz = xyz.astype(np.float32)
    columns = _vertex_columns(xyz, rgb, normals, dict(extra or {}), float_rgb)
    vertex = np.empty(xyz.shape[0], dtype=[(name, kind) for name, kind, _ in columns])
    for name, kind, values in columns:
        vertex[name] = values.astype(kind, copy=False)
    element = plyfile.PlyElement.describe(vertex, "vertex")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plyfile.PlyData([element], text=not binary).write(str(path))


def _load_int_labels(path: Path, n: int, allow_pickle: bool = False) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=allow_pickle)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return _check_labels(values, path.name, n)


def _check_labels(values: np.ndarray, what: str, n: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise InputError(f"{what} must be an (N,) = ({n},) integer array; "
                         f"got shape {values.shape}, dtype {values.dtype}")
    return values.astype(np.int64)


def _read_label_pickle(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The PartNet-E label.npy: a pickled dict (see the module docstring on why this is guarded)."""
    try:
        content = np.load(path, allow_pickle=True)
        label = content.item() if content.dtype == object and content.shape == () else None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(label, dict) or "semantic_seg" not in label:
        raise InputError(f"{path} must hold a dict with 'semantic_seg' (and 'instance_seg')")
    semantic = _check_labels(label["semantic_seg"], f"{path}['semantic_seg']", n)
    instance = label.get("instance_seg")
    instance = np.full(n, -1, np.int64) if instance is None else _check_labels(instance, f"{path}['instance_seg']", n)
    return semantic, instance


def read_labeled_shape(shape_dir: PathLike, allow_pickle: bool = True) -> tuple[PointCloud, np.ndarray, np.ndarray]:
    """(cloud, semantic (N,) int64, instance (N,) int64) of one shape folder; -1 = none.
    Reads semantic_seg.npy/instance_seg.npy when present, else the pickled label.npy (trusted data only)."""
    shape_dir = Path(shape_dir)
    cloud, _ = read_ply(shape_dir / "pc.ply")
    n = cloud.num_points
    semantic_path, instance_path = shape_dir / "semantic_seg.npy", shape_dir / "instance_seg.npy"
    if semantic_path.is_file():
        semantic = _load_int_labels(semantic_path, n)
        instance = _load_int_labels(instance_path, n) if instance_path.is_file() else np.full(n, -1, np.int64)
        return cloud, semantic, instance
    label_path = shape_dir / "label.npy"
    if not label_path.is_file():
        raise InputError(f"{shape_dir} has no labels (semantic_seg.npy or label.npy)")
    if not allow_pickle:
        raise InputError(f"{label_path} is a pickle and allow_pickle=False; "
                         "convert it to semantic_seg.npy/instance_seg.npy")
    semantic, instance = _read_label_pickle(label_path, n)
    return cloud, semantic, instance


def iter_dataset(root: PathLike) -> Iterator[tuple[str, str, Path]]:
    """(category, shape_id, shape_dir) for every folder holding a pc.ply, sorted by category then id."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset root is not a directory: {root}")
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for shape_dir in sorted(p for p in category_dir.iterdir() if p.is_dir()):
            if (shape_dir / "pc.ply").is_file():
                yield category_dir.name, shape_dir.name, shape_dir


def read_part_names(category_dir: PathLike) -> list[str]:
    """The category's part list from ``part_names.json`` (written by synthetic.write_dataset)."""
    path = Path(category_dir) / "part_names.json"
    if not path.is_file():
        raise InputError(f"no part_names.json in {category_dir}")
    names = json.loads(path.read_text())
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path} must hold a JSON list of part names")
    return names
