"""The first end-to-end figure with a LEARNED detector: train a small detector from scratch on CPU, evaluate
it through the full pipeline on held-out shapes, next to ground-truth boxes on the same shapes.

No detector weights can be downloaded here, so the detector starts from random weights (``--scratch``
preset, a tokenizer built from the part names) and learns only from the training shapes' renders
(``partslip_core.finetune``: the pipeline's renderer, K reference views + random views + a partial-scan
variant per shape, boxes from the part labels). Training: ``--train`` synthetic shapes per category;
evaluation: ``--held-out`` other shapes per category (different seeds), through ``segment()``, scored as
``partslip eval`` scores (semantic mIoU, instance AP50). For scale, the same held-out shapes are also
segmented with exact and noisy ground-truth boxes (the projection detector) under the same pipeline config.

    python bench/bench_finetune.py                                   # grounding_dino, 15 min of training
    python bench/bench_finetune.py --backend owlv2 --minutes 5
    python bench/bench_finetune.py --categories chair,table --train 4 --held-out 4 --minutes 2 --out /tmp/ft.json
    python bench/bench_finetune.py --eval-model /tmp/partslip_bench_finetune_model --backend owlv2   # no training

The detector score threshold is chosen on the TRAINING shapes (best mIoU among ``--thresholds``; a model
trained briefly with a focal loss scores low), never on the held-out ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_finetune.py`

from partslip_core.config import config_from_dict  # noqa: E402
from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector  # noqa: E402
from partslip_core.evaluate import evaluate_category, predictions_from_instances  # noqa: E402
from partslip_core.finetune import FinetuneConfig, finetune  # noqa: E402
from partslip_core.finetune.data import from_synthetic  # noqa: E402
from partslip_core.detect.registry import build_detector  # noqa: E402
from partslip_core.finetune.evaluation import evaluate_shapes, mean_metrics  # noqa: E402
from partslip_core.finetune.views import AugmentConfig  # noqa: E402
from partslip_core.pipeline import segment  # noqa: E402
from partslip_core.synthetic import make_object  # noqa: E402

HELD_OUT_SEED_OFFSET = 1000  # held-out shapes use seeds 1000.. (training: 0..), so no shape is in both
DEFAULT_LR = {"grounding_dino": 2e-4, "owlv2": 3e-4}


def shapes(categories: list[str], count: int, offset: int, points: int) -> list:
    return [from_synthetic(make_object(c, points, offset + i), f"{c}_{offset + i:04d}") for c in categories
            for i in range(count)]


def ground_truth_reports(held_out: list, config, noise: GroundTruthNoise | None) -> list:
    """Reports with the projection detector (exact or noisy boxes) on the same shapes and pipeline config."""
    reports = []
    for category in dict.fromkeys(s.category for s in held_out):
        members = [s for s in held_out if s.category == category]
        preds, instances = [], []
        for index, shape in enumerate(members):
            detector = ProjectedGroundTruthDetector(shape.point_label, shape.point_instance, noise=noise, seed=index)
            result = segment(shape.cloud, shape.part_names, config, detector)
            preds.append(result.point_label)
            instances.append(predictions_from_instances(result.instances))
        reports.append(evaluate_category(category, members[0].part_names, preds, [s.point_label for s in members],
                                         instances, [s.point_instance for s in members]))
    return reports


def choose_threshold(model_dir: Path, backend: str, train_shapes: list, per_category: int, config,
                     candidates: list[float]) -> tuple[float, dict]:
    """The candidate threshold with the best mean mIoU on the first ``per_category`` training shapes."""
    subset = [s for c in dict.fromkeys(s.category for s in train_shapes)
              for s in [t for t in train_shapes if t.category == c][:per_category]]
    scores = {}
    for threshold in candidates:
        detector_config = dataclasses.replace(config.detector, backend=backend, weights=str(model_dir),
                                              score_threshold=threshold)
        scores[threshold] = round(mean_metrics(evaluate_shapes(subset, config, build_detector(detector_config)))[0], 4)
    return max(scores, key=lambda t: (scores[t], -t)), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="grounding_dino", choices=["grounding_dino", "owlv2"])
    parser.add_argument("--scratch", default="small", help="scratch preset (tiny | small) or a JSON of sizes")
    parser.add_argument("--categories", default="chair,lamp,table")
    parser.add_argument("--train", type=int, default=8, help="training shapes per category")
    parser.add_argument("--held-out", type=int, default=8, help="held-out shapes per category")
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=15.0, help="training time limit (the schedule ends on time)")
    parser.add_argument("--steps", type=int, default=4000, help="step cap (normally the time limit ends training)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, help="default: 2e-4 grounding_dino, 3e-4 owlv2")
    parser.add_argument("--image-size", type=int, default=256, help="render size (reference 800; the model sees 128)")
    parser.add_argument("--point-radius", type=float, default=0.008)
    parser.add_argument("--thresholds", default="0.02,0.05,0.1,0.2,0.3",
                        help="candidate detector score thresholds, chosen on the training shapes")
    parser.add_argument("--calibration-shapes", type=int, default=3, help="training shapes per category used for it")
    parser.add_argument("--eval-model", help="evaluate this tuned folder instead of training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-out", default="/tmp/partslip_bench_finetune_model")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    config = config_from_dict({"render": {"image_size": args.image_size, "point_radius": args.point_radius},
                               "detector": {"score_threshold": 0.1}, "cpu_threads": args.threads,
                               "seed": args.seed})
    train_shapes = shapes(categories, args.train, 0, args.points)
    held_out = shapes(categories, args.held_out, HELD_OUT_SEED_OFFSET, args.points)
    settings = FinetuneConfig(backend=args.backend, scratch=args.scratch, steps=args.steps, batch_size=args.batch_size,
                              lr=args.lr or DEFAULT_LR[args.backend], seed=args.seed, time_limit_s=args.minutes * 60,
                              augment=AugmentConfig(extra_views=10, partial_variants=1))
    started = time.perf_counter()
    model_dir = Path(args.eval_model or args.model_out)
    result = None
    if not args.eval_model:
        result = finetune(train_shapes, model_dir, settings, config, eval_shapes=[], progress=True)
    threshold, calibration = choose_threshold(model_dir, args.backend, train_shapes, args.calibration_shapes, config,
                                              [float(t) for t in args.thresholds.split(",")])
    config = dataclasses.replace(config, detector=dataclasses.replace(config.detector, backend=args.backend,
                                                                      weights=str(model_dir), score_threshold=threshold))
    learned_reports = evaluate_shapes(held_out, config, build_detector(config.detector), progress=True)
    total_s = time.perf_counter() - started
    exact = ground_truth_reports(held_out, config, None)
    noisy = ground_truth_reports(held_out, config, GroundTruthNoise(jitter=0.1, drop_probability=0.3,
                                                                    false_positives_per_view=1.0))
    if result is not None:
        print(f"\ntraining: {len(result.losses)} steps in {result.train_seconds:.0f} s on {result.num_train_images} "
              f"views; loss {np.mean(result.losses[:10]):.2f} -> {np.mean(result.losses[-10:]):.2f}")
    print(f"score threshold {threshold} (training-shape mIoU per threshold: {calibration}); whole run {total_s:.0f} s")
    print(f"{'held-out, mIoU / AP50':<34}" + "".join(f"{r.category:>14}" for r in exact) + f"{'mean':>14}")
    for name, reports in [(f"learned {args.backend} (trained here)", learned_reports),
                          ("ground-truth boxes, exact", exact), ("ground-truth boxes, noisy", noisy)]:
        miou, ap = mean_metrics(reports)
        print(f"{name:<34}" + "".join(f"{r.miou:>7.3f}/{r.map50:.3f}" for r in reports) + f"{miou:>7.3f}/{ap:.3f}")
    if args.out:
        training = {} if result is None else {"train_steps": len(result.losses), "train_seconds": result.train_seconds,
                                              "num_train_images": result.num_train_images, "losses": result.losses[::10]}
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            **training, "total_seconds": total_s, "threshold": threshold, "calibration": calibration,
            "learned": [r.to_dict() for r in learned_reports], "ground_truth_exact": [r.to_dict() for r in exact],
            "ground_truth_noisy": [r.to_dict() for r in noisy]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
