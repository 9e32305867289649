"""The offline ``partslip`` command: segment a PLY, evaluate on a labeled dataset, generate synthetic data, manage models.

    partslip segment INPUT.ply --parts "seat,back,leg" [--detector NAME] [--out DIR]
    partslip eval DATASET_DIR --detector ground_truth [--jitter 0.1] [--out report.json]
    partslip generate OUT_DIR [--categories chair,mug] [--shapes 4] [--points 10000] [--partial]
    partslip models list|verify|download ...

Errors in the input (missing file, empty cloud, NaNs, no parts, bad config) print one clear line and
exit with status 2; a failing detector exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from partslip_core.config import ConfigError, PipelineConfig, load_config
from partslip_core.detect import DetectorError, GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.types import InputError, PartSegmentationResult, PointCloud

log = logging.getLogger("partslip")
EXIT_INPUT, EXIT_DETECTOR = 2, 3


def split_parts(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_config(args: argparse.Namespace) -> PipelineConfig:
    overrides: dict = {}
    if getattr(args, "device", None):
        overrides["device"] = args.device
    detector = {k: v for k, v in {"backend": args.detector, "weights": getattr(args, "weights", None),
                                  "score_threshold": getattr(args, "threshold", None)}.items() if v is not None}
    if detector:
        overrides["detector"] = detector
    if getattr(args, "image_size", None):
        overrides["render"] = {"image_size": args.image_size}
    if getattr(args, "up_axis", None):
        overrides["normalize"] = {"up_axis": args.up_axis}
    return load_config(args.config, overrides)


def make_detector(config: PipelineConfig, extras: dict[str, np.ndarray], noise: GroundTruthNoise | None, seed: int):
    """None = let segment() build the configured backend; ground_truth needs label/instance properties."""
    if config.detector.backend != "ground_truth":
        return None
    missing = [name for name in ("label", "instance") if name not in extras]
    if missing:
        raise InputError(f"--detector ground_truth needs per-point ground truth: the PLY lacks vertex "
                         f"propert{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}")
    log.warning("detector 'ground_truth' projects the KNOWN labels of this cloud into the views: "
                "this is a demo/evaluation of the 3D lifting stages, not open-vocabulary detection")
    return ProjectedGroundTruthDetector(extras["label"], extras["instance"], noise=noise, seed=seed)


def write_outputs(out_dir: Path, cloud: PointCloud, result: PartSegmentationResult, up_axis: str) -> list[Path]:
    from partslip_core.io import write_ply
    from partslip_core.visualize import render_labeled_png

    out_dir.mkdir(parents=True, exist_ok=True)
    ply = out_dir / "labeled.ply"
    write_ply(ply, cloud.xyz, cloud.rgb, extra={"label": result.point_label.astype(np.int32),
                                                "instance": result.point_instance.astype(np.int32),
                                                "score": result.point_score.astype(np.float32)})
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(result.summary(), indent=2))
    png = render_labeled_png(out_dir / "labeled.png", cloud.xyz, result.point_label, result.part_names,
                             up_axis=up_axis, title="partslip: " + ", ".join(result.part_names))
    return [ply, summary, png]


def cmd_segment(args: argparse.Namespace) -> int:
    from partslip_core.io import finite_points, read_ply
    from partslip_core.pipeline import segment

    parts = split_parts(args.parts)
    if not parts:
        raise InputError("--parts is empty: give comma-separated part names, e.g. --parts \"seat,back,leg\"")
    config = build_config(args)
    cloud, extras = read_ply(args.input)
    finite = finite_points(cloud.xyz)
    if not finite.all():
        if not args.drop_nonfinite:
            raise InputError(f"{args.input}: {int((~finite).sum())} of {len(finite)} points have NaN/Inf "
                             "coordinates; pass --drop-nonfinite to drop them")
        log.warning("dropping %d non-finite points", int((~finite).sum()))
        cloud = PointCloud(cloud.xyz[finite], None if cloud.rgb is None else cloud.rgb[finite],
                           None if cloud.normals is None else cloud.normals[finite])
        extras = {k: v[finite] for k, v in extras.items()}
    noise = GroundTruthNoise(jitter=args.jitter) if args.jitter else None
    detector = make_detector(config, extras, noise, config.seed)
    print(f"segmenting {cloud.num_points} points into [{', '.join(parts)}] with detector "
          f"'{config.detector.backend}' on {config.device}", file=sys.stderr)
    result = segment(cloud, parts, config, detector,
                     progress=lambda stage: print(f"  {stage} ...", file=sys.stderr, flush=True))
    files = write_outputs(Path(args.out), cloud, result, config.normalize.up_axis)
    summary = result.summary()
    print(json.dumps({"points_per_part": summary["points_per_part"], "unlabeled": summary["unlabeled_points"],
                      "instances": len(result.instances), "total_ms": round(result.timings_ms["total"], 1)}))
    for path in files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from partslip_core.eval_runner import evaluate_dataset

    config = build_config(args)
    noise = GroundTruthNoise(jitter=args.jitter, drop_probability=args.drop,
                             false_positives_per_view=args.false_positives)
    categories = split_parts(args.categories) if args.categories else None
    reports = evaluate_dataset(Path(args.dataset), config, noise=noise, categories=categories,
                               limit=args.limit, show_progress=not args.quiet)
    for report in reports:
        print(f"{report.category:<12} shapes={report.num_shapes:<4} mIoU={report.miou:.3f} mAP50={report.map50:.3f}")
    if reports:
        print(f"{'mean':<12} {'':<11} mIoU={np.nanmean([r.miou for r in reports]):.3f} "
              f"mAP50={np.nanmean([r.map50 for r in reports]):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps([r.to_dict() for r in reports], indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from partslip_core.synthetic import CATEGORY_PARTS, write_dataset

    categories = split_parts(args.categories) if args.categories else sorted(CATEGORY_PARTS)
    unknown = sorted(set(categories) - set(CATEGORY_PARTS))
    if unknown:
        raise InputError(f"unknown categories {unknown}; known: {sorted(CATEGORY_PARTS)}")
    written = write_dataset(args.out_dir, categories=categories, shapes_per_category=args.shapes,
                            num_points=args.points, seed=args.seed, partial=args.partial)
    print(f"wrote {len(written)} shapes under {args.out_dir}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from partslip_core.models import models_main

    return models_main(args.models_args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML (default: the reference preset)")
    parser.add_argument("--detector", help="glip | grounding_dino | owlv2 | ground_truth (demo/eval only)")
    parser.add_argument("--weights", help="detector weights: local path or hub id")
    parser.add_argument("--threshold", type=float, help="detector score threshold")
    parser.add_argument("--device", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--image-size", type=int, help="render size in pixels (reference: 800)")
    parser.add_argument("--up-axis", help="the input's up axis (default z, ROS convention; PartNet: y)")
    parser.add_argument("--jitter", type=float, default=0.0, help="ground_truth detector: box jitter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partslip", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment one PLY cloud into named parts")
    seg.add_argument("input")
    seg.add_argument("--parts", required=True, help='comma-separated part names, e.g. "seat,back,leg"')
    seg.add_argument("--out", default="out/segment", help="output directory")
    seg.add_argument("--drop-nonfinite", action="store_true", help="drop NaN/Inf points instead of failing")
    _common(seg)
    ev = sub.add_parser("eval", help="semantic mIoU and instance mAP50 on a labeled dataset folder")
    ev.add_argument("dataset")
    ev.add_argument("--categories", help="comma-separated subset")
    ev.add_argument("--limit", type=int, help="at most this many shapes per category")
    ev.add_argument("--drop", type=float, default=0.0, help="ground_truth detector: drop probability")
    ev.add_argument("--false-positives", type=float, default=0.0, help="ground_truth detector: per view")
    ev.add_argument("--out", help="write the report as JSON")
    ev.add_argument("--quiet", action="store_true")
    _common(ev)
    gen = sub.add_parser("generate", help="write synthetic part-labeled objects (PartNet-E layout)")
    gen.add_argument("out_dir")
    gen.add_argument("--categories")
    gen.add_argument("--shapes", type=int, default=4)
    gen.add_argument("--points", type=int, default=10000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--partial", action="store_true", help="single-sided scans with sensor noise")
    mod = sub.add_parser("models", help="list, verify or download detector weights")
    mod.add_argument("models_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    handlers = {"segment": cmd_segment, "eval": cmd_eval, "generate": cmd_generate, "models": cmd_models}
    started = time.perf_counter()
    try:
        status = handlers[args.command](args)
    except (InputError, ConfigError, FileNotFoundError) as error:
        print(f"partslip {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except DetectorError as error:
        print(f"partslip {args.command}: detector error: {error}", file=sys.stderr)
        return EXIT_DETECTOR
    log.debug("%s took %.1f s", args.command, time.perf_counter() - started)
    return status


if __name__ == "__main__":
    sys.exit(main())
