"""Helpers shared by the core tests: isolation inputs as the node's fusion produces them, open3d on one thread."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core import filters
from partslip_core.synthetic import make_object
from partslip_core.synthetic_scene import flatten, lidar_tabletop_scan, rgbd_tabletop_scan


def voxelized(xyz: np.ndarray, labels: np.ndarray, voxel: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Voxel centroids that pass the grid outlier rule, as the node's fusion feeds isolation (defaults)."""
    cloud = filters.voxelize(np.asarray(xyz, np.float32), None, {"label": labels}, voxel)
    keep = filters.voxel_inliers(cloud.cells, neighbors=20, std_ratio=2.0)
    return cloud.xyz[keep], cloud.extras["label"][keep]


def scene_points(kind: str, category: str, seed: int) -> np.ndarray:
    """Voxel centroids as isolation sees them (float64)."""
    if kind == "object":
        xyz = make_object(category, 20000, seed).xyz
    else:
        columns = flatten((rgbd_tabletop_scan if kind == "rgbd" else lidar_tabletop_scan)(category, seed))
        xyz = columns["xyz"][np.isfinite(columns["xyz"]).all(axis=1)]
    return voxelized(xyz, np.zeros(len(xyz), np.int32))[0].astype(np.float64)


@pytest.fixture
def open3d_one_thread():
    """open3d on one thread (it ignores OMP_NUM_THREADS; on several its early stop depends on thread timing)."""
    o3d = pytest.importorskip("open3d")
    previous = o3d.utility.get_max_threads()
    o3d.utility.set_max_threads(1)
    yield o3d
    o3d.utility.set_max_threads(previous)


def open3d_plane(o3d, xyz: np.ndarray, distance: float, iterations: int, seed: int):
    """open3d's segment_plane: (4,) plane as it returns it and the inlier indices (the RANSAC tests' oracle)."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(xyz, np.float64)))
    o3d.utility.random.seed(seed)
    plane, inliers = cloud.segment_plane(distance_threshold=distance, ransac_n=3, num_iterations=iterations)
    return np.asarray(plane, np.float64), np.asarray(inliers, np.int64)
