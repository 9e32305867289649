"""Fuzz ``decode_cloud`` (the bulk, with a per-case oracle): malformed PointCloud2 messages are rejected with
their reason, valid ones decode to exactly the values written, and nothing crashes. The clouds come from
``cloud_fuzzer``; the node-level checks are in test_fuzz_node.py.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from partslip_ros.pointcloud import CloudFormatError, decode_cloud

from .cloud_fuzzer import ACCEPT, ANY, MUTATIONS, FuzzCase, make_case, random_options

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")


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
