"""Training images: each labelled shape rendered by the pipeline's own renderer, with a box per visible part instance.

A detector tuned here sees at run time exactly what ``segment()`` renders (same normalization, cameras,
point splatting, background), so the training images come from the same code: ``normalize`` then
``render_views``. Boxes are the 2D bounds of each part instance's pixels in each view, taken from the
renderer's pixel -> point index map by the ground-truth projection detector (the tool the evaluation
uses), so training boxes and the boxes the lifting stages were validated with are the same definition.

Augmentation (per shape): the K reference views plus ``extra_views`` random (elevation, azimuth) views,
a random point radius per variant, colour jitter (per-channel gain and offset, sometimes grey), and
``partial_variants`` single-sensor partial scans (hidden-point removal from a random viewpoint, then
re-normalized, as a robot's scan would be).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from partslip_core.config import PipelineConfig, RenderConfig
from partslip_core.detect.ground_truth import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.finetune.data import LabeledShape
from partslip_core.normalize import normalize
from partslip_core.render import render_views
from partslip_core.types import PointCloud


@dataclass
class AugmentConfig:
    """How many and which extra renders each training shape gets."""

    extra_views: int = 10  # random (elevation, azimuth) views per variant, on top of the K reference views
    elevation_range: tuple[float, float] = (-30.0, 60.0)  # degrees
    radius_scale: tuple[float, float] = (0.7, 1.6)  # point radius multiplier per variant (reference = 1)
    colour_jitter: float = 0.15  # per-channel gain in 1 +- this, offset in +- this / 2
    grey_probability: float = 0.1  # render a variant without colour (uncoloured scans)
    partial_variants: int = 1  # single-sensor partial scans per shape (0 = complete shapes only)
    min_box_pixels: int = 16  # instances covering fewer pixels in a view give no box

    def __post_init__(self) -> None:
        if self.extra_views < 0 or self.partial_variants < 0 or self.min_box_pixels < 1:
            raise ValueError("extra_views and partial_variants must be >= 0, min_box_pixels >= 1")
        lo, hi = self.radius_scale
        if not 0 < lo <= hi:
            raise ValueError(f"radius_scale must be 0 < low <= high; got {self.radius_scale}")


@dataclass
class TrainingImage:
    """One rendered view with its targets. image: (H, W, 3) uint8; boxes: (M, 4) float32 (x1, y1, x2, y2)
    pixels; labels: (M,) int64 index into part_names; M >= 1."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    category: str
    part_names: tuple[str, ...]


def _partial(shape: LabeledShape, config: PipelineConfig, rng: np.random.Generator) -> LabeledShape:
    """What one sensor at a random viewpoint (elevation 10-50 degrees, canonical Y-up frame) sees."""
    from partslip_core.synthetic import visibility_mask
    canonical = normalize(shape.cloud, config.normalize)
    elevation, azimuth = np.deg2rad(rng.uniform(10.0, 50.0)), rng.uniform(0.0, 2.0 * np.pi)
    sensor = 3.0 * np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
    visible = visibility_mask(canonical.xyz, sensor, canonical.normals)
    if visible.sum() < 64 or not (shape.point_label[visible] >= 0).any():
        return shape
    cloud = shape.cloud
    subset = PointCloud(cloud.xyz[visible], None if cloud.rgb is None else cloud.rgb[visible],
                        None if cloud.normals is None else cloud.normals[visible])
    return LabeledShape(shape.category, shape.shape_id + "_partial", shape.part_names, subset,
                        shape.point_label[visible], shape.point_instance[visible])


def _jitter_colours(rgb: np.ndarray, augment: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < augment.grey_probability:
        return np.full_like(rgb, 0.5)  # what normalize() gives a cloud without colour
    gain = 1.0 + rng.uniform(-augment.colour_jitter, augment.colour_jitter, 3)
    offset = rng.uniform(-augment.colour_jitter, augment.colour_jitter, 3) / 2.0
    return np.clip(rgb * gain + offset, 0.0, 1.0).astype(np.float32)


def _view_list(render: RenderConfig, augment: AugmentConfig, rng: np.random.Generator) -> list[tuple[float, float]]:
    extra = [(float(rng.uniform(*augment.elevation_range)), float(rng.uniform(0.0, 360.0)))
             for _ in range(augment.extra_views)]
    return list(render.views) + extra


def render_training_images(shape: LabeledShape, config: PipelineConfig, augment: AugmentConfig,
                           rng: np.random.Generator) -> list[TrainingImage]:
    """Every augmented render of ``shape`` that shows at least one part instance."""
    variants = [shape] + [_partial(shape, config, rng) for _ in range(augment.partial_variants)]
    images: list[TrainingImage] = []
    names = tuple(shape.part_names)
    for variant in variants:
        canonical = normalize(variant.cloud, config.normalize)
        radius = config.render.point_radius * rng.uniform(*augment.radius_scale)
        render = dataclasses.replace(config.render, views=_view_list(config.render, augment, rng),
                                     point_radius=float(min(radius, 0.49)))
        views = render_views(canonical.xyz, _jitter_colours(canonical.rgb, augment, rng), render, config.device)
        boxes = ProjectedGroundTruthDetector(variant.point_label, variant.point_instance,
                                             GroundTruthNoise(min_pixels=augment.min_box_pixels)).detect(views, names)
        for image, detections in zip(views.images, boxes):
            if detections.num_boxes:
                images.append(TrainingImage(image, detections.boxes, detections.labels, shape.category, names))
    return images


def build_training_set(shapes: Sequence[LabeledShape], config: PipelineConfig, augment: AugmentConfig,
                       seed: int = 0, progress: bool = False) -> list[TrainingImage]:
    """All training images of all shapes (deterministic for a seed)."""
    from tqdm import tqdm
    images: list[TrainingImage] = []
    for index, shape in enumerate(tqdm(shapes, desc="rendering training views", disable=not progress)):
        images += render_training_images(shape, config, augment, np.random.default_rng([seed, index]))
    return images


def batches(num_items: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless mini-batches of indices, reshuffled every epoch."""
    while True:
        order = rng.permutation(num_items)
        for start in range(0, num_items - batch_size + 1 if num_items >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]
