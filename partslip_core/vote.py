"""Stage 5: box-to-superpoint semantic voting (torch; the same code on CPU and CUDA).

Reference rule (the paper-faithful preset): for superpoint s and part p, score = (visible points of
s inside at least one box of p, summed over views) / (visible points of s, summed over views). Boxes
that cover >= 98% of a view's visible points are whole-object boxes and are dropped. A superpoint
takes its best part when the score passes the threshold; small parts (handle, knob ...) win ties,
since every point inside a handle's box is usually inside the box of the door it sits on too. A box
that carries a mask votes with the mask instead of its rectangle.

Options for real detectors (config/segment.yaml turns them on; docs/quality.md has the measurements):

- ``uncovered_weight`` < 1: a visible point that lies in NO kept box of the view is weaker evidence
  than a point inside another part's box (the detector may just have missed its part there), so it
  counts with this weight in the denominator. 1 = reference.
- ``part_view_normalization``: a part's score counts only the views where that part has a box at all
  (a part whose box was missed in a view is not penalised there); parts with boxes in fewer than
  ``min_part_views`` views (a lone false positive) keep the plain denominator; with ``view_agreement_fill``,
  so do parts none of whose boxes agrees in 3D with the others (``vote_evidence.agreeing_views``): random boxes
  of a part the object does not have, three of which overlap on a chair's seat.
- ``score_weighting``: a box votes with its detector score instead of 1.
- ``reestimate_iterations`` / ``min_box_agreement``: EM-style re-estimation (as in PartSLIP++): after a
  vote, a box whose visible points mostly carry OTHER labels than its own (agreement below
  ``min_box_agreement``) is a false positive inconsistent with the other views; it is removed and the
  vote repeated.
- ``prefer_smaller_boxes``: a tie between parts goes to the part whose boxes over the superpoint are
  smaller (more specific), whatever its name: a gripper inside the arm's box, a handle on a door.
- ``refine_points``: points of a superpoint that straddles two parts take their own vote when it beats
  (or wins the tie against) their superpoint's label with boxes at most half as large, seen in two
  views or more: tiny parts (a gripper, wheels) merged into a neighbour's superpoint.
- ``whole_object_rule: explained``: a box covering the whole object is dropped only when the other
  boxes of that view already cover (explain) ``whole_object_explained`` of its points; a dominant
  part (a robot arm holding a small gripper) keeps its box. ``fraction`` = reference.
- ``adaptive_uncovered``: ``uncovered_weight`` per part, from the detector's miss rate for that part
  estimated from the box counts across views (``detector_recall``): 1 for parts boxed in every view.
- ``refine_conflict_score``: with ``refine_points``, a point whose own score for its superpoint's label
  is below this may take any part (two coplanar fronts in one superpoint); with ``adaptive_uncovered``
  only between parts the detector never missed.
- ``min_part_points`` / ``specific_part_margin``: ``vote_cleanup`` (a part on a sliver of points is
  dropped; a clearly more specific part wins within a score margin).
- ``specific_margin_per_miss``: that margin per part, from the detector's estimated miss rate of the part,
  applied only when the boxes fit their voted points loosely (``vote_cleanup.box_looseness``).
- ``nested_part_margin``: the same for parts whose boxes lie inside another part's boxes (a bulb in the
  shade: ``vote_cleanup.nested_parts``), min(this, miss rate), with ``nested_part_min_score``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from partslip_core.config import VoteConfig
from partslip_core.vote_cleanup import (box_looseness, drop_sparse_parts, drop_unsupported_parts, nested_parts,
                                       specific_margins, specific_part_bonus)
from partslip_core.types import RenderedViews, SemanticVotes, Superpoints, ViewDetections
from partslip_core.vote_evidence import (BoxEvidence, _Evidence, _ViewBoxes, _evidence, _evidence_fits, _point_in_part,
                                         collect_box_evidence)


def choose_labels(scores: torch.Tensor, part_names: Sequence[str], config: VoteConfig,
                  tie_tolerance: float = 1e-6, box_area: torch.Tensor | None = None,
                  part_margin: torch.Tensor | None = None) -> torch.Tensor:
    """(S, P) scores -> (S,) int64 best part, -1 where no part reaches the threshold.

    Small parts get a preference: with ``small_part_rule: ties`` they win ties for the best score
    (a handle's superpoints lie inside the handle box and inside the box of the door it sits on);
    with ``priority`` (the authors' code) any small part passing the threshold wins, the last one
    in part order first. ``box_area`` (S, P), the mean area of the part's boxes over the superpoint's
    points, breaks the remaining ties (``prefer_smaller_boxes``): the more specific box wins, as a
    gripper's box inside the arm's box. ``part_margin`` (P,): ``specific_part_margin`` per part
    (``vote_cleanup.specific_margins``).
    """
    best = scores.max(dim=1, keepdim=True).values
    small = torch.tensor([name in config.small_part_names for name in part_names], device=scores.device)
    if config.small_part_rule == "priority":
        preferred = (scores >= config.score_threshold) & small[None, :]
        order = torch.arange(1, len(part_names) + 1, device=scores.device, dtype=scores.dtype)
        preference = scores + preferred.float() * (2.0 + order)  # later parts first, as reversed() there
    else:
        preferred = (scores >= best - tie_tolerance) & small[None, :]
        preference = scores + preferred.float() * 2.0
    if box_area is not None:
        tied = scores >= best - tie_tolerance
        largest = torch.where(tied, box_area, torch.zeros_like(box_area)).amax(dim=1, keepdim=True).clamp(min=1e-9)
        preference = preference + tied.float() * (1.0 - box_area / largest).clamp(0.0, 1.0) * 0.5
    if box_area is not None and (config.specific_part_margin > 0 or part_margin is not None):
        preference = preference + specific_part_bonus(scores, box_area, config, part_margin)
    label = preference.argmax(dim=1)
    return torch.where(best[:, 0] >= config.score_threshold, label, torch.full_like(label, -1))


def _sum_per_group(values: torch.Tensor, point_group: Optional[torch.Tensor], num_groups: int,
                   per_view: bool = False, counts: bool = False) -> torch.Tensor:
    """Sums of (V, ..., N) per-view, per-point values over each group's points: (..., G) over all views,
    accumulated view after view (the order of per-view index_add_ calls, so the float sums do not depend
    on how the views are batched), or with ``per_view`` (V, ..., G), each view's own sum. point_group
    None = every point its own group (plain adds instead of scatters). ``counts``: the values are 0/1,
    so every partial sum is an integer (exact in float32 below 2^24, in any order): the views are added
    per point first and scattered once instead of once per view."""
    num_views, device = values.shape[0], values.device
    exact_any_order = counts and num_views * values.shape[-1] < 2 ** 24
    if point_group is None:
        if per_view:
            return values
        if exact_any_order:
            return values.sum(dim=0)
        total = torch.zeros(values.shape[1:], dtype=values.dtype, device=device)
        for view in range(num_views):
            total += values[view]
        return total
    if per_view:  # every (view, channel) row is its own sum: one scatter along the point axis
        rows = values.reshape(-1, values.shape[-1])
        out = torch.zeros((rows.shape[0], num_groups), dtype=values.dtype, device=device)
        return out.index_add_(1, point_group, rows).view(*values.shape[:-1], num_groups)
    out = torch.zeros((*values.shape[1:-1], num_groups), dtype=values.dtype, device=device)
    if exact_any_order:
        return out.index_add_(out.dim() - 1, point_group, values.sum(dim=0))
    for view in range(num_views):
        out.index_add_(out.dim() - 1, point_group, values[view])
    return out


def _part_scores(kept: list[_ViewBoxes], evidence: _Evidence, point_sp: Optional[torch.Tensor],
                 sp_visible_total: torch.Tensor, num_sp: int, num_parts: int, config: VoteConfig) -> torch.Tensor:
    """(S, P) scores: weighted points inside a box of p over (covered + uncovered_weight x uncovered) points,
    summed over all views, or (``part_view_normalization``) over the views where p has a box at all.
    point_sp None = per point (S = N). Computed as (P, S), points last like the evidence."""
    device = sp_visible_total.device
    inside_part = _sum_per_group(evidence.in_part, point_sp, num_sp, counts=evidence.unit_weights)  # (P, S)
    # the weight of uncovered points: config's scalar, or (P, 1) per part (vote.adaptive_uncovered)
    uncovered = config.uncovered_weight if evidence.uncovered_weight is None else evidence.uncovered_weight[:, None]
    if evidence.uncovered_weight is None and config.uncovered_weight >= 1.0 and not config.part_view_normalization:
        return (inside_part / sp_visible_total.clamp(min=1.0)[None, :]).T.contiguous()
    view_covered = _sum_per_group(evidence.covered, point_sp, num_sp, per_view=True)  # (V, S)
    covered = torch.zeros(num_sp, dtype=torch.float32, device=device)
    for view in range(len(kept)):
        covered += view_covered[view]
    denominator = (covered + uncovered * (sp_visible_total - covered)).expand(num_parts, -1)
    if config.part_view_normalization:  # parts seen in too few views (lone false positives) keep every view
        view_visible = _sum_per_group(evidence.visible, point_sp, num_sp, per_view=True)
        per_part = torch.zeros((num_parts, num_sp), dtype=torch.float32, device=device)
        views_with_part = torch.zeros(num_parts, dtype=torch.float32, device=device)
        for view, boxes in enumerate(kept):
            detected = torch.zeros(num_parts, device=device).index_fill_(0, boxes.labels, 1.0)
            view_total = view_covered[view] + uncovered * (view_visible[view] - view_covered[view])
            per_part += view_total * detected[:, None]
            views_with_part += detected
        enough = views_with_part >= config.min_part_views
        if evidence.agreeing_views is not None:  # ... and a box that agrees in 3D with the other views'
            enough = enough & (evidence.agreeing_views >= 1)
        denominator = torch.where(enough[:, None], per_part, denominator)
    return (inside_part / denominator.clamp(min=1e-6)).T.contiguous()


def _mean_box_area(evidence: _Evidence, point_sp: Optional[torch.Tensor], num_sp: int) -> torch.Tensor:
    """(S, P) mean over the superpoint's inside points of the smallest containing box of the part (pixels^2);
    point_sp None = per point."""
    total = _sum_per_group(evidence.area_sum, point_sp, num_sp)
    count = _sum_per_group(evidence.area_count, point_sp, num_sp, counts=True)
    return (total / count.clamp(min=1.0)).T.contiguous()


def _refine_points(kept: list[_ViewBoxes], evidence: _Evidence, weights: list[torch.Tensor], visible: torch.Tensor,
                   point_label: torch.Tensor, part_names: Sequence[str], config: VoteConfig,
                   part_margin: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Points of a superpoint that straddles two parts (a gripper's fingertips merged into the forearm's
    superpoint) take their own vote where it passes the threshold, beats or ties (with the tie rules) their
    superpoint's label, its boxes are at most half as large and they hold the point in two views or more:
    the same scores, one point at a time."""
    num_points, num_parts = visible.shape[1], len(part_names)
    scores = _part_scores(kept, evidence, None, visible.float().sum(dim=0), num_points, num_parts, config)
    area = _mean_box_area(evidence, None, num_points)
    own = choose_labels(scores, part_names, config, box_area=area if config.prefer_smaller_boxes else None,
                        part_margin=part_margin)
    current = scores.gather(1, point_label.clamp(min=0)[:, None])[:, 0]
    challenger = scores.gather(1, own.clamp(min=0)[:, None])[:, 0]
    # only toward a clearly more specific part (boxes at most half the size): a tiny part inside a big part's
    # box, not a boundary point between two large parts whose boxes a jittered detector shifts
    smaller = area.gather(1, own.clamp(min=0)[:, None])[:, 0] <= 0.5 * area.gather(1, point_label.clamp(min=0)[:, None])[:, 0]
    if config.refine_conflict_score > 0:  # ... or any part, where the point's own vote rejects its superpoint's label
        smaller = smaller | _vote_conflicts(current, point_label, own, evidence, config)
    # ... and seen inside that part's boxes in at least two views: a lone false positive covers a point once
    hits = torch.zeros((num_parts, num_points), device=visible.device)
    for view, (boxes, weight) in enumerate(zip(kept, weights)):
        unit = bool((weight == 1.0).all())  # then in_part is already the 0/1 "inside a box of the part"
        hits += evidence.in_part[view] if unit else _point_in_part(boxes, torch.ones_like(weight), num_parts)
    repeated = hits.T.gather(1, own.clamp(min=0)[:, None])[:, 0] >= 2
    switch = ((point_label >= 0) & (own >= 0) & (own != point_label) & (challenger >= current - 1e-6) & smaller
              & repeated)
    if config.refine_tie_margin > 0:  # no tied move toward a part with as many clear points as tied ones
        tied = challenger < current + 1e-6
        switch = switch & ~(tied & _distinct_parts(scores, own, switch & tied, config)[own.clamp(min=0)])
    return torch.where(switch, own, point_label)


def _distinct_parts(scores: torch.Tensor, own: torch.Tensor, tied_moves: torch.Tensor, config: VoteConfig) -> torch.Tensor:
    """(P,) bool: parts with at least as many clear points (their own vote beats every other part's by
    ``refine_tie_margin`` and passes the threshold) as points that would move to them on a tie (the tie rule).
    A mug's handle sticks out of the body's boxes in some views, so most of its points are clear; the body points
    at its root, inside the handle's box in every view, tie and stay body. A flush cabinet handle or a bulb
    inside its shade never stands out: its points only ever tie, and the tie rule is all that finds them."""
    num_parts = scores.shape[1]
    best = scores.topk(min(2, num_parts), dim=1).values
    margin = best[:, 0] - best[:, 1] if num_parts > 1 else best[:, 0]
    clear = (scores.argmax(dim=1) == own) & (best[:, 0] >= config.score_threshold) & (margin >= config.refine_tie_margin)
    clear_count = torch.bincount(own[clear & (own >= 0)], minlength=num_parts)
    tied_count = torch.bincount(own[tied_moves & (own >= 0)], minlength=num_parts)
    return (clear_count > 0) & (clear_count >= tied_count)


def _vote_conflicts(current: torch.Tensor, point_label: torch.Tensor, own: torch.Tensor, evidence: _Evidence,
                    config: VoteConfig) -> torch.Tensor:
    """(N,) bool: the point's own score for its superpoint's label is below ``refine_conflict_score`` (two
    coplanar, same-coloured fronts in one superpoint). With ``adaptive_uncovered``, only between parts whose
    uncovered weight is at least ``refine_conflict_min_weight`` (1: boxed in every view): where the detector
    misses a part often, a point outside its boxes says little, and a large part's edge points whose boxes were
    missed or shrunk must stay with their superpoint."""
    conflict = current < config.refine_conflict_score
    if evidence.uncovered_weight is not None:
        reliable = evidence.uncovered_weight >= config.refine_conflict_min_weight
        conflict = conflict & reliable[point_label.clamp(min=0)] & reliable[own.clamp(min=0)]
    return conflict


def _box_agreement(kept: list[_ViewBoxes], point_label: torch.Tensor) -> list[torch.Tensor]:
    """Per kept box: the share of its labeled visible points whose current label is the box's label."""
    agreement = []
    for boxes in kept:
        labeled = (point_label >= 0)[None, :] & boxes.inside
        same = labeled & (point_label[None, :] == boxes.labels[:, None])
        agreement.append(same.sum(dim=1).float() / labeled.sum(dim=1).clamp(min=1).float())
    return agreement


def vote(superpoints: Superpoints, views: RenderedViews, detections: Sequence[ViewDetections],
         part_names: Sequence[str], config: VoteConfig, device: torch.device | str = "cpu",
         box_evidence: Optional[BoxEvidence] = None) -> SemanticVotes:
    """Semantic labels per superpoint and per point, plus each superpoint's per-box fraction inside.

    box_evidence: from ``collect_box_evidence`` with the same views and detections (collected here when
    None, or when it was collected under other box settings); passing it saves the per-view box work
    when voting again over other superpoints (the pipeline's re-vote over the pieces)."""
    device = torch.device(device)
    num_parts, num_sp = len(part_names), superpoints.num_superpoints
    point_sp = torch.as_tensor(superpoints.point_superpoint, device=device)
    if box_evidence is None or not _evidence_fits(box_evidence, config):
        box_evidence = collect_box_evidence(views, detections, part_names, config, device)
    kept, visible, evidence = box_evidence.kept, box_evidence.visible, box_evidence.evidence
    scores_of, xyxy, areas = box_evidence.scores_of, box_evidence.xyxy, box_evidence.areas
    weights = [s if config.score_weighting else torch.ones_like(s) for s in scores_of]
    if visible.shape[1] != point_sp.shape[0]:
        raise ValueError(f"box evidence for {visible.shape[1]} points, superpoints of {point_sp.shape[0]}")
    collected_box_label = _cat([b.labels for b in kept], (0,), torch.long)  # before re-estimation
    sp_view_visible = _sum_per_group(visible.float(), point_sp, num_sp, per_view=True).T  # (S, K) visible points
    sp_visible_total = sp_view_visible.sum(dim=1)
    num_points = point_sp.shape[0]
    scores = _part_scores(kept, evidence, point_sp, sp_visible_total, num_sp, num_parts, config)
    area = _mean_box_area(evidence, point_sp, num_sp) if config.prefer_smaller_boxes else None
    sp_label = choose_labels(scores, part_names, config, box_area=area)
    nested = nested_parts([b.labels for b in kept], xyxy, num_parts) if config.nested_part_margin > 0 else None
    part_margin = specific_margins([b.labels for b in kept], visible.shape[0], num_parts, config, device, nested)
    if part_margin is not None:  # only for boxes that fit their parts' points loosely (a jittery detector)
        screen_xy = torch.as_tensor(views.point_screen_xy, device=device, dtype=torch.float32)
        if not box_looseness(kept, xyxy, screen_xy, sp_label[point_sp]) > config.specific_margin_looseness:
            part_margin = None
        else:
            sp_label = choose_labels(scores, part_names, config, box_area=area, part_margin=part_margin)
    for _ in range(config.reestimate_iterations):
        agreement = _box_agreement(kept, sp_label[point_sp])
        survivors = [a >= config.min_box_agreement for a in agreement]
        if all(bool(s.all()) for s in survivors):
            break
        kept = [_ViewBoxes(b.view, b.inside[s], b.labels[s], b.index[s], b.visible) for b, s in zip(kept, survivors)]
        weights = [w[s] for w, s in zip(weights, survivors)]
        scores_of = [v[s] for v, s in zip(scores_of, survivors)]
        areas = [a[s] for a, s in zip(areas, survivors)]
        xyxy = [x[s] for x, s in zip(xyxy, survivors)]
        evidence = _evidence(kept, weights, areas, num_points, num_parts, config, device)
        evidence.uncovered_weight = box_evidence.evidence.uncovered_weight
        evidence.agreeing_views = box_evidence.evidence.agreeing_views
        scores = _part_scores(kept, evidence, point_sp, sp_visible_total, num_sp, num_parts, config)
        if area is not None:
            area = _mean_box_area(evidence, point_sp, num_sp)
        sp_label = choose_labels(scores, part_names, config, box_area=area, part_margin=part_margin)
    point_label = sp_label[point_sp]
    if config.refine_points:
        point_label = _refine_points(kept, evidence, weights, visible, point_label, part_names, config, part_margin)
    point_label = drop_sparse_parts(point_label, num_parts, config.min_part_points)
    if config.min_part_agreement > 0:
        point_label = drop_unsupported_parts(point_label, [b.labels for b in kept], _box_agreement(kept, point_label),
                                             num_parts, config.min_part_agreement)
    box_view = _cat([torch.full((b.inside.shape[0],), b.view, dtype=torch.long, device=device) for b in kept],
                    (0,), torch.long)
    if kept:  # points of each superpoint inside each kept box / its visible points in the box's view: one scatter
        inside_all = torch.cat([b.inside for b in kept])  # (B, N)
        fractions = (_sum_per_group(inside_all.float(), point_sp, num_sp, per_view=True).T
                     / sp_view_visible[:, box_view].clamp(min=1.0)).contiguous()
    else:
        fractions = torch.zeros((num_sp, 0), dtype=torch.float32)
    return SemanticVotes(
        superpoint_scores=scores.cpu().numpy(),
        superpoint_label=sp_label.cpu().numpy(),
        point_label=point_label.cpu().numpy(),
        box_superpoint_fraction=fractions.cpu().numpy(),
        box_view=box_view.cpu().numpy(),
        box_label=_cat([b.labels for b in kept], (0,), torch.long).cpu().numpy(),
        boxes=_cat(xyxy, (0, 4), torch.float32).cpu().numpy(),
        box_score=_cat(scores_of, (0,), torch.float32).cpu().numpy(),
        collected_box_label=collected_box_label.cpu().numpy(),
        box_index=_cat([b.index for b in kept], (0,), torch.long).cpu().numpy(),
    )


def _cat(parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
    return torch.cat(parts, dim=dim) if parts else torch.zeros(empty_shape, dtype=dtype)
