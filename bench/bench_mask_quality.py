"""What mask refinement can be worth: boxes vs exact masks vs an oracle SAM, exact and noisy boxes (issue 8).

Real SAM weights cannot be downloaded here, so the upper bound is measured with the ground-truth
projection detector's exact instance masks:

- ``boxes``: rectangles only (masks.backend: none);
- ``exact_masks``: every true box carries its instance's exact pixel mask (a perfect, unclipped SAM;
  under noise a false positive's mask is its rectangle on the object, as ``box_noise`` makes it);
- ``oracle_sam``: the same masks passed through the SAM stage's own post-processing
  (``sam.clip_masks_to_boxes``: cut to the possibly jittered box grown by ``masks.clip_margin``,
  empty masks fall back to the box) - what a perfect SAM gives with the configured clipping.

    .venv/bin/python -m bench.bench_mask_quality                      # node config, all categories, 3 seeds
    .venv/bin/python -m bench.bench_mask_quality --categories mug,kettle --scans full --seeds 0,1
    .venv/bin/python -m bench.bench_mask_quality --set masks.clip_margin=0.0
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np
import torch

from bench.bench_robustness import CONDITIONS, apply_overrides, evaluate_case, node_pipeline_config, scan_cases
from partslip_core.config import PipelineConfig, load_config
from partslip_core.detect import GroundTruthNoise
from partslip_core.detect.sam import clip_masks_to_boxes
from partslip_core.synthetic import CATEGORY_PARTS, SCAN_KINDS
from partslip_core.types import ViewDetections

MODES = ("boxes", "exact_masks", "oracle_sam")


class OracleSam:
    """A perfect SAM: keeps the detector's exact masks and applies the SAM stage's clipping and fallback."""

    name = "oracle_sam"

    def __init__(self, margin: float | None) -> None:
        self.margin = margin

    def refine(self, views, detections: Sequence[ViewDetections]) -> list[ViewDetections]:
        out = []
        for det in detections:
            masks, _ = clip_masks_to_boxes(torch.as_tensor(det.masks).clone(), torch.as_tensor(det.boxes), self.margin)
            out.append(ViewDetections(det.boxes, det.labels, det.scores, masks.numpy()))
        return out


def run(config: PipelineConfig, categories: Sequence[str], scans: Sequence[str], conditions: Sequence[str],
        seeds: Sequence[int], points: int) -> list[dict]:
    margin = config.masks.clip_margin if config.masks.clip_to_box else None
    rows = []
    for category, part_names, scan, shapes in scan_cases(categories, scans, seeds, points):
        for condition in conditions:
            for mode in MODES:
                noise = GroundTruthNoise(masks=mode != "boxes", **CONDITIONS[condition])
                report = evaluate_case(config, category, part_names, shapes, noise,
                                       mask_refiner=OracleSam(margin) if mode == "oracle_sam" else None)
                rows.append({"category": category, "scan": scan, "condition": condition, "mode": mode,
                             "miou": report.miou, "map50": report.map50})
                print(f"  {category:<10} {scan:<8} {condition:<6} {mode:<12} mIoU={report.miou:.3f} "
                      f"AP50={report.map50:.3f}", file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict], scans: Sequence[str], conditions: Sequence[str]) -> str:
    """Mean over categories: one line per (condition, mode), one column per scan (mIoU / AP50)."""
    lines = ["| boxes | mode | " + " | ".join(scans) + " |", "|---|---|" + "---|" * len(scans)]
    for condition in conditions:
        for mode in MODES:
            cells = []
            for scan in scans:
                sel = [r for r in rows if (r["condition"], r["mode"], r["scan"]) == (condition, mode, scan)]
                miou, ap50 = np.nanmean([r["miou"] for r in sel]), np.nanmean([r["map50"] for r in sel])
                cells.append(f"{miou:.3f} / {ap50:.2f}")
            lines.append(f"| {condition} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("node", "reference"), default="node")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. masks.clip_margin=0.0")
    parser.add_argument("--categories", default=",".join(sorted(CATEGORY_PARTS)))
    parser.add_argument("--scans", default=",".join(SCAN_KINDS))
    parser.add_argument("--conditions", default="exact,all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--points", type=int, default=6000)
    parser.add_argument("--image-size", type=int, default=400)
    args = parser.parse_args(argv)
    config = node_pipeline_config() if args.preset == "node" else load_config()
    config = apply_overrides(config, args.set)
    config.render.image_size, config.device = args.image_size, "cpu"
    scans, conditions = args.scans.split(","), args.conditions.split(",")
    started = time.perf_counter()
    rows = run(config, args.categories.split(","), scans, conditions, [int(s) for s in args.seeds.split(",")],
               args.points)
    print(format_table(rows, scans, conditions))
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s (2-core VM shared with other jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
