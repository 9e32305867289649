"""Small geometric helpers shared by the pipeline and the ROS node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OrientedBox:
    """center: (3,); rotation: (3, 3) right-handed, columns = box axes sorted by extent (longest first);
    extent: (3,) full side lengths along those axes."""

    center: np.ndarray
    rotation: np.ndarray
    extent: np.ndarray


def oriented_box(points: np.ndarray) -> OrientedBox:
    """PCA-aligned bounding box of (n, 3) points. Degenerate inputs (one point, a line) still give a valid
    right-handed frame with zero extents along the missing directions."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    mean = points.mean(axis=0)
    centered = points - mean
    covariance = centered.T @ centered / max(len(points), 1)
    _, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, ::-1].copy()  # descending variance
    projected = centered @ axes
    low, high = projected.min(axis=0), projected.max(axis=0)
    extent = high - low
    order = np.argsort(-extent, kind="stable")
    axes, low, high, extent = axes[:, order], low[order], high[order], extent[order]
    # Deterministic signs: first two axes point to the positive half of the largest world component.
    for column in range(2):
        if axes[np.argmax(np.abs(axes[:, column])), column] < 0:
            axes[:, column] *= -1.0
    axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
    center = mean + axes @ ((low + high) / 2.0)
    return OrientedBox(center=center, rotation=axes, extent=extent)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (x, y, z, w) unit quaternion (ROS order)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    candidates = np.array([trace, m[0, 0], m[1, 1], m[2, 2]])
    pick = int(np.argmax(candidates))
    if pick == 0:
        s = np.sqrt(trace + 1.0) * 2.0
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif pick == 1:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif pick == 2:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)
