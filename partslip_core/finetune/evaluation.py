"""Held-out evaluation through the full pipeline (segment() on each shape, scored as ``partslip eval`` scores)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from partslip_core.config import PipelineConfig
from partslip_core.evaluate import CategoryReport, evaluate_category, predictions_from_instances
from partslip_core.finetune.data import LabeledShape
from partslip_core.pipeline import segment


def evaluate_shapes(shapes: Sequence[LabeledShape], config: PipelineConfig, detector: Any,
                    progress: bool = False, desc: str = "evaluating") -> list[CategoryReport]:
    """One CategoryReport (semantic mIoU, instance mAP50) per category of ``shapes``, in first-seen order."""
    from tqdm import tqdm
    by_category: dict[str, list[LabeledShape]] = {}
    for shape in shapes:
        by_category.setdefault(shape.category, []).append(shape)
    reports = []
    bar = tqdm(total=len(shapes), desc=desc, disable=not progress)
    for category, members in by_category.items():
        preds, pred_instances, gts, gt_instances = [], [], [], []
        for shape in members:
            result = segment(shape.cloud, shape.part_names, config, detector)
            preds.append(result.point_label)
            pred_instances.append(predictions_from_instances(result.instances))
            gts.append(shape.point_label)
            gt_instances.append(shape.point_instance)
            bar.update(1)
        reports.append(evaluate_category(category, members[0].part_names, preds, gts, pred_instances, gt_instances))
    bar.close()
    return reports


def mean_metrics(reports: Sequence[CategoryReport]) -> tuple[float, float]:
    """(mean mIoU, mean mAP50) over categories (NaN-aware)."""
    if not reports:
        return float("nan"), float("nan")
    with np.errstate(all="ignore"):
        return float(np.nanmean([r.miou for r in reports])), float(np.nanmean([r.map50 for r in reports]))


def comparison_rows(before: Optional[Sequence[CategoryReport]], after: Sequence[CategoryReport]) -> list[dict]:
    """[{category, shapes, miou_before, miou_after, map50_before, map50_after}], the mean last."""
    previous = {r.category: r for r in before or []}
    rows = []
    for report in after:
        old = previous.get(report.category)
        rows.append({"category": report.category, "shapes": report.num_shapes,
                     "miou_before": None if old is None else old.miou, "miou_after": report.miou,
                     "map50_before": None if old is None else old.map50, "map50_after": report.map50})
    miou_b, map_b = mean_metrics(before) if before else (None, None)
    miou_a, map_a = mean_metrics(after)
    rows.append({"category": "mean", "shapes": sum(r.num_shapes for r in after), "miou_before": miou_b,
                 "miou_after": miou_a, "map50_before": map_b, "map50_after": map_a})
    return [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()} for row in rows]


def format_table(rows: Sequence[dict]) -> str:
    """The before/after table as aligned text (``-`` where no 'before' evaluation ran)."""
    def cell(value) -> str:
        return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    header = f"{'held-out':<14}{'shapes':>7}{'mIoU before':>13}{'mIoU after':>12}{'AP50 before':>13}{'AP50 after':>12}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['category']:<14}{row['shapes']:>7}{cell(row['miou_before']):>13}{cell(row['miou_after']):>12}"
                     f"{cell(row['map50_before']):>13}{cell(row['map50_after']):>12}")
    return "\n".join(lines)
