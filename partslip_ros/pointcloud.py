"""sensor_msgs/PointCloud2 <-> numpy, vectorized.

Reading uses ``sensor_msgs_py.point_cloud2`` when it is importable (a ROS 2 install) and the layout
is plain (unpadded rows, native byte order), and otherwise our own view of the buffer as a structured
dtype (pip-only installs, padded organized clouds, big-endian data). Both give the same structured
array; everything after that is shared. Every reason to reject a message is a ``CloudFormatError``
with a short ``reason`` code (for counters) and a human-readable message (for the log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

try:  # present in a ROS 2 install, not on PyPI
    from sensor_msgs_py import point_cloud2 as _sensor_msgs_py
except ImportError:  # pragma: no cover - depends on the install
    _sensor_msgs_py = None

# PointField datatype -> numpy type code (without byte order).
POINTFIELD_TYPES: dict[int, str] = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
    PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}
NUMPY_TO_POINTFIELD: dict[str, int] = {v: k for k, v in POINTFIELD_TYPES.items()}
XYZ_TYPES = (PointField.FLOAT32, PointField.FLOAT64)
PACKED_RGB_TYPES = (PointField.FLOAT32, PointField.UINT32, PointField.INT32)


class CloudFormatError(ValueError):
    """A PointCloud2 cannot be used. ``reason`` is a stable code: empty, non_finite, missing_field,
    bad_field_type, too_large, malformed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DecodedCloud:
    """Finite points of one PointCloud2 (organized clouds flattened row-major).

    xyz: (N, 3) float32. rgb: (N, 3) float32 in [0, 1] or None. extras: name -> (N,) array of each
    requested extra field. num_input: points in the message; num_nonfinite: rows dropped for NaN/Inf xyz.
    """

    xyz: np.ndarray
    rgb: Optional[np.ndarray]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    num_input: int = 0
    num_nonfinite: int = 0


def has_sensor_msgs_py() -> bool:
    return _sensor_msgs_py is not None


def structured_dtype(fields: Sequence[PointField], point_step: int, is_bigendian: bool) -> np.dtype:
    """The numpy dtype of one point (``point_step`` bytes, padding kept as gaps)."""
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in POINTFIELD_TYPES:
            raise CloudFormatError("bad_field_type", f"field {f.name!r} has unknown PointField datatype {f.datatype}")
        if f.name in names:
            raise CloudFormatError("malformed", f"field {f.name!r} appears twice")
        base = np.dtype(order + POINTFIELD_TYPES[f.datatype])
        count = max(int(f.count), 1)
        if f.offset + base.itemsize * count > point_step:
            raise CloudFormatError("malformed", f"field {f.name!r} (offset {f.offset}) does not fit in "
                                                f"point_step {point_step}")
        names.append(f.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(f.offset))
    try:
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})
    except ValueError as error:
        raise CloudFormatError("malformed", f"fields do not form a valid point layout: {error}") from error
    _check_no_overlap(dtype)
    return dtype


def _check_no_overlap(dtype: np.dtype) -> None:
    """numpy accepts overlapping fields; a point layout must not (x and y sharing bytes reads garbage)."""
    spans = sorted((offset, offset + kind.itemsize, name) for name, (kind, offset) in dtype.fields.items())
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise CloudFormatError("malformed", f"fields {name!r} and {other!r} overlap (bytes {start}..{end - 1})")


def _check_layout(msg: PointCloud2) -> None:
    if msg.point_step <= 0:
        raise CloudFormatError("malformed", f"point_step must be > 0; got {msg.point_step}")
    if msg.row_step < msg.width * msg.point_step:
        raise CloudFormatError("malformed", f"row_step {msg.row_step} < width {msg.width} * point_step "
                                            f"{msg.point_step}")
    needed = (msg.height - 1) * msg.row_step + msg.width * msg.point_step
    if len(msg.data) < needed:
        raise CloudFormatError("malformed", f"data has {len(msg.data)} bytes; width {msg.width} x height "
                                            f"{msg.height} needs {needed}")
    if len(msg.data) > msg.height * msg.row_step:  # the steps do not describe this buffer (e.g. a wrong point_step)
        raise CloudFormatError("malformed", f"data has {len(msg.data)} bytes, more than height {msg.height} x "
                                            f"row_step {msg.row_step}: point_step/row_step do not match the data")


def read_structured_numpy(msg: PointCloud2) -> np.ndarray:
    """Our own reader: a strided structured view of the buffer, flattened and in native byte order."""
    _check_layout(msg)
    dtype = structured_dtype(msg.fields, msg.point_step, msg.is_bigendian)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    grid = np.ndarray(shape=(msg.height, msg.width), dtype=dtype, buffer=buffer,
                      strides=(msg.row_step, msg.point_step))
    flat = grid.reshape(-1)  # copies when rows are padded, a view otherwise
    native = dtype.newbyteorder("=") if msg.is_bigendian else dtype
    return flat.astype(native, copy=True)


def _plain_layout(msg: PointCloud2) -> bool:
    """Unpadded rows in this machine's byte order, every field count >= 1: the layouts sensor_msgs_py's
    read_points handles (it views the buffer with point_step only, ignoring row_step, byte-swaps in place,
    and asserts count > 0). Anything else goes to our reader, so both paths follow one rule: a field
    with count 0 is read as one value (as drivers that leave count unset mean it)."""
    native_big = np.little_endian is False
    return (msg.row_step == msg.width * msg.point_step and bool(msg.is_bigendian) == native_big
            and all(int(f.count) >= 1 for f in msg.fields))


def read_structured(msg: PointCloud2, prefer_sensor_msgs_py: bool = True) -> np.ndarray:
    """Structured (N,) array of all points, NaNs kept; sensor_msgs_py for plain layouts when available."""
    if prefer_sensor_msgs_py and _sensor_msgs_py is not None and _plain_layout(msg):
        _check_layout(msg)
        structured_dtype(msg.fields, msg.point_step, msg.is_bigendian)  # same validation both paths
        points = _sensor_msgs_py.read_points(msg, skip_nans=False)
        return np.asarray(points).reshape(-1)
    return read_structured_numpy(msg)


def _field(msg: PointCloud2, name: str) -> Optional[PointField]:
    return next((f for f in msg.fields if f.name == name), None)


def _check_xyz_fields(msg: PointCloud2) -> None:
    for name in ("x", "y", "z"):
        f = _field(msg, name)
        if f is None:
            present = ", ".join(f.name for f in msg.fields) or "none"
            raise CloudFormatError("missing_field", f"no {name!r} field (fields: {present})")
        if f.datatype not in XYZ_TYPES or max(f.count, 1) != 1:
            raise CloudFormatError("bad_field_type", f"field {name!r} must be one FLOAT32 or FLOAT64; got "
                                                     f"datatype {f.datatype} x {f.count}")


def _rgb_source(msg: PointCloud2, require_rgb: bool) -> Optional[str]:
    """Which color layout the cloud has: 'rgb'/'rgba' (packed 32 bit), 'r,g,b' (UINT8 each) or None."""
    for name in ("rgb", "rgba"):
        f = _field(msg, name)
        if f is not None:
            if f.datatype not in PACKED_RGB_TYPES or max(f.count, 1) != 1:
                raise CloudFormatError("bad_field_type", f"field {name!r} must be a packed 32-bit color "
                                                         f"(FLOAT32/UINT32); got datatype {f.datatype}")
            return name
    channels = [_field(msg, c) for c in ("r", "g", "b")]
    if all(c is not None and c.datatype == PointField.UINT8 and max(c.count, 1) == 1 for c in channels):
        return "r,g,b"
    if require_rgb:
        raise CloudFormatError("missing_field", "no color field (rgb, rgba or r/g/b): the detector needs "
                                                "colors; set require_rgb:=false to accept it (rendered shaded by "
                                                "geometry, pipeline.render.uncoloured)")
    return None


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) packed 0x00RRGGBB (uint32, or float32 carrying those bits) -> (N, 3) float32 in [0, 1]."""
    bits = np.ascontiguousarray(packed).view(np.uint32) if packed.dtype.itemsize == 4 else packed.astype(np.uint32)
    channels = np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1)
    return channels.astype(np.float32) / 255.0


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) float in [0, 1] -> (N,) float32 whose bits are 0x00RRGGBB (the RViz "rgb" convention)."""
    c = np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def _colors(points: np.ndarray, source: Optional[str]) -> Optional[np.ndarray]:
    if source is None:
        return None
    if source == "r,g,b":
        return np.stack([points["r"], points["g"], points["b"]], axis=1).astype(np.float32) / 255.0
    return unpack_rgb(points[source])


def decode_cloud(msg: PointCloud2, *, require_rgb: bool = True, extra_fields: Sequence[str] = (),
                 optional_fields: Sequence[str] = (), max_points: int = 1_000_000,
                 prefer_sensor_msgs_py: bool = True) -> DecodedCloud:
    """Validate and decode a PointCloud2, dropping non-finite rows; raises CloudFormatError.

    ``extra_fields`` must be present; ``optional_fields`` are carried in ``extras`` when present.
    """
    num = int(msg.width) * int(msg.height)
    if num == 0:
        raise CloudFormatError("empty", "the cloud has 0 points")
    if num > max_points:
        raise CloudFormatError("too_large", f"the cloud has {num} points > max_input_points {max_points}")
    _check_xyz_fields(msg)
    source = _rgb_source(msg, require_rgb)
    for name in extra_fields:
        if _field(msg, name) is None:
            raise CloudFormatError("missing_field", f"no {name!r} field, which this configuration needs")
    carried = list(extra_fields) + [n for n in optional_fields if n not in extra_fields and _field(msg, n)]
    for name in carried:
        if max(_field(msg, name).count, 1) != 1:
            raise CloudFormatError("bad_field_type", f"field {name!r} must hold one value per point; got count "
                                                     f"{_field(msg, name).count}")
    points = read_structured(msg, prefer_sensor_msgs_py)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf and is dropped below
        xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float32)
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.any():
        raise CloudFormatError("non_finite", f"all {num} points have NaN/Inf coordinates")
    rgb = _colors(points, source)
    return DecodedCloud(
        xyz=xyz[finite], rgb=None if rgb is None else rgb[finite],
        extras={name: np.asarray(points[name])[finite] for name in carried},
        num_input=num, num_nonfinite=int(num - finite.sum()),
    )


def build_cloud(header, columns: Sequence[tuple[str, np.ndarray]]) -> PointCloud2:
    """An unorganized little-endian PointCloud2 from named (N,) columns (dtype decides the PointField type)."""
    if not columns:
        raise ValueError("build_cloud needs at least one column")
    num = int(np.asarray(columns[0][1]).shape[0])
    dtype = np.dtype([(name, np.asarray(col).dtype.newbyteorder("<")) for name, col in columns])
    fields = []
    for name, _ in columns:
        kind = dtype.fields[name][0]
        code = kind.str[1:]
        if code not in NUMPY_TO_POINTFIELD:
            raise ValueError(f"column {name!r} has unsupported dtype {kind}")
        fields.append(PointField(name=name, offset=dtype.fields[name][1], datatype=NUMPY_TO_POINTFIELD[code], count=1))
    points = np.empty(num, dtype=dtype)
    for name, col in columns:
        col = np.asarray(col)
        if col.shape != (num,):
            raise ValueError(f"column {name!r} has shape {col.shape}; expected ({num},)")
        points[name] = col
    msg = PointCloud2(header=header, height=1, width=num, fields=fields, is_bigendian=False,
                      point_step=dtype.itemsize, row_step=dtype.itemsize * num)
    floats = [np.asarray(col) for _, col in columns if np.asarray(col).dtype.kind == "f" and name_is_coordinate(_)]
    msg.is_dense = bool(all(np.isfinite(col).all() for col in floats))
    msg.data = points.tobytes()
    return msg


def name_is_coordinate(name: str) -> bool:
    return name in ("x", "y", "z")


def xyz_rgb_columns(xyz: np.ndarray, rgb: Optional[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The x, y, z (float32) and packed rgb columns for ``build_cloud``."""
    xyz = np.asarray(xyz, dtype=np.float32)
    cols = [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])]
    if rgb is not None:
        cols.append(("rgb", pack_rgb(rgb)))
    return cols
