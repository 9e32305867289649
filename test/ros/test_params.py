"""Parameters: declaration from the dataclasses, YAML params file through rcl's own parser, mapping to
PipelineConfig / FusionConfig, and runtime changes validated with a reason (real rclpy nodes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from partslip_ros.params import (SettingsError, all_defaults, parse_parts, pipeline_parameter_defaults,
                                 settings_from_values)
from test.conftest import flatten_keys as flatten

REPO = Path(__file__).resolve().parents[2]
SEGMENT_YAML = REPO / "config" / "segment.yaml"


def with_values(**changes):
    values = all_defaults()
    values.update({name.replace("__", "."): value for name, value in changes.items()})
    return settings_from_values(values)


def test_defaults_are_valid_and_mirror_the_core_config():
    from partslip_core.config import PipelineConfig
    settings = with_values()
    assert settings.parts == () and settings.trigger_mode == "continuous"
    assert settings.pipeline == PipelineConfig()
    assert settings.fusion.voxel_size == 0.005


def test_pipeline_values_map_into_the_core_config_including_view_pairs():
    settings = with_values(pipeline__render__image_size=160, pipeline__render__views=[10.0, 0.0, -20.0, 90.5],
                           pipeline__detector__score_threshold=0.3, pipeline__vote__small_part_names=["knob"],
                           parts=["lid", "handle"])
    assert settings.pipeline.render.image_size == 160
    assert settings.pipeline.render.views == [(10.0, 0.0), (-20.0, 90.5)]
    assert settings.pipeline.detector.score_threshold == 0.3
    assert settings.pipeline.vote.small_part_names == ["knob"]
    assert settings.parts == ("lid", "handle")
    flat = pipeline_parameter_defaults(settings.pipeline)
    assert flat["pipeline.render.views"] == [10.0, 0.0, -20.0, 90.5]


@pytest.mark.parametrize("name, value, words", [
    ("trigger__mode", "sometimes", "trigger.mode"),
    ("output__color_by", "rainbow", "output.color_by"),
    ("pipeline__detector__score_threshold", 1.5, "score_threshold"),
    ("pipeline__render__views", [10.0, 0.0, 5.0], "pairs"),
    ("pipeline__render__views", [95.0, 0.0], "^pipeline.render.views: elevation"),  # a relational check: ROS name
    ("pipeline__device", "tpu", "device"),
    ("fusion__voxel_size", -0.1, "fusion.voxel_size"),
    ("parts", ["lid", "lid"], "duplicates"),
    ("parts", ["lid", " "], "empty name"),
])
def test_invalid_values_are_rejected_with_the_parameter_named(name, value, words):
    with pytest.raises(SettingsError, match=words):
        with_values(**{name: value})


def test_parse_parts_treats_the_placeholder_as_unset():
    assert parse_parts([""]) == () and parse_parts([]) == () and parse_parts(" knob ") == ("knob",)


def test_config_file_values_become_the_pipeline_defaults(tmp_path):
    core_yaml = tmp_path / "core.yaml"
    core_yaml.write_text("render:\n  image_size: 256\ndetector:\n  backend: owlv2\n")
    defaults = all_defaults(str(core_yaml))
    assert defaults["pipeline.render.image_size"] == 256 and defaults["pipeline.detector.backend"] == "owlv2"
    with pytest.raises(SettingsError, match="not found"):
        all_defaults(str(tmp_path / "missing.yaml"))


@pytest.fixture
def yaml_node(ros):
    """A PartSlipNode in its own context, initialized with --params-file config/segment.yaml by rcl."""
    import rclpy
    from partslip_ros.node import PartSlipNode, ros_argv
    context = rclpy.Context()
    rclpy.init(args=ros_argv(["partslip_node", "--params-file", str(SEGMENT_YAML), "--ros-args", "-p",
                              "pipeline.render.image_size:=192"]), context=context)
    node = PartSlipNode(context=context)
    yield node
    node.shutdown()
    rclpy.try_shutdown(context=context)


def test_segment_yaml_is_parsed_by_rcl_and_every_key_is_a_declared_parameter(yaml_node):
    file_values = flatten(yaml.safe_load(SEGMENT_YAML.read_text())["/**"]["ros__parameters"])
    undeclared = [name for name in file_values if not yaml_node.has_parameter(name)]
    assert not undeclared, f"config/segment.yaml sets undeclared parameters: {undeclared}"
    for name, value in file_values.items():
        if name != "pipeline.render.image_size":
            assert yaml_node.get_parameter(name).value == value, name
    settings = yaml_node.settings
    assert settings.parts == ("handle", "lid", "body")
    assert settings.pipeline.device == "auto" and settings.pipeline.render.image_size == 192  # -p wins
    assert len(settings.pipeline.render.views) == 10


@pytest.fixture
def node(ros):
    from partslip_ros.node import PartSlipNode
    node = PartSlipNode(parameter_overrides=[Parameter("parts", value=["lid", "body"])])
    yield node
    node.shutdown()


def test_runtime_changes_are_validated_and_applied_on_the_next_run(node):
    ok = node.set_parameters([Parameter("parts", value=["spout", "lid"]),
                              Parameter("pipeline.detector.score_threshold", value=0.25),
                              Parameter("trigger.every_n_frames", value=2)])
    assert all(r.successful for r in ok)
    assert node.settings.parts == ("spout", "lid")
    assert node.settings.pipeline.detector.score_threshold == 0.25 and node.settings.every_n_frames == 2

    bad = node.set_parameters([Parameter("pipeline.detector.score_threshold", value=2.0)])[0]
    assert not bad.successful and "score_threshold" in bad.reason
    empty = node.set_parameters([Parameter("parts", Parameter.Type.STRING_ARRAY, [])])[0]
    assert not empty.successful and "at least one part" in empty.reason
    read_only = node.set_parameters([Parameter("input_topic", value="other")])[0]
    assert not read_only.successful and "read-only" in read_only.reason
    out_of_range = node.set_parameters([Parameter("window.size", value=0)])[0]
    assert not out_of_range.successful
    assert node.settings.parts == ("spout", "lid") and node.settings.pipeline.detector.score_threshold == 0.25
    assert node.get_parameter("parts").value == ["spout", "lid"]


def test_console_script_argument_translation(tmp_path):
    from partslip_ros.node import ros_argv
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("{}\n")
    b.write_text("{}\n")
    assert ros_argv(["x", "--params-file", str(a), "--ros-args", "-p", "a:=1"]) == [
        "x", "--ros-args", "--params-file", str(a), "--", "--ros-args", "-p", "a:=1"]
    inside = ["x", "--ros-args", "--params-file", str(b), "-p", "a:=1"]
    assert ros_argv(inside) == inside  # already a ROS argument: left alone
    with pytest.raises(SystemExit):
        ros_argv(["x", "--params-file"])
    for missing in (["x", "--params-file", "/nonexistent.yaml"], ["x", "--ros-args", "--params-file", "/no.yaml"]):
        with pytest.raises(SystemExit, match="no such file"):
            ros_argv(missing)


# --------------------------------------------------------------------------------------------- one schema

def test_every_parameter_has_a_schema_field_with_a_doc():
    from partslip_ros.params import schema_fields
    fields = schema_fields()
    assert set(all_defaults()) == set(fields)
    undocumented = [name for name, info in fields.items() if len(info.spec.doc) < 15]
    assert not undocumented, undocumented
    assert {"parts", "window.size", "fusion.cluster_select", "fusion.max_tilt_deg", "pipeline.masks.clip_margin",
            "pipeline.config_file"} <= set(fields)


def _comment_of_each_key(text: str) -> dict[str, str]:
    """{dotted key: its line} of a YAML file (block mappings; comments and continuation lines skipped)."""
    stack, lines = [], {}
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*|/\*\*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        lines[".".join(key for _, key in stack[2:])] = line
    return lines


def test_segment_yaml_agrees_with_the_schema():
    """config/segment.yaml keeps its hand-written comments; its claims are checked here: every key is a parameter,
    every value passes the parameter's own check, and a value not marked "changed" is the default."""
    from partslip_ros.params import check_parameter
    text = SEGMENT_YAML.read_text()
    values = flatten(yaml.safe_load(text)["/**"]["ros__parameters"])
    defaults, lines = all_defaults(), _comment_of_each_key(text)
    assert set(values) <= set(defaults), sorted(set(values) - set(defaults))
    for name, value in values.items():
        assert check_parameter(name, value) is None, (name, check_parameter(name, value))
        if "changed" not in lines[name]:
            assert value == defaults[name], f"{name}: {value!r} is not the default {defaults[name]!r}; mark it changed"
    changed = [name for name in values if "changed" in lines[name]]
    assert all(values[name] != defaults[name] for name in changed), changed
    settings_from_values({**defaults, **values})


def test_descriptors_carry_the_schema_doc_range_choices_and_read_only(node):
    from partslip_ros.params import INT64, schema_fields
    for name, info in schema_fields().items():
        descriptor, spec = node.describe_parameter(name), info.spec
        assert descriptor.description.startswith(spec.doc) and descriptor.read_only == spec.read_only, name
        value = node.get_parameter(name).value
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and (spec.low is not None or spec.high is not None):
            ranges = descriptor.integer_range if isinstance(value, int) else descriptor.floating_point_range
            assert len(ranges) == 1, f"{name} has a declared range but no ROS range"
            if spec.ge is not None:
                assert ranges[0].from_value == spec.ge, name
            if spec.le is not None:
                assert ranges[0].to_value == spec.le, name
        else:
            assert not descriptor.integer_range and not descriptor.floating_point_range, name
        for choice in spec.choices:
            assert choice in descriptor.additional_constraints, name
    size = node.describe_parameter("window.size").integer_range[0]
    assert (size.from_value, size.to_value, size.step) == (1, 100, 1)
    ratio = node.describe_parameter("pipeline.render.point_radius").floating_point_range[0]
    assert (ratio.from_value, ratio.to_value) == (0.0, 0.5)
    assert node.describe_parameter("pipeline.render.point_radius").additional_constraints == "in (0, 0.5)"
    assert node.describe_parameter("pipeline.superpoints.min_size").integer_range[0].to_value == INT64[1]
    assert node.describe_parameter("parts").dynamic_typing
    assert "Unit: m." in node.describe_parameter("fusion.voxel_size").description


@pytest.mark.parametrize("name, value, reason", [
    ("window.size", 0, "window.size must be in [1, 100]; got 0"),  # rclpy's own range check would answer first
    ("window.size", "big", "window.size must be an integer; got 'big' (a string)"),
    ("pipeline.render.point_radius", 0.5, "pipeline.render.point_radius must be in (0, 0.5); got 0.5"),  # ROS edge
    ("pipeline.superpoints.backend", "magic", "pipeline.superpoints.backend must be one of auto, cut_pursuit"),
    ("fusion.crop_min", [1.0], "fusion.crop_min must be 3 numbers; got 1 value(s): [1.0]"),
    ("pipeline.seed", -1, "pipeline.seed must be >= 0; got -1"),
])
def test_refused_sets_get_the_schema_reason(node, name, value, reason):
    before = node.get_parameter(name).value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and result.reason.startswith(reason), result.reason
    atomic = node.set_parameters_atomically([Parameter("window.size", value=5), Parameter(name, value=value)])
    assert not atomic.successful and atomic.reason.startswith(reason)
    assert node.get_parameter(name).value == before and node.get_parameter("window.size").value == 4


def test_a_bad_override_stops_the_node_with_the_schema_reason(ros):
    from partslip_ros.node import PartSlipNode
    with pytest.raises(SettingsError, match=r"^fusion.plane_min_fraction must be in \(0, 1\]; got 0.0$"):
        PartSlipNode("schema_override", parameter_overrides=[Parameter("fusion.plane_min_fraction", value=0.0)])


def test_the_parameter_listing_names_every_parameter(capsys):
    from partslip_ros.params import main
    assert main([]) == 0
    text = capsys.readouterr().out
    for name in all_defaults():
        assert f"\n{name}  (" in "\n" + text, name
    assert "window.size  (integer; default 4; in [1, 100])" in text
    assert "fusion.cluster_select  (string; default 'largest'; one of largest, nearest, crop)" in text
