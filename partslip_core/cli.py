"""The offline ``partslip`` command: segment a PLY, evaluate on a labeled dataset, generate synthetic data, manage models.

    partslip segment INPUT.ply --parts "seat,back,leg" [--detector NAME] [--out DIR]
    partslip eval DATASET_DIR --detector ground_truth [--box-noise] [--seeds 0,1,2] [--out report.json]
    partslip generate OUT_DIR [--categories chair,mug] [--shapes 4] [--points 10000] [--partial]
    partslip models list|verify|download ...
    partslip finetune DATA_DIR --out models/my_category [--backend grounding_dino] [--init DIR | --scratch small]
    partslip config [--config FILE] [--describe]

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

from partslip_core.config import UP_AXES, ConfigError, PipelineConfig, load_config
from partslip_core.detect import DetectorError, GroundTruthNoise, backend_info, build_detector
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
    masks = {k: v for k, v in {"backend": getattr(args, "masks", None),
                               "weights": getattr(args, "mask_weights", None)}.items() if v is not None}
    if masks:
        overrides["masks"] = masks
    return load_config(args.config, overrides)


def make_detector(config: PipelineConfig, cloud: PointCloud, extras: dict, noise: GroundTruthNoise | None, seed: int):
    """Set the PLY properties the backend reads (``BackendInfo.point_fields``) as ``cloud.fields``, log its warning;
    the detector built with the options it takes (ground_truth: box noise, seed), else None (segment() builds it)."""
    info = backend_info(config.detector.backend)
    if info.missing_fields(extras):
        raise InputError(f"--detector {info.name} needs per-point fields: the PLY lacks vertex properties "
                         f"{info.missing_fields(extras)}")
    cloud.fields = {name: extras[name] for name in info.field_names if name in extras}
    if info.warning:
        log.warning(info.warning)
    options = {k: v for k, v in {"noise": noise, "seed": seed}.items() if k in info.options}
    return build_detector(config.detector, config.device, **options) if options else None


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
    cloud.intensity = extras.get("intensity")  # a lidar XYZI property: shades a cloud without rgb (render section)
    noise = GroundTruthNoise(jitter=args.jitter) if args.jitter else None
    detector = make_detector(config, cloud, extras, noise, config.seed)
    print(f"segmenting {cloud.num_points} points into [{', '.join(parts)}] with detector "
          f"'{config.detector.backend}' on {config.device}", file=sys.stderr)
    result = segment(cloud, parts, config, detector, keep_views=args.debug,
                     progress=lambda stage: print(f"  {stage} ...", file=sys.stderr, flush=True))
    files = write_outputs(Path(args.out), cloud, result, config.normalize.up_axis)
    if args.debug:  # the rendered views with the detector's boxes, and the cloud coloured by superpoint
        from partslip_core.debug import write_debug_files
        files += write_debug_files(Path(args.out), cloud, result)
    if result.diagnosis is not None and result.diagnosis.applies:
        print(f"partslip segment: why unlabelled ({result.diagnosis.reason}): {result.diagnosis.message}",
              file=sys.stderr)
    summary = result.summary()
    print(json.dumps({"points_per_part": summary["points_per_part"], "unlabeled": summary["unlabeled_points"],
                      "instances": len(result.instances), "total_ms": round(result.timings_ms["total"], 1)}))
    for path in files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from partslip_core.eval_runner import evaluate_seeds

    config = build_config(args)
    issue = {"jitter": 0.1, "drop": 0.3, "false_positives": 1} if args.box_noise else {}
    values = {name: getattr(args, name) if getattr(args, name) is not None else issue.get(name, 0)
              for name in ("jitter", "drop", "false_positives")}
    try:
        noise = GroundTruthNoise(jitter=values["jitter"], drop_probability=values["drop"],
                                 false_positives_per_view=values["false_positives"])
        seeds = [int(s) for s in split_parts(args.seeds)] if args.seeds else [config.seed]
    except ValueError as error:
        raise InputError(f"box noise: {error}") from error
    if noise.active and "noise" not in backend_info(config.detector.backend).options:
        raise InputError("--box-noise/--jitter/--drop/--false-positives perturb the ground_truth detector's boxes: "
                         "pass --detector ground_truth")
    categories = split_parts(args.categories) if args.categories else None
    print(f"box noise: jitter {noise.jitter}, drop {noise.drop_probability}, {noise.false_positives_per_view} "
          f"false positive(s) per view; seeds {seeds}", file=sys.stderr)
    per_seed = evaluate_seeds(Path(args.dataset), config, noise, seeds, categories=categories, limit=args.limit,
                              show_progress=not args.quiet)
    reports = per_seed[0]
    for index, report in enumerate(reports):
        mious = [run[index].miou for run in per_seed]
        maps = [run[index].map50 for run in per_seed]
        spread = f" (+-{np.std(mious):.3f} over {len(seeds)} seeds)" if len(seeds) > 1 else ""
        print(f"{report.category:<12} shapes={report.num_shapes:<4} mIoU={np.mean(mious):.3f}{spread} "
              f"mAP50={np.nanmean(maps):.3f} best-instance-IoU={np.nanmean([r[index].instance_best_iou for r in per_seed]):.3f}")
    if reports:
        print(f"{'mean':<12} {'':<11} mIoU={np.nanmean([r.miou for run in per_seed for r in run]):.3f} "
              f"mAP50={np.nanmean([r.map50 for run in per_seed for r in run]):.3f}")
    if args.out:
        payload = [r.to_dict() for r in reports] if len(seeds) == 1 else {
            "seeds": seeds, "reports": {str(s): [r.to_dict() for r in run] for s, run in zip(seeds, per_seed)}}
        Path(args.out).write_text(json.dumps(payload, indent=2))
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


def cmd_finetune(args: argparse.Namespace) -> int:
    from partslip_core.finetune import FinetuneConfig, finetune
    from partslip_core.finetune.data import load_shapes
    from partslip_core.finetune.views import AugmentConfig

    config = build_config(args)
    parts = split_parts(args.parts) if args.parts else None
    categories = split_parts(args.categories) if args.categories else None
    shapes = load_shapes(args.data, parts, categories)
    held_out = load_shapes(args.eval_data, parts, categories) if args.eval_data else None
    settings = FinetuneConfig(
        backend=config.detector.backend, init=args.init or "", scratch=args.scratch or "", steps=args.steps,
        batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr, freeze_backbones=args.freeze_backbones,
        fp16=not args.no_fp16, seed=args.seed, holdout=args.holdout, eval_before=not args.no_eval_before,
        augment=AugmentConfig(extra_views=args.extra_views, partial_variants=args.partial_variants))
    print(f"fine-tuning {settings.backend} on {len(shapes)} shapes "
          f"({', '.join(sorted({s.category for s in shapes}))}) on {config.device}", file=sys.stderr)
    result = finetune(shapes, args.out, settings, config, eval_shapes=held_out, progress=not args.quiet)
    if result.table:
        print(result.table)
    print(f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} over {len(result.losses)} steps "
          f"({result.num_train_images} training views, {result.train_seconds:.0f} s)")
    print(f"wrote {result.output_dir}; use it with --detector {settings.backend} --weights {result.output_dir} "
          f"(config: detector.backend: {settings.backend}, detector.weights: {result.output_dir})", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The resolved config as YAML (validated), or with --describe every field: type, default, range, unit, doc."""
    import yaml

    from partslip_core.schema_listing import describe
    config = load_config(args.config)
    if args.describe:
        print(describe(config))
        print("\n# The node's parameters (these as pipeline.*, plus fusion.* and its own): "
              "python -m partslip_ros.params")
        return 0
    as_lists = lambda v: [as_lists(i) for i in v] if isinstance(v, (list, tuple)) else (  # noqa: E731
        {k: as_lists(i) for k, i in v.items()} if isinstance(v, dict) else v)
    print(yaml.safe_dump(as_lists(config.to_dict()), sort_keys=False, default_flow_style=None), end="")
    return 0


def field_help(name: str, text: str = "") -> str:
    """CLI help of an option that sets the pipeline field ``name``: its schema doc (or ``text``), constraints and
    default, so the CLI, the YAML docs and the ROS descriptors say the same."""
    from partslip_core.schema_listing import format_value
    info = field_info(name)
    facts = [f for f in (info.spec.constraint_text(), info.spec.unit and f"unit {info.spec.unit}") if f]
    facts.append(f"default {format_value(info.default)}")
    return f"{text or info.spec.doc} ({'; '.join(facts)}; config: {name})".replace("%", "%%")


def field_info(name: str):
    """The schema field ``name`` of PipelineConfig (``partslip_core.schema.FieldInfo``)."""
    from partslip_core.schema import walk
    return next(i for i in walk(PipelineConfig) if i.name == name)


def cmd_models(args: argparse.Namespace) -> int:
    from partslip_core.models import models_main

    return models_main(args.models_args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML (default: the reference preset)")
    parser.add_argument("--detector", help=field_help("detector.backend"))
    parser.add_argument("--weights", help=field_help("detector.weights", "detector weights: local path or hub id"))
    parser.add_argument("--threshold", type=float, help=field_help("detector.score_threshold"))
    parser.add_argument("--device", help=field_help("device"))
    parser.add_argument("--image-size", type=int, help=field_help("render.image_size"))
    parser.add_argument("--up-axis", choices=UP_AXES, help=field_help("normalize.up_axis"))
    parser.add_argument("--masks", choices=field_info("masks.backend").spec.choices, help=field_help("masks.backend"))
    parser.add_argument("--mask-weights", help=field_help("masks.weights"))
    parser.add_argument("--jitter", type=float, default=None,
                        help="ground_truth detector: each box edge moves by U(-j, j) x box size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partslip", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment one PLY cloud into named parts")
    seg.add_argument("input")
    seg.add_argument("--parts", required=True, help='comma-separated part names, e.g. "seat,back,leg"')
    seg.add_argument("--out", default="out/segment", help="output directory")
    seg.add_argument("--drop-nonfinite", action="store_true", help="drop NaN/Inf points instead of failing")
    seg.add_argument("--debug", action="store_true", help="also write debug_views.png (rendered views with the "
                     "detector's boxes/masks) and debug_superpoints.ply (cloud coloured by superpoint)")
    _common(seg)
    ev = sub.add_parser("eval", help="semantic mIoU and instance mAP50 on a labeled dataset folder")
    ev.add_argument("dataset")
    ev.add_argument("--categories", help="comma-separated subset")
    ev.add_argument("--limit", type=int, help="at most this many shapes per category")
    ev.add_argument("--box-noise", action="store_true",
                    help="ground_truth detector: the box-noise model (jitter 0.1, drop 0.3, 1 false positive per "
                         "view); --jitter/--drop/--false-positives override its parts")
    ev.add_argument("--drop", type=float, default=None, help="ground_truth detector: drop probability per box")
    ev.add_argument("--false-positives", type=int, default=None,
                    help="ground_truth detector: random-label boxes per view, inside the object")
    ev.add_argument("--seeds", help="comma-separated seeds of the noise (default: the config's seed), e.g. 0,1,2")
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
    fin = sub.add_parser("finetune", help="fine-tune Grounding DINO / OWLv2 on labelled shapes (few-shot)")
    fin.add_argument("data", help="labelled shapes: a PartNet-E style root, one category folder, or labelled PLYs")
    fin.add_argument("--out", required=True, help="model folder to write (then: detector.weights: OUT)")
    fin.add_argument("--backend", dest="detector", default="grounding_dino", choices=["grounding_dino", "owlv2"])
    start = fin.add_mutually_exclusive_group()
    start.add_argument("--init", help="pretrained weights: folder, known model name or hub id (default: the backend's)")
    start.add_argument("--scratch", help="train from random weights: preset tiny|small or a JSON of sizes")
    fin.add_argument("--parts", help="part names in label order (required for labelled PLYs; else read from the data)")
    fin.add_argument("--categories", help="comma-separated subset of the data's categories")
    fin.add_argument("--steps", type=int, default=300)
    fin.add_argument("--batch-size", type=int, default=4)
    fin.add_argument("--accumulate", type=int, default=1, help="gradient accumulation (forward passes per step)")
    fin.add_argument("--lr", type=float, default=1e-4)
    fin.add_argument("--freeze-backbones", action="store_true", help="train only fusion, heads and projections")
    fin.add_argument("--no-fp16", action="store_true", help="full precision on CUDA (fp16 autocast is the default)")
    fin.add_argument("--seed", type=int, default=0)
    fin.add_argument("--holdout", type=float, default=0.25, help="held-out shapes per category: fraction or count")
    fin.add_argument("--eval-data", help="evaluate on this folder instead of a held-out split")
    fin.add_argument("--no-eval-before", action="store_true", help="skip evaluating the starting model")
    fin.add_argument("--extra-views", type=int, default=10, help="random views per shape on top of the K views")
    fin.add_argument("--partial-variants", type=int, default=1, help="partial-scan renders per shape")
    fin.add_argument("--quiet", action="store_true")
    fin.add_argument("--config", help="pipeline YAML (renderer, thresholds) used for training and evaluation")
    fin.add_argument("--threshold", type=float, help=field_help("detector.score_threshold",
                                                                "detector score threshold for the evaluation"))
    fin.add_argument("--device", help=field_help("device"))
    fin.add_argument("--image-size", type=int, help=field_help("render.image_size"))
    fin.add_argument("--up-axis", choices=UP_AXES,
                     help=field_help("normalize.up_axis", "the shapes' up axis (PartNet: y)"))
    conf = sub.add_parser("config", help="print the resolved pipeline config, or describe every field (--describe)")
    conf.add_argument("--config", help="pipeline YAML (default: the reference preset); validated")
    conf.add_argument("--describe", action="store_true",
                      help="list every field: name, type, default, range/choices, unit and doc")
    mod = sub.add_parser("models", help="list, verify or download detector weights")
    mod.add_argument("models_args", nargs=argparse.REMAINDER)
    return parser


def attach_negative_axes(argv: Sequence[str]) -> list[str]:
    """``--up-axis -y`` -> ``--up-axis=-y``: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--up-axis" and arg in UP_AXES:
            out[-1] = f"--up-axis={arg}"
        else:
            out.append(arg)
    return out


class SkipSelfHandled(logging.Filter):
    """Drops records that a library already printed through its own handler (huggingface_hub and transformers
    attach one): without this each of their warnings is printed twice, once plain and once with our prefix."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (``main`` may run many times in one process)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(verbose: bool) -> None:
    """One stderr handler on the root logger ("LEVEL message") skipping self-handled records; like
    logging.basicConfig, nothing is added when the root logger already has handlers (an embedding app's)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(SkipSelfHandled())
        handler.partslip_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(attach_negative_axes(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    handlers = {"segment": cmd_segment, "eval": cmd_eval, "generate": cmd_generate, "models": cmd_models,
                "finetune": cmd_finetune, "config": cmd_config}
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
