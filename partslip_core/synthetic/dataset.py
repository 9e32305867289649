"""Writing synthetic objects as a PartNet-Ensembled style dataset (layout: ``partslip_core.io``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from partslip_core.synthetic.assembly import CATEGORY_PARTS, SyntheticObject
from partslip_core.synthetic.catalog import make_object
from partslip_core.synthetic.scans import SCAN_KINDS, make_scan


def write_shape(shape_dir: Path, obj: SyntheticObject) -> None:
    """pc.ply (xyz + uchar rgb), label.npy (the PartNet-E pickled dict) and the pickle-free
    semantic_seg.npy / instance_seg.npy pair that our reader prefers."""
    from partslip_core.io import write_ply

    shape_dir.mkdir(parents=True, exist_ok=True)
    write_ply(shape_dir / "pc.ply", obj.xyz, obj.rgb)
    semantic, instance = obj.point_label.astype(np.int64), obj.point_instance.astype(np.int64)
    np.save(shape_dir / "semantic_seg.npy", semantic, allow_pickle=False)
    np.save(shape_dir / "instance_seg.npy", instance, allow_pickle=False)
    np.save(shape_dir / "label.npy", np.array({"semantic_seg": semantic, "instance_seg": instance}, dtype=object),
            allow_pickle=True)


def write_dataset(out_dir, categories: Optional[Sequence[str]] = None, shapes_per_category: int = 4,
                  num_points: int = 10000, seed: int = 0, partial: bool = False, scan: str = "full") -> list[Path]:
    """Write ``out_dir/<category>/<shape_id>/`` shape folders and ``<category>/part_names.json``.
    scan: full | partial (a single noisy scan from a random sensor in front of each shape) | fused
    (4 scans along an arc, see ``fused_scan``); partial=True is scan="partial".
    Returns the shape folders, in category then shape order."""
    out = Path(out_dir)
    categories = sorted(CATEGORY_PARTS) if categories is None else list(categories)
    unknown = [c for c in categories if c not in CATEGORY_PARTS]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {sorted(CATEGORY_PARTS)}")
    if scan not in SCAN_KINDS:
        raise ValueError(f"scan must be one of {', '.join(SCAN_KINDS)}; got {scan!r}")
    written = []
    for c_index, category in enumerate(categories):
        (out / category).mkdir(parents=True, exist_ok=True)
        (out / category / "part_names.json").write_text(json.dumps(CATEGORY_PARTS[category]))
        for i in range(shapes_per_category):
            shape_seed = int(np.random.SeedSequence([seed, c_index, i]).generate_state(1)[0])
            obj = make_object(category, num_points, shape_seed)
            obj = make_scan(obj, "partial" if partial else scan, shape_seed)
            shape_dir = out / category / f"{category}_{i:04d}"
            write_shape(shape_dir, obj)
            written.append(shape_dir)
    return written
