"""Labelled shapes for fine-tuning: read from disk, or taken from the synthetic generator, and split.

Accepted inputs (``load_shapes``):

* a PartNet-Ensembled style root, ``ROOT/<category>/<shape>/pc.ply`` + labels, part lists from
  ``<category>/part_names.json`` or ``ROOT/PartNetE_meta.json`` (what ``partslip eval`` reads and
  ``partslip generate`` writes);
* one category folder of that layout (``CATEGORY/<shape>/pc.ply`` + ``CATEGORY/part_names.json``);
* a folder of labelled PLYs (``*.ply`` with ``label`` and ``instance`` vertex properties, labels index
  ``part_names``, -1 = none); the part names must then be given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from partslip_core.detect.prompts import normalize_part_names
from partslip_core.types import InputError, PointCloud


@dataclass
class LabeledShape:
    """One training / evaluation shape. point_label: (N,) int64 index into part_names (-1 = none);
    point_instance: (N,) int64 instance id (-1 = none)."""

    category: str
    shape_id: str
    part_names: list[str]
    cloud: PointCloud
    point_label: np.ndarray
    point_instance: np.ndarray

    def __post_init__(self) -> None:
        n = self.cloud.num_points
        self.point_label = np.asarray(self.point_label, np.int64).reshape(-1)
        self.point_instance = np.asarray(self.point_instance, np.int64).reshape(-1)
        if self.point_label.shape != (n,) or self.point_instance.shape != (n,):
            raise InputError(f"{self.category}/{self.shape_id}: labels must have one entry per point ({n})")
        if self.point_label.max(initial=-1) >= len(self.part_names):
            raise InputError(f"{self.category}/{self.shape_id}: label {int(self.point_label.max())} is out of range "
                             f"for the {len(self.part_names)} part names {self.part_names}")
        if not (self.point_label >= 0).any():
            raise InputError(f"{self.category}/{self.shape_id}: no labelled points")


def from_synthetic(obj, shape_id: str) -> LabeledShape:
    """A ``synthetic.SyntheticObject`` as a LabeledShape."""
    return LabeledShape(obj.category, shape_id, list(obj.part_names), PointCloud.from_arrays(obj.xyz, obj.rgb, obj.normals),
                        obj.point_label, obj.point_instance)


def _read_ply_shape(path: Path, category: str, part_names: list[str]) -> LabeledShape:
    from partslip_core.io import read_ply
    cloud, extras = read_ply(path)
    missing = [k for k in ("label", "instance") if k not in extras]
    if missing:
        raise InputError(f"{path}: a training PLY needs vertex properties 'label' and 'instance'; missing {missing}")
    return LabeledShape(category, path.stem, part_names, cloud, extras["label"].astype(np.int64),
                        extras["instance"].astype(np.int64))


def load_shapes(path: str | Path, part_names: Optional[Sequence[str]] = None,
                categories: Optional[Sequence[str]] = None) -> list[LabeledShape]:
    """Every labelled shape under ``path`` (layouts in the module docstring), sorted by category then id.

    ``part_names`` overrides the recorded part lists (it must then fit every category's labels).
    """
    from partslip_core.eval_runner import category_part_names
    from partslip_core.io import iter_dataset, read_labeled_shape

    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"training data folder not found: {root}")
    names = normalize_part_names(list(part_names)) if part_names else None
    plys = sorted(root.glob("*.ply"))
    if plys:
        if names is None:
            raise InputError(f"{root} holds labelled PLYs: name their parts (--parts \"a,b,c\"), in label order")
        return [_read_ply_shape(p, root.name, names) for p in plys]
    if any((d / "pc.ply").is_file() for d in root.iterdir() if d.is_dir()):  # one category folder
        entries = [(root.name, d.name, d) for d in sorted(root.iterdir()) if (d / "pc.ply").is_file()]
        lookup = {root.name: names or _category_names(root.parent, root.name, category_part_names)}
    else:
        entries = list(iter_dataset(root))
        lookup = {}
    shapes = []
    for category, shape_id, shape_dir in entries:
        if categories is not None and category not in categories:
            continue
        if category not in lookup:
            lookup[category] = names or _category_names(root, category, category_part_names)
        cloud, label, instance = read_labeled_shape(shape_dir)
        shapes.append(LabeledShape(category, shape_id, lookup[category], cloud, label, instance))
    if not shapes:
        raise InputError(f"no labelled shapes under {root} (expected <category>/<shape>/pc.ply with "
                         "semantic_seg.npy/label.npy, or *.ply with label/instance properties)")
    return shapes


def _category_names(root: Path, category: str, reader) -> list[str]:
    return normalize_part_names(reader(root, category))


def split_holdout(shapes: Sequence[LabeledShape], holdout: int | float, seed: int = 0
                  ) -> tuple[list[LabeledShape], list[LabeledShape]]:
    """(train, held_out) per category: ``holdout`` shapes (int) or that fraction (float < 1) of each
    category are held out, chosen at random with ``seed``; every category keeps >= 1 training shape."""
    by_category: dict[str, list[LabeledShape]] = {}
    for shape in shapes:
        by_category.setdefault(shape.category, []).append(shape)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for category, members in by_category.items():
        count = int(round(holdout * len(members))) if isinstance(holdout, float) and holdout < 1 else int(holdout)
        count = min(max(count, 0), len(members) - 1)
        order = rng.permutation(len(members))
        held += [members[i] for i in sorted(order[:count])]
        train += [members[i] for i in sorted(order[count:])]
    return train, held
