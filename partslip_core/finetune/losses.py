"""Set-prediction loss for OWLv2 (transformers computes none for it): Hungarian matching, then
focal class loss + L1 + generalized IoU on the matched boxes, as DETR / OWL-ViT train.

Shapes: B images, P predictions (OWLv2: one per image patch), Q text queries, T_b targets of image b.
Boxes are (cx, cy, w, h) normalized to the model's (square, padded) input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class LossWeights:
    """Matching costs and loss weights (OWL-ViT / DETR defaults)."""

    class_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) generalized IoU of xyxy boxes a (A, 4) and b (B, 4)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    low = torch.max(a[:, None, :2], b[None, :, :2])
    high = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union.clamp(min=1e-9)
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.) on logits; same shape as the inputs."""
    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, target_labels: torch.Tensor, target_boxes: torch.Tensor,
                    weights: LossWeights) -> tuple[np.ndarray, np.ndarray]:
    """One image: (prediction indices, target indices) minimizing class + L1 + GIoU cost.

    logits: (P, Q); boxes: (P, 4) cxcywh; target_labels: (T,) int64 query index; target_boxes: (T, 4) cxcywh.
    """
    prob = logits.float().sigmoid()[:, target_labels]  # (P, T)
    a, g = weights.focal_alpha, weights.focal_gamma
    positive = a * (1 - prob) ** g * -(prob + 1e-8).log()
    negative = (1 - a) * prob ** g * -(1 - prob + 1e-8).log()
    cost = (weights.class_weight * (positive - negative) + weights.l1_weight * torch.cdist(boxes.float(), target_boxes, p=1)
            - weights.giou_weight * generalized_box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(target_boxes)))
    cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def matched_detection_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]],
                           num_queries: Sequence[int], weights: LossWeights = LossWeights()
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts) for a batch.

    logits: (B, P, Q) raw class logits (padded queries beyond ``num_queries[b]`` are ignored);
    boxes: (B, P, 4) cxcywh in [0, 1]; targets[b]: {"class_labels": (T,) int64, "boxes": (T, 4) cxcywh}.
    Losses are normalized by the number of target boxes in the batch (DETR's convention).
    """
    batch, _, max_queries = logits.shape
    class_target = torch.zeros_like(logits, dtype=torch.float32)
    valid = torch.arange(max_queries, device=logits.device)[None, :] < torch.as_tensor(
        list(num_queries), device=logits.device)[:, None]  # (B, Q)
    matched_pred, matched_target = [], []
    for b, target in enumerate(targets):
        labels, target_boxes = target["class_labels"], target["boxes"].float()
        if len(labels) == 0:
            continue
        rows, cols = hungarian_match(logits[b, :, :num_queries[b]], boxes[b], labels, target_boxes, weights)
        rows_t, cols_t = torch.as_tensor(rows, device=logits.device), torch.as_tensor(cols, device=logits.device)
        class_target[b, rows_t, labels[cols_t]] = 1.0
        matched_pred.append(boxes[b, rows_t])
        matched_target.append(target_boxes[cols_t])
    num_boxes = max(1.0, float(sum(len(t["class_labels"]) for t in targets)))
    mask = valid[:, None, :].expand_as(logits)
    focal = sigmoid_focal_loss(logits.float()[mask], class_target[mask], weights.focal_alpha, weights.focal_gamma)
    loss_class = focal.sum() / num_boxes
    if matched_pred:
        pred, true = torch.cat(matched_pred).float(), torch.cat(matched_target)
        loss_l1 = (pred - true).abs().sum() / num_boxes
        loss_giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(true)))).sum() / num_boxes
    else:
        loss_l1 = loss_giou = logits.sum() * 0.0
    total = weights.class_weight * loss_class + weights.l1_weight * loss_l1 + weights.giou_weight * loss_giou
    return total, {"loss_ce": float(loss_class.detach()), "loss_bbox": float(loss_l1.detach()),
                   "loss_giou": float(loss_giou.detach())}
