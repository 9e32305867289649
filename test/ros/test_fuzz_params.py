"""Fuzz the node's parameters: bad changes (wrong types, out of range, schema bounds, non-finite, read-only)
are refused with a reason and change nothing, locally and over the parameter service; random changes leave
the settings consistent; the node still segments a good cloud afterwards.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rclpy.parameter import Parameter

from partslip_ros.node import PartSlipNode
from partslip_ros.params import SettingsError, current_values, settings_from_values

from .conftest import send_good_cloud_and_expect_a_result, wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")

_names = itertools.count()


BAD_CHANGES = [  # (parameter, value): each must be refused and change nothing
    ("window.size", "big"), ("parts", 5), ("pipeline.render.image_size", 1.5), ("trigger.mode", 3),
    ("pipeline.render.views", ["a"]), ("require_rgb", "yes"),  # wrong types
    ("window.size", 0), ("window.size", 101), ("trigger.max_rate_hz", -1.0), ("tf_timeout_s", 100.0),
    ("max_input_points", -5), ("pipeline.render.image_size", 8), ("fusion.voxel_size", -1.0),
    ("pipeline.detector.score_threshold", 1.5), ("pipeline.render.views", [1.0]), ("fusion.crop_min", [1.0]),
    ("pipeline.device", "tpu"), ("trigger.mode", "sometimes"), ("output.color_by", "rainbow"),  # out of range
    ("pipeline.render.point_radius", 0.5), ("fusion.max_tilt_deg", 91.0), ("pipeline.seed", -1),  # schema bounds
    ("pipeline.render.views", [float("nan"), 0.0]), ("window.max_age_s", float("inf")),
    ("fusion.outlier_std_ratio", float("nan")), ("pipeline.vote.score_threshold", float("nan")),  # non-finite
    ("parts", [""]), ("parts", ["handle", ""]), ("parts", ["lid", "lid"]),  # empty / duplicate parts
    ("pipeline.detector.backend", "yolo"), ("pipeline.detector.backend", ""),  # unknown backend
    ("input_topic", "elsewhere"), ("queue_size", 10),  # read-only
]


def param_values(node: PartSlipNode) -> dict:
    return current_values(node)


def test_bad_parameter_changes_are_refused_with_a_reason_and_change_nothing(verbose_node, mug_scans):
    node, outputs, source = verbose_node(f"fuzz_param_{next(_names)}")
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


def test_random_parameter_changes_leave_settings_consistent_and_the_node_serving(verbose_node, mug_scans):
    """Property: a refused change alters nothing; an accepted one is valid and is what the node now uses."""
    node, outputs, _ = verbose_node(f"fuzz_rparam_{next(_names)}")
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
