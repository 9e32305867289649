"""PointCloud2 <-> numpy: our vectorized reader against an independent per-point struct decoder,
layouts (padding, big-endian, organized, NaN), colors, and every rejection reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from partslip_ros.pointcloud import (CloudFormatError, build_cloud, decode_cloud, pack_rgb, read_structured,
                                     read_structured_numpy, unpack_rgb, xyz_rgb_columns)

F32, F64, U32, I32, U8, I16 = (PointField.FLOAT32, PointField.FLOAT64, PointField.UINT32, PointField.INT32,
                               PointField.UINT8, PointField.INT16)
STRUCT_CODES = {F32: "f", F64: "d", U32: "I", I32: "i", U8: "B", I16: "h"}


def raw_cloud(fields: list[tuple[str, int, int]], rows: list[list[tuple]], point_step: int, row_pad: int = 0,
              big_endian: bool = False) -> PointCloud2:
    """A PointCloud2 packed point by point with struct (the independent reference encoder).

    fields: (name, offset, datatype); rows: height lists of width points, each a tuple of field values.
    """
    order = ">" if big_endian else "<"
    width = len(rows[0])
    row_step = width * point_step + row_pad
    data = bytearray(row_step * len(rows))
    for r, row in enumerate(rows):
        for c, values in enumerate(row):
            base = r * row_step + c * point_step
            for (_, offset, datatype), value in zip(fields, values):
                struct.pack_into(order + STRUCT_CODES[datatype], data, base + offset, value)
    msg = PointCloud2(header=Header(frame_id="world"), height=len(rows), width=width, is_bigendian=big_endian,
                      point_step=point_step, row_step=row_step,
                      fields=[PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields])
    msg.data = bytes(data)
    return msg


def random_points(rng, n: int) -> list[tuple]:
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    color = rng.integers(0, 256, size=(n, 3))
    packed = (color[:, 0] << 16) | (color[:, 1] << 8) | color[:, 2]
    label = rng.integers(-1, 5, size=n)
    return [(float(x), float(y), float(z), int(p), int(lab)) for (x, y, z), p, lab in zip(xyz, packed, label)]


LAYOUT = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("rgb", 16, U32), ("gt_label", 20, I32)]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("row_pad", [0, 12])
def test_reader_matches_struct_reference_with_padding_endianness_and_organized_rows(big_endian, row_pad):
    rng = np.random.default_rng(0)
    rows = [random_points(rng, 7) for _ in range(3)]  # organized 7 x 3, 4 padding bytes after z, 8 after label
    msg = raw_cloud(LAYOUT, rows, point_step=32, row_pad=row_pad, big_endian=big_endian)
    points = read_structured_numpy(msg)
    flat = [p for row in rows for p in row]
    assert points.shape == (21,)
    np.testing.assert_array_equal(points["x"], np.array([p[0] for p in flat], np.float32))
    np.testing.assert_array_equal(points["z"], np.array([p[2] for p in flat], np.float32))
    np.testing.assert_array_equal(points["rgb"], np.array([p[3] for p in flat], np.uint32))
    np.testing.assert_array_equal(points["gt_label"], np.array([p[4] for p in flat], np.int32))


def test_decode_unpacks_colors_drops_nans_and_keeps_extras_aligned():
    rng = np.random.default_rng(1)
    pts = random_points(rng, 10)
    pts[3] = (float("nan"),) + pts[3][1:]
    pts[7] = (pts[7][0], float("inf")) + pts[7][2:]
    msg = raw_cloud(LAYOUT, [pts], point_step=24)
    decoded = decode_cloud(msg, extra_fields=["gt_label"])
    keep = [i for i in range(10) if i not in (3, 7)]
    assert decoded.num_input == 10 and decoded.num_nonfinite == 2
    np.testing.assert_allclose(decoded.xyz, np.array([pts[i][:3] for i in keep], np.float32))
    packed = np.array([pts[i][3] for i in keep], np.uint32)
    expected_rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1) / 255.0
    np.testing.assert_allclose(decoded.rgb, expected_rgb, atol=1e-6)
    np.testing.assert_array_equal(decoded.extras["gt_label"], [pts[i][4] for i in keep])


def test_float_packed_rgb_and_separate_channels_decode_like_uint32():
    rng = np.random.default_rng(2)
    rgb = rng.random((50, 3)).astype(np.float32)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    as_float = build_cloud(Header(frame_id="f"), xyz_rgb_columns(xyz, rgb))
    assert [f.datatype for f in as_float.fields] == [F32, F32, F32, F32]
    channels = (np.rint(rgb * 255)).astype(np.uint8)
    separate = build_cloud(Header(frame_id="f"), xyz_rgb_columns(xyz, None)
                           + [("r", channels[:, 0]), ("g", channels[:, 1]), ("b", channels[:, 2])])
    a, b = decode_cloud(as_float), decode_cloud(separate)
    np.testing.assert_allclose(a.rgb, np.rint(rgb * 255) / 255, atol=1e-6)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_allclose(unpack_rgb(pack_rgb(rgb)), a.rgb, atol=1e-6)


def test_build_cloud_roundtrip_types_and_density():
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    msg = build_cloud(Header(frame_id="map"), xyz_rgb_columns(xyz, np.full((4, 3), 0.5))
                      + [("label", np.array([0, 1, -1, 2], np.int32)), ("score", np.ones(4, np.float32))])
    assert msg.width == 4 and msg.height == 1 and msg.point_step == 24 and msg.row_step == 96
    assert msg.is_dense and not msg.is_bigendian
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("rgb", 12, F32), ("label", 16, I32), ("score", 20, F32)]
    points = read_structured(msg)
    np.testing.assert_array_equal(points["label"], [0, 1, -1, 2])
    nan_xyz = xyz.copy()
    nan_xyz[1, 0] = np.nan
    assert not build_cloud(Header(), xyz_rgb_columns(nan_xyz, None)).is_dense


def test_sensor_msgs_py_and_own_reader_agree():
    pytest.importorskip("sensor_msgs_py", reason="sensor_msgs_py ships with ROS 2 installs only (not on PyPI)")
    rng = np.random.default_rng(4)
    msg = raw_cloud(LAYOUT, [random_points(rng, 30)], point_step=32, big_endian=False)
    ours, theirs = read_structured(msg, prefer_sensor_msgs_py=False), read_structured(msg, prefer_sensor_msgs_py=True)
    for name in ("x", "y", "z", "rgb", "gt_label"):
        np.testing.assert_array_equal(ours[name], theirs[name])


def xyz_msg(n: int, datatype: int = F32, with_rgb: bool = True) -> PointCloud2:
    size = 8 if datatype == F64 else 4
    fields = [("x", 0, datatype), ("y", size, datatype), ("z", 2 * size, datatype)]
    if with_rgb:
        fields.append(("rgb", 3 * size, U32))
    step = (4 if with_rgb else 3) * size
    return raw_cloud(fields, [[(0.1 * i, 0.2, 0.3) + ((0x00FF00,) if with_rgb else ()) for i in range(n)]], step)


def test_float64_xyz_is_accepted():
    decoded = decode_cloud(xyz_msg(5, F64))
    assert decoded.xyz.dtype == np.float32 and decoded.xyz.shape == (5, 3)
    np.testing.assert_allclose(decoded.rgb[0], [0.0, 1.0, 0.0])


@pytest.mark.parametrize("make, reason, words", [
    (lambda: xyz_msg(0), "empty", "0 points"),
    (lambda: raw_cloud(LAYOUT[:3] + [("rgb", 12, U32)], [[(float("nan"),) * 3 + (0,)] * 4], 16),
     "non_finite", "NaN"),
    (lambda: xyz_msg(5, with_rgb=False), "missing_field", "color"),
    (lambda: raw_cloud([("x", 0, F32), ("y", 4, F32)], [[(1.0, 2.0)]], 8), "missing_field", "'z'"),
    (lambda: raw_cloud([("x", 0, I16), ("y", 2, I16), ("z", 4, I16), ("rgb", 8, U32)], [[(1, 2, 3, 0)]], 12),
     "bad_field_type", "'x'"),
    (lambda: raw_cloud([("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("rgb", 16, F64)], [[(1.0, 2.0, 3.0, 0.5)]], 24),
     "bad_field_type", "'rgb'"),
])
def test_rejections_carry_reason_and_message(make, reason, words):
    with pytest.raises(CloudFormatError) as info:
        decode_cloud(make())
    assert info.value.reason == reason
    assert words in str(info.value)


def test_missing_rgb_is_allowed_when_not_required():
    decoded = decode_cloud(xyz_msg(5, with_rgb=False), require_rgb=False)
    assert decoded.rgb is None and decoded.xyz.shape == (5, 3)


def test_too_large_is_rejected_before_touching_the_data():
    msg = PointCloud2(height=1, width=2_000_000, point_step=16, row_step=32_000_000,
                      fields=[PointField(name=n, offset=4 * i, datatype=F32, count=1) for i, n in enumerate("xyz")])
    with pytest.raises(CloudFormatError) as info:
        decode_cloud(msg, max_points=1_000_000)  # msg.data is empty: decoding would fail differently
    assert info.value.reason == "too_large"


def test_truncated_data_and_fields_outside_point_step_are_malformed():
    msg = xyz_msg(4)
    msg.data = bytes(msg.data)[:-5]
    with pytest.raises(CloudFormatError, match="needs") as info:
        decode_cloud(msg)
    assert info.value.reason == "malformed"
    bad = xyz_msg(4)
    bad.fields[3].offset = 14  # rgb would end past point_step 16
    with pytest.raises(CloudFormatError, match="does not fit") as info:
        decode_cloud(bad)
    assert info.value.reason == "malformed"


def test_optional_fields_are_carried_only_when_present():
    rng = np.random.default_rng(5)
    with_label = raw_cloud(LAYOUT, [random_points(rng, 4)], point_step=24)
    assert set(decode_cloud(with_label, optional_fields=["gt_label", "gt_instance"]).extras) == {"gt_label"}
    assert decode_cloud(xyz_msg(3), optional_fields=["gt_label"]).extras == {}


def test_missing_extra_field_is_named():
    with pytest.raises(CloudFormatError, match="gt_label") as info:
        decode_cloud(xyz_msg(3), extra_fields=["gt_label"])
    assert info.value.reason == "missing_field"
