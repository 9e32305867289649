"""How often does the detector miss each part? An estimate from the views themselves, and the vote's weight
of that part's uncovered points that follows from it (``vote.adaptive_uncovered``).

A visible point that lies in no box of a view is evidence that it belongs to no part, unless the
detector missed its part there. ``vote.uncovered_weight`` fixes how much such a point counts, for every
part and every detector. The right value depends on both: a part the detector boxes in every view (a
cabinet door with exact boxes) should count a point outside every box fully (weight 1), or the
unlabeled carcass next to it, inside its box in a few views, passes for door; a part that is missed in
a third of the views (a jittery detector, or a handle too small to be boxed from behind) needs a low
weight, or its points are lost.

``part_miss_rates``: every view sees the same object, so a part should get about the same number of
boxes in every view. Part p's miss rate is m_p = 1 - (its boxes over the K views) / (K x its largest
count in one view). Exact boxes give 0 for parts visible from everywhere and more for parts hidden or
too small in some views; a detector dropping 30% of its boxes 0.2-0.5. One part's estimate from 10
views is noisy, so a part is given at least the median over the object's parts.

``uncovered_weights``: the weight at which the vote's rule (inside >= w x uncovered, i.e. score >= 0.5
without other parts' boxes) is the likelihood-ratio test between "the point is of part p" (inside a box
of p with probability 1 - m_p, in no box with probability m_p) and "the point is of no part" (inside a
box of p with probability f = ``vote.background_hit_rate``): w = log((1 - f) / m) / log((1 - m) / f),
clamped to [uncovered_weight, 1] (1 when m = 0).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from partslip_core.config import VoteConfig


def part_miss_rates(box_labels_per_view: Sequence[np.ndarray], num_views: int, num_parts: int) -> np.ndarray:
    """(P,) float64 miss rate per part from the labels of the boxes of each view (views without boxes
    may be left out of the sequence; ``num_views`` counts them). NaN for parts never detected."""
    counts = np.zeros((max(num_views, 1), num_parts), np.int64)
    for row, labels in enumerate(box_labels_per_view):  # K views at most; bincount inside
        labels = np.asarray(labels, np.int64)
        counts[row] = np.bincount(labels[(labels >= 0) & (labels < num_parts)], minlength=num_parts)
    largest = counts.max(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = 1.0 - counts.sum(axis=0) / (max(num_views, 1) * largest)
    rate = np.where(largest > 0, rate, np.nan)
    if np.isfinite(rate).any():
        rate = np.where(np.isfinite(rate), np.maximum(rate, np.nanmedian(rate)), rate)
    return rate


def weight_for_miss_rate(miss_rate: np.ndarray, floor: float, background_hit_rate: float) -> np.ndarray:
    """(P,) likelihood-ratio weight of an uncovered point for each miss rate (module docstring)."""
    f = background_hit_rate
    m = np.clip(np.nan_to_num(np.asarray(miss_rate, np.float64), nan=1.0), 1e-9, 1.0 - 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.log((1.0 - f) / m) / np.log((1.0 - m) / f)
    weight = np.where(m >= 1.0 - f, floor, weight)  # no better than chance: trust uncovered points least
    return np.clip(weight, floor, 1.0)


def uncovered_weights(box_labels_per_view: Sequence[torch.Tensor], num_views: int, num_parts: int,
                      config: VoteConfig, device: torch.device) -> Optional[torch.Tensor]:
    """(P,) float32 per-part weight of uncovered points when ``config.adaptive_uncovered``, else None
    (the vote then uses the scalar ``config.uncovered_weight``, the reference code path)."""
    if not config.adaptive_uncovered:
        return None
    labels = [lab.cpu().numpy() for lab in box_labels_per_view]
    rate = part_miss_rates(labels, num_views, num_parts)
    weight = weight_for_miss_rate(rate, config.uncovered_weight, config.background_hit_rate)
    return torch.as_tensor(weight, dtype=torch.float32, device=device)
