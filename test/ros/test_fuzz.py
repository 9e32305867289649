"""Fault/fuzz tests: malformed PointCloud2 messages and bad parameters never knock the node over.

A seeded generator builds valid clouds with random layouts (field order, padding, types, endianness,
organized rows, row padding, NaN/Inf rows, colors, extra fields), then breaks each in exactly one way
whose outcome is known: reject with a given reason, accept with exactly the finite points written, or
(for lies the format cannot reveal, e.g. a flipped endianness flag) "either, but never a crash".

Three levels: ``decode_cloud`` on every case (the bulk, per-case oracle); the node's worker fed
in-process through ``PartSlipNode.submit`` (counters, /rosout log lines, no output); and a smaller
sample through real DDS to the running node. Bad parameter changes are checked the same way.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
import pytest
from rcl_interfaces.msg import Log
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from partslip_ros.node import OUTPUT_QOS, NodeSpinner, PartSlipNode
from partslip_ros.params import SettingsError, current_values, settings_from_values
from partslip_ros.pointcloud import NUMPY_TO_POINTFIELD, CloudFormatError, decode_cloud
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_msgs", reason="build it with scripts/build_msgs.sh")
from partslip_msgs.msg import PartSegmentation  # noqa: E402

ACCEPT, ANY = "accept", "any"  # expectations besides a CloudFormatError reason
GT = ("gt_label", "gt_instance")
UNKNOWN_DATATYPES = (0, 9, 10, 17, 42, 255)
INT_TYPES = (PointField.INT8, PointField.UINT8, PointField.INT16, PointField.UINT16, PointField.INT32,
             PointField.UINT32)
SIZES = {code: np.dtype(code).itemsize for code in NUMPY_TO_POINTFIELD}
_names = itertools.count()


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


# --------------------------------------------------------------------------------------------- decode level

def check_decoded(case: FuzzCase, decoded) -> None:
    """Accepted: finite float32 xyz, aligned rgb/extras; with a truth, exactly the truth."""
    n = decoded.xyz.shape[0]
    assert decoded.xyz.dtype == np.float32 and decoded.xyz.shape == (n, 3) and n > 0
    assert np.isfinite(decoded.xyz).all()
    if decoded.rgb is not None:
        assert decoded.rgb.shape == (n, 3) and decoded.rgb.min() >= 0 and decoded.rgb.max() <= 1
    assert all(v.shape == (n,) for v in decoded.extras.values())
    truth = case.truth
    if truth is None:
        return
    np.testing.assert_array_equal(decoded.xyz, truth.xyz)
    if truth.rgb is None:
        assert decoded.rgb is None
    else:
        np.testing.assert_array_equal(decoded.rgb, truth.rgb)
    assert set(decoded.extras) == set(truth.extras)
    for name, values in truth.extras.items():
        np.testing.assert_array_equal(decoded.extras[name], values)
    assert (decoded.num_input, decoded.num_nonfinite) == (truth.num_input, truth.num_nonfinite)


def decode_outcome(case: FuzzCase) -> str:
    """ACCEPT or the rejection reason; any other exception fails the test with the case named."""
    try:
        decoded = decode_cloud(case.msg, **case.options.kwargs())
    except CloudFormatError as error:
        assert str(error), f"{case.mutation}: empty rejection message"
        return error.reason
    except Exception as error:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{case.mutation}: decode_cloud crashed with {type(error).__name__}: {error}")
    check_decoded(case, decoded)
    return ACCEPT


NUM_DECODE_CASES = 2000


def test_decode_never_crashes_and_rejects_each_malformed_cloud_with_its_reason():
    rng = np.random.default_rng(20240611)
    started = time.monotonic()
    reasons: Counter = Counter()
    mismatches = []
    for i in range(NUM_DECODE_CASES):
        mutation = (["valid"] + sorted(MUTATIONS))[i % (len(MUTATIONS) + 1)]  # every kind, many times
        case = make_case(rng, random_options(rng), mutation)
        outcome = decode_outcome(case)
        reasons[outcome] += 1
        if case.expect != ANY and outcome != case.expect:
            mismatches.append(f"#{i} {case.mutation}: expected {case.expect}, got {outcome}")
    assert not mismatches, "\n".join(mismatches[:20])
    print(f"\n{NUM_DECODE_CASES} decode cases in {time.monotonic() - started:.1f} s; outcomes: {dict(reasons)}")
    every = {"accept", "empty", "non_finite", "missing_field", "bad_field_type", "too_large", "malformed"}
    assert every <= set(reasons)
    assert time.monotonic() - started < 60


def test_generator_is_honest_its_valid_clouds_decode_to_the_values_written():
    """The oracle itself: unbroken clouds of every layout decode exactly (else the fuzz proves nothing)."""
    rng = np.random.default_rng(7)
    seen = Counter()
    for _ in range(150):
        case = make_case(rng, random_options(rng), "valid")
        assert decode_outcome(case) == case.expect
        msg = case.msg
        seen[(msg.is_bigendian, msg.height > 1, msg.row_step > msg.width * msg.point_step)] += 1
    assert len(seen) == 8  # both endiannesses x organized or not x row padding or not


def test_sensor_msgs_py_path_agrees_when_installed():
    from partslip_ros.pointcloud import has_sensor_msgs_py
    if not has_sensor_msgs_py():
        pytest.skip("sensor_msgs_py comes with a ROS 2 install, not with the PyPI wheels")
    rng = np.random.default_rng(11)
    for _ in range(100):
        case = make_case(rng, random_options(rng))
        try:
            ours = decode_cloud(case.msg, **case.options.kwargs()).xyz
        except CloudFormatError as error:
            with pytest.raises(CloudFormatError) as info:
                decode_cloud(case.msg, **{**case.options.kwargs(), "prefer_sensor_msgs_py": True})
            assert info.value.reason == error.reason
            continue
        np.testing.assert_array_equal(decode_cloud(case.msg, **{**case.options.kwargs(),
                                                               "prefer_sensor_msgs_py": True}).xyz, ours)


# --------------------------------------------------------------------------------------------- node level

NODE_OPTIONS = DecodeOptions(require_rgb=True, extra_fields=GT, max_points=1_000_000)  # the node's settings
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
REJECT_LINE = re.compile(r"rejected cloud .*\[(\w+), (\d+) so far\]$", re.S)


def rejected_cases(rng: np.random.Generator, count: int) -> list[FuzzCase]:
    """``count`` cases the node must reject (known reason), every mutation kind represented."""
    cases: list[FuzzCase] = []
    kinds = itertools.cycle(sorted(MUTATIONS))
    while len(cases) < count:
        case = make_case(rng, NODE_OPTIONS, next(kinds))
        if case.expect not in (ACCEPT, ANY) and case.options == NODE_OPTIONS:
            case.msg.header.frame_id = "world"
            cases.append(case)
    return cases


class Outputs:
    """Everything the node publishes on its result topics, and its /rosout lines."""

    def __init__(self, ros, node: PartSlipNode) -> None:
        self.node = ros.create_node(f"fuzz_listener_{next(_names)}")
        fqn, self.logger = node.get_fully_qualified_name(), node.get_logger().name
        self.results: list = []
        self.logs: list[Log] = []
        topics = ((PointCloud2, "labeled_cloud"), (MarkerArray, "markers"), (PartSegmentation, "segmentation"))
        for kind, topic in topics:
            self.node.create_subscription(kind, f"{fqn}/{topic}", self.results.append, OUTPUT_QOS)
        qos = QoSProfile(depth=5000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Log, "/rosout", self._log, qos)

    def _log(self, msg: Log) -> None:
        if msg.name == self.logger:
            self.logs.append(msg)

    def rejection_lines(self) -> list[tuple[str, int, int]]:
        """(reason, running count, level) of every "rejected cloud" log line."""
        found = (REJECT_LINE.search(m.msg) for m in self.logs)
        return [(m.group(1), int(m.group(2)), log.level) for m, log in zip(found, self.logs) if m]

    def segmentations(self) -> list:
        return [r for r in self.results if isinstance(r, PartSegmentation)]


NODE_PARAMS = {  # ground_truth detector, 3 small views, one run per accepted cloud, everything queued
    "pipeline.detector.backend": "ground_truth", "pipeline.device": "cpu", "pipeline.render.image_size": 128,
    "pipeline.render.views": [10.0, 0.0, 10.0, 120.0, 30.0, 240.0], "input_qos": "reliable", "fixed_frame": "world",
    "queue_size": 100, "window.size": 1, "trigger.every_n_frames": 1, "trigger.max_rate_hz": 0.0,
    "parts": ["body", "handle"],
}


@pytest.fixture
def fuzz_node(ros):
    """Factory (topic, parameter overrides, PartSlipNode kwargs) -> (node, Outputs, source node), spun in
    background threads, node logging at DEBUG; torn down in order (executors joined before rclpy shuts down)."""
    created = []

    def make(topic: str, params: Optional[dict] = None, **kwargs):
        values = {**NODE_PARAMS, "input_topic": topic, **(params or {})}
        node = PartSlipNode(f"partslip_fuzz_{next(_names)}", **kwargs,
                            parameter_overrides=[Parameter(name, value=value) for name, value in values.items()])
        node.get_logger().set_level(LoggingSeverity.DEBUG)
        outputs = Outputs(ros, node)
        source = ros.create_node(f"fuzz_source_{next(_names)}")
        spinner = NodeSpinner([node, outputs.node, source], [node.service_node]).start()
        created.append((spinner, node, [outputs.node, source]))
        return node, outputs, source

    yield make
    for spinner, node, others in created:
        spinner.stop()
        node.shutdown()
        for other in others:
            other.destroy_node()


def total_rejected(node: PartSlipNode) -> int:
    return sum(node.stats_snapshot().rejected.values())


def check_rejections_logged_once(outputs: Outputs, expected: Counter, elapsed_s: float) -> None:
    """Every rejection has exactly one log line with its reason and running count; warnings are throttled."""
    assert wait_for(lambda: len(outputs.rejection_lines()) >= sum(expected.values()), timeout=15), (
        f"{len(outputs.rejection_lines())} rejection log lines for {sum(expected.values())} rejections")
    lines = outputs.rejection_lines()
    for reason, count in expected.items():
        running = sorted(n for r, n, _ in lines if r == reason)
        assert running == list(range(1, count + 1)), f"{reason}: log lines {running[:10]}... for {count} rejections"
        levels = [level for r, n, level in lines if r == reason]
        warnings = sum(level >= Log.WARN for level in levels)
        first = next(level for r, n, level in lines if r == reason and n == 1)
        assert first == Log.WARN, f"the first {reason} rejection must be a warning"
        assert warnings <= math.ceil(elapsed_s) + 1, f"{reason}: {warnings} warnings in {elapsed_s:.1f} s"
    assert len(lines) == sum(expected.values())


def send_good_cloud_and_expect_a_result(node, outputs, send: Callable[[PointCloud2], None], scan,
                                        runs_before: int) -> None:
    good = scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True)
    send(good)
    assert wait_for(lambda: len(outputs.segmentations()) == 1, timeout=60), node.stats_snapshot()
    seg = outputs.segmentations()[0]
    assert seg.header.stamp == good.header.stamp and seg.num_labeled_points > 0
    # The result is published just before the run is counted: wait for the counter too.
    assert wait_for(lambda: node.stats_snapshot().runs_ok == runs_before + 1, timeout=10), node.stats_snapshot()
    assert node.stats_snapshot().runs_failed == {}


NUM_NODE_CASES = 300


def test_node_worker_rejects_every_malformed_cloud_counts_and_logs_it_and_still_serves(fuzz_node, mug_scans):
    """The bulk through the node's real worker (in-process ``submit``, the subscription's own callback)."""
    node, outputs, _ = fuzz_node(f"fuzz_in_{next(_names)}")
    cases = rejected_cases(np.random.default_rng(99), NUM_NODE_CASES)
    expected = Counter(case.expect for case in cases)
    started = time.monotonic()
    for start in range(0, len(cases), 50):  # chunks below queue_size: nothing is dropped for being late
        for case in cases[start:start + 50]:
            node.submit(case.msg)
        done = start + len(cases[start:start + 50])
        assert wait_for(lambda: total_rejected(node) == done, timeout=30), node.stats_snapshot()
    elapsed = time.monotonic() - started
    stats = node.stats_snapshot()
    assert stats.rejected == dict(expected), f"counted {stats.rejected}, expected {dict(expected)}"
    assert (stats.received, stats.accepted, stats.dropped_queue_full) == (len(cases), 0, 0)
    assert stats.runs_ok == 0 and stats.runs_failed == {}
    check_rejections_logged_once(outputs, expected, elapsed)
    time.sleep(0.2)
    assert outputs.results == [], "a result was published for rejected input"
    print(f"\nnode fuzz: {len(cases)} clouds rejected in {elapsed:.1f} s: {dict(sorted(expected.items()))}")
    send_good_cloud_and_expect_a_result(node, outputs, node.submit, mug_scans[1][0], 0)


NUM_DDS_CASES = 48


def test_malformed_clouds_over_dds_are_rejected_and_a_good_cloud_is_still_segmented(fuzz_node, mug_scans):
    topic = f"fuzz_dds_{next(_names)}"
    node, outputs, source = fuzz_node(topic)
    pub = source.create_publisher(PointCloud2, topic, RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, timeout=10)
    cases = rejected_cases(np.random.default_rng(5), NUM_DDS_CASES)
    too_old = scan_to_cloud(Header(frame_id="world"), mug_scans[1][0], True)
    too_old.header.stamp.sec = 1  # 1970: older than window.max_age_s
    other_frame = scan_to_cloud(Header(frame_id="camera"), mug_scans[1][0], True)
    expected = Counter(case.expect for case in cases) + Counter({"too_old": 1, "unknown_frame": 1})
    started = time.monotonic()
    for msg in [case.msg for case in cases] + [too_old, other_frame]:
        pub.publish(msg)
    assert wait_for(lambda: total_rejected(node) == sum(expected.values()), timeout=30), node.stats_snapshot()
    stats = node.stats_snapshot()
    assert stats.rejected == dict(expected) and stats.accepted == 0 and stats.runs_ok == 0
    check_rejections_logged_once(outputs, expected, time.monotonic() - started)
    print(f"\nDDS fuzz: {sum(expected.values())} clouds rejected: {dict(sorted(expected.items()))}")
    time.sleep(0.2)
    assert outputs.results == []
    send_good_cloud_and_expect_a_result(node, outputs, pub.publish, mug_scans[1][0], 0)


# --------------------------------------------------------------------------------------------- parameters

BAD_CHANGES = [  # (parameter, value): each must be refused and change nothing
    ("window.size", "big"), ("parts", 5), ("pipeline.render.image_size", 1.5), ("trigger.mode", 3),
    ("pipeline.render.views", ["a"]), ("require_rgb", "yes"),  # wrong types
    ("window.size", 0), ("window.size", 101), ("trigger.max_rate_hz", -1.0), ("tf_timeout_s", 100.0),
    ("max_input_points", -5), ("pipeline.render.image_size", 8), ("fusion.voxel_size", -1.0),
    ("pipeline.detector.score_threshold", 1.5), ("pipeline.render.views", [1.0]), ("fusion.crop_min", [1.0]),
    ("pipeline.device", "tpu"), ("trigger.mode", "sometimes"), ("output.color_by", "rainbow"),  # out of range
    ("pipeline.render.views", [float("nan"), 0.0]), ("window.max_age_s", float("inf")),
    ("fusion.outlier_std_ratio", float("nan")), ("pipeline.vote.score_threshold", float("nan")),  # non-finite
    ("parts", [""]), ("parts", ["handle", ""]), ("parts", ["lid", "lid"]),  # empty / duplicate parts
    ("pipeline.detector.backend", "yolo"), ("pipeline.detector.backend", ""),  # unknown backend
    ("input_topic", "elsewhere"), ("queue_size", 10),  # read-only
]


def param_values(node: PartSlipNode) -> dict:
    return current_values(node)


def test_bad_parameter_changes_are_refused_with_a_reason_and_change_nothing(fuzz_node, mug_scans):
    node, outputs, source = fuzz_node(f"fuzz_param_{next(_names)}")
    before, settings = param_values(node), node.settings
    for name, value in BAD_CHANGES:
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and result.reason, f"{name}={value!r} was accepted"
        assert param_values(node) == before and node.settings == settings, f"{name}={value!r} changed something"
    with pytest.raises(Exception, match="not declared|undeclared"):
        node.set_parameters([Parameter("no_such_parameter", value=1)])
    remote_refusals(node, source, BAD_CHANGES[::3])
    assert param_values(node) == before
    with pytest.raises(SettingsError, match="yolo"):  # at startup too: the node does not come up
        PartSlipNode(f"partslip_bad_{next(_names)}", parameter_overrides=[
            Parameter("pipeline.detector.backend", value="yolo")])
    send_good_cloud_and_expect_a_result(node, outputs, node.submit, mug_scans[1][0], 0)


def remote_refusals(node: PartSlipNode, source, changes: list) -> None:
    """The same refusals through the node's parameter service, as ``ros2 param set`` sends them."""
    from rclpy.parameter_client import AsyncParameterClient
    client = AsyncParameterClient(source, node.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=10)
    for name, value in changes + [("no_such_parameter", 1)]:
        future = client.set_parameters([Parameter(name, value=value)])
        assert wait_for(future.done, timeout=10), f"no answer to {name}={value!r}"
        result = future.result().results[0]
        assert not result.successful, f"{name}={value!r} was accepted over the service"


def random_parameter_value(rng: np.random.Generator, current):
    """A plausible-to-absurd replacement value of any type."""
    pool = [None, "", "x" * 1000, -1, 0, 2 ** 62, -(2 ** 62), float("nan"), float("inf"), -1e308, 0.0, 1e-12,
            True, False, [], [""], [1.0], [float("nan")] * 2, ["a", "a"], [1, 2, 3]]
    if isinstance(current, bool):
        pool += [not current]
    elif isinstance(current, (int, float)):
        pool += [current * 2, current + 1, -current]
    value = pool[int(rng.integers(len(pool)))]
    return "" if value is None else value


def test_random_parameter_changes_leave_settings_consistent_and_the_node_serving(fuzz_node, mug_scans):
    """Property: a refused change alters nothing; an accepted one is valid and is what the node now uses."""
    node, outputs, _ = fuzz_node(f"fuzz_rparam_{next(_names)}")
    rng = np.random.default_rng(3)
    original = param_values(node)
    names = sorted(original)
    accepted = refused = 0
    for _ in range(250):
        name = names[int(rng.integers(len(names)))]
        before = param_values(node)
        result = node.set_parameters([Parameter(name, value=random_parameter_value(rng, before[name]))])[0]
        after = param_values(node)
        if result.successful:
            accepted += 1
            assert node.settings == settings_from_values(after)
        else:
            refused += 1
            assert after == before and result.reason
    print(f"\nrandom parameter changes: {accepted} accepted, {refused} refused")
    assert refused > 150 and accepted > 5, (accepted, refused)
    changed = [Parameter(n, value=v) for n, v in original.items() if param_values(node)[n] != v]
    restored = node.set_parameters_atomically(changed) if changed else None
    assert restored is None or restored.successful, restored
    assert param_values(node) == original
    send_good_cloud_and_expect_a_result(node, outputs, node.submit, mug_scans[1][0], 0)
