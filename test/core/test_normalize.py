"""Normalization: up axis to +Y, unit radius, and an exact way back to the input frame."""

import numpy as np
import pytest

from partslip_core.config import NormalizeConfig
from partslip_core.geometry import oriented_box, rotation_to_quaternion
from partslip_core.normalize import normalize, up_axis_rotation
from partslip_core.types import InputError, PointCloud


@pytest.mark.parametrize("axis, vector", [("x", [1, 0, 0]), ("y", [0, 1, 0]), ("z", [0, 0, 1]),
                                          ("-x", [-1, 0, 0]), ("-y", [0, -1, 0]), ("-z", [0, 0, -1])])
def test_up_axis_becomes_plus_y(axis, vector):
    rotation = up_axis_rotation(axis)
    np.testing.assert_allclose(rotation @ np.array(vector, float), [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)


def test_normalized_cloud_is_centered_unit_radius_and_invertible():
    rng = np.random.default_rng(0)
    xyz = (rng.normal(size=(500, 3)) * [3, 1, 0.2] + [10, -4, 2]).astype(np.float32)
    canonical = normalize(PointCloud.from_arrays(xyz, rng.random((500, 3))), NormalizeConfig(up_axis="z"))
    np.testing.assert_allclose(canonical.xyz.mean(axis=0), 0, atol=1e-5)
    assert np.linalg.norm(canonical.xyz, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(canonical.to_input_frame(canonical.xyz), xyz, atol=1e-4)
    # the input's z (the thin axis here) is the canonical y
    assert canonical.xyz[:, 1].std() < canonical.xyz[:, 0].std()


def test_missing_rgb_defaults_to_grey_and_0_255_colours_are_scaled():
    xyz = np.random.default_rng(1).random((20, 3))
    assert (normalize(PointCloud.from_arrays(xyz), NormalizeConfig()).rgb == 0.5).all()
    cloud = PointCloud.from_arrays(xyz, np.full((20, 3), 255.0))
    assert cloud.rgb.max() == 1.0


def test_degenerate_and_oversized_clouds_are_rejected():
    with pytest.raises(InputError, match="coincide"):
        normalize(PointCloud.from_arrays(np.ones((5, 3))), NormalizeConfig())
    with pytest.raises(InputError, match="max_points"):
        normalize(PointCloud.from_arrays(np.random.default_rng(0).random((11, 3))), NormalizeConfig(max_points=10))


def test_oriented_box_recovers_a_rotated_box():
    rng = np.random.default_rng(2)
    local = rng.uniform(-0.5, 0.5, size=(4000, 3)) * [0.8, 0.3, 0.1]
    angle = 0.6
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    points = local @ rotation.T + [1, 2, 3]
    box = oriented_box(points)
    np.testing.assert_allclose(box.extent, [0.8, 0.3, 0.1], atol=0.01)
    np.testing.assert_allclose(box.center, [1, 2, 3], atol=0.01)
    assert abs(abs(box.rotation[:, 0] @ rotation[:, 0]) - 1) < 1e-3  # principal axis along the long side
    np.testing.assert_allclose(np.linalg.det(box.rotation), 1.0, atol=1e-9)
    single = oriented_box(np.ones((1, 3)))
    np.testing.assert_allclose(single.extent, 0) and np.testing.assert_allclose(np.linalg.det(single.rotation), 1.0)


def test_quaternion_round_trip():
    from scipy.spatial.transform import Rotation
    for seed in range(20):
        rotation = Rotation.random(random_state=seed)
        q = rotation_to_quaternion(rotation.as_matrix())
        assert np.allclose(q, rotation.as_quat()) or np.allclose(q, -rotation.as_quat())
