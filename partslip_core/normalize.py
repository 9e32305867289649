"""Stage 1: bring the cloud into the renderer's canonical frame (Y up, unit radius), keeping the transform."""

from __future__ import annotations

import numpy as np

from partslip_core.config import NormalizeConfig
from partslip_core.types import InputError, NormalizedCloud, PointCloud

_AXES = {"x": 0, "y": 1, "z": 2}


def up_vector(up_axis: str) -> np.ndarray:
    """(3,) float64 unit vector of an axis name such as "z" or "-y" (``normalize.up_axis``)."""
    up = np.zeros(3)
    up[_AXES[up_axis.lstrip("-")]] = -1.0 if up_axis.startswith("-") else 1.0
    return up


def up_axis_rotation(up_axis: str) -> np.ndarray:
    """(3, 3) float32 rotation R with R @ up = +Y and a right-handed frame (row vectors: p_canon = p @ R.T)."""
    up = up_vector(up_axis)
    if np.allclose(up, [0, 1, 0]):
        return np.eye(3, dtype=np.float32)
    if np.allclose(up, [0, -1, 0]):
        return np.diag([1.0, -1.0, -1.0]).astype(np.float32)
    # Rodrigues rotation taking `up` to +Y.
    target = np.array([0.0, 1.0, 0.0])
    axis = np.cross(up, target)
    sin, cos = np.linalg.norm(axis), float(up @ target)
    axis = axis / sin
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + sin * skew + (1 - cos) * skew @ skew
    return rotation.astype(np.float32)


def normalize(cloud: PointCloud, config: NormalizeConfig) -> NormalizedCloud:
    """Center at the mean, scale the farthest point to radius 1, rotate ``up_axis`` to +Y.

    rgb defaults to mid grey when absent (the renderer and superpoints need a colour).
    """
    if cloud.num_points > config.max_points:
        raise InputError(f"cloud has {cloud.num_points} points, more than normalize.max_points="
                         f"{config.max_points}; downsample it first (e.g. a voxel grid)")
    rotation = up_axis_rotation(config.up_axis)
    center = cloud.xyz.mean(axis=0, dtype=np.float64).astype(np.float32)
    centered = cloud.xyz - center
    scale = float(np.sqrt((centered.astype(np.float64) ** 2).sum(axis=1).max()))
    if not scale > 0.0:
        raise InputError("all points coincide: the cloud has no extent to segment")
    xyz = (centered / scale) @ rotation.T
    rgb = cloud.rgb if cloud.rgb is not None else np.full_like(cloud.xyz, 0.5)
    normals = None if cloud.normals is None else cloud.normals @ rotation.T
    return NormalizedCloud(xyz=xyz.astype(np.float32), rgb=rgb.astype(np.float32), normals=normals,
                           center=center, scale=scale, rotation=rotation)
