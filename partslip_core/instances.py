"""Stage 6: group labeled superpoints into part instances.

Per part label, superpoints are merged (connected components of a pair graph, i.e. union-find)
when they are spatially adjacent (axis-aligned bounds within ``adjacency_distance``), of comparable
size (ratio < ``max_size_ratio``) and seen alike by the boxes of that part (normalized L1 distance of
their per-box "fraction inside" vectors < ``box_profile_distance``). The distance only counts boxes
whose view sees both superpoints; with no such box the box evidence is silent and adjacency decides.
A candidate is kept only if, in some view, the 2D bounds of its visible points match a box of its
part with IoU > ``min_box_iou``; its score is the best such box's detection score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from partslip_core.config import InstanceConfig
from partslip_core.types import RenderedViews, SemanticVotes, Superpoints


@dataclass
class InstanceGroups:
    """point_instance: (N,) int64 instance id (-1 = none); instance_label: (I,) int64;
    instance_score: (I,) float32."""

    point_instance: np.ndarray
    instance_label: np.ndarray
    instance_score: np.ndarray


def superpoint_bounds(xyz: torch.Tensor, point_sp: torch.Tensor, num_sp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned bounds per superpoint: (S, 3) min and (S, 3) max."""
    index = point_sp[:, None].expand(-1, 3)
    low = torch.full((num_sp, 3), float("inf"), device=xyz.device).scatter_reduce(0, index, xyz, "amin")
    high = torch.full((num_sp, 3), float("-inf"), device=xyz.device).scatter_reduce(0, index, xyz, "amax")
    return low, high


def candidate_pairs(votes: SemanticVotes, low: torch.Tensor, high: torch.Tensor, sizes: torch.Tensor,
                    config: InstanceConfig, parent: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i < j) of same-label superpoints that are adjacent and of comparable size.

    ``parent`` (S,) marks pieces cut from one superpoint (``split_extent``): those are connected by
    construction, whatever the gap between their bounds in a sparse cloud.
    """
    label = torch.as_tensor(votes.superpoint_label, device=low.device)
    labeled = torch.nonzero(label >= 0).squeeze(1)
    lo, hi, lab, size = low[labeled], high[labeled], label[labeled], sizes[labeled]
    gap = torch.maximum(lo[:, None, :] - hi[None, :, :], lo[None, :, :] - hi[:, None, :]).amax(dim=2)
    adjacent = gap <= config.adjacency_distance
    if parent is not None:
        adjacent |= parent[labeled][:, None] == parent[labeled][None, :]
    ratio = torch.maximum(size[:, None], size[None, :]) / torch.minimum(size[:, None], size[None, :]).clamp(min=1)
    linked = adjacent & (lab[:, None] == lab[None, :]) & (ratio < config.max_size_ratio)
    i, j = torch.nonzero(torch.triu(linked, diagonal=1), as_tuple=True)
    return labeled[i], labeled[j]


def box_profile_distance(votes: SemanticVotes, sp_view_visible: torch.Tensor, first: torch.Tensor,
                         second: torch.Tensor) -> torch.Tensor:
    """Normalized L1 distance of per-box fraction vectors for each pair, over boxes of the pair's part
    whose view sees both superpoints; 0 (no evidence against merging) where no such box exists."""
    device = first.device
    fraction = torch.as_tensor(votes.box_superpoint_fraction, device=device)
    box_view = torch.as_tensor(votes.box_view, device=device)
    box_label = torch.as_tensor(votes.box_label, device=device)
    sp_label = torch.as_tensor(votes.superpoint_label, device=device)
    if fraction.shape[1] == 0 or first.numel() == 0:
        return torch.zeros(first.shape[0], device=device)
    both_seen = sp_view_visible[first][:, box_view] & sp_view_visible[second][:, box_view]  # (pairs, B)
    relevant = both_seen & (box_label[None, :] == sp_label[first][:, None])
    f_first, f_second = fraction[first], fraction[second]
    active = relevant & ((f_first > 0) | (f_second > 0))
    l1 = ((f_first - f_second).abs() * active).sum(dim=1)
    return l1 / active.sum(dim=1).clamp(min=1)


def _box_iou(bounds: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of (..., 4) xyxy boxes."""
    inter_w = (torch.minimum(bounds[..., 2], boxes[..., 2]) - torch.maximum(bounds[..., 0], boxes[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(bounds[..., 3], boxes[..., 3]) - torch.maximum(bounds[..., 1], boxes[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(bounds) + area(boxes) - inter).clamp(min=1e-9)


def instance_view_bounds(point_group: torch.Tensor, num_groups: int, screen: torch.Tensor,
                         visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2D bounds (G, K, 4) of each group's visible points per view, and (G, K) bool 'seen'."""
    num_views = screen.shape[0]
    member = (point_group >= 0)[None, :] & visible  # (K, N)
    view_idx, point_idx = torch.nonzero(member, as_tuple=True)
    slot = point_group[point_idx] * num_views + view_idx
    xy = screen[view_idx, point_idx]
    lows = torch.full((num_groups * num_views, 2), float("inf"), device=screen.device)
    highs = torch.full((num_groups * num_views, 2), float("-inf"), device=screen.device)
    lows = lows.scatter_reduce(0, slot[:, None].expand(-1, 2), xy, "amin")
    highs = highs.scatter_reduce(0, slot[:, None].expand(-1, 2), xy, "amax")
    seen = torch.isfinite(lows[:, 0]).view(num_groups, num_views)
    return torch.cat([lows, highs], dim=1).view(num_groups, num_views, 4), seen


def group_instances(xyz: np.ndarray, superpoints: Superpoints, votes: SemanticVotes, views: RenderedViews,
                    config: InstanceConfig, device: torch.device | str = "cpu",
                    superpoint_parent: Optional[np.ndarray] = None) -> InstanceGroups:
    """Merge labeled superpoints into instances and keep those confirmed by a box.

    superpoint_parent: optional (S,) int64, the original superpoint each piece was cut from.
    """
    device = torch.device(device)
    num_sp = superpoints.num_superpoints
    point_sp = torch.as_tensor(superpoints.point_superpoint, device=device)
    xyz_t = torch.as_tensor(xyz, device=device, dtype=torch.float32)
    visible = torch.as_tensor(views.point_visible, device=device)
    sizes = torch.bincount(point_sp, minlength=num_sp).float()
    sp_view_visible = torch.zeros((num_sp, visible.shape[0]), device=device).index_add_(
        0, point_sp, visible.T.float()) > 0
    low, high = superpoint_bounds(xyz_t, point_sp, num_sp)
    parent = None if superpoint_parent is None else torch.as_tensor(superpoint_parent, device=device)
    first, second = candidate_pairs(votes, low, high, sizes, config, parent)
    similar = box_profile_distance(votes, sp_view_visible, first, second) < config.box_profile_distance
    first, second = first[similar].cpu().numpy(), second[similar].cpu().numpy()
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(num_sp, num_sp))
    _, sp_component = connected_components(graph, directed=False)
    sp_component = np.where(votes.superpoint_label >= 0, sp_component, -1)
    used, sp_group = np.unique(sp_component, return_inverse=True)
    sp_group = sp_group - int(used[0] == -1) if len(used) else sp_group
    num_groups = int(sp_group.max()) + 1 if len(sp_group) else 0
    group_label = np.full(num_groups, -1, np.int64)
    group_label[sp_group[sp_group >= 0]] = votes.superpoint_label[sp_group >= 0]
    point_group = torch.as_tensor(sp_group, device=device)[point_sp]
    score = _confirm(point_group, group_label, votes, views, config, device)
    keep = score >= 0
    # group -> instance id (-1 if rejected); the appended -1 serves points with group -1
    instance_of_group = np.append(np.where(keep, np.cumsum(keep) - 1, -1), -1)
    point_instance = instance_of_group[point_group.cpu().numpy()]
    return InstanceGroups(point_instance=point_instance.astype(np.int64), instance_label=group_label[keep],
                          instance_score=score[keep].astype(np.float32))


def _confirm(point_group: torch.Tensor, group_label: np.ndarray, votes: SemanticVotes, views: RenderedViews,
             config: InstanceConfig, device: torch.device) -> np.ndarray:
    """(G,) best detection score of a same-part box with IoU > min_box_iou against the group's 2D bounds (-1 = none)."""
    num_groups = len(group_label)
    if num_groups == 0 or len(votes.box_label) == 0:
        return np.full(num_groups, -1.0, np.float32)
    screen = torch.as_tensor(views.point_screen_xy, device=device)
    visible = torch.as_tensor(views.point_visible, device=device)
    bounds, seen = instance_view_bounds(point_group, num_groups, screen, visible)
    box_view = torch.as_tensor(votes.box_view, device=device)
    boxes = torch.as_tensor(votes.boxes, device=device)
    iou = _box_iou(bounds[:, box_view, :], boxes[None, :, :])  # (G, B)
    same_part = torch.as_tensor(group_label, device=device)[:, None] == torch.as_tensor(votes.box_label, device=device)[None, :]
    match = (iou > config.min_box_iou) & same_part & seen[:, box_view]
    box_score = torch.as_tensor(votes.box_score, device=device)
    return torch.where(match, box_score[None, :], torch.full_like(iou, -1.0)).amax(dim=1).cpu().numpy()
