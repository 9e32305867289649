"""Procedural, part-labeled object point clouds: test fixtures and evaluation data without a dataset.

Every object is an assembly of primitive surfaces (boxes, cylinders, frusta, annuli, torus arcs,
spheres) sampled with area-weighted densities, so the point density is even across parts like a
real surface scan. Shapes, part counts, proportions and colours vary with the seed; the same seed
always gives the same object. Frame: metres, Z up (REP 103), the object stands on z = 0, its
bounding box is centred in x/y, and its "front" (drawers, chair seat edge) faces +x.

``partial_scan`` turns a complete object into what a single depth sensor sees (hidden-point
removal + range noise); ``sensor_sequence`` produces a sequence of such scans along an arc in
front of the object; ``write_dataset`` writes PartNet-Ensembled style shape folders.
"""

from __future__ import annotations

import colorsys
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

CATEGORY_PARTS: dict[str, list[str]] = {
    "bottle": ["body", "lid"],
    "cabinet": ["door", "drawer", "handle"],
    "chair": ["arm", "back", "leg", "seat"],
    "kettle": ["body", "handle", "lid", "spout"],
    "lamp": ["base", "body", "bulb", "shade"],  # PartNet-E's Lamp part list
    "mug": ["body", "handle"],
    "table": ["leg", "tabletop"],
}
# Parts that some seeds leave out (every other listed part is always present).
OPTIONAL_PARTS: dict[str, set[str]] = {"chair": {"arm"}}

_MIN_POINTS = 64


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


# --------------------------------------------------------------------------------------------
# Primitive surfaces. Each samples points in its local frame; ``place`` moves it into the object.
# --------------------------------------------------------------------------------------------

def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


@dataclass(kw_only=True)
class Surface:
    """A primitive surface with a rigid placement (points map as R @ p + t)."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def area(self) -> float:
        raise NotImplementedError

    def sample_local(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) points and (n, 3) unit normals in the object frame."""
        xyz, nrm = self.sample_local(n, rng)
        return xyz @ self.rotation.T + self.translation, nrm @ self.rotation.T

    def place(self, translation: Sequence[float], rotation: Optional[np.ndarray] = None) -> "Surface":
        """Apply a further rigid motion (rotation first, then translation); returns self."""
        rotation = np.eye(3) if rotation is None else rotation
        self.rotation = rotation @ self.rotation
        self.translation = rotation @ self.translation + np.asarray(translation, dtype=np.float64)
        return self


@dataclass(kw_only=True)
class Box(Surface):
    """Axis-aligned box centred at the origin. faces: which of (-x, +x, -y, +y, -z, +z) to sample
    (leave out faces that touch another part: they would be hidden inside the object)."""

    size: Sequence[float]
    faces: tuple[bool, ...] = (True,) * 6

    def _face_areas(self) -> np.ndarray:
        sx, sy, sz = self.size
        return np.repeat([sy * sz, sx * sz, sx * sy], 2) * np.asarray(self.faces, dtype=np.float64)

    def area(self) -> float:
        return float(self._face_areas().sum())

    def sample_local(self, n, rng):
        areas = self._face_areas()
        face = rng.choice(6, size=n, p=areas / areas.sum())
        axis, sign = face // 2, np.where(face % 2 == 1, 1.0, -1.0)
        size = np.asarray(self.size, dtype=np.float64)
        xyz = (rng.random((n, 3)) - 0.5) * size
        rows = np.arange(n)
        xyz[rows, axis] = sign * size[axis] / 2
        normals = np.zeros((n, 3))
        normals[rows, axis] = sign
        return xyz, normals


@dataclass(kw_only=True)
class Cylinder(Surface):
    """Cylinder along local z, centred at the origin; lateral surface plus optional caps.
    inward=True flips the lateral normals (the inner wall of a mug)."""

    radius: float
    height: float
    bottom: bool = True
    top: bool = True
    inward: bool = False

    def _areas(self) -> np.ndarray:
        cap = np.pi * self.radius ** 2
        return np.array([2 * np.pi * self.radius * self.height, cap * self.bottom, cap * self.top])

    def area(self) -> float:
        return float(self._areas().sum())

    def sample_local(self, n, rng):
        areas = self._areas()
        part = rng.choice(3, size=n, p=areas / areas.sum())
        theta = rng.uniform(0, 2 * np.pi, n)
        r = np.where(part == 0, self.radius, self.radius * np.sqrt(rng.random(n)))
        z = np.select([part == 0, part == 1], [rng.uniform(-0.5, 0.5, n) * self.height,
                                               np.full(n, -self.height / 2)], self.height / 2)
        xyz = np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)
        lateral = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], axis=1) * (-1.0 if self.inward else 1.0)
        cap = np.zeros((n, 3))
        cap[:, 2] = np.where(part == 1, -1.0, 1.0)
        return xyz, np.where((part == 0)[:, None], lateral, cap)


@dataclass(kw_only=True)
class Frustum(Surface):
    """Lateral surface of a cone frustum along local z: radius r0 at z=-h/2, r1 at z=+h/2."""

    r0: float
    r1: float
    height: float
    inward: bool = False

    def area(self) -> float:
        slant = np.hypot(self.height, self.r1 - self.r0)
        return float(np.pi * (self.r0 + self.r1) * slant)

    def sample_local(self, n, rng):
        u = rng.random(n)
        # Density along the axis grows with the radius: invert the CDF of r(t) = r0 + (r1 - r0) t.
        if abs(self.r1 - self.r0) < 1e-12:
            t = u
        else:
            t = (np.sqrt(self.r0 ** 2 + u * (self.r1 ** 2 - self.r0 ** 2)) - self.r0) / (self.r1 - self.r0)
        r = self.r0 + (self.r1 - self.r0) * t
        theta = rng.uniform(0, 2 * np.pi, n)
        xyz = np.stack([r * np.cos(theta), r * np.sin(theta), (t - 0.5) * self.height], axis=1)
        normals = np.stack([np.cos(theta), np.sin(theta),
                            np.full(n, -(self.r1 - self.r0) / self.height)], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return xyz, normals * (-1.0 if self.inward else 1.0)


@dataclass(kw_only=True)
class Annulus(Surface):
    """Flat ring (a disc when r_in = 0) in the local z = 0 plane; normal +z (or -z if down)."""

    r_out: float
    r_in: float = 0.0
    down: bool = False

    def area(self) -> float:
        return float(np.pi * (self.r_out ** 2 - self.r_in ** 2))

    def sample_local(self, n, rng):
        r = np.sqrt(self.r_in ** 2 + rng.random(n) * (self.r_out ** 2 - self.r_in ** 2))
        theta = rng.uniform(0, 2 * np.pi, n)
        xyz = np.stack([r * np.cos(theta), r * np.sin(theta), np.zeros(n)], axis=1)
        normals = np.zeros((n, 3))
        normals[:, 2] = -1.0 if self.down else 1.0
        return xyz, normals


@dataclass(kw_only=True)
class TorusArc(Surface):
    """Part of a torus around local z (tube centre circle of radius ``major`` in the z = 0 plane),
    for angles u in [u0, u1] (radians, measured from +x)."""

    major: float
    minor: float
    u0: float
    u1: float

    def area(self) -> float:
        return float((self.u1 - self.u0) * self.minor * 2 * np.pi * self.major)

    def sample_local(self, n, rng):
        u = rng.uniform(self.u0, self.u1, n)
        # The area element grows with (R + r cos v): invert its CDF numerically on a fine grid.
        grid = np.linspace(0.0, 2 * np.pi, 1025)
        cdf = (self.major * grid + self.minor * np.sin(grid)) / (2 * np.pi * self.major)
        v = np.interp(rng.random(n), cdf, grid)
        ring = self.major + self.minor * np.cos(v)
        xyz = np.stack([ring * np.cos(u), ring * np.sin(u), self.minor * np.sin(v)], axis=1)
        normals = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
        return xyz, normals


@dataclass(kw_only=True)
class Sphere(Surface):
    radius: float

    def area(self) -> float:
        return float(4 * np.pi * self.radius ** 2)

    def sample_local(self, n, rng):
        normals = rng.normal(size=(n, 3))
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return normals * self.radius, normals


# --------------------------------------------------------------------------------------------
# Object assembly
# --------------------------------------------------------------------------------------------

@dataclass
class Piece:
    """One part instance: its part name (None = unlabeled structure), surfaces and base colour."""

    part: Optional[str]
    surfaces: list[Surface]
    colour: np.ndarray


def _hsv(h: float, s: float, v: float) -> np.ndarray:
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
            palette[name] = _hsv(rng.random(), rng.uniform(0.15, 0.85), rng.uniform(0.25, 0.95))
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


def _jitter(colour: np.ndarray, rng: np.random.Generator, std: float = 0.015) -> np.ndarray:
    return np.clip(colour + rng.normal(0, std, 3), 0, 1)


def _leg(round_leg: bool, width: float, height: float, x: float, y: float) -> Surface:
    """A vertical leg from the floor to ``height`` (top face omitted: it is hidden under the top)."""
    if round_leg:
        return Cylinder(radius=width / 2, height=height, top=False).place([x, y, height / 2])
    return Box(size=[width, width, height], faces=(True,) * 5 + (False,)).place([x, y, height / 2])


# --------------------------------------------------------------------------------------------
# Category builders: each returns the pieces of one object (the front faces +x).
# --------------------------------------------------------------------------------------------

def _build_chair(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["seat", "back", "leg", "arm"])
    w, d, t = rng.uniform(0.40, 0.56), rng.uniform(0.38, 0.52), rng.uniform(0.03, 0.07)
    seat_z = rng.uniform(0.38, 0.48)  # underside of the seat
    top = seat_z + t
    pieces = [Piece("seat", [Box(size=[d, w, t]).place([0, 0, seat_z + t / 2])], colours["seat"])]
    bw, bt, bh = w * rng.uniform(0.8, 1.0), rng.uniform(0.025, 0.05), rng.uniform(0.35, 0.55)
    tilt = np.deg2rad(rng.uniform(0, 14))
    back = Box(size=[bt, bw, bh], faces=(True,) * 4 + (False, True)).place([0, 0, bh / 2])
    back.place([0, 0, 0], rot_y(-tilt))  # lean backwards (-x) about the bottom edge
    pieces.append(Piece("back", [back.place([-d / 2 + bt / 2, 0, top])], colours["back"]))
    round_leg, lw, inset = rng.random() < 0.5, rng.uniform(0.025, 0.05), rng.uniform(0.0, 0.04)
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _leg(round_leg, lw, seat_z, sx * (d / 2 - inset - lw / 2), sy * (w / 2 - inset - lw / 2))
            pieces.append(Piece("leg", [leg], _jitter(colours["leg"], rng)))
    if rng.random() < 0.5:
        pieces += _chair_arms(rng, d, w, top, colours["arm"])
    return pieces


def _chair_arms(rng: np.random.Generator, d: float, w: float, top: float, colour: np.ndarray) -> list[Piece]:
    """Two armrests, each a horizontal rest plus a vertical support (one instance per side)."""
    length, aw, at = d * rng.uniform(0.6, 0.85), rng.uniform(0.04, 0.06), rng.uniform(0.02, 0.035)
    rise, sw = rng.uniform(0.17, 0.26), rng.uniform(0.02, 0.035)
    x_mid = -d / 2 + length / 2 + 0.02
    arms = []
    for sy in (-1, 1):
        y = sy * (w / 2 - aw / 2)
        rest = Box(size=[length, aw, at]).place([x_mid, y, top + rise + at / 2])
        support = Box(size=[sw, sw, rise], faces=(True,) * 4 + (False, False))
        support.place([x_mid + length / 2 - sw, y, top + rise / 2])
        arms.append(Piece("arm", [rest, support], _jitter(colour, rng)))
    return arms


def _build_table(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["tabletop", "leg"])
    t, height = rng.uniform(0.02, 0.05), rng.uniform(0.68, 0.78)
    round_leg, lw = rng.random() < 0.5, rng.uniform(0.03, 0.06)
    leg_h = height - t
    if rng.random() < 0.7:
        length, width = rng.uniform(0.8, 1.6), rng.uniform(0.5, 0.9)
        top = Box(size=[length, width, t]).place([0, 0, height - t / 2])
        inset = rng.uniform(0.02, 0.08)
        xs = [-(length / 2 - inset - lw / 2), length / 2 - inset - lw / 2]
        if length > 1.3 and rng.random() < 0.5:
            xs.append(0.0)  # six legs on a long table
        spots = [(x, sy * (width / 2 - inset - lw / 2)) for x in xs for sy in (-1, 1)]
    else:
        radius = rng.uniform(0.35, 0.6)
        top = Cylinder(radius=radius, height=t).place([0, 0, height - t / 2])
        n_legs = int(rng.integers(3, 5))
        angles = np.arange(n_legs) * 2 * np.pi / n_legs + rng.uniform(0, np.pi)
        spots = [(0.7 * radius * np.cos(a), 0.7 * radius * np.sin(a)) for a in angles]
    pieces = [Piece("tabletop", [top], colours["tabletop"])]
    pieces += [Piece("leg", [_leg(round_leg, lw, leg_h, x, y)], _jitter(colours["leg"], rng)) for x, y in spots]
    return pieces


def _panel_with_handle(rng: np.random.Generator, kind: str, x_front: float, y: float, z: float, width: float,
                       height: float, handle_y: float, colours: dict[str, np.ndarray], knob: bool) -> list[Piece]:
    """A door or drawer front on the cabinet face (x = x_front) and its handle (a bar or a knob)."""
    tp = rng.uniform(0.015, 0.025)
    panel = Box(size=[tp, width, height], faces=(False,) + (True,) * 5).place([x_front + tp / 2, y, z])
    face = x_front + tp
    if knob:
        r, depth = rng.uniform(0.01, 0.018), rng.uniform(0.015, 0.03)
        handle = Cylinder(radius=r, height=depth, bottom=False).place([0, 0, 0], rot_y(np.pi / 2))
        handle.place([face + depth / 2, handle_y, z])
    else:
        length, thick, depth = rng.uniform(0.08, 0.16), rng.uniform(0.012, 0.02), rng.uniform(0.015, 0.03)
        size = [depth, length, thick] if kind == "drawer" else [depth, thick, length]
        handle = Box(size=size, faces=(False,) + (True,) * 5).place([face + depth / 2, handle_y, z])
    return [Piece(kind, [panel], _jitter(colours[kind], rng)),
            Piece("handle", [handle], _jitter(colours["handle"], rng))]


def _build_cabinet(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["door", "drawer", "handle", "frame"], similar_prob=0.5)
    d, w, h = rng.uniform(0.35, 0.55), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.4)
    # The frame has no front face: door and drawer fronts cover it. It is unlabeled, as in PartNet-E.
    pieces = [Piece(None, [Box(size=[d, w, h], faces=(True, False) + (True,) * 4).place([0, 0, h / 2])],
                    colours["frame"])]
    n_drawers, n_doors, knob = int(rng.integers(1, 4)), int(rng.integers(1, 3)), rng.random() < 0.3
    drawer_h = min(rng.uniform(0.15, 0.22) * h, 0.55 * h / n_drawers)
    gap = 0.004
    for i in range(n_drawers):
        z = h - (i + 0.5) * drawer_h
        pieces += _panel_with_handle(rng, "drawer", d / 2, 0.0, z, w - gap, drawer_h - gap, 0.0, colours, knob)
    door_h = h - n_drawers * drawer_h
    door_w = w / n_doors
    for j in range(n_doors):
        y = -w / 2 + (j + 0.5) * door_w
        edge = (1 if j == 0 else -1) * (door_w / 2 - 0.05) if n_doors == 2 else door_w / 2 - 0.05
        pieces += _panel_with_handle(rng, "door", d / 2, y, door_h / 2, door_w - gap, door_h - gap,
                                     y + edge, colours, knob)
    return pieces


def _mug_handle(rng: np.random.Generator, radius: float, height: float) -> TorusArc:
    """A torus arc in the x-z plane whose two ends sink into the body wall at x = radius."""
    half = np.deg2rad(rng.uniform(100, 125))
    minor = rng.uniform(0.005, 0.009)
    major = min(rng.uniform(0.025, 0.04), 0.85 * (height / 2 - minor) / np.sin(half))
    x_c = radius - 0.3 * minor - major * np.cos(half)
    return TorusArc(major=major, minor=minor, u0=-half, u1=half).place([x_c, 0, height * rng.uniform(0.45, 0.55)],
                                                                       rot_x(np.pi / 2))


def _open_vessel(radius: float, height: float, wall: float) -> list[Surface]:
    """Outer wall, bottom, rim, inner wall and inner floor of an open cylindrical vessel."""
    base = min(2 * wall, 0.2 * height)
    inner = radius - wall
    return [Cylinder(radius=radius, height=height, bottom=True, top=False).place([0, 0, height / 2]),
            Annulus(r_out=radius, r_in=inner).place([0, 0, height]),
            Cylinder(radius=inner, height=height - base, bottom=False, top=False, inward=True)
            .place([0, 0, base + (height - base) / 2]),
            Annulus(r_out=inner).place([0, 0, base])]


def _build_mug(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "handle"], similar_prob=0.6)
    radius, height, wall = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.12), rng.uniform(0.004, 0.008)
    handle = _mug_handle(rng, radius, height).place([0, 0, 0], rot_z(rng.uniform(0, 2 * np.pi)))
    return [Piece("body", _open_vessel(radius, height, wall), colours["body"]),
            Piece("handle", [handle], colours["handle"])]


def _build_bottle(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "lid"], similar_prob=0.25)
    radius, body_h = rng.uniform(0.03, 0.05), rng.uniform(0.12, 0.25)
    shoulder_h, neck_r, neck_h = rng.uniform(0.02, 0.05), radius * rng.uniform(0.35, 0.55), rng.uniform(0.015, 0.04)
    lid_h, lid_r = rng.uniform(0.015, 0.03), neck_r * rng.uniform(1.05, 1.2)
    neck_top = body_h + shoulder_h + neck_h
    body = [Cylinder(radius=radius, height=body_h, top=False).place([0, 0, body_h / 2]),
            Frustum(r0=radius, r1=neck_r, height=shoulder_h).place([0, 0, body_h + shoulder_h / 2]),
            Cylinder(radius=neck_r, height=neck_h, bottom=False, top=False).place([0, 0, neck_top - neck_h / 2])]
    lid = [Cylinder(radius=lid_r, height=lid_h, bottom=False).place([0, 0, neck_top + lid_h / 2]),
           Annulus(r_out=lid_r, r_in=neck_r, down=True).place([0, 0, neck_top])]
    return [Piece("body", body, colours["body"]), Piece("lid", lid, colours["lid"])]


def _build_lamp(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["base", "body", "shade"])
    colours["bulb"] = _hsv(rng.uniform(0.1, 0.17), rng.uniform(0.0, 0.3), rng.uniform(0.85, 1.0))
    base_r, base_h = rng.uniform(0.07, 0.12), rng.uniform(0.015, 0.035)
    pole_r, pole_top = rng.uniform(0.006, 0.012), rng.uniform(0.3, 0.5)
    rb, shade_h = rng.uniform(0.1, 0.16), rng.uniform(0.12, 0.2)
    rt = rb * rng.uniform(0.5, 0.8)
    shade_z = pole_top - 0.4 * shade_h + shade_h / 2
    pole_len = pole_top - base_h
    bulb_r = min(rng.uniform(0.025, 0.04), 0.8 * rt)
    return [Piece("base", [Cylinder(radius=base_r, height=base_h).place([0, 0, base_h / 2])], colours["base"]),
            Piece("body", [Cylinder(radius=pole_r, height=pole_len, bottom=False, top=False)
                           .place([0, 0, base_h + pole_len / 2])], colours["body"]),
            Piece("shade", [Frustum(r0=rb, r1=rt, height=shade_h).place([0, 0, shade_z]),
                            Frustum(r0=rb * 0.98, r1=rt * 0.98, height=shade_h, inward=True).place([0, 0, shade_z])],
                  colours["shade"]),
            Piece("bulb", [Sphere(radius=bulb_r).place([0, 0, pole_top + 0.6 * bulb_r])], colours["bulb"])]


def _build_kettle(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "lid", "handle", "spout"], similar_prob=0.5)
    r0, height = rng.uniform(0.07, 0.1), rng.uniform(0.14, 0.22)
    r1 = r0 * rng.uniform(0.7, 0.95)
    lid_r, lid_h = r1 * rng.uniform(0.6, 0.85), rng.uniform(0.008, 0.015)
    body = [Annulus(r_out=r0, down=True), Frustum(r0=r0, r1=r1, height=height).place([0, 0, height / 2]),
            Annulus(r_out=r1, r_in=lid_r).place([0, 0, height])]
    lid = [Cylinder(radius=lid_r, height=lid_h, bottom=False).place([0, 0, height + lid_h / 2]),
           Cylinder(radius=0.012, height=0.015, bottom=False).place([0, 0, height + lid_h + 0.0075])]
    handle = _mug_handle(rng, r0, height).place([0, 0, 0], rot_z(np.pi))
    spout_len, tilt = rng.uniform(0.06, 0.1), np.deg2rad(rng.uniform(35, 55))
    spout = Frustum(r0=rng.uniform(0.012, 0.018), r1=rng.uniform(0.006, 0.01), height=spout_len)
    spout.place([0, 0, spout_len / 2], rot_y(tilt)).place([r0 * 0.85, 0, height * rng.uniform(0.3, 0.5)])
    return [Piece("body", body, colours["body"]), Piece("lid", lid, colours["lid"]),
            Piece("handle", [handle], colours["handle"]), Piece("spout", [spout], colours["spout"])]


_BUILDERS: dict[str, Callable[[np.random.Generator], list[Piece]]] = {
    "bottle": _build_bottle, "cabinet": _build_cabinet, "chair": _build_chair, "kettle": _build_kettle,
    "lamp": _build_lamp, "mug": _build_mug, "table": _build_table,
}


def make_object(category: str, num_points: int = 20000, seed: int = 0) -> SyntheticObject:
    """A complete (all-around) surface sample of one procedurally varied object."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; known: {sorted(_BUILDERS)}")
    if num_points < _MIN_POINTS:
        raise ValueError(f"num_points must be >= {_MIN_POINTS}; got {num_points}")
    # The category enters the seed so that equal seeds do not give every category the same colours.
    rng = np.random.default_rng([int(seed), zlib.crc32(category.encode())])
    pieces = _BUILDERS[category](rng)
    return assemble(category, pieces, int(num_points), rng, colour_noise=rng.uniform(0.01, 0.04))


# --------------------------------------------------------------------------------------------
# Single-sensor scans
# --------------------------------------------------------------------------------------------

def _visible_hpr(xyz: np.ndarray, sensor: np.ndarray) -> Optional[np.ndarray]:
    """Katz et al. hidden point removal through open3d; None if open3d is not importable."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    diameter = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
    distance = float(np.linalg.norm(xyz.mean(axis=0) - sensor))
    _, index = pcd.hidden_point_removal(sensor.astype(np.float64), 100.0 * max(diameter, distance))
    mask = np.zeros(len(xyz), dtype=bool)
    mask[np.asarray(index, dtype=np.int64)] = True
    return mask


def visible_zbuffer(xyz: np.ndarray, sensor: np.ndarray, normals: Optional[np.ndarray] = None,
                    grid: Optional[int] = None, depth_tolerance: float = 0.01) -> np.ndarray:
    """(N,) bool visibility without open3d: a pinhole z-buffer from ``sensor`` (looking at the
    centroid). A point is visible if it is within ``depth_tolerance`` x object diameter of the
    nearest point in its image cell; with normals, back faces are culled and the tolerance grows
    with the incidence angle (a grazing surface spans a range of depths within one cell)."""
    rays = xyz.astype(np.float64) - sensor
    forward = xyz.mean(axis=0) - sensor
    forward /= np.linalg.norm(forward)
    helper = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    depth = rays @ forward
    if np.any(depth <= 0):
        raise ValueError("the sensor is inside or among the points; place it outside the object")
    uv = np.stack([rays @ right, rays @ np.cross(right, forward)], axis=1) / depth[:, None]
    grid = int(np.clip(np.sqrt(len(xyz) / 6.0), 16, 512)) if grid is None else grid
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    cell = np.minimum(((uv - lo) / np.maximum(hi - lo, 1e-12) * grid).astype(np.int64), grid - 1)
    flat = cell[:, 0] * grid + cell[:, 1]
    distance = np.linalg.norm(rays, axis=1)
    diameter = float(np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0)))
    tolerance = np.full(len(xyz), depth_tolerance * diameter)
    facing = np.ones(len(xyz), dtype=bool)
    if normals is not None:
        cos = np.einsum("ij,ij->i", normals, -rays) / distance
        facing = cos > 0
        tan = np.sqrt(np.clip(1.0 - cos ** 2, 0.0, 1.0)) / np.maximum(cos, 0.1)
        tolerance += 1.5 * float(np.max(hi - lo)) / grid * depth * tan
    nearest = np.full(grid * grid, np.inf)
    np.minimum.at(nearest, flat[facing], distance[facing])
    return facing & (distance <= nearest[flat] + tolerance)


def visibility_mask(xyz: np.ndarray, sensor_position: np.ndarray, normals: Optional[np.ndarray] = None,
                    method: str = "auto") -> np.ndarray:
    """(N,) bool: points a sensor at ``sensor_position`` sees. method: auto (open3d hidden point
    removal, else the numpy z-buffer) | hpr | zbuffer."""
    sensor = np.asarray(sensor_position, dtype=np.float64).reshape(3)
    if method not in ("auto", "hpr", "zbuffer"):
        raise ValueError(f"method must be auto, hpr or zbuffer; got {method!r}")
    mask = None if method == "zbuffer" else _visible_hpr(xyz, sensor)
    if mask is None:
        if method == "hpr":
            raise ImportError("method='hpr' needs open3d, which cannot be imported")
        mask = visible_zbuffer(xyz, sensor, normals)
    return mask


def partial_scan(obj: SyntheticObject, sensor_position: np.ndarray, noise_std: float = 0.0, seed: int = 0,
                 method: str = "auto") -> SyntheticObject:
    """What one depth sensor at ``sensor_position`` (object frame) sees: the visible points with
    Gaussian noise of ``noise_std`` metres along each sensor ray. Labels and normals follow the
    points; point order is kept. method: see ``visibility_mask``."""
    sensor = np.asarray(sensor_position, dtype=np.float64).reshape(3)
    scan = obj.subset(visibility_mask(obj.xyz, sensor, obj.normals, method))
    if noise_std > 0:
        rays = scan.xyz.astype(np.float64) - sensor
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        noise = np.random.default_rng(seed).normal(0.0, noise_std, len(rays))
        scan.xyz = (scan.xyz + rays * noise[:, None]).astype(np.float32)
    return scan


def sensor_positions(obj: SyntheticObject, azimuths: np.ndarray, elevations: np.ndarray) -> np.ndarray:
    """(F, 3) sensor positions at the given azimuths (radians from +x, about z) and elevations,
    1.5 diameters + 0.5 m from the object's bounding-box centre."""
    lo, hi = obj.xyz.min(axis=0).astype(np.float64), obj.xyz.max(axis=0).astype(np.float64)
    centre, diameter = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    azimuths, elevations = np.broadcast_arrays(np.asarray(azimuths, float), np.asarray(elevations, float))
    directions = np.stack([np.cos(elevations) * np.cos(azimuths), np.cos(elevations) * np.sin(azimuths),
                           np.sin(elevations)], axis=-1).reshape(-1, 3)
    return centre + directions * (1.5 * diameter + 0.5)


def sensor_sequence(obj: SyntheticObject, num_frames: int, seed: int = 0, noise_std: float = 0.002,
                    arc_degrees: float = 100.0) -> list[tuple[np.ndarray, SyntheticObject]]:
    """Scans from sensor positions on an arc in front (+x) of the object, looking at its centre,
    as a robot walking past it would get: [(sensor_position (3,) float64, scan), ...]."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    rng = np.random.default_rng(seed)
    half = np.deg2rad(arc_degrees) / 2
    azimuths = np.linspace(-half, half, num_frames) + rng.uniform(-0.05, 0.05, num_frames)
    elevations = np.deg2rad(rng.uniform(20, 35)) + rng.uniform(-0.03, 0.03, num_frames)
    positions = sensor_positions(obj, azimuths, elevations)
    frame_seeds = rng.integers(0, 2 ** 31 - 1, num_frames)
    return [(p, partial_scan(obj, p, noise_std, int(s))) for p, s in zip(positions, frame_seeds)]


# --------------------------------------------------------------------------------------------
# Dataset writing (PartNet-Ensembled layout)
# --------------------------------------------------------------------------------------------

def write_shape(shape_dir: Path, obj: SyntheticObject) -> None:
    """pc.ply (xyz + uchar rgb), label.npy (the PartNet-E pickled dict) and the pickle-free
    semantic_seg.npy / instance_seg.npy pair that our reader prefers."""
    from partslip_core.io import write_ply

    shape_dir.mkdir(parents=True, exist_ok=True)
    write_ply(shape_dir / "pc.ply", obj.xyz, obj.rgb)
    semantic, instance = obj.point_label.astype(np.int64), obj.point_instance.astype(np.int64)
    np.save(shape_dir / "semantic_seg.npy", semantic, allow_pickle=False)
    np.save(shape_dir / "instance_seg.npy", instance, allow_pickle=False)
    np.save(shape_dir / "label.npy", np.array({"semantic_seg": semantic, "instance_seg": instance}, dtype=object),
            allow_pickle=True)


def write_dataset(out_dir, categories: Optional[Sequence[str]] = None, shapes_per_category: int = 4,
                  num_points: int = 10000, seed: int = 0, partial: bool = False) -> list[Path]:
    """Write ``out_dir/<category>/<shape_id>/`` shape folders and ``<category>/part_names.json``.
    partial=True stores a single noisy scan from a random sensor in front of each shape.
    Returns the shape folders, in category then shape order."""
    out = Path(out_dir)
    categories = sorted(CATEGORY_PARTS) if categories is None else list(categories)
    unknown = [c for c in categories if c not in CATEGORY_PARTS]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {sorted(CATEGORY_PARTS)}")
    written = []
    for c_index, category in enumerate(categories):
        (out / category).mkdir(parents=True, exist_ok=True)
        (out / category / "part_names.json").write_text(json.dumps(CATEGORY_PARTS[category]))
        for i in range(shapes_per_category):
            shape_seed = int(np.random.SeedSequence([seed, c_index, i]).generate_state(1)[0])
            obj = make_object(category, num_points, shape_seed)
            if partial:
                obj = _random_front_scan(obj, shape_seed)
            shape_dir = out / category / f"{category}_{i:04d}"
            write_shape(shape_dir, obj)
            written.append(shape_dir)
    return written


def _random_front_scan(obj: SyntheticObject, seed: int) -> SyntheticObject:
    """One noisy scan from a random sensor pose in front of the object."""
    rng = np.random.default_rng(seed)
    position = sensor_positions(obj, rng.uniform(-np.pi / 3, np.pi / 3), np.deg2rad(rng.uniform(15, 40)))[0]
    return partial_scan(obj, position, noise_std=0.002, seed=seed)
