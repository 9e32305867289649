"""The box-noise model used to measure how the lifting survives a real detector (shared/docs/partslip.md).

A real grounding detector (GLIP, Grounding DINO, OWLv2) misses parts in many views, jitters box
edges and adds false positives. ``perturb_detections`` applies exactly that, seeded, to ANY
detector's per-view output (the ground-truth projection detector uses it; so can a benchmark on a
real detector's boxes):

- jitter j: each box edge moves by U(-j, j) x the box size along its axis (x edges by the width,
  y edges by the height); the corners are re-sorted and clipped to the image;
- drop probability p: each box (and its mask) is removed with probability p;
- n false positives per view: boxes with a uniformly random part label whose two corners are
  uniform inside the object's 2D extent in that view (the bounds of its covered pixels); their
  score is U(0.5, 1), their mask (when the view carries masks) is the rectangle on the object.

The issue-8 model (``BoxNoise.issue_model()``) is j = 0.1, p = 0.3, n = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from partslip_core.types import RenderedViews, ViewDetections


@dataclass
class BoxNoise:
    """jitter: edge displacement as a fraction of the box size (uniform); drop_probability: per box;
    false_positives_per_view: exact number of random-label boxes added per view (inside the object)."""

    jitter: float = 0.0
    drop_probability: float = 0.0
    false_positives_per_view: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.jitter) <= 1.0:
            raise ValueError(f"jitter must be in [0, 1]; got {self.jitter}")
        if not 0.0 <= float(self.drop_probability) <= 1.0:
            raise ValueError(f"drop_probability must be in [0, 1]; got {self.drop_probability}")
        count = float(self.false_positives_per_view)
        if count < 0 or count != int(count):
            raise ValueError(f"false_positives_per_view must be a whole number >= 0; got {self.false_positives_per_view}")
        self.false_positives_per_view = int(count)

    @property
    def active(self) -> bool:
        return self.jitter > 0 or self.drop_probability > 0 or self.false_positives_per_view > 0

    @classmethod
    def issue_model(cls) -> "BoxNoise":
        """Jitter 0.1, drop 0.3, one false positive per view: the robustness figures in docs/quality.md."""
        return cls(jitter=0.1, drop_probability=0.3, false_positives_per_view=1)


def object_extent(index_map: np.ndarray) -> Optional[np.ndarray]:
    """(4,) float32 xyxy bounds of the covered pixels of one view's (H, W) index map; None if empty."""
    rows = np.flatnonzero((index_map >= 0).any(axis=1))
    cols = np.flatnonzero((index_map >= 0).any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def jitter_boxes(boxes: np.ndarray, jitter: float, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(M, 4) xyxy -> (M, 4): each edge moved by U(-jitter, jitter) x the box size, re-sorted, clipped."""
    if jitter <= 0 or len(boxes) == 0:
        return boxes.astype(np.float32)
    size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)  # (w, h, w, h)
    moved = boxes + rng.uniform(-jitter, jitter, boxes.shape) * size
    moved = np.concatenate([np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], axis=1)
    return np.clip(moved, 0, [width, height, width, height]).astype(np.float32)


def false_positive_boxes(extent: Optional[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) boxes with both corners uniform inside ``extent`` (xyxy); none without an extent."""
    if extent is None or count == 0:
        return np.zeros((0, 4), np.float32)
    corners = extent[:2] + rng.random((count, 2, 2)) * (extent[2:] - extent[:2])
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(np.float32)


def _rectangle_masks(boxes: np.ndarray, on_object: np.ndarray) -> np.ndarray:
    height, width = on_object.shape
    cols, rows = np.arange(width), np.arange(height)
    inside = ((cols[None, None, :] >= boxes[:, None, None, 0]) & (cols[None, None, :] < boxes[:, None, None, 2])
              & (rows[None, :, None] >= boxes[:, None, None, 1]) & (rows[None, :, None] < boxes[:, None, None, 3]))
    return inside & on_object[None]


def perturb_view(detections: ViewDetections, index_map: np.ndarray, num_parts: int, noise: BoxNoise,
                 rng: np.random.Generator) -> ViewDetections:
    """One view's detections under ``noise`` (drop, then jitter, then add false positives)."""
    height, width = index_map.shape
    kept = rng.random(detections.num_boxes) >= noise.drop_probability
    boxes = jitter_boxes(np.asarray(detections.boxes, np.float32)[kept], noise.jitter, rng, width, height)
    count = noise.false_positives_per_view
    extent = object_extent(index_map) if count else None
    false_boxes = false_positive_boxes(extent, count, rng)
    num_false = len(false_boxes)
    labels = np.concatenate([np.asarray(detections.labels, np.int64)[kept], rng.integers(0, num_parts, num_false)])
    scores = np.concatenate([np.asarray(detections.scores, np.float32)[kept],
                             (0.5 + 0.5 * rng.random(num_false)).astype(np.float32)])
    masks = None
    if detections.masks is not None:
        masks = np.concatenate([np.asarray(detections.masks, bool)[kept],
                                _rectangle_masks(false_boxes, index_map >= 0)])
    return ViewDetections(boxes=np.concatenate([boxes, false_boxes]).astype(np.float32), labels=labels,
                          scores=scores.astype(np.float32), masks=masks)


def perturb_detections(detections: Sequence[ViewDetections], views: RenderedViews, num_parts: int,
                       noise: BoxNoise, seed: int | np.random.Generator = 0) -> list[ViewDetections]:
    """Every view's detections under ``noise``; the same seed gives the same boxes."""
    if len(detections) != views.num_views:
        raise ValueError(f"{len(detections)} detection lists for {views.num_views} views")
    if num_parts < 1:
        raise ValueError("num_parts must be >= 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if not noise.active:
        return list(detections)
    return [perturb_view(dets, views.pixel_point_index[k], num_parts, noise, rng) for k, dets in enumerate(detections)]
