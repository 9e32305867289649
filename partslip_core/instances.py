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


def bounds_gap(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(S, S) gap between axis-aligned boxes (S, 3) min / max: the largest per-axis separation (<= 0 when
    they overlap). One axis-major (3, S, S) difference and its transpose: 2.5x faster than broadcasting
    (S, S, 3), the same values."""
    low_minus_high = low.T.contiguous()[:, :, None] - high.T.contiguous()[:, None, :]  # [a, i, j] = low_i - high_j
    return torch.maximum(low_minus_high, low_minus_high.transpose(1, 2)).amax(dim=0)


def candidate_pairs(votes: SemanticVotes, low: torch.Tensor, high: torch.Tensor, sizes: torch.Tensor,
                    config: InstanceConfig, parent: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i < j) of same-label superpoints that are adjacent and of comparable size.

    ``parent`` (S,) marks pieces cut from one superpoint (``split_extent``): those are connected by
    construction, whatever the gap between their bounds in a sparse cloud.
    """
    label = torch.as_tensor(votes.superpoint_label, device=low.device)
    labeled = torch.nonzero(label >= 0).squeeze(1)
    lo, hi, lab, size = low[labeled], high[labeled], label[labeled], sizes[labeled]
    gap = bounds_gap(lo, hi)
    adjacent = gap <= config.adjacency_distance
    if parent is not None:
        adjacent |= parent[labeled][:, None] == parent[labeled][None, :]
    ratio = torch.maximum(size[:, None], size[None, :]) / torch.minimum(size[:, None], size[None, :]).clamp(min=1)
    linked = adjacent & (lab[:, None] == lab[None, :]) & (ratio < config.max_size_ratio)
    i, j = torch.nonzero(torch.triu(linked, diagonal=1), as_tuple=True)
    return labeled[i], labeled[j]


def box_profile_distance(votes: SemanticVotes, sp_view_visible: torch.Tensor, first: torch.Tensor,
                         second: torch.Tensor, normalization: str = "active_boxes") -> torch.Tensor:
    """Distance of the per-box "fraction inside" vectors of each pair, over boxes of the pair's part
    whose view sees both superpoints.

    ``active_boxes`` (ours): mean |difference| over the boxes holding points of either; 0 (no evidence
    against merging: adjacency decides) where no such box exists.
    ``fraction_sum`` (the authors' bbox2seg.py): sum |difference| / the larger of the two fraction sums;
    1 (never merge) where no view sees both or both sums are ~0.
    """
    device = first.device
    fraction = torch.as_tensor(votes.box_superpoint_fraction, device=device)
    box_view = torch.as_tensor(votes.box_view, device=device)
    box_label = torch.as_tensor(votes.box_label, device=device)
    sp_label = torch.as_tensor(votes.superpoint_label, device=device)
    no_evidence = 0.0 if normalization == "active_boxes" else 1.0
    if fraction.shape[1] == 0 or first.numel() == 0:
        return torch.full((first.shape[0],), no_evidence, device=device)
    seen_by_box = sp_view_visible.index_select(1, box_view)  # (S, B): the box's view sees the superpoint
    both_seen = seen_by_box.index_select(0, first) & seen_by_box.index_select(0, second)  # (pairs, B)
    relevant = both_seen & (box_label[None, :] == sp_label.index_select(0, first)[:, None])
    f_first, f_second = fraction.index_select(0, first), fraction.index_select(0, second)
    if normalization == "fraction_sum":
        l1 = ((f_first - f_second).abs() * relevant).sum(dim=1)
        larger = torch.maximum((f_first * relevant).sum(dim=1), (f_second * relevant).sum(dim=1))
        silent = ~relevant.any(dim=1) | (larger < 1e-3)
        return torch.where(silent, torch.ones_like(l1), l1 / larger.clamp(min=1e-3))
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
    """2D bounds (G, K, 4) of each group's visible points per view, and (G, K) bool 'seen'.
    One min and one max scatter over all (view, point) rows; points outside any group or unseen in a
    view go to a dummy slot per view (no nonzero / gather of the members)."""
    num_views, num_points = screen.shape[0], screen.shape[1]
    member = (point_group >= 0)[None, :] & visible  # (K, N)
    slots = num_groups + 1  # per view: the groups, then the dummy slot
    view_offset = torch.arange(num_views, device=screen.device)[:, None] * slots
    slot = (torch.where(member, point_group[None, :], num_groups) + view_offset).reshape(-1, 1).expand(-1, 2)
    xy = screen.reshape(num_views * num_points, 2)
    lows = torch.full((num_views * slots, 2), float("inf"), device=screen.device).scatter_reduce_(0, slot, xy, "amin")
    highs = torch.full((num_views * slots, 2), float("-inf"), device=screen.device).scatter_reduce_(0, slot, xy, "amax")
    lows = lows.view(num_views, slots, 2)[:, :num_groups].transpose(0, 1)  # (G, K, 2)
    highs = highs.view(num_views, slots, 2)[:, :num_groups].transpose(0, 1)
    seen = torch.isfinite(lows[..., 0])
    return torch.cat([lows, highs], dim=2), seen


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
    similar = box_profile_distance(votes, sp_view_visible, first, second,
                                   config.box_profile_normalization) < config.box_profile_distance
    edges = first[similar].cpu().numpy(), second[similar].cpu().numpy()
    sp_group = _components(edges, votes.superpoint_label >= 0, num_sp)
    group_label = _group_labels(sp_group, votes.superpoint_label)
    score = _confirm(torch.as_tensor(sp_group, device=device)[point_sp], group_label, votes, views, config, device)
    if config.unconfirmed == "split":
        evidenced = box_profile_distance(votes, sp_view_visible, first[similar], second[similar],
                                         "fraction_sum") < config.box_profile_distance
        backed = edges[0][evidenced.cpu().numpy()], edges[1][evidenced.cpu().numpy()]
        sp_group, score = _fall_back(sp_group, score, backed, sizes.cpu().numpy(), point_sp, votes, views, config, device)
    if config.regroup_distance > 0 and (score < 0).sum() > 1:
        sp_view_count = torch.zeros((num_sp, visible.shape[0]), device=device).index_add_(0, point_sp, visible.T.float())
        sp_group, score = _regroup_fragments(sp_group, score, low, high, sp_view_count, point_sp, votes, views,
                                             config, device)
    keep = score >= 0
    instance_of_group = np.append(np.where(keep, np.cumsum(keep) - 1, -1), -1)  # the last entry serves group -1
    sp_group = instance_of_group[sp_group]
    score = score[keep]
    if config.slab_distance > 0 and len(score) > 1:
        sp_group, score = _join_slabs(sp_group, score, low, high, point_sp, votes, views, config, device)
    group_label = _group_labels(sp_group, votes.superpoint_label)
    point_instance = sp_group[superpoints.point_superpoint]
    # points relabelled one by one (vote.refine_points) leave their superpoint's instance: an instance's
    # points always carry its label
    in_instance = point_instance >= 0
    instance_label = np.append(group_label, -1)[np.where(in_instance, point_instance, len(group_label))]
    mismatch = in_instance & (votes.point_label != instance_label)
    point_instance = np.where(mismatch, -1, point_instance)
    return _without_empty(point_instance, group_label, score)


def _without_empty(point_instance: np.ndarray, group_label: np.ndarray, score: np.ndarray) -> InstanceGroups:
    """Instances left without points (every point relabelled by the vote's point-level options) are removed
    and the rest renumbered: an instance always has points."""
    alive = np.bincount(point_instance[point_instance >= 0], minlength=len(group_label)) > 0
    if not alive.all():
        new_id = np.append(np.cumsum(alive) - 1, -1)
        point_instance = new_id[np.where(point_instance >= 0, point_instance, len(alive))]
        group_label, score = group_label[alive], score[alive]
    return InstanceGroups(point_instance=point_instance.astype(np.int64), instance_label=group_label,
                          instance_score=score.astype(np.float32))


def _components(edges: tuple[np.ndarray, np.ndarray], member: np.ndarray, num_sp: int) -> np.ndarray:
    """(S,) dense group id of each member superpoint's connected component (-1 for non-members)."""
    graph = coo_matrix((np.ones(len(edges[0]), np.int8), edges), shape=(num_sp, num_sp))
    _, component = connected_components(graph, directed=False)
    component = np.where(member, component, -1)
    used, dense = np.unique(component, return_inverse=True)
    return (dense - int(len(used) > 0 and used[0] == -1)).reshape(-1).astype(np.int64)


def _group_labels(sp_group: np.ndarray, sp_label: np.ndarray) -> np.ndarray:
    num_groups = int(sp_group.max()) + 1 if len(sp_group) and sp_group.max() >= 0 else 0
    group_label = np.full(num_groups, -1, np.int64)
    group_label[sp_group[sp_group >= 0]] = sp_label[sp_group >= 0]
    return group_label


def _fall_back(sp_group: np.ndarray, score: np.ndarray, backed: tuple[np.ndarray, np.ndarray], sizes: np.ndarray,
               point_sp: torch.Tensor, votes: SemanticVotes, views: RenderedViews, config: InstanceConfig,
               device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Merged groups that match no box are not discarded: first their superpoints are regrouped using only
    the merges backed by box evidence (the authors' profile distance, with a view seeing both), then
    what still fails is split by the boxes of its part in the view that covers most of it."""
    for split in (_split_by_evidence, _split_by_boxes):
        failed = np.flatnonzero((score < 0) & (np.bincount(sp_group[sp_group >= 0], minlength=len(score)) > 1))
        if failed.size == 0:
            break
        in_failed = np.isin(sp_group, failed)
        pieces = split(sp_group, in_failed, backed, sizes, votes)
        new_group = np.where(in_failed, -1, sp_group)
        offset = len(score)
        new_group[in_failed] = offset + pieces[in_failed]
        valid = new_group >= 0
        used, dense = np.unique(new_group[valid], return_inverse=True)
        old_score = np.concatenate([score, np.full(int(pieces.max(initial=-1)) + 1, -2.0, np.float32)])[used]
        new_group[valid] = dense
        group_label = _group_labels(new_group, votes.superpoint_label)
        fresh = old_score == -2.0
        confirmed = _confirm(torch.as_tensor(new_group, device=device)[point_sp], group_label, votes, views, config, device)
        sp_group, score = new_group, np.where(fresh, confirmed, old_score).astype(np.float32)
    return sp_group, score


def _split_by_evidence(sp_group, in_failed, backed, sizes, votes) -> np.ndarray:
    """Components of the failed groups' superpoints over box-backed merges only (within one group)."""
    same = sp_group[backed[0]] == sp_group[backed[1]]
    keep = in_failed[backed[0]] & same
    return _components((backed[0][keep], backed[1][keep]), in_failed, len(sp_group))


def _split_by_boxes(sp_group, in_failed, backed, sizes, votes) -> np.ndarray:
    """Per failed group: the view whose boxes of its part hold most of its points; each superpoint goes to
    the box of that view holding most of it (those in none stay together)."""
    pieces = np.full(len(sp_group), -1, np.int64)
    fraction = votes.box_superpoint_fraction
    next_id = 0
    for group in np.unique(sp_group[in_failed]):  # one iteration per failed group
        members = np.flatnonzero(sp_group == group)
        label = votes.superpoint_label[members[0]]
        boxes = np.flatnonzero(votes.box_label == label)
        if boxes.size == 0:
            pieces[members] = next_id
            next_id += 1
            continue
        held = fraction[members][:, boxes] * sizes[members][:, None]  # (n, B) points inside each box
        views = votes.box_view[boxes]
        per_view = np.zeros((len(members), int(views.max()) + 1))
        np.maximum.at(per_view.T, views, held.T)
        best_view = int(per_view.sum(axis=0).argmax())
        in_view = boxes[views == best_view]
        share = fraction[members][:, in_view]
        choice = np.where(share.max(axis=1) > 0, share.argmax(axis=1), len(in_view))
        _, local = np.unique(choice, return_inverse=True)
        pieces[members] = next_id + local.reshape(-1)
        next_id += int(local.max()) + 1
    return pieces


def _regroup_fragments(sp_group: np.ndarray, score: np.ndarray, low: torch.Tensor, high: torch.Tensor,
                       sp_view_count: torch.Tensor, point_sp: torch.Tensor, votes: SemanticVotes,
                       views: RenderedViews, config: InstanceConfig, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Unconfirmed groups too small to match a box alone (a sparsely scanned far leg in pieces, gaps larger
    than adjacency_distance) are joined when within ``regroup_distance`` and seen alike by the boxes of
    their part (the authors' profile distance over group-level fractions, a view seeing both required);
    the joined groups are confirmed again."""
    failed = np.flatnonzero(score < 0)
    member = np.isin(sp_group, failed)
    local = np.full(len(score), -1, np.int64)
    local[failed] = np.arange(len(failed))
    sp_local = torch.as_tensor(np.where(member, local[np.maximum(sp_group, 0)], -1), device=device)
    inside = sp_local >= 0
    num = len(failed)
    index = sp_local[inside][:, None].expand(-1, 3)
    g_low = torch.full((num, 3), float("inf"), device=device).scatter_reduce(0, index, low[inside], "amin")
    g_high = torch.full((num, 3), float("-inf"), device=device).scatter_reduce(0, index, high[inside], "amax")
    gap = bounds_gap(g_low, g_high)
    label = torch.as_tensor(_group_labels(sp_group, votes.superpoint_label)[failed], device=device)
    near = torch.triu((gap <= config.regroup_distance) & (label[:, None] == label[None, :]), diagonal=1)
    first, second = torch.nonzero(near, as_tuple=True)
    if first.numel() == 0 or len(votes.box_label) == 0:
        return sp_group, score
    box_view = torch.as_tensor(votes.box_view, device=device)
    counts = sp_view_count[inside][:, box_view]  # (S', B) visible points in each box's view
    held = torch.as_tensor(votes.box_superpoint_fraction, device=device)[inside] * counts
    group_counts = torch.zeros((num, counts.shape[1]), device=device).index_add_(0, sp_local[inside], counts)
    fraction = torch.zeros_like(group_counts).index_add_(0, sp_local[inside], held) / group_counts.clamp(min=1.0)
    box_label = torch.as_tensor(votes.box_label, device=device)
    relevant = (group_counts[first] > 0) & (group_counts[second] > 0) & (box_label[None, :] == label[first][:, None])
    l1 = ((fraction[first] - fraction[second]).abs() * relevant).sum(dim=1)
    larger = torch.maximum((fraction[first] * relevant).sum(dim=1), (fraction[second] * relevant).sum(dim=1))
    alike = relevant.any(dim=1) & (larger >= 1e-3) & (l1 / larger.clamp(min=1e-3) < config.box_profile_distance)
    joined = _components((first[alike].cpu().numpy(), second[alike].cpu().numpy()), np.ones(num, bool), num)
    new_group = sp_group.copy()
    new_group[member] = len(score) + joined[local[sp_group[member]]]
    used, dense = np.unique(new_group[new_group >= 0], return_inverse=True)
    old_score = np.concatenate([score, np.full(int(joined.max()) + 1, -2.0, np.float32)])[used]
    new_group[new_group >= 0] = dense
    group_label = _group_labels(new_group, votes.superpoint_label)
    confirmed = _confirm(torch.as_tensor(new_group, device=device)[point_sp], group_label, votes, views, config, device)
    return new_group, np.where(old_score == -2.0, confirmed, old_score).astype(np.float32)


def _join_slabs(sp_group: np.ndarray, score: np.ndarray, low: torch.Tensor, high: torch.Tensor,
                point_sp: torch.Tensor, votes: SemanticVotes, views: RenderedViews, config: InstanceConfig,
                device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Join same-part instances within ``slab_distance`` when one box of their part matches the 2D bounds
    of their union in every view that sees both, and in at least one view (the two faces of a thick
    tabletop: never seen together, each matching the tabletop box alone). Two legs or two stacked
    drawers have their own boxes, so their union matches none."""
    num_groups = len(score)
    group_label = _group_labels(sp_group, votes.superpoint_label)
    sp_group_t = torch.as_tensor(sp_group, device=device)
    member = sp_group_t >= 0
    index = sp_group_t[member][:, None].expand(-1, 3)
    g_low = torch.full((num_groups, 3), float("inf"), device=device).scatter_reduce(0, index, low[member], "amin")
    g_high = torch.full((num_groups, 3), float("-inf"), device=device).scatter_reduce(0, index, high[member], "amax")
    gap = bounds_gap(g_low, g_high)
    label_t = torch.as_tensor(group_label, device=device)
    near = torch.triu((gap <= config.slab_distance) & (label_t[:, None] == label_t[None, :]), diagonal=1)
    first, second = torch.nonzero(near, as_tuple=True)
    if first.numel() == 0:
        return sp_group, score
    screen = torch.as_tensor(views.point_screen_xy, device=device)
    visible = torch.as_tensor(views.point_visible, device=device)
    bounds, seen = instance_view_bounds(sp_group_t[point_sp], num_groups, screen, visible)  # (G, K, 4), (G, K)
    inf = torch.tensor(float("inf"), device=device)
    lows = torch.minimum(torch.where(seen[first][..., None], bounds[first][..., :2], inf),
                         torch.where(seen[second][..., None], bounds[second][..., :2], inf))
    highs = torch.maximum(torch.where(seen[first][..., None], bounds[first][..., 2:], -inf),
                          torch.where(seen[second][..., None], bounds[second][..., 2:], -inf))
    union = torch.cat([lows, highs], dim=2)  # (pairs, K, 4)
    box_view = torch.as_tensor(votes.box_view, device=device)
    boxes = torch.as_tensor(votes.boxes, device=device)
    same_part = label_t[first][:, None] == torch.as_tensor(votes.box_label, device=device)[None, :]
    iou = _box_iou(union[:, box_view, :], boxes[None, :, :]) * same_part  # (pairs, B)
    per_view = torch.nn.functional.one_hot(box_view, seen.shape[1]).float()  # (B, K)
    matched = ((iou > config.min_box_iou).float() @ per_view) > 0  # (pairs, K): a box of that view matches
    either, both = seen[first] | seen[second], seen[first] & seen[second]
    join = (matched | ~both).all(dim=1) & (matched & either).any(dim=1)
    pairs = first[join].cpu().numpy(), second[join].cpu().numpy()
    merged = _components(pairs, np.ones(num_groups, bool), num_groups)
    new_score = np.full(int(merged.max()) + 1, -1.0, np.float32)
    np.maximum.at(new_score, merged, score)
    return np.where(sp_group >= 0, np.append(merged, -1)[sp_group], -1), new_score


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
