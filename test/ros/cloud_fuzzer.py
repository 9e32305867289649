"""The PointCloud2 fuzzer of the fuzz tests (test_fuzz_decode.py, test_fuzz_node.py): malformed clouds whose
outcome is known.

A seeded generator builds valid clouds with random layouts (field order, padding, types, endianness,
organized rows, row padding, NaN/Inf rows, colors, extra fields), then breaks each in exactly one way
whose outcome is known: reject with a given reason, accept with exactly the finite points written, or
(for lies the format cannot reveal, e.g. a flipped endianness flag) "either, but never a crash".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from partslip_ros.pointcloud import NUMPY_TO_POINTFIELD

ACCEPT, ANY = "accept", "any"  # expectations besides a CloudFormatError reason
GT = ("gt_label", "gt_instance")
UNKNOWN_DATATYPES = (0, 9, 10, 17, 42, 255)
INT_TYPES = (PointField.INT8, PointField.UINT8, PointField.INT16, PointField.UINT16, PointField.INT32,
             PointField.UINT32)
SIZES = {code: np.dtype(code).itemsize for code in NUMPY_TO_POINTFIELD}


@dataclass(frozen=True)
class DecodeOptions:
    require_rgb: bool = True
    extra_fields: tuple[str, ...] = ()
    max_points: int = 1_000_000

    def kwargs(self) -> dict:
        return dict(require_rgb=self.require_rgb, extra_fields=self.extra_fields, optional_fields=GT,
                    max_points=self.max_points, prefer_sensor_msgs_py=False)


@dataclass
class Column:
    """One field: name, numpy type code ("f4"...), element count, values (N,) or (N, count)."""

    name: str
    code: str
    values: np.ndarray
    count: int = 1


@dataclass
class Truth:
    """What an accepting decoder must return: the finite rows, in row-major order."""

    xyz: np.ndarray  # (M, 3) float32
    rgb: Optional[np.ndarray]  # (M, 3) float32 in [0, 1], None without a color source
    extras: dict[str, np.ndarray]  # carried fields, (M,)
    num_input: int
    num_nonfinite: int


@dataclass
class FuzzCase:
    mutation: str
    msg: PointCloud2
    expect: str  # ACCEPT, ANY or a CloudFormatError reason
    truth: Optional[Truth] = None
    options: DecodeOptions = field(default_factory=DecodeOptions)


# --------------------------------------------------------------------------------------------- generation

def xyz_columns(rng: np.random.Generator, n: int, nonfinite: float) -> tuple[list[Column], np.ndarray]:
    """x, y, z columns (float32 or float64) with a fraction of rows made NaN/Inf; returns their float32 view."""
    code = str(rng.choice(["f4", "f8"]))
    xyz = rng.uniform(-2.0, 2.0, (n, 3))
    bad = rng.random(n) < nonfinite
    poison = [np.nan, np.inf, -np.inf] + ([1e300] if code == "f8" else [])  # 1e300 overflows float32
    xyz[bad, rng.integers(0, 3, int(bad.sum()))] = rng.choice(poison, int(bad.sum()))
    stored = xyz.astype(code)
    with np.errstate(over="ignore"):
        as_float32 = stored.astype(np.float32)
    return [Column(a, code, stored[:, i]) for i, a in enumerate("xyz")], as_float32


def color_columns(rng: np.random.Generator, n: int, kind: str) -> tuple[list[Column], Optional[np.ndarray]]:
    channels = rng.integers(0, 256, (n, 3)).astype(np.uint32)
    packed = (channels[:, 0] << 16) | (channels[:, 1] << 8) | channels[:, 2]
    rgb = channels.astype(np.float32) / 255.0
    if kind == "rgb":
        return [Column("rgb", "f4", packed.view(np.float32))], rgb
    if kind == "rgba":
        return [Column("rgba", "u4", packed | np.uint32(0xFF000000))], rgb
    if kind == "r,g,b":
        return [Column(c, "u1", channels[:, i].astype(np.uint8)) for i, c in enumerate("rgb")], rgb
    return [], None


def extra_columns(rng: np.random.Generator, n: int, with_gt: bool) -> list[Column]:
    columns = [Column(name, "i4", rng.integers(-1, 6, n).astype(np.int32)) for name in GT] if with_gt else []
    optional = [Column("intensity", "f4", rng.random(n).astype(np.float32)),
                Column("ring", "u2", rng.integers(0, 64, n).astype(np.uint16)),
                Column("time", "f8", rng.random(n)),
                Column("normal", "f4", rng.normal(size=(n, 3)).astype(np.float32), count=3)]
    return columns + [c for c in optional if rng.random() < 0.4]


def encode(rng: np.random.Generator, columns: list[Column], height: int, width: int,
           big_endian: bool) -> PointCloud2:
    """Pack columns at random offsets (gaps, trailing padding, row padding), padding bytes random."""
    order = ">" if big_endian else "<"
    offsets, end = [], 0
    for c in columns:
        end += int(rng.choice([0, 0, 1, 2, 3]))
        offsets.append(end)
        end += SIZES[c.code] * c.count
    point_step = end + int(rng.choice([0, 0, 4, 7]))
    row_step = width * point_step + int(rng.choice([0, 0, 0, 5, 16]))
    formats = [order + c.code if c.count == 1 else (order + c.code, (c.count,)) for c in columns]
    dtype = np.dtype({"names": [c.name for c in columns], "formats": formats, "offsets": offsets,
                      "itemsize": point_step})
    points = np.frombuffer(rng.bytes(height * width * point_step), dtype).copy()
    for c in columns:
        points[c.name] = c.values
    rows = np.frombuffer(rng.bytes(height * row_step), np.uint8).copy().reshape(height, row_step)
    rows[:, :width * point_step] = points.view(np.uint8).reshape(height, width * point_step)
    msg = PointCloud2(header=Header(frame_id="world"), height=height, width=width, is_bigendian=big_endian,
                      point_step=point_step, row_step=row_step, is_dense=False,
                      fields=[PointField(name=c.name, offset=o, datatype=NUMPY_TO_POINTFIELD[c.code], count=c.count)
                              for c, o in zip(columns, offsets)])
    msg.data = rows.tobytes()
    return msg


def base_case(rng: np.random.Generator, options: DecodeOptions, nonfinite: Optional[float] = None,
              color: Optional[str] = None) -> FuzzCase:
    """A valid cloud for ``options`` (color when required, required extras present) and its truth."""
    height = int(rng.choice([1, 1, 1, 2, 3, 8]))
    width = int(rng.integers(1, 80))
    n = height * width
    nonfinite = float(rng.choice([0.0, 0.0, 0.1, 0.5])) if nonfinite is None else nonfinite
    xyz_cols, xyz = xyz_columns(rng, n, nonfinite)
    kinds = ["rgb", "rgba", "r,g,b"] + ([] if options.require_rgb else ["none"])
    color_cols, rgb = color_columns(rng, n, color or str(rng.choice(kinds)))
    extras = extra_columns(rng, n, with_gt=bool(options.extra_fields) or rng.random() < 0.5)
    columns = xyz_cols + color_cols + extras
    order = rng.permutation(len(columns))
    msg = encode(rng, [columns[i] for i in order], height, width, bool(rng.random() < 0.5))
    finite = np.isfinite(xyz).all(axis=1)
    truth = Truth(xyz[finite], None if rgb is None else rgb[finite],
                  {c.name: c.values[finite] for c in extras if c.name in GT}, n, int(n - finite.sum()))
    expect = ACCEPT if finite.any() else "non_finite"
    return FuzzCase("valid", msg, expect, truth if finite.any() else None, options)


# --------------------------------------------------------------------------------------------- mutations
# Each takes a valid case and breaks it in one way; it returns the expectation.

def _pick(rng: np.random.Generator, msg: PointCloud2, names: Optional[tuple[str, ...]] = None) -> PointField:
    fields = [f for f in msg.fields if names is None or f.name in names]
    return fields[int(rng.integers(len(fields)))]


def _field_end(f: PointField) -> int:
    code = {v: k for k, v in NUMPY_TO_POINTFIELD.items()}[f.datatype]
    return f.offset + SIZES[code] * max(f.count, 1)


def _color_names(msg: PointCloud2) -> tuple[str, ...]:
    names = {f.name for f in msg.fields}
    return tuple(n for n in ("rgb", "rgba", "r", "g", "b") if n in names)


def _layout_reason(msg: PointCloud2) -> Optional[str]:
    """'malformed' when point_step/row_step/data length cannot hold the claimed grid, else None."""
    needed = (msg.height - 1) * msg.row_step + msg.width * msg.point_step
    bad = (msg.point_step <= 0 or msg.row_step < msg.width * msg.point_step or len(msg.data) < needed
           or len(msg.data) > msg.height * msg.row_step)
    return "malformed" if bad else None


def m_all_nonfinite(rng, case):
    new = base_case(rng, case.options, nonfinite=1.0)
    case.msg, case.truth = new.msg, None
    return "non_finite"


def m_zero_size(rng, case):
    setattr(case.msg, str(rng.choice(["width", "height"])), 0)
    if rng.random() < 0.5:
        case.msg.data = b""
    return "empty"


def m_drop_xyz(rng, case):
    name = str(rng.choice(list("xyz")))
    case.msg.fields = [f for f in case.msg.fields if f.name != name]
    return "missing_field"


def m_no_fields(rng, case):
    case.msg.fields = []
    return "missing_field"


def m_drop_color(rng, case):
    color = _color_names(case.msg)
    if not color:
        return m_drop_xyz(rng, case)
    drop = str(rng.choice(color))
    case.msg.fields = [f for f in case.msg.fields if f.name != drop]
    if case.options.require_rgb:
        return "missing_field"
    case.truth.rgb = None
    return ACCEPT


def m_drop_required_extra(rng, case):
    if not case.options.extra_fields:
        case.options = replace(case.options, extra_fields=GT)  # the base has gt columns half of the time
        if not all(any(f.name == n for f in case.msg.fields) for n in GT):
            return "missing_field"
    drop = str(rng.choice(GT))
    case.msg.fields = [f for f in case.msg.fields if f.name != drop]
    return "missing_field"


def m_xyz_int_type(rng, case):
    f = _pick(rng, case.msg, tuple("xyz"))
    f.datatype = int(rng.choice(INT_TYPES))
    return "bad_field_type"


def m_xyz_count(rng, case):
    _pick(rng, case.msg, tuple("xyz")).count = int(rng.integers(2, 6))
    return "bad_field_type"


def m_unknown_datatype(rng, case):
    f = _pick(rng, case.msg)
    f.datatype = int(rng.choice(UNKNOWN_DATATYPES))
    if f.name in ("r", "g", "b") and case.options.require_rgb:
        return "missing_field"  # r/g/b of another type are not a color source at all
    return "bad_field_type"


def m_duplicate_name(rng, case):
    f = _pick(rng, case.msg)
    fields = list(case.msg.fields)
    fields.insert(int(rng.integers(len(fields) + 1)), PointField(name=f.name, offset=f.offset, datatype=f.datatype,
                                                                 count=f.count))
    case.msg.fields = fields
    return "malformed"


def m_overlap(rng, case):
    a, b = (case.msg.fields[i] for i in rng.choice(len(case.msg.fields), 2, replace=False))
    b.offset = int(a.offset + rng.integers(0, _field_end(a) - a.offset))
    return "malformed"  # overlapping (or, moved past the end, not fitting in point_step)


def m_count_carried(rng, case):
    gt = [f for f in case.msg.fields if f.name in GT]
    if not gt:
        return m_xyz_count(rng, case)
    gt[int(rng.integers(len(gt)))].count = int(rng.integers(2, 5))
    return "bad_field_type"


def m_count_color_channel(rng, case):
    channels = [f for f in case.msg.fields if f.name in ("r", "g", "b")]
    if not channels:
        return m_unknown_datatype(rng, case)
    channels[int(rng.integers(len(channels)))].count = int(rng.integers(2, 5))
    if case.options.require_rgb:
        return "missing_field"
    return ANY  # without rgb the wider channel may fit, overlap or overflow: no crash is all we ask


def m_xyz_count_zero(rng, case):
    _pick(rng, case.msg, tuple("xyz")).count = 0  # read as 1 element (lenient, like most readers)
    return case.expect


def m_rename_unused(rng, case):
    unused = [f for f in case.msg.fields if f.name in ("intensity", "ring", "time", "normal")]
    if not unused:
        return m_drop_xyz(rng, case)
    taken = {f.name for f in case.msg.fields}
    name = next(n for n in ("", "ü", "x ", "a" * 300, "_", "0") if n not in taken)
    unused[int(rng.integers(len(unused)))].name = name
    return case.expect


def m_truncate(rng, case):
    needed = (case.msg.height - 1) * case.msg.row_step + case.msg.width * case.msg.point_step
    case.msg.data = bytes(case.msg.data)[:int(rng.integers(0, needed))]
    return "malformed"


def m_extra_bytes(rng, case):
    case.msg.data = bytes(case.msg.data) + rng.bytes(int(rng.integers(1, 64)))
    return "malformed"


def m_point_step_small(rng, case):
    end = max(_field_end(f) for f in case.msg.fields)
    case.msg.point_step = int(rng.integers(0, end))
    return "malformed"


def m_point_step_larger(rng, case):
    case.msg.point_step += int(rng.integers(1, 9))
    return _layout_reason(case.msg) or ANY  # rows padded enough to hide the lie: garbage, but no crash


def m_point_step_smaller_consistent(rng, case):
    msg = case.msg
    msg.point_step = max(1, msg.point_step - int(rng.integers(1, 5)))
    msg.row_step = msg.width * msg.point_step
    return "malformed"  # either a field no longer fits or the data outgrows height * row_step


def m_huge_claim(rng, case):
    msg = case.msg
    msg.width = int(rng.integers(2 ** 20, 2 ** 32))
    msg.height = int(rng.integers(1, 2 ** 12))
    if rng.random() < 0.5:
        msg.row_step = min(2 ** 32 - 1, msg.width * msg.point_step)
    return "too_large" if msg.width * msg.height > case.options.max_points else "malformed"


def m_claim_within_limit(rng, case):
    msg = case.msg
    msg.height, msg.width = 1, int(rng.integers(msg.width * msg.height + 1, case.options.max_points + 1))
    msg.row_step = msg.width * msg.point_step
    return "malformed"  # allowed size, but the data is far too short


def m_row_step_short(rng, case):
    case.msg.row_step = int(rng.integers(0, case.msg.width * case.msg.point_step))
    return "malformed"


def m_row_step_long(rng, case):
    msg = case.msg
    msg.row_step += int(rng.integers(1, 64))
    reason = _layout_reason(msg)
    if reason:
        return reason
    return case.expect if msg.height == 1 else ANY


def m_endian_flip(rng, case):
    case.msg.is_bigendian = not case.msg.is_bigendian
    return ANY


def m_garbage_data(rng, case):
    case.msg.data = rng.bytes(len(case.msg.data))
    return ANY


def m_too_large(rng, case):
    case.options = replace(case.options, max_points=case.msg.width * case.msg.height - 1)
    return "too_large"


MUTATIONS: dict[str, Callable] = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("m_")}


def make_case(rng: np.random.Generator, options: DecodeOptions, mutation: Optional[str] = None) -> FuzzCase:
    """A valid base for ``options`` broken by ``mutation`` (random when None; "valid" = unbroken)."""
    names = ["valid"] + sorted(MUTATIONS)
    mutation = mutation or str(rng.choice(names))
    case = base_case(rng, options)
    if mutation != "valid":
        if case.expect != ACCEPT:  # the base itself lost every point: regenerate one that keeps some
            case = base_case(rng, options, nonfinite=0.0)
        case.expect = MUTATIONS[mutation](rng, case)
        case.mutation = mutation
    if case.expect not in (ACCEPT,):
        case.truth = None
    return case


def random_options(rng: np.random.Generator) -> DecodeOptions:
    return DecodeOptions(require_rgb=bool(rng.random() < 0.7), extra_fields=GT if rng.random() < 0.4 else (),
                         max_points=int(rng.choice([1_000_000, 100_000_000])))
