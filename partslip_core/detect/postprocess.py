"""Shared detector post-processing: score threshold, clamping, per-class NMS, top-k, ViewDetections.

torchvision is not a dependency, so NMS is implemented here in plain torch. Greedy NMS is
sequential by definition (a box is suppressed only by *kept* higher-scoring boxes); we compute it
exactly with a vectorized fixed-point iteration over the IoU matrix instead of a Python loop over
boxes: after iteration k the decisions for the k highest-scoring boxes are final, and in practice
the iteration converges in a handful of steps (the length of the longest suppression chain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from partslip_core.types import InputError, RenderedViews, ViewDetections


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) areas of (N, 4) xyxy boxes (0 for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of (N, 4) and (M, 4) xyxy boxes; 0 where the union is empty."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of boxes kept by greedy NMS, highest score first (same result as torchvision.ops.nms).

    A box is dropped when its IoU with a kept higher-scoring box is > ``iou_threshold``.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].float(), boxes[order].float())
    n = order.numel()
    # suppresses[j, i]: higher-ranked j would suppress i if j is kept (strict upper triangle).
    suppresses = (iou > iou_threshold) & torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for _ in range(n):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Per-class NMS in one call: boxes of different labels are shifted apart so they never overlap."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    span = (boxes.max() - boxes.min()).abs() + 1.0
    shifted = boxes + (labels.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


@dataclass(frozen=True)
class PostprocessSettings:
    """score_threshold: keep scores strictly above it (GLIP's and HF's convention, so 1.0 keeps nothing);
    nms_iou: per-class NMS IoU (1.0 disables suppression); max_detections: top-k per view."""

    score_threshold: float
    nms_iou: float
    max_detections: int


def clamp_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip (N, 4) xyxy boxes to the image [0, W] x [0, H]."""
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limits)


def postprocess_view(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image_hw: tuple[int, int],
                     settings: PostprocessSettings, num_parts: int) -> ViewDetections:
    """Candidates of one view -> final ViewDetections (numpy, labels int64 into part_names).

    boxes: (Q, 4) xyxy pixels; scores: (Q,); labels: (Q,) part indices (-1 or >= num_parts dropped).
    Drops non-finite values and boxes with no area after clamping, thresholds, runs per-class NMS,
    keeps the top ``max_detections`` by score (sorted descending).
    """
    boxes = clamp_boxes(boxes.float(), *image_hw)
    scores, labels = scores.float(), labels.long()
    valid = (torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores) & (scores > settings.score_threshold)
             & (labels >= 0) & (labels < num_parts) & (box_area(boxes) > 0))
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    keep = batched_nms(boxes, scores, labels, settings.nms_iou)[: settings.max_detections]
    return ViewDetections(boxes=boxes[keep].cpu().numpy().astype(np.float32),
                          labels=labels[keep].cpu().numpy().astype(np.int64),
                          scores=scores[keep].cpu().numpy().astype(np.float32))


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) center/size boxes -> corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def check_views(views: RenderedViews) -> np.ndarray:
    """(K, H, W, 3) uint8 images or InputError."""
    images = np.asarray(views.images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InputError(f"views.images must have shape (K, H, W, 3) with K > 0; got {images.shape}")
    if images.dtype != np.uint8:
        raise InputError(f"views.images must be uint8 RGB; got {images.dtype}")
    return images
