"""The box evidence behind the vote (torch; the same code on CPU and CUDA): which boxes of each view are kept
(whole-object boxes and unknown labels dropped; ``whole_object_rule``) and, per kept view and point, what every
score of ``vote`` sums: inside which parts' boxes the point lies (with the box weights), whether any box covers
it, and the smallest box of each part holding it. It depends on the views, detections and the box settings of
the vote config only, not on the superpoints: ``collect_box_evidence`` once serves every vote over the same
views (the pipeline's re-vote over the pieces). The scores and labels themselves are in ``vote``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from partslip_core.config import VoteConfig
from partslip_core.detector_recall import uncovered_weights
from partslip_core.types import RenderedViews, ViewDetections


def points_inside_boxes(screen_xy: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N, 2) screen coords, (M, 4) xyxy boxes -> (M, N) bool, strictly inside (reference rule)."""
    x, y = screen_xy[None, :, 0], screen_xy[None, :, 1]
    return (x > boxes[:, None, 0]) & (x < boxes[:, None, 2]) & (y > boxes[:, None, 1]) & (y < boxes[:, None, 3])


def masked_extents(mask: torch.Tensor, screen_xy: torch.Tensor) -> torch.Tensor:
    """(M, N) bool, (N, 2) screen coords of one view -> (M, 4) x0, y0, x1, y1 of each row's points (+-inf where a
    row holds none): the 2D extent of the points a box holds."""
    x, y = screen_xy[None, :, 0], screen_xy[None, :, 1]
    inf = torch.tensor(float("inf"), device=screen_xy.device, dtype=screen_xy.dtype)
    return torch.stack([torch.where(mask, x, inf).amin(dim=1), torch.where(mask, y, inf).amin(dim=1),
                        torch.where(mask, x, -inf).amax(dim=1), torch.where(mask, y, -inf).amax(dim=1)], dim=1)


def points_inside_masks(screen_xy: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N, 2) screen coords, (M, H, W) bool masks -> (M, N) bool: the point's pixel is in the mask."""
    height, width = masks.shape[1:]
    cols = screen_xy[:, 0].floor().long().clamp(0, width - 1)
    rows = screen_xy[:, 1].floor().long().clamp(0, height - 1)
    on_image = (screen_xy[:, 0] >= 0) & (screen_xy[:, 0] < width) & (screen_xy[:, 1] >= 0) & (screen_xy[:, 1] < height)
    return masks[:, rows, cols] & on_image[None, :]


def _view_inside(screen_xy: torch.Tensor, detections: ViewDetections, device: torch.device) -> torch.Tensor:
    if detections.masks is not None:
        return points_inside_masks(screen_xy, torch.as_tensor(detections.masks, device=device))
    return points_inside_boxes(screen_xy, torch.as_tensor(detections.boxes, device=device))


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


@dataclass
class _ViewBoxes:
    """The kept boxes of one view: inside (M, N) bool (visible points only), labels (M,), their index
    in the view's detections (M,), and the view's (N,) visible mask."""

    view: int
    inside: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    visible: torch.Tensor


def _collect_boxes(views: RenderedViews, detections: Sequence[ViewDetections],
                   num_parts: int, config: VoteConfig, device: torch.device) -> tuple[list[_ViewBoxes], torch.Tensor]:
    """Per view: the boxes that survive the whole-object and label checks; and (K, N) visibility.
    (One view at a time on purpose: a batch of all views' boxes as (B, N) was 2x slower on CPU, the
    per-view tests broadcast one (N,) row of screen coordinates that stays in cache.)"""
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


def _point_in_part(boxes: _ViewBoxes, weight: torch.Tensor, num_parts: int,
                   hit: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(P, N) float: per part and point, the largest weight of a box of that part containing it
    (with unit weights: 1 inside at least one box of the part, as the reference). hit: ``_inside_part``."""
    if bool((weight == 1.0).all()):
        return (_inside_part(boxes, num_parts) if hit is None else hit).float()
    result = torch.zeros((num_parts, boxes.inside.shape[1]), device=weight.device)
    for part in torch.unique(boxes.labels).tolist():  # P parts at most
        of_part = boxes.labels == part
        result[part] = (boxes.inside[of_part].float() * weight[of_part][:, None]).amax(dim=0)
    return result


def _inside_part(boxes: _ViewBoxes, num_parts: int) -> torch.Tensor:
    """(P, N) bool: the point is inside at least one kept box of the part."""
    onehot = torch.nn.functional.one_hot(boxes.labels, num_parts).float()  # (M, P)
    return (onehot.T @ boxes.inside.float()) > 0


def _smallest_box_area(boxes: _ViewBoxes, area: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(P, N): per part and point, the area of the smallest box of that part holding the point (0 = none).
    Boxes are painted largest first, so the smallest one holding a point is what stays (M boxes: M fills)."""
    smallest = torch.zeros((num_parts, boxes.inside.shape[1]), device=area.device)
    order = torch.argsort(area, descending=True, stable=True).tolist()
    labels = boxes.labels.tolist()
    for box in order:
        smallest[labels[box]].masked_fill_(boxes.inside[box], area[box])
    return smallest


@dataclass
class _Evidence:
    """Per kept view and point, what every score needs; computed once per set of kept boxes and shared
    by the superpoint vote, the per-point refinement and the re-estimation (the scores only sum it
    per superpoint). Points are the last axis; V = views with kept boxes:
    in_part (V, P, N) (``_point_in_part``), covered (V, N) its max over parts, visible (V, N) float;
    with box areas: area_sum (V, P, N) the smallest box area of the part holding the point (0 = none)
    and area_count (V, P, N) 1 where one holds it."""

    in_part: torch.Tensor
    covered: Optional[torch.Tensor]  # None unless an option weighs uncovered points (_uses_covered)
    visible: Optional[torch.Tensor]  # None without part_view_normalization
    area_sum: Optional[torch.Tensor]
    area_count: Optional[torch.Tensor]
    uncovered_weight: Optional[torch.Tensor] = None  # (P,) per part (vote.adaptive_uncovered); None = the scalar
    agreeing_views: Optional[torch.Tensor] = None  # (P,) views whose boxes agree in 3D (vote.view_agreement_fill)
    unit_weights: bool = False  # every box weighs 1: in_part holds 0/1 only


def _evidence(kept: list[_ViewBoxes], weights: list[torch.Tensor], areas: list[torch.Tensor], num_points: int,
              num_parts: int, config: VoteConfig, device: torch.device) -> _Evidence:
    """The evidence the config's scores use (covered / visible / areas only when an option needs them)."""
    with_covered = _uses_covered(config)
    with_areas = _uses_areas(config)
    if not kept:
        empty = torch.zeros((0, num_parts, num_points), device=device)
        return _Evidence(empty, empty[:, 0], empty[:, 0], empty if with_areas else None, empty if with_areas else None)
    hits = [_inside_part(b, num_parts) for b in kept]
    in_part = torch.stack([_point_in_part(b, w, num_parts, h) for b, w, h in zip(kept, weights, hits)])
    unit = all(bool((w == 1.0).all()) for w in weights)
    area_sum = area_count = None
    if with_areas:
        area_sum = torch.stack([_smallest_box_area(b, a, num_parts) for b, a in zip(kept, areas)])
        area_count = in_part if unit else torch.stack(hits).float()  # unit weights: in_part is that 0/1 already
    return _Evidence(in_part, in_part.amax(dim=1) if with_covered else None,
                     torch.stack([b.visible for b in kept]).float() if config.part_view_normalization else None,
                     area_sum, area_count, unit_weights=unit)


@dataclass
class BoxEvidence:
    """The boxes kept in every view (whole-object and label checks passed, before any re-estimation) and
    the per-point evidence they give. It depends on the views, detections and vote config only, not on
    the superpoints: one collection serves every vote over the same views (the pipeline's second vote,
    over the pieces of ``instances.split_extent``). Build it with ``collect_box_evidence``."""

    kept: list[_ViewBoxes]
    visible: torch.Tensor  # (K, N) bool
    scores_of: list[torch.Tensor]  # per kept view: (M,) detection scores of its boxes
    xyxy: list[torch.Tensor]  # (M, 4) float32 boxes
    areas: list[torch.Tensor]  # (M,) box areas
    evidence: _Evidence
    config: VoteConfig  # the config it was collected with


def collect_box_evidence(views: RenderedViews, detections: Sequence[ViewDetections], part_names: Sequence[str],
                         config: VoteConfig, device: torch.device | str = "cpu") -> BoxEvidence:
    """The kept boxes of every view and their per-point evidence (see ``BoxEvidence``)."""
    device = torch.device(device)
    num_parts = len(part_names)
    kept, visible = _collect_boxes(views, detections, num_parts, config, device)
    scores_of = [torch.as_tensor(detections[b.view].scores, device=device, dtype=torch.float32)[b.index] for b in kept]
    weights = [s if config.score_weighting else torch.ones_like(s) for s in scores_of]
    xyxy = [torch.as_tensor(detections[b.view].boxes, device=device, dtype=torch.float32)[b.index] for b in kept]
    areas = [(x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0) for x in xyxy]
    evidence = _evidence(kept, weights, areas, visible.shape[1], num_parts, config, device)
    evidence.uncovered_weight = uncovered_weights([b.labels for b in kept], visible.shape[0], num_parts, config, device,
                                                  evidence.in_part, torch.stack([b.visible for b in kept]) if kept else None)
    if config.part_view_normalization and config.view_agreement_fill > 0 and kept:
        screen_xy = torch.as_tensor(views.point_screen_xy, device=device, dtype=torch.float32)
        evidence.agreeing_views = agreeing_views(kept, xyxy, screen_xy, evidence.in_part, config.min_part_views,
                                                 config.view_agreement_fill)
    return BoxEvidence(kept, visible, scores_of, xyxy, areas, evidence, config)


def agreeing_views(kept: list[_ViewBoxes], xyxy: list[torch.Tensor], screen_xy: torch.Tensor, in_part: torch.Tensor,
                   min_views: int, fill: float) -> torch.Tensor:
    """(P,) int64 per part: the views where a box of the part is spanned by the part's agreed points, those inside
    its boxes in at least ``min_views`` views ((x extent / box width) x (y extent / box height) >= ``fill``).

    A real part's boxes agree in 3D: each one encloses the part, so the points its boxes in several views share
    (the part) fill every one of them, missed views and jittered edges aside. The false positives of a part the
    object does not have (one random-label box per view) can share points too when three of them overlap, but only
    a sliver of each: their shared points span a corner of every box. kept / xyxy: the vote's per-view boxes and
    their (M, 4) rectangles; screen_xy (K, N, 2); in_part (V, P, N) > 0 inside a box of the part (visible points)."""
    agreed = (in_part > 0).sum(dim=0) >= min_views  # (P, N)
    count = torch.zeros(in_part.shape[1], dtype=torch.long, device=in_part.device)
    for boxes, box_xyxy in zip(kept, xyxy):  # V views; (M, N) inside
        held = boxes.inside & agreed[boxes.labels]
        extent = masked_extents(held, screen_xy[boxes.view])
        width, height = extent[:, 2] - extent[:, 0], extent[:, 3] - extent[:, 1]
        spanned = (held.any(dim=1) & ((width / (box_xyxy[:, 2] - box_xyxy[:, 0]).clamp(min=1.0)).clamp(max=1.0)
                                      * (height / (box_xyxy[:, 3] - box_xyxy[:, 1]).clamp(min=1.0)).clamp(max=1.0)
                                      >= fill))
        view_has = torch.zeros_like(count).index_fill_(0, boxes.labels[spanned], 1)
        count += view_has
    return count


def _uses_areas(config: VoteConfig) -> bool:
    return config.prefer_smaller_boxes or config.refine_points


def _uses_covered(config: VoteConfig) -> bool:
    return config.uncovered_weight < 1.0 or config.part_view_normalization or config.adaptive_uncovered


# the VoteConfig fields a BoxEvidence depends on (which boxes are kept, their weights, per-part uncovered weights)
_EVIDENCE_FIELDS = ("whole_object_fraction", "whole_object_rule", "whole_object_explained", "score_weighting",
                    "uncovered_weight", "adaptive_uncovered", "background_hit_rate", "estimate_background",
                    "background_separation", "background_min_share", "min_part_views", "view_agreement_fill")


def _evidence_fits(box_evidence: BoxEvidence, config: VoteConfig) -> bool:
    """The evidence was collected under the same box settings and holds what this config's scores use."""
    evidence = box_evidence.evidence
    return (all(getattr(box_evidence.config, name) == getattr(config, name) for name in _EVIDENCE_FIELDS)
            and not (_uses_areas(config) and evidence.area_sum is None)
            and not (_uses_covered(config) and evidence.covered is None)
            and not (config.part_view_normalization and evidence.visible is None)
            and not (config.part_view_normalization and config.view_agreement_fill > 0 and box_evidence.kept
                     and evidence.agreeing_views is None))
