"""The ``sensor_to_fixed`` parameter: one static sensor -> fixed frame transform for installs without tf2_ros.

An optical-frame camera (z forward, y down) on a pip-only install has no tf tree; instead of the
approximate ``pipeline.normalize.up_axis: -y`` the node can be given the camera's pose in the fixed
frame, exactly as ``static_transform_publisher`` takes it: ``xyz`` (m) and ``rpy`` (rad; roll about
x, then pitch about y, then yaw about z, all fixed axes: R = Rz(yaw) Ry(pitch) Rx(roll)) or a
``quaternion`` (x, y, z, w). With tf2_ros installed the tf tree is used and this is only a fallback
for the named frame when no tf is available. Quaternion maths: transforms3d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import transforms3d

PREFIX = "sensor_to_fixed."


class StaticTransformError(ValueError):
    """The sensor_to_fixed parameters do not describe a transform."""


@dataclass(frozen=True)
class StaticTransform:
    """``matrix`` (4, 4) float64 maps points in ``sensor_frame`` into ``fixed_frame`` (rows kept as tuples,
    so settings holding it compare by value)."""

    sensor_frame: str
    fixed_frame: str
    rows: tuple[tuple[float, ...], ...]

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.rows, np.float64)


def static_matrix(xyz: Sequence[float], rpy: Sequence[float] = (0.0, 0.0, 0.0),
                  quaternion_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 4) from a translation and rpy (used when the quaternion is all zeros) or an x, y, z, w quaternion."""
    xyz, rpy, quat = (np.asarray(v, np.float64) for v in (xyz, rpy, quaternion_xyzw))
    if xyz.shape != (3,) or rpy.shape != (3,) or quat.shape != (4,):
        raise StaticTransformError(f"sensor_to_fixed needs xyz [3], rpy [3] and quaternion [4] values; got "
                                   f"{xyz.size}, {rpy.size} and {quat.size}")
    if not (np.isfinite(xyz).all() and np.isfinite(rpy).all() and np.isfinite(quat).all()):
        raise StaticTransformError("sensor_to_fixed values must be finite")
    if np.any(quat != 0.0):
        norm = float(np.linalg.norm(quat))
        if abs(norm - 1.0) > 1e-3:
            raise StaticTransformError(f"sensor_to_fixed.quaternion {quat.tolist()} is not a unit quaternion "
                                       f"(norm {norm:.4f}); give x, y, z, w of a rotation")
        rotation = transforms3d.quaternions.quat2mat([quat[3], quat[0], quat[1], quat[2]] / np.float64(norm))
    else:
        rotation = transforms3d.euler.euler2mat(rpy[0], rpy[1], rpy[2], axes="sxyz")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = xyz
    return matrix


def static_transform_from_values(values: Mapping[str, Any]):
    """The StaticTransform the parameters describe, or None when ``sensor_to_fixed.frame`` is empty."""
    frame = str(values.get(PREFIX + "frame", "") or "").strip().lstrip("/")
    if not frame:
        return None
    fixed = str(values.get("fixed_frame", "") or "").strip().lstrip("/")
    if not fixed:
        raise StaticTransformError("sensor_to_fixed.frame is set, so fixed_frame must name the frame it maps into")
    if frame == fixed:
        raise StaticTransformError(f"sensor_to_fixed.frame {frame!r} is the fixed frame itself")
    matrix = static_matrix(values.get(PREFIX + "xyz", (0.0, 0.0, 0.0)), values.get(PREFIX + "rpy", (0.0, 0.0, 0.0)),
                           values.get(PREFIX + "quaternion", (0.0, 0.0, 0.0, 0.0)))
    return StaticTransform(frame, fixed, tuple(tuple(float(v) for v in row) for row in matrix))
