"""Pictures of a labeled cloud: a few rendered views side by side with a colour legend (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from partslip_core.config import RenderConfig
from partslip_core.normalize import normalize
from partslip_core.config import NormalizeConfig
from partslip_core.render import render_views
from partslip_core.types import PointCloud

UNLABELED_COLOR = np.array([0.75, 0.75, 0.75], np.float32)
_BASE_PALETTE = np.array([
    [0.90, 0.10, 0.10], [0.12, 0.47, 0.71], [0.17, 0.63, 0.17], [1.00, 0.50, 0.05], [0.58, 0.40, 0.74],
    [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.09, 0.75, 0.81], [0.74, 0.74, 0.13], [0.20, 0.20, 0.20],
], np.float32)


def palette(count: int) -> np.ndarray:
    """(count, 3) float32 distinct colours in [0, 1]; cycles with a brightness shift past 10."""
    index = np.arange(count)
    shade = 1.0 - 0.35 * ((index // len(_BASE_PALETTE)) % 2)
    return _BASE_PALETTE[index % len(_BASE_PALETTE)] * shade[:, None]


def label_colors(point_label: np.ndarray, num_labels: int) -> np.ndarray:
    """(N,) labels (-1 = none) -> (N, 3) colours."""
    colors = np.concatenate([palette(max(num_labels, 1)), UNLABELED_COLOR[None, :]])
    return colors[np.where(point_label >= 0, point_label, len(colors) - 1)]


def render_labeled_png(path: str | Path, xyz: np.ndarray, point_label: np.ndarray, label_names: Sequence[str],
                       up_axis: str = "z", views: Sequence[tuple[float, float]] = ((20, 30), (20, 150), (50, 270)),
                       image_size: int = 400, title: str = "") -> Path:
    """Write a PNG with ``len(views)`` renders of the cloud coloured by label and a legend; returns the path."""
    canonical = normalize(PointCloud.from_arrays(xyz), NormalizeConfig(up_axis=up_axis, max_points=10**8))
    colors = label_colors(np.asarray(point_label), len(label_names))
    config = RenderConfig(views=[tuple(v) for v in views], image_size=image_size,
                          point_radius=max(0.006, 3.0 / image_size), backend="torch")
    rendered = render_views(canonical.xyz, colors, config)
    strip = np.concatenate(list(rendered.images), axis=1)
    legend_height = 22 * (len(label_names) + 2)
    canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + legend_height), "white")
    canvas.paste(Image.fromarray(strip), (0, legend_height))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 4), title, fill=(0, 0, 0))
    entries = list(label_names) + ["unlabeled"]
    entry_colors = np.concatenate([palette(max(len(label_names), 1))[:len(label_names)], UNLABELED_COLOR[None]])
    for row, (name, color) in enumerate(zip(entries, entry_colors)):
        top = 22 * (row + 1)
        draw.rectangle([8, top, 24, top + 14], fill=tuple(int(c * 255) for c in color))
        count = int((np.asarray(point_label) == (row if row < len(label_names) else -1)).sum())
        draw.text((30, top + 1), f"{name} ({count} points)", fill=(0, 0, 0))
    path = Path(path)
    canvas.save(path)
    return path
