"""The one conversion between builtin_interfaces/Time stamps and integer nanoseconds.

Integer nanoseconds are what the window, fusion and result lookup compare (exact, no float rounding);
messages carry ``sec`` + ``nanosec``. ``rclpy.time.Time(nanoseconds=...)`` is used where rclpy wants its
own type (tf2 lookups)."""

from __future__ import annotations

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with ``sec``/``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int):
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time (imported here: this module needs no ROS otherwise)."""
    from builtin_interfaces.msg import Time as TimeMsg

    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return TimeMsg(sec=sec, nanosec=nanosec)
