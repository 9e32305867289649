"""partslip_ros.stamps: the one Time <-> integer nanoseconds conversion (exact, both directions)."""

from __future__ import annotations

import pytest

from partslip_ros.stamps import ns_to_stamp, stamp_to_ns


@pytest.mark.parametrize("stamp_ns", [0, 1, 999_999_999, 1_000_000_000, 1_733_140_000_123_456_789, 2 ** 31 * 10 ** 9 - 1])
def test_round_trip_is_exact(stamp_ns):
    stamp = ns_to_stamp(stamp_ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == stamp_ns


def test_seconds_and_nanoseconds_are_split_without_float_rounding():
    stamp = ns_to_stamp(1_733_140_000_123_456_789)  # float64 seconds would lose the last digits
    assert (stamp.sec, stamp.nanosec) == (1_733_140_000, 123_456_789)
