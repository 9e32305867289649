"""Malformed PointCloud2 messages never knock the node over: fed to the node's worker in-process through
``PartSlipNode.submit`` (the bulk: counters, /rosout log lines, no output), and a smaller sample through real
DDS to the running node; after them a good cloud is still segmented. The clouds come from ``cloud_fuzzer``.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections import Counter

import numpy as np
import pytest
from rcl_interfaces.msg import Log
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from partslip_ros.node import PartSlipNode
from partslip_ros.scan_publisher import scan_to_cloud

from .cloud_fuzzer import ACCEPT, ANY, GT, MUTATIONS, DecodeOptions, FuzzCase, make_case
from .conftest import RELIABLE, send_good_cloud_and_expect_a_result, wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")

_names = itertools.count()


NODE_OPTIONS = DecodeOptions(require_rgb=True, extra_fields=GT, max_points=1_000_000)  # the node's settings
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


def rejection_lines(outputs) -> list[tuple[str, int, int]]:
    """(reason, running count, level) of every "rejected cloud" log line of the node."""
    logs = list(outputs.logs)
    found = [(REJECT_LINE.search(log.msg), log.level) for log in logs]
    return [(m.group(1), int(m.group(2)), level) for m, level in found if m]


def total_rejected(node: PartSlipNode) -> int:
    return sum(node.stats_snapshot().rejected.values())


def check_rejections_logged_once(outputs, expected: Counter, elapsed_s: float) -> None:
    """Every rejection has exactly one log line with its reason and running count; warnings are throttled."""
    assert wait_for(lambda: len(rejection_lines(outputs)) >= sum(expected.values()), timeout=15), (
        f"{len(rejection_lines(outputs))} rejection log lines for {sum(expected.values())} rejections")
    lines = rejection_lines(outputs)
    for reason, count in expected.items():
        running = sorted(n for r, n, _ in lines if r == reason)
        assert running == list(range(1, count + 1)), f"{reason}: log lines {running[:10]}... for {count} rejections"
        levels = [level for r, n, level in lines if r == reason]
        warnings = sum(level >= Log.WARN for level in levels)
        first = next(level for r, n, level in lines if r == reason and n == 1)
        assert first == Log.WARN, f"the first {reason} rejection must be a warning"
        assert warnings <= math.ceil(elapsed_s) + 1, f"{reason}: {warnings} warnings in {elapsed_s:.1f} s"
    assert len(lines) == sum(expected.values())


NUM_NODE_CASES = 300


def test_node_worker_rejects_every_malformed_cloud_counts_and_logs_it_and_still_serves(verbose_node, mug_scans):
    """The bulk through the node's real worker (in-process ``submit``, the subscription's own callback)."""
    node, outputs, _ = verbose_node(f"fuzz_in_{next(_names)}")
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


def test_malformed_clouds_over_dds_are_rejected_and_a_good_cloud_is_still_segmented(verbose_node, mug_scans):
    topic = f"fuzz_dds_{next(_names)}"
    node, outputs, source = verbose_node(topic)
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
