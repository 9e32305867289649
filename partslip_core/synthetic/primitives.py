"""Primitive surfaces (box, cylinder, frustum, annulus, torus arc, sphere) sampled with area-weighted
density: each samples points and outward normals in its local frame; ``place`` moves it into the object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


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
