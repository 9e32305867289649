"""ProjectedGroundTruthDetector: boxes from known part labels. A TEST AND EVALUATION TOOL, never a default.

It answers "how well do the 3D lifting stages (superpoints, voting, instances) do when the 2D
detector is perfect, or degraded in a controlled way?". It reads the rendered index maps (which a
real detector never sees) and the ground-truth per-point labels of the cloud being segmented, and
returns one box per visible part instance per view, optionally degraded by the box-noise model
(``box_noise.py``: jittered edges, dropped boxes, false positives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from partslip_core.detect.base import DetectorError
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
    to ``detect``. Without them (the registry's ``ground_truth`` backend) each ``detect`` call reads them
    from its ``point_fields``: the first pair of ``FIELD_NAMES`` the cloud carries (the ROS node's
    ``gt_label``/``gt_instance`` fields, or the ``label``/``instance`` vertex properties of the PLY files
    this project writes), with a fresh random stream from ``seed``, so a run's boxes depend on its cloud only.
    """

    name = "ground_truth"
    FIELD_NAMES = (("gt_label", "gt_instance"), ("label", "instance"))  # (label, instance) pairs, first found wins

    def __init__(self, point_label: np.ndarray | None = None, point_instance: np.ndarray | None = None,
                 noise: GroundTruthNoise | None = None, seed: int = 0) -> None:
        if (point_label is None) != (point_instance is None):
            raise ValueError("give both point_label and point_instance, or neither (read from point_fields)")
        self.point_label = self.point_instance = None
        if point_label is not None:
            self.point_label, self.point_instance = _label_pair(point_label, point_instance)
        self.noise = noise or GroundTruthNoise()
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def detect(self, views: RenderedViews, part_names: Sequence[str],
               point_fields: Mapping[str, np.ndarray] | None = None) -> list[ViewDetections]:
        if self.point_label is not None:
            return self._detect(views, part_names, self.point_label, self.point_instance, self.rng)
        fields = point_fields or {}
        pair = next((pair for pair in self.FIELD_NAMES if all(name in fields for name in pair)), None)
        if pair is None:
            raise DetectorError("the 'ground_truth' detector needs per-point ground truth: point fields "
                                f"{' or '.join('/'.join(pair) for pair in self.FIELD_NAMES)}; got "
                                f"{sorted(fields) or 'none'}")
        label, instance = _label_pair(fields[pair[0]], fields[pair[1]])
        return self._detect(views, part_names, label, instance, np.random.default_rng(self.seed))

    def _detect(self, views: RenderedViews, part_names: Sequence[str], point_label: np.ndarray,
                point_instance: np.ndarray, rng: np.random.Generator) -> list[ViewDetections]:
        num_points = point_label.shape[0]
        if views.point_visible.shape[1] != num_points:
            raise ValueError(f"the detector holds labels for {num_points} points but the views show "
                             f"{views.point_visible.shape[1]}")
        valid = (point_label >= 0) & (point_instance >= 0) & (point_label < len(part_names))
        # Compact (label, instance) pairs into one key per ground-truth instance.
        keys = np.where(valid, point_label * (point_instance.max(initial=0) + 1) + point_instance, -1)
        unique_keys, point_group = np.unique(keys, return_inverse=True)
        has_none = unique_keys[0] == -1 if len(unique_keys) else False
        group_label = np.where(unique_keys >= 0, unique_keys // (point_instance.max(initial=0) + 1), -1)
        point_group = point_group.reshape(-1) - int(has_none)  # -1 for points without an instance
        group_label = group_label[int(has_none):]
        pixels = _instance_pixels(views.pixel_point_index, views.covered_pixels(), point_group, len(group_label))
        return [self._detect_view(views.pixel_point_index[k], pixels, k, group_label, len(part_names), rng)
                for k in range(views.num_views)]

    def _detect_view(self, index_map: np.ndarray, pixels: "InstancePixels", view: int, group_label: np.ndarray,
                     num_parts: int, rng: np.random.Generator) -> ViewDetections:
        height, width = index_map.shape
        present = np.nonzero(pixels.count[view] >= self.noise.min_pixels)[0]
        boxes = pixels.boxes[view, present]
        scores = np.clip(1.0 - rng.random(len(present)) * 0.2, 0.0, 1.0).astype(np.float32)
        masks = None
        if self.noise.masks:
            pixel_group = np.full(height * width, -1, np.int64)
            first, last = pixels.view_start[view], pixels.view_start[view + 1]
            pixel_group[pixels.pixel[first:last] - view * height * width] = pixels.group[first:last]
            masks = pixel_group.reshape(1, height, width) == present[:, None, None]
        exact = ViewDetections(boxes=boxes, labels=group_label[present], scores=scores, masks=masks)
        return perturb_view(exact, index_map, num_parts, self.noise, rng)


def _label_pair(point_label, point_instance) -> tuple[np.ndarray, np.ndarray]:
    label = np.asarray(point_label, dtype=np.int64).reshape(-1)
    instance = np.asarray(point_instance, dtype=np.int64).reshape(-1)
    if label.shape != instance.shape:
        raise ValueError(f"point_label {label.shape} and point_instance {instance.shape} must have the same shape")
    return label, instance


@dataclass
class InstancePixels:
    """The covered pixels of every view that show a ground-truth instance, and per (view, instance) bounds.

    pixel: (P,) int64 flat index into the (K, H, W) index maps, ascending; group: (P,) int64 instance;
    view_start: (K + 1,) int64, view k's pixels are [view_start[k], view_start[k + 1]); count: (K, G) int64
    pixels per instance; boxes: (K, G, 4) float32 (x1, y1, x2, y2) pixel bounds, x1 > x2 for an absent one.
    """

    pixel: np.ndarray
    group: np.ndarray
    view_start: np.ndarray
    count: np.ndarray
    boxes: np.ndarray


def _instance_pixels(index_maps: np.ndarray, covered: np.ndarray, point_group: np.ndarray,
                     num_groups: int) -> InstancePixels:
    """All views at once, from the covered pixels (``RenderedViews.covered_pixels``: the renderer's list, or
    one 1-D scan; a 2-D np.nonzero per view took half of this detector's time). Bounds come from
    per-(view, instance) occupancy of rows and columns (first and last occupied one): linear in the
    pixels, no sort (the per-view argsort cost more than everything else left)."""
    num_views, height, width = index_maps.shape
    pixel = covered
    group = point_group[index_maps.reshape(-1)[pixel]]
    keep = group >= 0
    pixel, group = pixel[keep], group[keep]
    global_row = pixel // width  # view * H + row
    col = pixel - global_row * width
    view = global_row // height
    view_group = view * num_groups + group
    count = np.bincount(view_group, minlength=num_views * num_groups).reshape(num_views, num_groups)
    rows_seen = np.zeros((num_groups, num_views * height), bool)
    rows_seen.reshape(-1)[group * (num_views * height) + global_row] = True
    rows_seen = rows_seen.reshape(num_groups, num_views, height).transpose(1, 0, 2)  # (K, G, H)
    cols_seen = np.zeros((num_views * num_groups, width), bool)
    cols_seen.reshape(-1)[view_group * width + col] = True
    cols_seen = cols_seen.reshape(num_views, num_groups, width)
    boxes = np.stack([cols_seen.argmax(axis=2), rows_seen.argmax(axis=2),
                      width - cols_seen[..., ::-1].argmax(axis=2), height - rows_seen[..., ::-1].argmax(axis=2)],
                     axis=2).astype(np.float32)
    boxes[count == 0] = (width, height, 0, 0)
    view_start = np.searchsorted(pixel, np.arange(num_views + 1) * (height * width))
    return InstancePixels(pixel=pixel, group=group, view_start=view_start, count=count, boxes=boxes)
