"""Stage 5: box-to-superpoint semantic voting (torch; the same code on CPU and CUDA).

For superpoint s and part p: score = (visible points of s inside at least one box of p, summed
over views) / (visible points of s, summed over views). Boxes that cover >= 98% of a view's
visible points are whole-object boxes and are dropped. A superpoint takes its best part when the
score passes the threshold; small parts (handle, knob ...) win ties, since every point inside a
handle's box is usually inside the box of the door it sits on too. A box that carries a mask votes with the
mask instead of its rectangle.
"""

from __future__ import annotations

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


def choose_labels(scores: torch.Tensor, part_names: Sequence[str], config: VoteConfig,
                  tie_tolerance: float = 1e-6) -> torch.Tensor:
    """(S, P) scores -> (S,) int64 best part, -1 where no part reaches the threshold.

    Small parts get a preference: with ``small_part_rule: ties`` they win ties for the best score
    (a handle's superpoints lie inside the handle box and inside the box of the door it sits on);
    with ``priority`` (the authors' code) any small part passing the threshold wins, the last one
    in part order first.
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
    label = preference.argmax(dim=1)
    return torch.where(best[:, 0] >= config.score_threshold, label, torch.full_like(label, -1))


def vote(superpoints: Superpoints, views: RenderedViews, detections: Sequence[ViewDetections],
         part_names: Sequence[str], config: VoteConfig, device: torch.device | str = "cpu") -> SemanticVotes:
    """Semantic labels per superpoint and per point, plus each superpoint's per-box fraction inside."""
    device = torch.device(device)
    num_parts, num_sp = len(part_names), superpoints.num_superpoints
    point_sp = torch.as_tensor(superpoints.point_superpoint, device=device)
    screen = torch.as_tensor(views.point_screen_xy, device=device)
    visible = torch.as_tensor(views.point_visible, device=device)
    inside_part = torch.zeros((num_sp, num_parts), dtype=torch.float32, device=device)
    visible_count = torch.zeros(num_sp, dtype=torch.float32, device=device)
    fractions, box_view, box_label, box_xyxy, box_score = [], [], [], [], []
    for view, dets in enumerate(detections):  # K views; everything inside is vectorized
        vis = visible[view]
        sp_visible = torch.zeros(num_sp, device=device).index_add_(0, point_sp, vis.float())
        visible_count += sp_visible
        if dets.num_boxes == 0:
            continue
        inside = _view_inside(screen[view], dets, device) & vis[None, :]
        whole_object = inside.sum(dim=1) >= config.whole_object_fraction * vis.sum()
        labels = torch.as_tensor(dets.labels, device=device)
        keep = ~whole_object & (labels >= 0) & (labels < num_parts)
        inside, labels = inside[keep], labels[keep]
        if inside.shape[0] == 0:
            continue
        label_onehot = torch.nn.functional.one_hot(labels, num_parts).float()
        point_in_part = (inside.T.float() @ label_onehot) > 0  # (N, P)
        inside_part.index_add_(0, point_sp, point_in_part.float())
        sp_inside_box = torch.zeros((num_sp, inside.shape[0]), device=device).index_add_(0, point_sp, inside.T.float())
        fractions.append(sp_inside_box / sp_visible.clamp(min=1.0)[:, None])
        box_view.append(torch.full((inside.shape[0],), view, dtype=torch.long, device=device))
        box_label.append(labels)
        box_xyxy.append(torch.as_tensor(dets.boxes, device=device)[keep])
        box_score.append(torch.as_tensor(dets.scores, device=device)[keep])
    scores = inside_part / visible_count.clamp(min=1.0)[:, None]
    sp_label = choose_labels(scores, part_names, config)
    return SemanticVotes(
        superpoint_scores=scores.cpu().numpy(),
        superpoint_label=sp_label.cpu().numpy(),
        point_label=sp_label[point_sp].cpu().numpy(),
        box_superpoint_fraction=_cat(fractions, (num_sp, 0), torch.float32, dim=1).cpu().numpy(),
        box_view=_cat(box_view, (0,), torch.long).cpu().numpy(),
        box_label=_cat(box_label, (0,), torch.long).cpu().numpy(),
        boxes=_cat(box_xyxy, (0, 4), torch.float32).cpu().numpy(),
        box_score=_cat(box_score, (0,), torch.float32).cpu().numpy(),
    )


def _cat(parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
    return torch.cat(parts, dim=dim) if parts else torch.zeros(empty_shape, dtype=dtype)
