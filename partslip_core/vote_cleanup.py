"""Clean-up of the vote's point labels (``vote.min_part_points``): a part that ends up on a handful of points
of the whole cloud is noise, not a part.

Point-level refinement (``vote.refine_points``) and sliver superpoints can leave one to a few points
with a label that no superpoint carries: typically a false-positive box of a part the object does not
have (a chair without arms, a kettle scanned from the side without its handle) covering the same few
points in two views. Under the paper's metric such a part scores IoU 0 on that shape, a quarter of a
four-part category's mIoU for a few points. Those points become unlabeled (-1).

Also the small-part score margins: ``vote.specific_part_margin`` (fixed), ``vote.specific_margin_per_miss``
(per part, from the detector's estimated miss rate, only when ``box_looseness`` says the boxes are jittery) and
``vote.nested_part_margin`` (the same, for parts whose boxes lie inside another part's boxes: ``nested_parts``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from partslip_core.detector_recall import part_miss_rates
from partslip_core.vote_evidence import masked_extents

# vote.specific_part_margin: how much smaller (area) a part's boxes must be to count as clearly more specific
SPECIFIC_AREA_RATIO = 0.25
# vote.nested_part_margin: part p nests in part q when at least NESTED_SHARE of p's boxes in views that also box q
# (NESTED_MIN_BOXES of them at least) have NESTED_CONTAINMENT of their area inside a box of q
NESTED_CONTAINMENT = 0.9
NESTED_SHARE = 0.5
NESTED_MIN_BOXES = 2


def drop_sparse_parts(point_label: torch.Tensor, num_parts: int, min_points: int) -> torch.Tensor:
    """(N,) labels with every part holding fewer than ``min_points`` points set to -1 (0 = keep all)."""
    if min_points <= 0 or point_label.numel() == 0:
        return point_label
    counts = torch.bincount(point_label[point_label >= 0], minlength=num_parts)
    sparse = counts < min_points
    return torch.where((point_label >= 0) & sparse[point_label.clamp(min=0)], torch.full_like(point_label, -1),
                       point_label)


def specific_part_bonus(scores: torch.Tensor, box_area: torch.Tensor, config,
                        part_margin: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(S, P) preference bonus (``vote.specific_part_margin``): a part whose boxes over the superpoint are at
    most a quarter as large (SPECIFIC_AREA_RATIO) as the best-scoring part's, with a score that passes the threshold and lies within
    the margin of the best, wins over it (the smallest such part first). A jittered or missed bulb box
    inside the shade's box costs the bulb a few views that the shade's box, around it, does not lose.
    part_margin: (P,) margin per part (``specific_margins``) instead of the config's scalar."""
    best_score, best_part = scores.max(dim=1, keepdim=True)
    best_area = box_area.gather(1, best_part).clamp(min=1e-9)
    margin = config.specific_part_margin if part_margin is None else part_margin[None, :]
    floor = config.score_threshold
    if part_margin is not None and config.nested_part_margin > 0:
        floor = max(floor, config.nested_part_min_score)
    specific = ((scores >= best_score - margin) & (scores >= floor)
                & (box_area > 0) & (box_area <= SPECIFIC_AREA_RATIO * best_area))
    return specific.float() * (3.0 + (1.0 - box_area / best_area).clamp(0.0, 1.0))


def drop_unsupported_parts(point_label: torch.Tensor, box_labels: list[torch.Tensor], agreement: list[torch.Tensor],
                           num_parts: int, min_agreement: float) -> torch.Tensor:
    """(N,) labels without the parts none of whose boxes agrees with the result (``vote.min_part_agreement``).

    agreement: per view, (M,) the share of each kept box's labeled visible points that carry its label. A
    part's boxes that are false positives (a chair's "arm" boxes placed at random on the seat and legs)
    hold mostly other parts' points in every view, while a real part has at least one box it fills."""
    if not box_labels:
        return point_label
    labels, shares = torch.cat(box_labels), torch.cat(agreement)
    best = torch.zeros(num_parts, dtype=shares.dtype, device=shares.device).scatter_reduce(
        0, labels, shares, reduce="amax")
    unsupported = best < min_agreement
    return torch.where((point_label >= 0) & unsupported[point_label.clamp(min=0)], torch.full_like(point_label, -1),
                       point_label)


def nested_parts(box_labels_per_view: Sequence[torch.Tensor], xyxy_per_view: Sequence[torch.Tensor],
                 num_parts: int) -> torch.Tensor:
    """(P,) bool: parts whose boxes lie inside another part's box in most views (NESTED_* above): a bulb inside
    the shade, a handle on a door, seen through or in front of it. For such a part, the big part's box around
    its points says nothing against it, so a jittered or missed box of its own should not hand its points to
    the big part (``vote.nested_part_margin``). labels (M,) and xyxy (M, 4) per view."""
    present = torch.zeros((num_parts, num_parts))
    inside = torch.zeros((num_parts, num_parts))
    for labels, boxes in zip(box_labels_per_view, xyxy_per_view):  # K views; vectorized over the view's boxes
        if labels.numel() < 2:
            continue
        labels, boxes = labels.cpu(), boxes.cpu().float()
        corner0 = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
        corner1 = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        overlap = (corner1 - corner0).clamp(min=0).prod(dim=2)  # (M, M)
        area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1).clamp(min=1e-6)
        onehot = torch.nn.functional.one_hot(labels, num_parts).float()  # (M, P)
        in_part = ((overlap / area[:, None] >= NESTED_CONTAINMENT).float() @ onehot) > 0  # box i inside a box of q
        other = (onehot.sum(dim=0) > 0)[None, :] & (onehot == 0)  # (M, P): the view boxes q, q is not i's part
        present.index_add_(0, labels, other.float())
        inside.index_add_(0, labels, (other & in_part).float())
    nested = (present >= NESTED_MIN_BOXES) & (inside >= NESTED_SHARE * present)
    return nested.any(dim=1)


def specific_margins(box_labels_per_view: Sequence[torch.Tensor], num_views: int, num_parts: int, config,
                     device: torch.device, nested: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """(P,) float32 ``specific_part_margin`` per part (``vote.specific_margin_per_miss``), else None.

    A fixed margin is a trade: it gives a jittered or missed bulb box's points back to the bulb, and with
    exact boxes it gives the body's top, inside the lid's box in most views, to the lid. How far a real
    small part's score falls below the big part around it grows with how often the detector misses that
    part, which the box counts across views estimate (``detector_recall.part_miss_rates``; 0 for a part
    boxed in every view, so exact boxes keep the tie rule). Margin of part p: max(specific_part_margin,
    min(specific_margin_max, specific_margin_per_miss x miss rate of p)). The vote applies it only when
    ``box_looseness`` exceeds ``specific_margin_looseness``: with exact boxes that a detector sometimes
    drops, a dropped view costs a small part nothing (``part_view_normalization``), and a margin would only
    hand it the big part's points near it.

    nested: (P,) bool (``nested_parts``) with ``vote.nested_part_margin``: those parts get at least
    min(nested_part_margin, their miss rate), and any margin then needs ``nested_part_min_score``."""
    use_nested = config.nested_part_margin > 0 and nested is not None and bool(nested.any())
    if config.specific_margin_per_miss <= 0 and not use_nested:
        return None
    rate = part_miss_rates([lab.cpu().numpy() for lab in box_labels_per_view], num_views, num_parts)
    rate = torch.as_tensor(rate, dtype=torch.float32, device=device).nan_to_num(0.0)
    margin = torch.zeros_like(rate)
    if config.specific_margin_per_miss > 0:
        margin = (rate * config.specific_margin_per_miss).clamp(max=config.specific_margin_max)
        margin = margin.clamp(min=config.specific_part_margin)
    if use_nested:
        nested_margin = torch.where(nested.to(device), rate.clamp(max=config.nested_part_margin), torch.zeros_like(rate))
        margin = torch.maximum(margin, nested_margin)
        if config.specific_margin_per_miss <= 0 and not bool((margin > 0).any()):
            return None  # no nested part was missed (exact boxes): no margin, and no looseness to measure
    return margin


def box_looseness(kept, xyxy: Sequence[torch.Tensor], screen_xy: torch.Tensor, point_label: torch.Tensor,
                  min_points: int = 5) -> float:
    """How loosely the detector's boxes fit the points voted for them: the median over boxes holding at least
    ``min_points`` points of their own label of the mean gap between each box edge and the extent of those
    points, as a share of the box's width or height. Boxes drawn from the parts' pixels (exact) leave about a
    point's splat radius (0.005-0.03 here); boxes whose edges a detector moves by up to 10% of their size
    leave more (0.013-0.07). NaN when no box qualifies. kept: the vote's per-view boxes (``inside`` (M, N),
    ``labels`` (M,), ``view``); xyxy: (M, 4) per view; screen_xy: (K, N, 2)."""
    gaps = []
    for boxes, box_xyxy in zip(kept, xyxy):
        own = boxes.inside & (point_label[None, :] == boxes.labels[:, None])  # (M, N)
        enough = own.sum(dim=1) >= min_points
        if not bool(enough.any()):
            continue
        own, box_xyxy = own[enough], box_xyxy[enough]
        x0, y0, x1, y1 = masked_extents(own, screen_xy[boxes.view]).unbind(dim=1)
        width = (box_xyxy[:, 2] - box_xyxy[:, 0]).clamp(min=1.0)
        height = (box_xyxy[:, 3] - box_xyxy[:, 1]).clamp(min=1.0)
        gaps.append(((x0 - box_xyxy[:, 0]) / width + (box_xyxy[:, 2] - x1) / width
                     + (y0 - box_xyxy[:, 1]) / height + (box_xyxy[:, 3] - y1) / height) / 4.0)
    return float(torch.cat(gaps).median()) if gaps else float("nan")
