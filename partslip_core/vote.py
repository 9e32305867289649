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
  ``min_part_views`` views (a lone false positive) keep the plain denominator.
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from partslip_core.config import VoteConfig
from partslip_core.types import RenderedViews, SemanticVotes, Superpoints, ViewDetections


def points_inside_boxes(screen_xy: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N, 2) screen coords, (M, 4) xyxy boxes -> (M, N) bool, strictly inside (reference rule)."""
    x, y = screen_xy[None, :, 0], screen_xy[None, :, 1]
    return (x > boxes[:, None, 0]) & (x < boxes[:, None, 2]) & (y > boxes[:, None, 1]) & (y < boxes[:, None, 3])


def points_inside_masks(screen_xy: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N, 2) screen coords, (M, H, W) bool masks -> (M, N) bool: the point's pixel is in the mask."""
    height, width = masks.shape[1:]
    cols = screen_xy[:, 0].floor().long().clamp(0, width - 1)
    rows = screen_xy[:, 1].floor().long().clamp(0, height - 1)
    on_image = (screen_xy[:, 0] >= 0) & (screen_xy[:, 0] < width) & (screen_xy[:, 1] >= 0) & (screen_xy[:, 1] < height)
    return masks[:, rows, cols] & on_image[None, :]


def _view_inside(screen_xy: torch.Tensor, detections: ViewDetections, device: torch.device) -> torch.Tensor:
    boxes = torch.as_tensor(detections.boxes, device=device)
    inside = points_inside_boxes(screen_xy, boxes)
    if detections.masks is not None:
        inside = points_inside_masks(screen_xy, torch.as_tensor(detections.masks, device=device))
    return inside


def whole_object_boxes(inside: torch.Tensor, visible_count: torch.Tensor, config: VoteConfig) -> torch.Tensor:
    """(M, N) visible-and-inside -> (M,) bool: boxes to drop as whole-object boxes.

    ``fraction`` (reference): every box holding >= whole_object_fraction of the visible points.
    ``explained``: such a box only if the view's other (non-whole-object) boxes cover at least
    ``whole_object_explained`` of its points, i.e. it adds nothing the part boxes do not say.
    """
    covers_all = inside.sum(dim=1) >= config.whole_object_fraction * visible_count
    if config.whole_object_rule == "fraction" or not bool(covers_all.any()):
        return covers_all
    by_others = inside[~covers_all].any(dim=0)  # (N,) points inside some part-sized box
    explained = (inside & by_others[None, :]).sum(dim=1).float() / inside.sum(dim=1).clamp(min=1).float()
    return covers_all & (explained >= config.whole_object_explained)


def choose_labels(scores: torch.Tensor, part_names: Sequence[str], config: VoteConfig,
                  tie_tolerance: float = 1e-6, box_area: torch.Tensor | None = None) -> torch.Tensor:
    """(S, P) scores -> (S,) int64 best part, -1 where no part reaches the threshold.

    Small parts get a preference: with ``small_part_rule: ties`` they win ties for the best score
    (a handle's superpoints lie inside the handle box and inside the box of the door it sits on);
    with ``priority`` (the authors' code) any small part passing the threshold wins, the last one
    in part order first. ``box_area`` (S, P), the mean area of the part's boxes over the superpoint's
    points, breaks the remaining ties (``prefer_smaller_boxes``): the more specific box wins, as a
    gripper's box inside the arm's box.
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
    label = preference.argmax(dim=1)
    return torch.where(best[:, 0] >= config.score_threshold, label, torch.full_like(label, -1))


@dataclass
class _ViewBoxes:
    """The kept boxes of one view: inside (M, N) bool (visible points only), labels (M,), their index
    in the view's detections (M,), and the view's (N,) visible mask."""

    view: int
    inside: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    visible: torch.Tensor


def _collect_boxes(superpoints: Superpoints, views: RenderedViews, detections: Sequence[ViewDetections],
                   num_parts: int, config: VoteConfig, device: torch.device) -> tuple[list[_ViewBoxes], torch.Tensor]:
    """Per view: the boxes that survive the whole-object and label checks; and (K, N) visibility."""
    screen = torch.as_tensor(views.point_screen_xy, device=device)
    visible = torch.as_tensor(views.point_visible, device=device)
    kept = []
    for view, dets in enumerate(detections):  # K views; everything inside is vectorized
        vis = visible[view]
        if dets.num_boxes == 0:
            continue
        inside = _view_inside(screen[view], dets, device) & vis[None, :]
        labels = torch.as_tensor(dets.labels, device=device)
        keep = ~whole_object_boxes(inside, vis.sum(), config) & (labels >= 0) & (labels < num_parts)
        index = torch.nonzero(keep).squeeze(1)
        if index.numel():
            kept.append(_ViewBoxes(view, inside[index], labels[index], index, vis))
    return kept, visible


def _point_in_part(boxes: _ViewBoxes, weight: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(N, P) float: per point and part, the largest weight of a box of that part containing it
    (with unit weights: 1 inside at least one box of the part, as the reference)."""
    onehot = torch.nn.functional.one_hot(boxes.labels, num_parts).float()  # (M, P)
    if bool((weight == 1.0).all()):
        return ((boxes.inside.T.float() @ onehot) > 0).float()
    result = torch.zeros((boxes.inside.shape[1], num_parts), device=weight.device)
    for part in torch.unique(boxes.labels).tolist():  # P parts at most
        of_part = boxes.labels == part
        result[:, part] = (boxes.inside[of_part].float() * weight[of_part][:, None]).amax(dim=0)
    return result


def _part_scores(kept: list[_ViewBoxes], weights: list[torch.Tensor], point_sp: torch.Tensor,
                 sp_visible_total: torch.Tensor, num_sp: int, num_parts: int, config: VoteConfig) -> torch.Tensor:
    """(S, P) scores: weighted points inside a box of p over (covered + uncovered_weight x uncovered) points,
    summed over all views, or (``part_view_normalization``) over the views where p has a box at all."""
    device = point_sp.device
    inside_part = torch.zeros((num_sp, num_parts), dtype=torch.float32, device=device)
    covered = torch.zeros(num_sp, dtype=torch.float32, device=device)
    per_part = torch.zeros((num_sp, num_parts), dtype=torch.float32, device=device)
    views_with_part = torch.zeros(num_parts, dtype=torch.float32, device=device)
    for boxes, weight in zip(kept, weights):
        point_in_part = _point_in_part(boxes, weight, num_parts)
        inside_part.index_add_(0, point_sp, point_in_part)
        if config.uncovered_weight < 1.0 or config.part_view_normalization:
            view_covered = torch.zeros(num_sp, device=device).index_add_(0, point_sp, point_in_part.amax(dim=1))
            covered += view_covered
        if config.part_view_normalization:
            view_visible = torch.zeros(num_sp, device=device).index_add_(0, point_sp, boxes.visible.float())
            detected = torch.zeros(num_parts, device=device).index_fill_(0, boxes.labels, 1.0)
            view_total = view_covered + config.uncovered_weight * (view_visible - view_covered)
            per_part += view_total[:, None] * detected[None, :]
            views_with_part += detected
    if config.uncovered_weight >= 1.0 and not config.part_view_normalization:
        return inside_part / sp_visible_total.clamp(min=1.0)[:, None]
    denominator = (covered + config.uncovered_weight * (sp_visible_total - covered))[:, None].expand(-1, num_parts)
    if config.part_view_normalization:  # parts seen in too few views (lone false positives) keep every view
        enough = views_with_part >= config.min_part_views
        denominator = torch.where(enough[None, :], per_part, denominator)
    return inside_part / denominator.clamp(min=1e-6)


def _mean_box_area(kept: list[_ViewBoxes], areas: list[torch.Tensor], point_sp: torch.Tensor, num_sp: int,
                   num_parts: int) -> torch.Tensor:
    """(S, P) mean over the superpoint's inside points of the smallest containing box of the part (pixels^2)."""
    total = torch.zeros((num_sp, num_parts), device=point_sp.device)
    count = torch.zeros((num_sp, num_parts), device=point_sp.device)
    for boxes, area in zip(kept, areas):
        for part in torch.unique(boxes.labels).tolist():  # P parts at most
            of_part = boxes.labels == part
            smallest = torch.where(boxes.inside[of_part], area[of_part][:, None], torch.tensor(float("inf"),
                                   device=area.device)).amin(dim=0)  # (N,)
            inside = torch.isfinite(smallest)
            total[:, part].index_add_(0, point_sp, torch.where(inside, smallest, torch.zeros_like(smallest)))
            count[:, part].index_add_(0, point_sp, inside.float())
    return total / count.clamp(min=1.0)


def _refine_points(kept: list[_ViewBoxes], weights: list[torch.Tensor], visible: torch.Tensor,
                   point_label: torch.Tensor, part_names: Sequence[str], config: VoteConfig,
                   areas: list[torch.Tensor]) -> torch.Tensor:
    """Points of a superpoint that straddles two parts (a gripper's fingertips merged into the forearm's
    superpoint) take their own vote where it passes the threshold, beats or ties (with the tie rules) their
    superpoint's label, its boxes are at most half as large and they hold the point in two views or more:
    the same scores, one point at a time."""
    num_points, num_parts = visible.shape[1], len(part_names)
    every_point = torch.arange(num_points, device=visible.device)
    scores = _part_scores(kept, weights, every_point, visible.float().sum(dim=0), num_points, num_parts, config)
    area = _mean_box_area(kept, areas, every_point, num_points, num_parts)
    own = choose_labels(scores, part_names, config, box_area=area if config.prefer_smaller_boxes else None)
    current = scores.gather(1, point_label.clamp(min=0)[:, None])[:, 0]
    challenger = scores.gather(1, own.clamp(min=0)[:, None])[:, 0]
    # only toward a clearly more specific part (boxes at most half the size): a tiny part inside a big part's
    # box, not a boundary point between two large parts whose boxes a jittered detector shifts
    smaller = area.gather(1, own.clamp(min=0)[:, None])[:, 0] <= 0.5 * area.gather(1, point_label.clamp(min=0)[:, None])[:, 0]
    # ... and seen inside that part's boxes in at least two views: a lone false positive covers a point once
    hits = torch.zeros((num_points, num_parts), device=visible.device)
    for boxes in kept:
        hits += _point_in_part(boxes, torch.ones(boxes.labels.shape[0], device=visible.device), num_parts)
    repeated = hits.gather(1, own.clamp(min=0)[:, None])[:, 0] >= 2
    switch = ((point_label >= 0) & (own >= 0) & (own != point_label) & (challenger >= current - 1e-6) & smaller
              & repeated)
    return torch.where(switch, own, point_label)


def _box_agreement(kept: list[_ViewBoxes], point_label: torch.Tensor) -> list[torch.Tensor]:
    """Per kept box: the share of its labeled visible points whose current label is the box's label."""
    agreement = []
    for boxes in kept:
        labeled = (point_label >= 0)[None, :] & boxes.inside
        same = labeled & (point_label[None, :] == boxes.labels[:, None])
        agreement.append(same.sum(dim=1).float() / labeled.sum(dim=1).clamp(min=1).float())
    return agreement


def vote(superpoints: Superpoints, views: RenderedViews, detections: Sequence[ViewDetections],
         part_names: Sequence[str], config: VoteConfig, device: torch.device | str = "cpu") -> SemanticVotes:
    """Semantic labels per superpoint and per point, plus each superpoint's per-box fraction inside."""
    device = torch.device(device)
    num_parts, num_sp = len(part_names), superpoints.num_superpoints
    point_sp = torch.as_tensor(superpoints.point_superpoint, device=device)
    kept, visible = _collect_boxes(superpoints, views, detections, num_parts, config, device)
    collected_box_label = _cat([b.labels for b in kept], (0,), torch.long)  # before re-estimation
    sp_view_visible = torch.zeros((num_sp, visible.shape[0]), device=device).index_add_(0, point_sp, visible.T.float())
    sp_visible_total = sp_view_visible.sum(dim=1)
    scores_of = [torch.as_tensor(detections[b.view].scores, device=device, dtype=torch.float32)[b.index] for b in kept]
    weights = [s if config.score_weighting else torch.ones_like(s) for s in scores_of]
    scores = _part_scores(kept, weights, point_sp, sp_visible_total, num_sp, num_parts, config)
    xyxy = [torch.as_tensor(detections[b.view].boxes, device=device, dtype=torch.float32)[b.index] for b in kept]
    areas = [(x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0) for x in xyxy]
    area = _mean_box_area(kept, areas, point_sp, num_sp, num_parts) if config.prefer_smaller_boxes else None
    sp_label = choose_labels(scores, part_names, config, box_area=area)
    for _ in range(config.reestimate_iterations):
        agreement = _box_agreement(kept, sp_label[point_sp])
        survivors = [a >= config.min_box_agreement for a in agreement]
        if all(bool(s.all()) for s in survivors):
            break
        kept = [_ViewBoxes(b.view, b.inside[s], b.labels[s], b.index[s], b.visible) for b, s in zip(kept, survivors)]
        weights = [w[s] for w, s in zip(weights, survivors)]
        scores_of = [v[s] for v, s in zip(scores_of, survivors)]
        scores = _part_scores(kept, weights, point_sp, sp_visible_total, num_sp, num_parts, config)
        areas = [a[s] for a, s in zip(areas, survivors)]
        if area is not None:
            area = _mean_box_area(kept, areas, point_sp, num_sp, num_parts)
        sp_label = choose_labels(scores, part_names, config, box_area=area)
    point_label = sp_label[point_sp]
    if config.refine_points:
        point_label = _refine_points(kept, weights, visible, point_label, part_names, config, areas)
    fractions = [torch.zeros((num_sp, b.inside.shape[0]), device=device).index_add_(0, point_sp, b.inside.T.float())
                 / sp_view_visible[:, b.view].clamp(min=1.0)[:, None] for b in kept]
    return SemanticVotes(
        superpoint_scores=scores.cpu().numpy(),
        superpoint_label=sp_label.cpu().numpy(),
        point_label=point_label.cpu().numpy(),
        box_superpoint_fraction=_cat(fractions, (num_sp, 0), torch.float32, dim=1).cpu().numpy(),
        box_view=_cat([torch.full((b.inside.shape[0],), b.view, dtype=torch.long, device=device) for b in kept],
                      (0,), torch.long).cpu().numpy(),
        box_label=_cat([b.labels for b in kept], (0,), torch.long).cpu().numpy(),
        boxes=_cat([torch.as_tensor(detections[b.view].boxes, device=device, dtype=torch.float32)[b.index] for b in kept],
                   (0, 4), torch.float32).cpu().numpy(),
        box_score=_cat(scores_of, (0,), torch.float32).cpu().numpy(),
        collected_box_label=collected_box_label.cpu().numpy(),
        box_index=_cat([b.index for b in kept], (0,), torch.long).cpu().numpy(),
    )


def _cat(parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
    return torch.cat(parts, dim=dim) if parts else torch.zeros(empty_shape, dtype=dtype)
