"""The object model (``SyntheticObject``, ``Piece``), the category part lists, colours, and ``assemble``:
sampling a list of pieces with one even point density into one labeled cloud."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from partslip_core.synthetic.primitives import Surface

CATEGORY_PARTS: dict[str, list[str]] = {
    "bottle": ["body", "lid"],
    "cabinet": ["door", "drawer", "handle"],
    "chair": ["arm", "back", "leg", "seat"],
    "kettle": ["body", "handle", "lid", "spout"],
    "lamp": ["base", "body", "bulb", "shade"],  # PartNet-E's Lamp part list
    "mug": ["body", "handle"],
    "table": ["leg", "tabletop"],
    # Robots and furniture that break naive lifting (issue 8): one dominant part with a small end part,
    # small wheels under a large body, a slab whose two faces lie further apart than adjacency_distance.
    "cart": ["body", "handle", "wheel"],
    "robot_arm": ["arm", "gripper"],
    "workbench": ["leg", "tabletop"],
}
# Parts that some seeds leave out (every other listed part is always present).
OPTIONAL_PARTS: dict[str, set[str]] = {"chair": {"arm"}}


@dataclass
class SyntheticObject:
    """A part-labeled object cloud.

    xyz: (N, 3) float32 metres, Z up, standing on z = 0, centred in x/y. rgb: (N, 3) float32 in
    [0, 1]. normals: (N, 3) float32 unit outward normals. point_label: (N,) int64 index into
    part_names, -1 = unlabeled (e.g. a cabinet's frame). point_instance: (N,) int64 part instance
    id, unique per instance within the object, -1 = none.
    """

    category: str
    part_names: list[str]
    xyz: np.ndarray
    rgb: np.ndarray
    normals: np.ndarray
    point_label: np.ndarray
    point_instance: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    def subset(self, mask_or_index: np.ndarray) -> "SyntheticObject":
        """The same object restricted to some points (labels follow the points)."""
        return SyntheticObject(self.category, list(self.part_names), self.xyz[mask_or_index],
                               self.rgb[mask_or_index], self.normals[mask_or_index],
                               self.point_label[mask_or_index], self.point_instance[mask_or_index])


@dataclass
class Piece:
    """One part instance: its part name (None = unlabeled structure), surfaces and base colour."""

    part: Optional[str]
    surfaces: list[Surface]
    colour: np.ndarray


def hsv_colour(h: float, s: float, v: float) -> np.ndarray:
    """(3,) RGB in [0, 1] from hue (wrapped), saturation and value (clipped)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def part_palette(rng: np.random.Generator, names: Sequence[str], similar_prob: float = 0.35) -> dict[str, np.ndarray]:
    """A base colour per name. With probability ``similar_prob`` a name copies an earlier name's
    colour with a small offset (real objects often have same-coloured parts)."""
    palette: dict[str, np.ndarray] = {}
    for name in names:
        if palette and rng.random() < similar_prob:
            base = list(palette.values())[rng.integers(len(palette))]
            palette[name] = np.clip(base + rng.normal(0, 0.04, 3), 0, 1)
        else:
            palette[name] = hsv_colour(rng.random(), rng.uniform(0.15, 0.85), rng.uniform(0.25, 0.95))
    return palette


def _allocate(areas: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder split of ``total`` points proportional to area, at least one per surface."""
    expected = areas / areas.sum() * total
    counts = np.floor(expected).astype(np.int64)
    remainder = total - counts.sum()
    counts[np.argsort(-(expected - counts), kind="stable")[:remainder]] += 1
    short = counts < 1
    counts[short] = 1
    counts[np.argmax(counts)] -= int(short.sum())
    return counts


def assemble(category: str, pieces: Sequence[Piece], num_points: int, rng: np.random.Generator,
             colour_noise: float) -> SyntheticObject:
    """Sample all pieces' surfaces with one even density and label the points by piece."""
    part_names = CATEGORY_PARTS[category]
    flat = [(i, s) for i, piece in enumerate(pieces) for s in piece.surfaces]
    counts = _allocate(np.array([s.area() for _, s in flat]), num_points)
    samples = [s.sample(int(c), rng) for (_, s), c in zip(flat, counts)]
    xyz = np.concatenate([p for p, _ in samples])
    normals = np.concatenate([n for _, n in samples])
    piece_of_point = np.repeat(np.array([i for i, _ in flat]), counts)
    piece_label = np.array([-1 if p.part is None else part_names.index(p.part) for p in pieces], dtype=np.int64)
    labeled = piece_label >= 0
    piece_instance = np.where(labeled, np.cumsum(labeled) - 1, -1).astype(np.int64)
    colours = np.stack([p.colour for p in pieces])[piece_of_point]
    rgb = np.clip(colours + rng.normal(0.0, colour_noise, colours.shape), 0.0, 1.0)
    order = rng.permutation(len(xyz))  # scanners and datasets give unordered points, not surface by surface
    xyz, normals, piece_of_point, rgb = xyz[order], normals[order], piece_of_point[order], rgb[order]
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    xyz = xyz - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return SyntheticObject(category, list(part_names), xyz.astype(np.float32), rgb.astype(np.float32),
                           normals.astype(np.float32), piece_label[piece_of_point], piece_instance[piece_of_point])


def jitter_colour(colour: np.ndarray, rng: np.random.Generator, std: float = 0.015) -> np.ndarray:
    """A slightly different shade for each instance of a part (four legs are rarely identical)."""
    return np.clip(colour + rng.normal(0, std, 3), 0, 1)
