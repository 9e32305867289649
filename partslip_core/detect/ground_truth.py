"""ProjectedGroundTruthDetector: boxes from known part labels. A TEST AND EVALUATION TOOL, never a default.

It answers "how well do the 3D lifting stages (superpoints, voting, instances) do when the 2D
detector is perfect, or degraded in a controlled way?". It reads the rendered index maps (which a
real detector never sees) and the ground-truth per-point labels of the cloud being segmented, and
returns one box per visible part instance per view, optionally degraded by the box-noise model
(``box_noise.py``: jittered edges, dropped boxes, false positives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from partslip_core.detect.box_noise import BoxNoise, perturb_view
from partslip_core.types import RenderedViews, ViewDetections


@dataclass
class GroundTruthNoise(BoxNoise):
    """Controlled degradation: the box-noise model of ``box_noise.BoxNoise`` (jitter: each edge moves
    by U(-jitter, jitter) x box size; drop_probability per box; false_positives_per_view: exact count
    of random-label boxes inside the object's 2D extent), plus what only this detector can do."""

    min_pixels: int = 16  # instance masks smaller than this in a view produce no box
    masks: bool = False  # also return each instance's exact pixel mask (SAM-style output)


class ProjectedGroundTruthDetector:
    """Boxes = 2D bounds of each ground-truth part instance's pixels in each rendered view (test/eval only).

    point_label: (N,) int64 part index per point of the cloud passed to ``segment`` (-1 = none);
    point_instance: (N,) int64 instance id per point (-1 = none). Labels index the part_names given
    to ``detect``.
    """

    name = "ground_truth"

    def __init__(self, point_label: np.ndarray, point_instance: np.ndarray,
                 noise: GroundTruthNoise | None = None, seed: int = 0) -> None:
        self.point_label = np.asarray(point_label, dtype=np.int64).reshape(-1)
        self.point_instance = np.asarray(point_instance, dtype=np.int64).reshape(-1)
        if self.point_label.shape != self.point_instance.shape:
            raise ValueError(f"point_label {self.point_label.shape} and point_instance "
                             f"{self.point_instance.shape} must have the same shape")
        self.noise = noise or GroundTruthNoise()
        self.rng = np.random.default_rng(seed)

    def detect(self, views: RenderedViews, part_names: Sequence[str]) -> list[ViewDetections]:
        num_points = self.point_label.shape[0]
        if views.point_visible.shape[1] != num_points:
            raise ValueError(f"the detector holds labels for {num_points} points but the views show "
                             f"{views.point_visible.shape[1]}")
        valid = (self.point_label >= 0) & (self.point_instance >= 0) & (self.point_label < len(part_names))
        # Compact (label, instance) pairs into one key per ground-truth instance.
        keys = np.where(valid, self.point_label * (self.point_instance.max(initial=0) + 1) + self.point_instance, -1)
        unique_keys, point_group = np.unique(keys, return_inverse=True)
        has_none = unique_keys[0] == -1 if len(unique_keys) else False
        group_label = np.where(unique_keys >= 0, unique_keys // (self.point_instance.max(initial=0) + 1), -1)
        point_group = point_group - int(has_none)  # -1 for points without an instance
        return [self._detect_view(views.pixel_point_index[k], point_group, group_label[int(has_none):], len(part_names))
                for k in range(views.num_views)]

    def _detect_view(self, index_map: np.ndarray, point_group: np.ndarray, group_label: np.ndarray,
                     num_parts: int) -> ViewDetections:
        height, width = index_map.shape
        rows, cols = np.nonzero(index_map >= 0)
        groups = point_group[index_map[rows, cols]]
        keep = groups >= 0
        rows, cols, groups = rows[keep], cols[keep], groups[keep]
        num_groups = len(group_label)
        pixels = np.bincount(groups, minlength=num_groups)
        x1, y1, x2, y2 = _group_bounds(groups, cols, rows, num_groups, width, height)
        present = np.nonzero(pixels >= self.noise.min_pixels)[0]
        boxes = np.stack([x1, y1, x2, y2], axis=1)[present]
        scores = np.clip(1.0 - self.rng.random(len(present)) * 0.2, 0.0, 1.0).astype(np.float32)
        masks = None
        if self.noise.masks:
            pixel_group = np.full(height * width, -1, np.int64)
            pixel_group[rows * width + cols] = groups
            masks = pixel_group.reshape(1, height, width) == present[:, None, None]
        exact = ViewDetections(boxes=boxes, labels=group_label[present], scores=scores, masks=masks)
        return perturb_view(exact, index_map, num_parts, self.noise, self.rng)


def _group_bounds(groups: np.ndarray, cols: np.ndarray, rows: np.ndarray, num_groups: int, width: int,
                  height: int) -> tuple[np.ndarray, ...]:
    """Pixel bounds (x1, y1, x2, y2), each (G,) float32, of each group; empty groups get x1 > x2.

    Sort once and reduce per run of equal groups (reduceat): much faster than ufunc.at on
    hundreds of thousands of pixels.
    """
    x1 = np.full(num_groups, width, np.float32)
    y1 = np.full(num_groups, height, np.float32)
    x2 = np.zeros(num_groups, np.float32)
    y2 = np.zeros(num_groups, np.float32)
    if len(groups) == 0:
        return x1, y1, x2, y2
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    present = sorted_groups[starts]
    x1[present] = np.minimum.reduceat(cols[order], starts)
    y1[present] = np.minimum.reduceat(rows[order], starts)
    x2[present] = np.maximum.reduceat(cols[order], starts) + 1
    y2[present] = np.maximum.reduceat(rows[order], starts) + 1
    return x1, y1, x2, y2
