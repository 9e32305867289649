"""Run the pipeline over a labeled dataset folder and score it the way the paper does.

Layout (PartNet-Ensembled, also what ``partslip generate`` writes): ROOT/<category>/<shape_id>/pc.ply +
label.npy, and the part list per category either in ROOT/<category>/part_names.json or in a
PartNetE_meta.json ({category: [part, ...]}) at ROOT.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from partslip_core.config import PipelineConfig
from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.detect.registry import build_detector
from partslip_core.evaluate import CategoryReport, evaluate_category, predictions_from_instances
from partslip_core.io import iter_dataset, read_labeled_shape, read_part_names
from partslip_core.pipeline import segment
from partslip_core.types import InputError


def category_part_names(root: Path, category: str) -> list[str]:
    """ROOT/<category>/part_names.json, else the category's entry in ROOT/PartNetE_meta.json."""
    meta = root / "PartNetE_meta.json"
    if not (root / category / "part_names.json").is_file() and meta.is_file():
        table = json.loads(meta.read_text())
        if category in table:
            return list(table[category])
    return read_part_names(root / category)


def evaluate_dataset(root: Path, config: PipelineConfig, noise: Optional[GroundTruthNoise] = None,
                     categories: Optional[Sequence[str]] = None, limit: Optional[int] = None,
                     show_progress: bool = False) -> list[CategoryReport]:
    """One CategoryReport per category. The detector is built once (or, for ground_truth, per shape)."""
    shapes = defaultdict(list)
    for category, shape_id, shape_dir in iter_dataset(root):
        if categories is None or category in categories:
            if limit is None or len(shapes[category]) < limit:
                shapes[category].append(shape_dir)
    if not shapes:
        raise InputError(f"no labeled shapes found under {root}")
    shared = None if config.detector.backend == "ground_truth" else build_detector(config.detector, config.device)
    reports = []
    for category in sorted(shapes):
        part_names = category_part_names(root, category)
        reports.append(_evaluate_category(category, part_names, shapes[category], config, shared, noise, show_progress))
    return reports


def _evaluate_category(category: str, part_names: list[str], shape_dirs: list[Path], config: PipelineConfig,
                       shared_detector, noise: Optional[GroundTruthNoise], show_progress: bool) -> CategoryReport:
    pred_labels, pred_instances, gt_labels, gt_instances = [], [], [], []
    for index, shape_dir in enumerate(tqdm(shape_dirs, desc=category, disable=not show_progress)):
        cloud, gt_label, gt_instance = read_labeled_shape(shape_dir)
        detector = shared_detector or ProjectedGroundTruthDetector(gt_label, gt_instance, noise=noise,
                                                                   seed=config.seed + index)
        result = segment(cloud, part_names, config, detector)
        pred_labels.append(result.point_label)
        pred_instances.append(predictions_from_instances(result.instances))
        gt_labels.append(gt_label)
        gt_instances.append(gt_instance)
    return evaluate_category(category, part_names, pred_labels, gt_labels, pred_instances, gt_instances)


def evaluate_seeds(root: Path, config: PipelineConfig, noise: Optional[GroundTruthNoise], seeds: Sequence[int],
                   categories: Optional[Sequence[str]] = None, limit: Optional[int] = None,
                   show_progress: bool = False) -> list[list[CategoryReport]]:
    """``evaluate_dataset`` once per seed (``config.seed`` = seed: the noise of shape i is seeded seed + i)."""
    if not seeds:
        raise InputError("give at least one seed")
    runs = []
    for seed in seeds:
        seeded = dataclasses.replace(config, seed=int(seed))
        runs.append(evaluate_dataset(root, seeded, noise, categories, limit, show_progress))
    return runs
