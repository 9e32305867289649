"""Robustness of the 3D lifting to detector errors: exact / jittered / dropped / all-noise boxes on full,
partial and fused scans of every synthetic category, over several seeds (issue 8; docs/quality.md).

    .venv/bin/python -m bench.bench_robustness                        # node config, 3 seeds, 400 px
    .venv/bin/python -m bench.bench_robustness --preset reference     # the paper-faithful preset
    .venv/bin/python -m bench.bench_robustness --set vote.uncovered_weight=1.0 --out before.json

The detector is the ground-truth projection detector with the box-noise model of
``partslip_core.detect.box_noise`` (jitter: each edge moved by U(-0.1, 0.1) x box size; drop: each box
dropped with probability 0.3; all: both plus one random-label false positive per view inside the
object). Seed s builds object s of every category, its scan and its noise, so every row of the table
sees the same objects. Category mIoU as the paper (per part over the seeds' shapes, then over parts);
AP50 per part over the same shapes; "best IoU" = mean over ground-truth instances of the best IoU of a
predicted instance of the same part (0 when a part is lost).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from partslip_core.config import PipelineConfig, config_from_dict, load_config
from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.evaluate import evaluate_category, predictions_from_instances
from partslip_core.pipeline import segment
from partslip_core.synthetic import CATEGORY_PARTS, SCAN_KINDS, make_object, make_scan
from partslip_core.types import PointCloud

REPO = Path(__file__).resolve().parents[1]
CONDITIONS: dict[str, dict[str, float]] = {
    "exact": {},
    "jitter": {"jitter": 0.1},
    "drop": {"drop_probability": 0.3},
    "all": {"jitter": 0.1, "drop_probability": 0.3, "false_positives_per_view": 1},
    # a detector that misses more (not in the default run): half / 60% of boxes dropped
    "drop50": {"drop_probability": 0.5},
    "all60": {"jitter": 0.1, "drop_probability": 0.6, "false_positives_per_view": 1},
}
DEFAULT_CONDITIONS = ("exact", "jitter", "drop", "all")  # the noise model and its parts


def node_pipeline_config(path: Path = REPO / "config" / "segment.yaml") -> PipelineConfig:
    """The PipelineConfig the ROS node runs with config/segment.yaml (its pipeline.* parameters on top of
    pipeline.config_file, else the reference preset). Device is left at cpu."""
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"].get("pipeline", {})
    params = dict(params)
    base = load_config(params.pop("config_file", "") or None)
    params.pop("device", None)
    views = params.get("render", {}).get("views")
    if views and not isinstance(views[0], (list, tuple)):
        params["render"] = {**params["render"], "views": [views[i:i + 2] for i in range(0, len(views), 2)]}
    return config_from_dict(params, base=base)


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(config: PipelineConfig, overrides: Sequence[str]) -> PipelineConfig:
    """section.field=value overrides (YAML values)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name:
            raise SystemExit(f"--set wants section.field=value; got {item!r}")
        nested.setdefault(section, {})[name] = _parse_value(value)
    return config_from_dict(nested, base=config) if nested else config


def scan_cases(categories: Sequence[str], scans: Sequence[str], seeds: Sequence[int], points: int):
    """(category, part names, scan kind, {seed: scanned shape}) for every category x scan kind; each seed's
    object is built once per category and scanned once per kind."""
    for category in categories:
        objects = {seed: make_object(category, points, seed) for seed in seeds}
        for scan in scans:
            yield category, CATEGORY_PARTS[category], scan, {seed: make_scan(objects[seed], scan, seed) for seed in seeds}


def evaluate_case(config: PipelineConfig, category: str, part_names: Sequence[str], shapes: dict,
                  noise: GroundTruthNoise, mask_refiner: Any = None):
    """segment() every seed's shape with the ground-truth detector under ``noise`` (detector seed
    1000 * seed + 7); the category's metrics over all of them (an evaluate.CategoryReport)."""
    preds, insts = [], []
    for seed, shape in shapes.items():
        detector = ProjectedGroundTruthDetector(shape.point_label, shape.point_instance, noise, seed=1000 * seed + 7)
        result = segment(PointCloud.from_arrays(shape.xyz, shape.rgb), part_names, config, detector,
                         mask_refiner=mask_refiner)
        preds.append(result.point_label)
        insts.append(predictions_from_instances(result.instances))
    return evaluate_category(category, part_names, preds, [s.point_label for s in shapes.values()],
                             insts, [s.point_instance for s in shapes.values()])


def run(config: PipelineConfig, categories: Sequence[str], scans: Sequence[str], conditions: Sequence[str],
        seeds: Sequence[int], points: int) -> list[dict]:
    """One row per (category, scan, condition) with the metrics over all seeds' shapes."""
    rows = []
    for category, part_names, scan, shapes in scan_cases(categories, scans, seeds, points):
        for condition in conditions:
            report = evaluate_case(config, category, part_names, shapes, GroundTruthNoise(**CONDITIONS[condition]))
            rows.append({"category": category, "scan": scan, "condition": condition, "miou": report.miou,
                         "map50": report.map50, "best_iou": report.instance_best_iou,
                         "per_part_iou": dict(zip(part_names, report.per_part_iou)),
                         "points": int(np.mean([len(s.xyz) for s in shapes.values()]))})
            print(f"  {category:<10} {scan:<8} {condition:<7} mIoU={report.miou:.3f} AP50={report.map50:.3f} "
                  f"bestIoU={report.instance_best_iou:.3f}", file=sys.stderr, flush=True)
    return rows


def _cell(rows: list[dict], key: str, **match) -> float:
    values = [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    return float(np.nanmean(values)) if values else float("nan")


def format_tables(rows: list[dict], scans: Sequence[str], conditions: Sequence[str]) -> str:
    """The issue's table (condition x scan, mean over categories), then per category (mIoU per scan and
    condition), then AP50 and best instance IoU of the exact and all-noise rows."""
    lines = ["mean over categories: mIoU / AP50 / best instance IoU", "",
             "| boxes | " + " | ".join(scans) + " |", "|---|" + "---|" * len(scans)]
    for condition in conditions:
        cells = [f"{_cell(rows, 'miou', condition=condition, scan=s):.3f} / {_cell(rows, 'map50', condition=condition, scan=s):.2f}"
                 f" / {_cell(rows, 'best_iou', condition=condition, scan=s):.2f}" for s in scans]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    categories = sorted({r["category"] for r in rows})
    header = [f"{s} {c}" for s in scans for c in conditions]
    lines += ["", "mIoU per category", "", "| category | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for category in categories:
        cells = [f"{_cell(rows, 'miou', category=category, scan=s, condition=c):.3f}" for s in scans for c in conditions]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    if not {"exact", "all"} & set(conditions):
        return "\n".join(lines)
    lines += ["", "AP50 / best instance IoU per category (exact boxes | all noise), per scan", "",
              "| category | " + " | ".join(scans) + " |", "|---|" + "---|" * len(scans)]
    for category in categories:
        cells = []
        for s in scans:
            parts = [f"{_cell(rows, 'map50', category=category, scan=s, condition=c):.2f}/"
                     f"{_cell(rows, 'best_iou', category=category, scan=s, condition=c):.2f}"
                     for c in ("exact", "all") if c in conditions]
            cells.append(" | ".join(parts) if len(parts) == 1 else f"{parts[0]} ; {parts[1]}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("node", "reference"), default="node",
                        help="node: config/segment.yaml's pipeline; reference: config/partslip_reference.yaml")
    parser.add_argument("--config", help="a partslip_core YAML instead of --preset")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. vote.whole_object_rule=explained")
    parser.add_argument("--categories", default=",".join(sorted(CATEGORY_PARTS)))
    parser.add_argument("--scans", default=",".join(SCAN_KINDS))
    parser.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS),
                        help=f"comma list of {', '.join(CONDITIONS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--points", type=int, default=6000, help="points of each complete object")
    parser.add_argument("--image-size", type=int, default=400, help="render size (reference: 800)")
    parser.add_argument("--out", help="write rows and tables as JSON")
    args = parser.parse_args(argv)
    if args.config:
        config = load_config(args.config)
    elif args.preset == "node":
        config = node_pipeline_config()
    else:
        config = load_config(REPO / "config" / "partslip_reference.yaml")
    config = apply_overrides(config, args.set)
    config.render.image_size = args.image_size
    config.device = "cpu"
    scans, conditions = args.scans.split(","), args.conditions.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    rows = run(config, args.categories.split(","), scans, conditions, seeds, args.points)
    tables = format_tables(rows, scans, conditions)
    print(tables)
    elapsed = time.perf_counter() - started
    print(f"\n{len(rows)} rows in {elapsed:.0f} s (2-core VM shared with other jobs; seeds {seeds}, "
          f"{args.points} points, {args.image_size} px)")
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": list(argv or sys.argv[1:]), "config": config.to_dict(),
                                              "rows": rows, "tables": tables}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
