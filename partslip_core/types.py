"""Typed inputs and outputs of the pipeline stages.

Shapes use N = points, K = views, H x W = image size, M = boxes in one view, S = superpoints,
P = part names, I = instances. Arrays are numpy unless a field says torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from partslip_core.debug import UnlabelledDiagnosis


class InputError(ValueError):
    """The input cloud or part list cannot be segmented (empty, non-finite, wrong shape ...)."""


@dataclass
class PointCloud:
    """An object cloud in any frame and unit.

    xyz: (N, 3) float32. rgb: (N, 3) float32 in [0, 1] or None. normals: (N, 3) float32 or None.
    intensity: (N,) float32 in the sensor's own units (lidar XYZI) or None; used to shade clouds without rgb.
    fields: extra per-point fields, name -> (N,) numeric array in this cloud's point order (e.g. ``gt_label``);
    handed to the detector (``Detector.detect(..., point_fields=)``) for backends that read them.
    Use ``PointCloud.from_arrays`` to validate and convert raw arrays (rgb 0..255 accepted).
    """

    xyz: np.ndarray
    rgb: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None
    intensity: Optional[np.ndarray] = None
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @staticmethod
    def from_arrays(xyz: np.ndarray, rgb: Optional[np.ndarray] = None, normals: Optional[np.ndarray] = None,
                    intensity: Optional[np.ndarray] = None,
                    fields: Optional[dict[str, np.ndarray]] = None) -> "PointCloud":
        """Validate shapes and values; raises InputError with the reason."""
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise InputError(f"xyz must have shape (N, 3); got {xyz.shape}")
        if xyz.shape[0] == 0:
            raise InputError("the cloud is empty (0 points)")
        if not np.issubdtype(xyz.dtype, np.number):
            raise InputError(f"xyz must be numeric; got dtype {xyz.dtype}")
        xyz = xyz.astype(np.float32, copy=False)
        if not np.isfinite(xyz).all():
            bad = int((~np.isfinite(xyz).all(axis=1)).sum())
            raise InputError(f"the cloud has {bad} non-finite (NaN/Inf) point(s); filter them first "
                             "(partslip_core.finite_points does this)")
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.shape != xyz.shape:
                raise InputError(f"rgb must have the same shape as xyz {xyz.shape}; got {rgb.shape}")
            rgb = rgb.astype(np.float32)
            if not np.isfinite(rgb).all():
                raise InputError("rgb has non-finite values")
            if rgb.size and rgb.max() > 1.0:
                rgb = rgb / 255.0
            rgb = np.clip(rgb, 0.0, 1.0)
        if normals is not None:
            normals = np.asarray(normals, dtype=np.float32)
            if normals.shape != xyz.shape:
                raise InputError(f"normals must have the same shape as xyz {xyz.shape}; got {normals.shape}")
            if not np.isfinite(normals).all():
                raise InputError("normals have non-finite values")
        if intensity is not None:
            intensity = np.asarray(intensity)
            if intensity.shape not in ((xyz.shape[0],), (xyz.shape[0], 1)) or not np.issubdtype(intensity.dtype,
                                                                                                 np.number):
                raise InputError(f"intensity must be numeric with shape ({xyz.shape[0]},); got {intensity.dtype} "
                                 f"{intensity.shape}")
            intensity = intensity.reshape(-1).astype(np.float32)
            if not np.isfinite(intensity).all():
                raise InputError("intensity has non-finite values")
        return PointCloud(xyz=xyz, rgb=rgb, normals=normals, intensity=intensity,
                          fields=_check_fields(fields or {}, xyz.shape[0]))


def _check_fields(fields: dict[str, np.ndarray], num_points: int) -> dict[str, np.ndarray]:
    """Per-point fields: each numeric with shape (N,) (or (N, 1)) and finite; dtypes are kept (labels stay ints)."""
    checked = {}
    for name, values in fields.items():
        values = np.asarray(values)
        if values.shape not in ((num_points,), (num_points, 1)) or not np.issubdtype(values.dtype, np.number):
            raise InputError(f"point field {name!r} must be numeric with shape ({num_points},); got {values.dtype} "
                             f"{values.shape}")
        values = values.reshape(-1)
        if not np.isfinite(values).all():
            raise InputError(f"point field {name!r} has non-finite values")
        checked[str(name)] = values
    return checked


@dataclass
class NormalizedCloud:
    """The cloud in the renderer's canonical frame: Y up, centered at its mean, farthest point at radius 1.

    xyz: (N, 3) float32 normalized coordinates; rotation: (3, 3) float32 input -> canonical;
    center: (3,) float32 (input frame); scale: float (input units per normalized unit).
    ``to_input_frame`` maps canonical coordinates (or directions) back.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    normals: Optional[np.ndarray]
    center: np.ndarray
    scale: float
    rotation: np.ndarray

    def to_input_frame(self, canonical_xyz: np.ndarray) -> np.ndarray:
        return (canonical_xyz * self.scale) @ self.rotation + self.center

    def direction_to_input_frame(self, canonical_dirs: np.ndarray) -> np.ndarray:
        return canonical_dirs @ self.rotation


@dataclass
class RenderedViews:
    """K rendered views of one cloud.

    images: (K, H, W, 3) uint8 RGB. pixel_point_index: (K, H, W) int64 index of the point seen at
    each pixel, -1 = background. point_screen_xy: (K, N, 2) float32 screen coordinates (x right,
    y down, pixels; same convention as pytorch3d's transform_points_screen). point_visible: (K, N)
    bool, True where the point owns at least one pixel. view_angles: (K, 2) float32 (elev, azim).
    """

    images: np.ndarray
    pixel_point_index: np.ndarray
    point_screen_xy: np.ndarray
    point_visible: np.ndarray
    view_angles: np.ndarray
    # derived from pixel_point_index, see covered_pixels(); not an init field, so dataclasses.replace drops it
    _covered_pixels: Optional[np.ndarray] = field(default=None, init=False, repr=False, compare=False)

    def covered_pixels(self) -> np.ndarray:
        """(P,) int64 ascending flat indices into ``pixel_point_index`` (K x H x W) of the pixels that show a
        point. Computed once (render_views hands over its z-buffer's list, so it is free there); do not
        modify ``pixel_point_index`` in place afterwards."""
        if self._covered_pixels is None:
            self._covered_pixels = np.flatnonzero(self.pixel_point_index.reshape(-1) >= 0)
        return self._covered_pixels

    def cache_covered_pixels(self, pixels: np.ndarray) -> None:
        """Set what ``covered_pixels`` returns (the renderer: it found them anyway)."""
        self._covered_pixels = np.asarray(pixels, dtype=np.int64).reshape(-1)

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


@dataclass
class ViewDetections:
    """Detections in one rendered view.

    boxes: (M, 4) float32 (x1, y1, x2, y2) in pixels; labels: (M,) int64 index into part_names;
    scores: (M,) float32; masks: optional (M, H, W) bool for backends that segment (SAM-style),
    used by voting instead of the box when present.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    masks: Optional[np.ndarray] = None

    @staticmethod
    def empty() -> "ViewDetections":
        return ViewDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.scores)):
            raise ValueError(f"boxes/labels/scores lengths differ: {len(self.boxes)}, {len(self.labels)}, {len(self.scores)}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.ndim != 3 or self.masks.shape[0] != len(self.boxes):
                raise ValueError(f"masks must have shape (M, H, W) with M={len(self.boxes)}; got {self.masks.shape}")

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Superpoints:
    """An over-segmentation. point_superpoint: (N,) int64 in [0, S); num_superpoints: S."""

    point_superpoint: np.ndarray
    num_superpoints: int


@dataclass
class SemanticVotes:
    """Output of voting.

    superpoint_scores: (S, P) float32 fraction of each superpoint's visible points inside boxes of
    each part; superpoint_label: (S,) int64 (-1 = unlabeled); point_label: (N,) int64;
    box_superpoint_fraction: (S, B) float32 per-box "fraction inside" over all kept boxes B;
    box_view: (B,) int64, box_label: (B,) int64, boxes: (B, 4) float32, box_score: (B,) float32 —
    the kept boxes (whole-object boxes removed), in view order.
    collected_box_label: (B0,) int64 labels of the boxes that passed the whole-object check, before
    re-estimation removed any (None when not computed; partslip_core.debug tells the two filters apart).
    """

    superpoint_scores: np.ndarray
    superpoint_label: np.ndarray
    point_label: np.ndarray
    box_superpoint_fraction: np.ndarray
    box_view: np.ndarray
    box_label: np.ndarray
    boxes: np.ndarray
    box_score: np.ndarray
    collected_box_label: Optional[np.ndarray] = None
    box_index: Optional[np.ndarray] = None  # (B,) int64 each kept box's index in its view's detections


@dataclass
class PartInstance:
    """One part instance, in the input frame.

    point_indices: (n,) int64 into the input cloud. centroid: (3,). aabb_min/aabb_max: (3,).
    obb_center: (3,), obb_rotation: (3, 3) columns = box axes (longest first), obb_extent: (3,) full
    side lengths. principal_axis: (3,) unit vector along the longest box axis (a grasp/approach hint).
    """

    instance_id: int
    label: int
    label_name: str
    score: float
    point_indices: np.ndarray
    centroid: np.ndarray
    aabb_min: np.ndarray
    aabb_max: np.ndarray
    obb_center: np.ndarray
    obb_rotation: np.ndarray
    obb_extent: np.ndarray
    principal_axis: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.point_indices.shape[0])

    def to_dict(self) -> dict:
        return {
            "instance_id": self.instance_id, "label": self.label, "label_name": self.label_name,
            "score": round(float(self.score), 4), "num_points": self.num_points,
            "centroid": self.centroid.tolist(), "aabb_min": self.aabb_min.tolist(), "aabb_max": self.aabb_max.tolist(),
            "obb_center": self.obb_center.tolist(), "obb_rotation": self.obb_rotation.tolist(),
            "obb_extent": self.obb_extent.tolist(), "principal_axis": self.principal_axis.tolist(),
        }


@dataclass
class PartSegmentationResult:
    """What ``segment`` returns, in the input frame and point order.

    point_label: (N,) int64 index into part_names, -1 = unlabeled. point_instance: (N,) int64
    instance id, -1 = none. point_score: (N,) float32 the winning part's vote score (0 where
    unlabeled). timings_ms: stage name -> milliseconds.
    """

    part_names: list[str]
    point_label: np.ndarray
    point_instance: np.ndarray
    point_score: np.ndarray
    instances: list[PartInstance]
    timings_ms: dict[str, float] = field(default_factory=dict)
    num_superpoints: int = 0
    num_boxes: int = 0
    views: Optional[RenderedViews] = None  # kept only when segment(..., keep_views=True)
    detections: Optional[list[ViewDetections]] = None
    kept_boxes: Optional[list[np.ndarray]] = None  # per view (M,) bool: the box survived voting's filters
    point_superpoint: Optional[np.ndarray] = None  # (N,) int64 superpoint id per point (debug views)
    diagnosis: Optional["UnlabelledDiagnosis"] = None  # why points ended unlabelled (partslip_core.debug)

    def summary(self) -> dict:
        counts = np.bincount(self.point_label[self.point_label >= 0], minlength=len(self.part_names))
        return {
            "part_names": self.part_names,
            "num_points": int(self.point_label.shape[0]),
            "points_per_part": {name: int(c) for name, c in zip(self.part_names, counts)},
            "unlabeled_points": int((self.point_label < 0).sum()),
            "num_superpoints": self.num_superpoints,
            "num_boxes": self.num_boxes,
            "instances": [inst.to_dict() for inst in self.instances],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            **({"diagnosis": self.diagnosis.to_dict()} if self.diagnosis is not None else {}),
        }


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable CUDA request fails with a clear message."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                           f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return resolved
