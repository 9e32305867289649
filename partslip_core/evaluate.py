"""The paper's metrics: semantic mIoU per category and instance mAP50 (PartNet-Ensembled protocol).

Labels are int arrays indexing the category's part list, -1 = unlabeled / none. Category mIoU
follows the PartSLIP reference: per part, the mean over shapes of its IoU (a shape counts only if
the part appears in its prediction or ground truth), then the mean over parts. AP50 is VOC-style
(area under the interpolated precision-recall curve) with greedy matching at IoU >= 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp


class EvaluationError(ValueError):
    """Predictions and ground truth cannot be compared (shape or label range mismatch)."""


def _check_pair(pred_label: np.ndarray, gt_label: np.ndarray, num_parts: int) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred_label), np.asarray(gt_label)
    if pred.ndim != 1 or pred.shape != gt.shape:
        raise EvaluationError(f"pred and gt labels must be (N,) arrays of equal length; "
                              f"got {pred.shape} and {gt.shape}")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer)):
        raise EvaluationError(f"labels must be integer arrays; got {pred.dtype} and {gt.dtype}")
    for name, values in (("pred", pred), ("gt", gt)):
        if values.size and (values.min() < -1 or values.max() >= num_parts):
            raise EvaluationError(f"{name} labels must be in [-1, {num_parts}); got [{values.min()}, {values.max()}]")
    return pred.astype(np.int64), gt.astype(np.int64)


def semantic_iou(pred_label: np.ndarray, gt_label: np.ndarray, num_parts: int) -> np.ndarray:
    """(P,) float64 IoU per part; NaN where the part is in neither prediction nor ground truth.
    One bincount over (pred, gt) pairs gives the confusion matrix (-1 is its own row/column)."""
    pred, gt = _check_pair(pred_label, gt_label, num_parts)
    size = num_parts + 1
    confusion = np.bincount((pred + 1) * size + (gt + 1), minlength=size * size).reshape(size, size)[1:, 1:]
    pred_count = np.bincount(pred + 1, minlength=size)[1:]
    gt_count = np.bincount(gt + 1, minlength=size)[1:]
    intersection = np.diag(confusion).astype(np.float64)
    union = pred_count + gt_count - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def shape_miou(pred_label: np.ndarray, gt_label: np.ndarray, num_parts: int) -> float:
    """Mean IoU over the parts present in the shape's prediction or ground truth (NaN if none)."""
    return _nanmean(semantic_iou(pred_label, gt_label, num_parts))


def category_miou(pred_labels: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
                  num_parts: int) -> tuple[float, np.ndarray]:
    """(mIoU, (P,) per-part IoU): per part the mean over shapes where it occurs, then over parts."""
    if len(pred_labels) != len(gt_labels):
        raise EvaluationError(f"{len(pred_labels)} predictions for {len(gt_labels)} ground-truth shapes")
    if not gt_labels:
        return math.nan, np.full(num_parts, np.nan)
    ious = np.stack([semantic_iou(p, g, num_parts) for p, g in zip(pred_labels, gt_labels)])
    counted = ~np.isnan(ious)
    per_part = np.where(counted.any(axis=0), np.nansum(ious, axis=0) / np.maximum(counted.sum(axis=0), 1), np.nan)
    return _nanmean(per_part), per_part


@dataclass
class InstancePrediction:
    """One predicted part instance: label index, confidence, (n,) int64 point indices into the shape."""

    label: int
    score: float
    point_indices: np.ndarray


def predictions_from_instances(instances: Sequence) -> list[InstancePrediction]:
    """Adapt ``PartSegmentationResult.instances`` (PartInstance objects) for ``average_precision_50``."""
    return [InstancePrediction(int(inst.label), float(inst.score), np.asarray(inst.point_indices))
            for inst in instances]


def _gt_instances(gt_instance: np.ndarray, gt_label: np.ndarray, num_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """(point -> dense gt column or -1, (G,) label per gt instance = its points' majority label;
    instances whose points are all unlabeled get label -1 and are ignored)."""
    gt_instance, gt_label = np.asarray(gt_instance, np.int64), np.asarray(gt_label, np.int64)
    if gt_instance.shape != gt_label.shape or gt_instance.ndim != 1:
        raise EvaluationError(f"gt instance and label arrays must be (N,) of equal length; "
                              f"got {gt_instance.shape} and {gt_label.shape}")
    ids, column = np.unique(gt_instance, return_inverse=True)
    column = np.where(gt_instance >= 0, column - int((ids < 0).sum()), -1)
    ids = ids[ids >= 0]
    if ids.size == 0:
        return column, np.zeros(0, np.int64)
    keep = (column >= 0) & (gt_label >= 0) & (gt_label < num_parts)
    votes = np.zeros((ids.size, num_parts), np.int64)
    np.add.at(votes, (column[keep], gt_label[keep]), 1)
    labels = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)
    return column, labels


def instance_iou_matrix(preds: Sequence[InstancePrediction], point_gt_column: np.ndarray,
                        num_gt: int) -> np.ndarray:
    """(len(preds), G) IoU between predicted point sets and gt instances via a sparse contingency table."""
    n = point_gt_column.shape[0]
    if not preds or num_gt == 0:
        return np.zeros((len(preds), num_gt))
    members = [np.unique(np.asarray(p.point_indices, np.int64)) for p in preds]
    for i, idx in enumerate(members):
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise EvaluationError(f"prediction {i} has point indices outside [0, {n})")
    rows = np.repeat(np.arange(len(preds)), [m.size for m in members])
    cols = np.concatenate(members) if rows.size else np.zeros(0, np.int64)
    pred_matrix = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(preds), n))
    has_gt = point_gt_column >= 0
    gt_matrix = sp.csr_matrix((np.ones(int(has_gt.sum())), (np.flatnonzero(has_gt), point_gt_column[has_gt])),
                              shape=(n, num_gt))
    intersection = (pred_matrix @ gt_matrix).toarray()
    pred_size = np.array([m.size for m in members], dtype=np.float64)
    gt_size = np.bincount(point_gt_column[has_gt], minlength=num_gt).astype(np.float64)
    union = pred_size[:, None] + gt_size[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def voc_average_precision(tp: np.ndarray, num_gt: int) -> float:
    """Area under the interpolated precision-recall curve of score-sorted TP flags (VOC 2010+)."""
    if num_gt == 0:
        return math.nan
    tp = np.asarray(tp, dtype=np.float64)
    if tp.size == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = np.concatenate([[0.0], cum_tp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], cum_tp / np.arange(1, tp.size + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


@dataclass
class _ShapeMatch:
    """Per-shape matching inputs: IoU (preds x gts), gt labels (G,), pred labels/scores."""

    iou: np.ndarray
    gt_label: np.ndarray
    pred_label: np.ndarray
    pred_score: np.ndarray


def _part_tp_flags(shapes: Sequence[_ShapeMatch], part: int, iou_threshold: float) -> tuple[np.ndarray, int]:
    """Greedy matching of one part's predictions (all shapes, by descending score): each goes to
    the best still-unmatched gt of its shape at IoU >= threshold. Returns (TP flags, #gt)."""
    entries = [(s, i) for s, shape in enumerate(shapes) for i in np.flatnonzero(shape.pred_label == part)]
    num_gt = int(sum((shape.gt_label == part).sum() for shape in shapes))
    if not entries:
        return np.zeros(0), num_gt
    scores = np.array([shapes[s].pred_score[i] for s, i in entries])
    order = np.argsort(-scores, kind="stable")
    matched = [np.zeros(shape.gt_label.size, dtype=bool) for shape in shapes]
    tp = np.zeros(len(entries))
    for rank, k in enumerate(order):  # per predicted instance, not per point
        s, i = entries[k]
        candidates = np.where((shapes[s].gt_label == part) & ~matched[s], shapes[s].iou[i], -1.0)
        if candidates.size and candidates.max() >= iou_threshold:
            matched[s][int(candidates.argmax())] = True
            tp[rank] = 1.0
    return tp, num_gt


def average_precision_50(preds_per_shape: Sequence[Sequence[InstancePrediction]],
                         gt_instance_per_shape: Sequence[np.ndarray], gt_label_per_shape: Sequence[np.ndarray],
                         num_parts: int, iou_threshold: float = 0.5) -> np.ndarray:
    """(P,) AP per part over all shapes of one category; NaN for parts without gt instances."""
    if not (len(preds_per_shape) == len(gt_instance_per_shape) == len(gt_label_per_shape)):
        raise EvaluationError(f"shape counts differ: {len(preds_per_shape)} predictions, {len(gt_instance_per_shape)} "
                              f"gt instance arrays, {len(gt_label_per_shape)} gt label arrays")
    shapes = []
    for preds, gt_instance, gt_label in zip(preds_per_shape, gt_instance_per_shape, gt_label_per_shape):
        column, gt_labels = _gt_instances(gt_instance, gt_label, num_parts)
        labels = np.array([p.label for p in preds], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= num_parts):
            raise EvaluationError(f"predicted instance labels must be in [0, {num_parts})")
        iou = instance_iou_matrix(preds, column, gt_labels.size)
        shapes.append(_ShapeMatch(iou, gt_labels, labels, np.array([p.score for p in preds], dtype=np.float64)))
    ap = np.full(num_parts, np.nan)
    for part in range(num_parts):
        tp, num_gt = _part_tp_flags(shapes, part, iou_threshold)
        ap[part] = voc_average_precision(tp, num_gt)
    return ap


def instance_best_iou(preds: Sequence[InstancePrediction], gt_instance: np.ndarray, gt_label: np.ndarray,
                      num_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ground-truth instance: the best IoU with any predicted instance OF ITS PART (0 when none),
    and the instance's part label; both (G,) over the labeled gt instances.

    Unlike AP50 this says how much of each real part the instances cover: a leg lost by a merge
    (merged with a neighbour, or dropped because the merged group matched no box) scores 0.
    """
    column, gt_labels = _gt_instances(gt_instance, gt_label, num_parts)
    iou = instance_iou_matrix(preds, column, gt_labels.size)
    labels = np.array([p.label for p in preds], dtype=np.int64)
    same = labels[:, None] == gt_labels[None, :] if labels.size else np.zeros((0, gt_labels.size), bool)
    best = np.where(same, iou, 0.0).max(axis=0, initial=0.0) if gt_labels.size else np.zeros(0)
    counted = gt_labels >= 0
    return best[counted], gt_labels[counted]


def _json_float(value: float) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


@dataclass
class CategoryReport:
    """Metrics of one category. per_part_iou / per_part_ap50: lists aligned with part_names (NaN = not counted)."""

    category: str
    part_names: list[str]
    miou: float
    per_part_iou: list = field(default_factory=list)
    map50: float = math.nan
    per_part_ap50: list = field(default_factory=list)
    num_shapes: int = 0
    instance_best_iou: float = math.nan  # mean over gt instances of their best same-part predicted IoU
    per_part_best_iou: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None)."""
        return {"category": self.category, "part_names": list(self.part_names), "num_shapes": self.num_shapes,
                "miou": _json_float(self.miou), "map50": _json_float(self.map50),
                "instance_best_iou": _json_float(self.instance_best_iou),
                "per_part_best_iou": {n: _json_float(float(v)) for n, v in zip(self.part_names, self.per_part_best_iou)},
                "per_part_iou": {n: _json_float(float(v)) for n, v in zip(self.part_names, self.per_part_iou)},
                "per_part_ap50": {n: _json_float(float(v)) for n, v in zip(self.part_names, self.per_part_ap50)}}


def evaluate_category(category: str, part_names: Sequence[str], pred_labels: Sequence[np.ndarray],
                      gt_labels: Sequence[np.ndarray],
                      pred_instances: Optional[Sequence[Sequence[InstancePrediction]]] = None,
                      gt_instances: Optional[Sequence[np.ndarray]] = None) -> CategoryReport:
    """Semantic mIoU, and mAP50 when instance predictions and gt instances are given."""
    num_parts = len(part_names)
    miou, per_part = category_miou(pred_labels, gt_labels, num_parts)
    ap, best_mean, best_per_part = np.full(num_parts, np.nan), math.nan, np.full(num_parts, np.nan)
    if pred_instances is not None and gt_instances is not None:
        ap = average_precision_50(pred_instances, gt_instances, gt_labels, num_parts)
        pairs = [instance_best_iou(p, gi, gl, num_parts) for p, gi, gl in zip(pred_instances, gt_instances, gt_labels)]
        best = np.concatenate([b for b, _ in pairs]) if pairs else np.zeros(0)
        labels = np.concatenate([lab for _, lab in pairs]) if pairs else np.zeros(0, np.int64)
        best_mean = float(best.mean()) if best.size else math.nan
        best_per_part = np.array([best[labels == p].mean() if (labels == p).any() else np.nan for p in range(num_parts)])
    return CategoryReport(category, list(part_names), miou, per_part.tolist(), _nanmean(ap), ap.tolist(),
                          len(gt_labels), best_mean, best_per_part.tolist())


def superpoint_purity(point_superpoint: np.ndarray, gt_label: np.ndarray) -> float:
    """Share of points whose superpoint's majority ground-truth label is their own (1.0 = no
    superpoint straddles two labels). gt_label may hold any integers (-1 = unlabeled counts as a label)."""
    _, gt_dense = np.unique(gt_label, return_inverse=True)
    gt_dense = gt_dense.reshape(-1)
    key = np.asarray(point_superpoint) * (gt_dense.max() + 1) + gt_dense
    values, counts = np.unique(key, return_counts=True)
    best = np.zeros(int(np.max(point_superpoint)) + 1)
    np.maximum.at(best, values // (gt_dense.max() + 1), counts)
    return float(best.sum() / len(gt_dense))
