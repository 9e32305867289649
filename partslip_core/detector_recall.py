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

``estimated_rates`` (``vote.estimate_background``): f is not the same for every object. Where the object has
surfaces no named part covers (a cabinet's carcass: 70% of its points), 2D boxes of large flat parts (doors)
also hold much of it, seen at an angle or through a sparse render: f is 0.2-0.35 there, and with f = 0.01 a
carcass point inside a door box in one view of four passes for door. Both rates can be read off the views,
when two gates say the object has such surfaces (two-component binomial mixtures over points,
``binomial_mixture``; a group counts when it is covered at most ``background_separation`` x as often as the
rest and holds ``background_min_share`` of the points):
1. per point, the views where it is inside any box over the views where it is visible: the carcass is covered
   in 30-40% of its views against 75-100% for part points; and
2. per point, its best part's hits over the views where that part has a box at all: the carcass stays low,
   while points whose own boxes were dropped (a lamp's shade boxed in 2 views of 10, a detector dropping half
   its boxes) are high again. Without this gate such objects passed the first one and lost whole parts.
Each part's background hit rate is then its hit rate over the first gate's rare group, leaving out every
part's own points (the frequent component of each part's own mixture: legs inside a tabletop's box are not
background). Its miss rate is the smaller of the box-count estimate and its own mixture's, the latter only
where the vote counts views with boxes (``part_view_normalization``, ``min_part_views``).
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
    # no better than chance (m >= 1 - f): the limit of the ratio there, f / (1 - f) (the floor for small f)
    weight = np.where(m >= 1.0 - f, f / (1.0 - f), weight)
    return np.clip(weight, floor, 1.0)


def binomial_mixture(hits: torch.Tensor, trials: torch.Tensor, max_iterations: int = 200, tolerance: float = 1e-6
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-component binomial mixture per row, fitted by EM: hits, trials (R, N) integer counts (trials 0 = the
    point takes no part). Returns (R,) float64 hit rate of the frequent component (the higher rate), of the rare
    one and the rare one's share, and (R, N) each point's probability of belonging to the rare one under those
    parameters (0 where trials is 0). Started at 0.9 / 0.1 / 0.5 and run until no parameter moves by more than
    ``tolerance`` or for ``max_iterations`` (overlapping components converge slowly: 40 iterations left a share at
    0.12 that 3,000 put at 0.64; a lone component's vanishing twin takes hundreds to reach share 0). The
    counts are small (at most one per view), so EM runs over the histogram of (hits, trials) pairs, on the host."""
    hits, trials = hits.round().long(), trials.round().long()
    rows, side = hits.shape[0], int(trials.max()) + 1 if trials.numel() else 1
    pair = hits.clamp(0, side - 1) * side + trials  # (R, N) index of the (hits, trials) pair
    offset = torch.arange(rows, device=hits.device)[:, None] * side * side
    count = torch.bincount((pair + offset).reshape(-1), minlength=rows * side * side).view(rows, side * side)
    count = count.double().cpu().numpy()  # (R, side^2): at most 121 pairs for 10 views
    grid = np.arange(side * side)
    k, n = (grid // side).astype(np.float64)[None, :], (grid % side).astype(np.float64)[None, :]
    count = count * (n > 0)  # points with no trials take no part
    high, low, share = np.full((rows, 1), 0.9), np.full((rows, 1), 0.1), np.full((rows, 1), 0.5)

    def rare_given(high, low, share):  # E-step: P(rare component | counts) per pair
        log_high = k * np.log(high) + (n - k) * np.log1p(-high) + np.log1p(-share)
        log_low = k * np.log(low) + (n - k) * np.log1p(-low) + np.log(share)
        return 1.0 / (1.0 + np.exp(np.clip(log_high - log_low, -700.0, 700.0)))

    for _ in range(max_iterations):
        rare = rare_given(high, low, share)
        in_rare, in_common = rare * count, (1.0 - rare) * count
        previous = np.concatenate([high, low, share], axis=1)
        share = np.clip(in_rare.sum(1, keepdims=True) / np.maximum(count.sum(1, keepdims=True), 1.0), 1e-4, 1 - 1e-4)
        low = np.clip((in_rare * k).sum(1, keepdims=True) / np.maximum((in_rare * n).sum(1, keepdims=True), 1e-9),
                      1e-4, 1 - 1e-4)
        high = np.clip((in_common * k).sum(1, keepdims=True) / np.maximum((in_common * n).sum(1, keepdims=True), 1e-9),
                       1e-4, 1 - 1e-4)
        if np.abs(np.concatenate([high, low, share], axis=1) - previous).max() < tolerance:
            break
    swapped = low > high  # keep the roles: "rare" is the lower hit rate
    high, low, share = np.where(swapped, low, high), np.where(swapped, high, low), np.where(swapped, 1 - share, share)
    rare = torch.as_tensor(rare_given(high, low, share), device=hits.device)
    high, low, share = (torch.as_tensor(a[:, 0], device=hits.device) for a in (high, low, share))
    return high, low, share, rare.gather(1, pair) * (trials > 0)


def _has_rare_group(fit: tuple[torch.Tensor, ...], config: VoteConfig) -> bool:
    """A ``binomial_mixture`` fit of one row holds a group covered at most ``background_separation`` x as often as
    the rest, with at least ``background_min_share`` of the points."""
    high, low, share = (float(value[0]) for value in fit[:3])
    return low <= config.background_separation * high and share >= config.background_min_share


def estimated_rates(in_part: torch.Tensor, visible: torch.Tensor, box_labels_per_view: Sequence[torch.Tensor],
                    num_views: int, config: VoteConfig) -> tuple[np.ndarray, np.ndarray]:
    """(P,) miss rate and (P,) background hit rate per part (module docstring, ``estimated_rates``).
    in_part (V, P, N): > 0 where the point is inside a kept box of the part in kept view v (visible points only,
    as the vote's evidence); visible (V, N) the kept views' visibility; box_labels_per_view: the kept views'
    box labels."""
    num_parts = in_part.shape[1]
    miss = part_miss_rates([lab.cpu().numpy() for lab in box_labels_per_view], num_views, num_parts)
    background = np.full(num_parts, config.background_hit_rate)
    detected = torch.zeros((len(box_labels_per_view), num_parts), dtype=torch.float32, device=in_part.device)
    for row, labels in enumerate(box_labels_per_view):  # kept views
        detected[row, labels] = 1.0
    trials = detected.T @ visible.float()  # (P, N) views where the point is visible and the part has a box
    hits = (in_part > 0).sum(0).float()  # (P, N)
    # 1. a group of points that boxes cover rarely: per point, the views where it is inside any box over the
    #    views where it is visible
    covered = in_part.amax(dim=1) > 0  # (V, N) (amax: 4x faster than a bool any on CPU)
    coverage = binomial_mixture(covered.sum(0, keepdim=True), visible.sum(0, keepdim=True))
    if not _has_rare_group(coverage, config):
        return miss, background  # no unlabeled surface: keep the box-count estimate and the fixed rate
    # 2. ... and rarely inside the boxes of even its best part, counted over the views where that part has a box
    #    (a part whose boxes were dropped in half the views is not counted against in those views, as in the
    #    vote's part_view_normalization): what a dropped box leaves is not unlabeled surface
    best = torch.where(trials > 0, hits / trials.clamp(min=1.0), torch.full_like(hits, -1.0)).argmax(dim=0)
    best_hits, best_trials = hits.gather(0, best[None]), trials.gather(0, best[None])
    if not _has_rare_group(binomial_mixture(best_hits, best_trials), config):
        return miss, background
    surface = coverage[3]  # (1, N) each point's probability of being in the rarely covered group
    part_high, _, _, not_own = binomial_mixture(hits, trials)
    # the mixture's miss rate counts only the views where the part has a box, as the vote's score does with
    # part_view_normalization for a part boxed in min_part_views views or more; otherwise the box counts say it
    counted = config.part_view_normalization & (detected.sum(0) >= config.min_part_views).cpu().numpy()
    miss = np.where(counted, np.minimum(np.nan_to_num(miss, nan=1.0), (1.0 - part_high).cpu().numpy()), miss)
    # the part's hit rate over the unlabeled-surface group, leaving out every part's own points (each part's
    # mixture's frequent component; no trials = no sign of being that part's): points of parts whose boxes were
    # dropped in half the views, or a leg inside the tabletop's boxes, must not pass for background
    no_part = torch.where(trials > 0, not_own, torch.ones_like(not_own)).amin(dim=0)  # (N,)
    weight = (surface[0] * no_part)[None, :]
    hit_rate = (weight * hits).sum(1) / (weight * trials).sum(1).clamp(min=1e-9)
    background = np.clip(hit_rate.cpu().numpy(), config.background_hit_rate, 0.45)  # 0.45: below 0.5 (the weight's log)
    return miss, background


def uncovered_weights(box_labels_per_view: Sequence[torch.Tensor], num_views: int, num_parts: int,
                      config: VoteConfig, device: torch.device, in_part: Optional[torch.Tensor] = None,
                      visible: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """(P,) float32 per-part weight of uncovered points when ``config.adaptive_uncovered``, else None
    (the vote then uses the scalar ``config.uncovered_weight``, the reference code path). in_part (V, P, N) and
    visible (V, N) of the kept views: needed by ``config.estimate_background``."""
    if not config.adaptive_uncovered:
        return None
    if config.estimate_background and in_part is not None and visible is not None and len(box_labels_per_view):
        rate, background = estimated_rates(in_part, visible, box_labels_per_view, num_views, config)
    else:
        labels = [lab.cpu().numpy() for lab in box_labels_per_view]
        rate, background = part_miss_rates(labels, num_views, num_parts), config.background_hit_rate
    weight = weight_for_miss_rate(rate, config.uncovered_weight, background)
    return torch.as_tensor(weight, dtype=torch.float32, device=device)
