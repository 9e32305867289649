"""The loop voting and instance stages of the reference (the authors' ``bbox2seg.py`` structure): per-view box
filters, per-superpoint scores from ``set`` intersections, per-part union-find merges, per-view box IoU checks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from partslip_core.config import InstanceConfig, VoteConfig
from partslip_core.types import RenderedViews, ViewDetections

F32 = np.float32  # numpy float32 scalars round like torch's float32


# ------------------------------------------------------------------------------------------ voting

@dataclass
class KeptBox:
    """One detection that survived the whole-object and label filters."""

    view: int
    label: int
    box: np.ndarray  # (4,) float32 xyxy
    score: float
    mask: Optional[np.ndarray] = None  # (H, W) bool when the detector returned masks


@dataclass
class ReferenceVotes:
    """superpoint_scores: (S, P) float32; superpoint_label: (S,) int64; point_label: (N,) int64;
    boxes: kept boxes in view order; in_box_ratio[s][b]: float32 fraction of superpoint s's visible
    points inside kept box b, None when s has no visible point in b's view."""

    superpoint_scores: np.ndarray
    superpoint_label: np.ndarray
    point_label: np.ndarray
    boxes: list[KeptBox]
    in_box_ratio: list[list[Optional[np.float32]]]


def superpoint_lists(point_superpoint: np.ndarray, num_superpoints: int) -> list[list[int]]:
    """The authors' representation: one list of point indices per superpoint."""
    members: list[list[int]] = [[] for _ in range(num_superpoints)]
    for point, sp in enumerate(point_superpoint.tolist()):
        members[sp].append(point)
    return members


def intersection(first: Sequence[int], second: Sequence[int]) -> list[int]:
    """As in bbox2seg.py: the points of ``first`` that are in ``second`` (order unspecified)."""
    return list(set(first).intersection(second))


def inside_box(coords: np.ndarray, box: KeptBox) -> np.ndarray:
    """(n, 2) float32 screen coords -> (n,) bool: strictly inside the box, or on a mask pixel."""
    if box.mask is not None:
        height, width = box.mask.shape
        cols = np.clip(np.floor(coords[:, 0]).astype(np.int64), 0, width - 1)
        rows = np.clip(np.floor(coords[:, 1]).astype(np.int64), 0, height - 1)
        on_image = (coords[:, 0] >= 0) & (coords[:, 0] < width) & (coords[:, 1] >= 0) & (coords[:, 1] < height)
        return box.mask[rows, cols] & on_image
    x1, y1, x2, y2 = box.box
    x, y = coords[:, 0], coords[:, 1]
    return (x > x1) & (x < x2) & (y > y1) & (y < y2)


def valid_boxes(view: int, detections: ViewDetections, screen: np.ndarray, visible_pts: np.ndarray,
                num_parts: int, whole_object_fraction: float) -> list[KeptBox]:
    """The view's boxes minus whole-object boxes (>= fraction of the visible points inside) and bad labels."""
    kept = []
    for b in range(detections.num_boxes):
        box = KeptBox(view, int(detections.labels[b]), detections.boxes[b].astype(np.float32),
                      float(detections.scores[b]), None if detections.masks is None else detections.masks[b])
        inside = int(inside_box(screen[visible_pts], box).sum())
        if F32(inside) >= F32(whole_object_fraction) * F32(len(visible_pts)):
            continue  # a box around the whole object says nothing about parts
        if 0 <= box.label < num_parts:
            kept.append(box)
    return kept


def reference_vote(point_superpoint: np.ndarray, num_superpoints: int, views: RenderedViews,
                   detections: Sequence[ViewDetections], part_names: Sequence[str], config: VoteConfig,
                   superpoints: Optional[list[list[int]]] = None) -> ReferenceVotes:
    """Semantic voting, loop by loop (views x superpoints x boxes)."""
    superpoints = superpoints if superpoints is not None else superpoint_lists(point_superpoint, num_superpoints)
    num_parts = len(part_names)
    visible_cnt = np.zeros(num_superpoints, dtype=np.int64)
    inside_cnt = np.zeros((num_superpoints, num_parts), dtype=np.int64)
    ratios: list[list[Optional[np.float32]]] = [[] for _ in range(num_superpoints)]
    all_boxes: list[KeptBox] = []
    for view in range(views.num_views):
        screen = views.point_screen_xy[view]
        visible_pts = np.unique(views.pixel_point_index[view])
        visible_pts = visible_pts[visible_pts >= 0]
        visible_list = visible_pts.tolist()
        boxes = valid_boxes(view, detections[view], screen, visible_pts, num_parts, config.whole_object_fraction)
        all_boxes.extend(boxes)
        for k, sp in enumerate(superpoints):
            sp_visible = intersection(sp, visible_list)
            visible_cnt[k] += len(sp_visible)
            in_part = np.zeros((num_parts, len(sp_visible)), dtype=bool)
            coords = screen[sp_visible]
            for box in boxes:
                if not sp_visible:
                    ratios[k].append(None)
                    continue
                mask = inside_box(coords, box)
                in_part[box.label] |= mask
                ratios[k].append(F32(mask.sum()) / F32(len(sp_visible)))
            for part in range(num_parts):
                inside_cnt[k, part] += int(in_part[part].sum())
    scores = inside_cnt.astype(F32) / np.maximum(visible_cnt, 1).astype(F32)[:, None]
    small = [name in config.small_part_names for name in part_names]
    sp_label = np.array([choose_label(scores[k], small, config.score_threshold) for k in range(num_superpoints)],
                        dtype=np.int64).reshape(num_superpoints)
    return ReferenceVotes(superpoint_scores=scores, superpoint_label=sp_label, point_label=sp_label[point_superpoint],
                          boxes=all_boxes, in_box_ratio=ratios)


def choose_label(scores: np.ndarray, small: Sequence[bool], threshold: float, tie_tolerance: float = 1e-6) -> int:
    """Best part, or -1 below the threshold; a small part tied with the best (within the tolerance) wins."""
    best = max(scores.tolist())
    if not F32(best) >= F32(threshold):
        return -1
    cutoff = F32(best) - F32(tie_tolerance)
    label, label_value = -1, -math.inf
    for part, score in enumerate(scores):
        value = F32(score + F32(2.0)) if (small[part] and score >= cutoff) else F32(score)
        if value > label_value:  # strict: the first of equal values wins
            label, label_value = part, value
    return label


# ------------------------------------------------------------------------------------------ instances

@dataclass
class ReferenceInstances:
    """point_instance: (N,) int64 (-1 = none); instance_label: (I,) int64; instance_score: (I,) float32."""

    point_instance: np.ndarray
    instance_label: np.ndarray
    instance_score: np.ndarray


def find_root(parent: list[int], node: int) -> int:
    """Union-find root with path compression (iterative: long chains would overflow the recursion)."""
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:
        parent[node], node = root, parent[node]
    return root


def box_profile_distance(ratio_i: list, ratio_k: list, boxes: list[KeptBox], part: int,
                         normalization: str = "active_boxes") -> np.float32:
    """active_boxes (ours): mean |difference| of the two superpoints' in-box fractions over boxes of ``part``
    that see both and hold points of either; 0 when no box does (no evidence against merging).
    fraction_sum (the authors): sum |difference| over boxes of ``part`` seeing both / the larger fraction
    sum; 1 (never merge) when no box sees both or both sums are below 1e-3."""
    total, count = F32(0.0), 0
    sum_i, sum_k, seen = F32(0.0), F32(0.0), 0
    for b, box in enumerate(boxes):
        if box.label != part or ratio_i[b] is None or ratio_k[b] is None:
            continue
        seen += 1
        sum_i, sum_k = F32(sum_i + ratio_i[b]), F32(sum_k + ratio_k[b])
        if normalization == "fraction_sum" or ratio_i[b] > 0 or ratio_k[b] > 0:
            total = F32(total + abs(F32(ratio_i[b] - ratio_k[b])))
            count += 1
    if normalization == "fraction_sum":
        larger = max(sum_i, sum_k)
        return F32(1.0) if seen == 0 or larger < F32(1e-3) else F32(total / larger)
    return F32(total / F32(max(count, 1)))


def sp_bounds(xyz: np.ndarray, superpoints: list[list[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [xyz[sp].min(axis=0) for sp in superpoints], [xyz[sp].max(axis=0) for sp in superpoints]


def merge_part(part: int, votes: ReferenceVotes, superpoints: list[list[int]], bounds: tuple[list, list],
               config: InstanceConfig) -> list[list[int]]:
    """Union-find over same-part superpoint pairs that are adjacent, of comparable size and seen alike
    by the part's boxes; returns the merged groups as lists of superpoint ids."""
    low, high = bounds
    members = [s for s in range(len(superpoints)) if votes.superpoint_label[s] == part]
    parent = list(range(len(superpoints)))
    for index, i in enumerate(members):
        for k in members[:index]:
            gap = np.maximum(low[i] - high[k], low[k] - high[i]).max()
            if not gap <= F32(config.adjacency_distance):
                continue
            size_i, size_k = F32(len(superpoints[i])), F32(len(superpoints[k]))
            if not F32(max(size_i, size_k) / max(min(size_i, size_k), F32(1.0))) < F32(config.max_size_ratio):
                continue
            distance = box_profile_distance(votes.in_box_ratio[i], votes.in_box_ratio[k], votes.boxes, part,
                                            config.box_profile_normalization)
            if distance < F32(config.box_profile_distance):
                parent[find_root(parent, i)] = find_root(parent, k)
    groups: dict[int, list[int]] = {}
    for s in members:
        groups.setdefault(find_root(parent, s), []).append(s)
    return list(groups.values())


def box_iou(first: Sequence[np.float32], second: np.ndarray) -> np.float32:
    """IoU of two xyxy boxes in float32, operation for operation as partslip_core.instances._box_iou."""
    zero = F32(0.0)
    inter_w = max(F32(min(first[2], second[2]) - max(first[0], second[0])), zero)
    inter_h = max(F32(min(first[3], second[3]) - max(first[1], second[1])), zero)
    inter = F32(inter_w * inter_h)
    area_a = F32(max(F32(first[2] - first[0]), zero) * max(F32(first[3] - first[1]), zero))
    area_b = F32(max(F32(second[2] - second[0]), zero) * max(F32(second[3] - second[1]), zero))
    return F32(inter / max(F32(F32(area_a + area_b) - inter), F32(1e-9)))


def confirm_instance(points: list[int], part: int, votes: ReferenceVotes, views: RenderedViews,
                     visible_lists: list[list[int]], min_iou: float) -> float:
    """Best score of a kept box of ``part`` whose IoU with the instance's 2D bounds exceeds min_iou; -1 if none."""
    best = -1.0
    for view in range(views.num_views):
        seen = intersection(points, visible_lists[view])
        if not seen:
            continue
        coords = views.point_screen_xy[view][seen]
        bounds = (coords[:, 0].min(), coords[:, 1].min(), coords[:, 0].max(), coords[:, 1].max())
        for box in votes.boxes:
            if box.view == view and box.label == part and box_iou(bounds, box.box) > F32(min_iou):
                best = max(best, box.score)
    return best


def reference_instances(xyz: np.ndarray, point_superpoint: np.ndarray, votes: ReferenceVotes,
                        views: RenderedViews, part_names: Sequence[str], config: InstanceConfig,
                        superpoints: Optional[list[list[int]]] = None) -> ReferenceInstances:
    """Instances per part: union-find merge, then keep the groups confirmed by a box in some view."""
    num_sp = len(votes.superpoint_label)
    superpoints = superpoints if superpoints is not None else superpoint_lists(point_superpoint, num_sp)
    bounds = sp_bounds(np.asarray(xyz, np.float32), superpoints)
    visible_lists = [np.nonzero(views.point_visible[v])[0].tolist() for v in range(views.num_views)]
    point_instance = np.full(xyz.shape[0], -1, dtype=np.int64)
    labels, scores = [], []
    for part in range(len(part_names)):
        for group in merge_part(part, votes, superpoints, bounds, config):
            points = [p for s in group for p in superpoints[s]]
            score = confirm_instance(points, part, votes, views, visible_lists, config.min_box_iou)
            if score >= 0:
                point_instance[points] = len(labels)
                labels.append(part)
                scores.append(score)
    return ReferenceInstances(point_instance, np.asarray(labels, np.int64), np.asarray(scores, np.float32))


# ------------------------------------------------------------------------------------------ whole lifting

@dataclass
class ReferenceLift:
    views: Optional[RenderedViews]
    votes: ReferenceVotes
    instances: ReferenceInstances
    timings_ms: dict[str, float] = field(default_factory=dict)


def reference_lift(xyz: np.ndarray, point_superpoint: np.ndarray, num_superpoints: int, views: RenderedViews,
                   detections: Sequence[ViewDetections], part_names: Sequence[str], vote_config: VoteConfig,
                   instance_config: InstanceConfig) -> ReferenceLift:
    """Vote + instances on given views and superpoints, timed per stage (ms)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    superpoints = superpoint_lists(point_superpoint, num_superpoints)
    votes = reference_vote(point_superpoint, num_superpoints, views, detections, part_names, vote_config, superpoints)
    timings["vote"] = (time.perf_counter() - start) * 1000.0
    start = time.perf_counter()
    instances = reference_instances(xyz, point_superpoint, votes, views, part_names, instance_config, superpoints)
    timings["instances"] = (time.perf_counter() - start) * 1000.0
    return ReferenceLift(views=None, votes=votes, instances=instances, timings_ms=timings)
