"""ROS parameters of the node: declaration with descriptors, validation, and mapping to typed settings.

One schema (``partslip_core.schema``) describes every parameter where its value is used: the node's own
(``NodeParameters``: topics, window, trigger, outputs), ``fusion.*`` (``partslip_core.FusionConfig``,
which composes the core's ``IsolationConfig``) and ``pipeline.<section>.<field>`` (every field of
``partslip_core.PipelineConfig``). From each field's declaration come the ROS descriptor (description,
read-only, integer/floating-point range, choices and other constraints as ``additional_constraints``),
the per-value check used at start and on every set (``check_parameter``) and the listing
``python -m partslip_ros.params`` prints. Pipeline defaults come from ``pipeline.config_file`` when it
names a core YAML (else the reference preset). ``render.views`` is a flat double array [elev0, azim0, ...].

``settings_from_values`` is pure (no ROS): it turns a {name: value} map into ``NodeSettings`` or
raises ``SettingsError`` with the reason, which the node returns when it rejects a runtime change.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from partslip_core.fusion_config import FusionConfig
from partslip_core.schema import ConfigError, FieldInfo, ParamSpec, check_value, from_flat, walk
from partslip_core.schema_listing import entry
from partslip_ros.node_parameters import NodeParameters

PIPELINE_PREFIX = "pipeline."
FUSION_PREFIX = "fusion."
DYNAMIC_PARAMETERS = ("parts",)  # a list or a comma-separated string; validated by parse_parts
VIEWS = "pipeline.render.views"
INT64 = (-2 ** 63, 2 ** 63 - 1)


class SettingsError(ValueError):
    """A parameter value is invalid; the message names the parameter and the reason."""


@functools.lru_cache(maxsize=1)
def schema_fields() -> dict[str, FieldInfo]:
    """{ROS name: schema field} of every parameter (defaults: the reference preset's)."""
    from partslip_core.config import PipelineConfig
    fields = walk(NodeParameters) + walk(FusionConfig, FUSION_PREFIX) + walk(PipelineConfig, PIPELINE_PREFIX)
    return {info.name: info for info in fields}


def _flatten_value(value: Any) -> Any:
    """Dataclass field value -> ROS parameter value (tuples/lists of pairs become flat lists)."""
    if isinstance(value, (list, tuple)):
        flat: list = []
        for item in value:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        if flat and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            return [float(v) for v in flat]
        return [str(v) for v in flat] if flat else [""]
    return value


def _core_value(name: str, value: Any) -> Any:
    """ROS value -> the field's core value: [''] stands for an empty string list, views come in flat pairs."""
    if isinstance(value, (list, tuple)):
        value = [v for v in value if v != ""]
    if name == VIEWS and isinstance(value, list):
        if len(value) == 0 or len(value) % 2:
            raise SettingsError(f"{VIEWS} must hold [elevation, azimuth] pairs; got {len(value)} values")
        value = [(value[i], value[i + 1]) for i in range(0, len(value), 2)]
    return value


def check_parameter(name: str, value: Any) -> Optional[str]:
    """Why ``value`` cannot be parameter ``name`` by its own declaration (type, range, choices, finiteness),
    else None; relational rules are checked with the whole set (``settings_from_values``)."""
    info = schema_fields().get(name)
    if info is None or info.spec.dynamic:
        return None
    try:
        check_value(name, _core_value(name, value), info.type, info.spec)
    except (ConfigError, SettingsError) as error:
        return str(error)
    return None


def pipeline_parameter_defaults(config) -> dict[str, Any]:
    """{"pipeline.<section>.<field>": ROS value} for every field of a PipelineConfig."""
    return {info.name: _flatten_value(info.default) for info in walk(config, PIPELINE_PREFIX)}


def fusion_parameter_defaults() -> dict[str, Any]:
    return {info.name: _flatten_value(info.default) for info in walk(FusionConfig, FUSION_PREFIX)}


def node_parameter_defaults() -> dict[str, Any]:
    return {info.name: _flatten_value(info.default) for info in walk(NodeParameters)}


def _unflatten_pipeline(values: Mapping[str, Any]) -> dict[str, Any]:
    """pipeline.* ROS values -> nested dict for ``config_from_dict`` (views back to pairs)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if not name.startswith(PIPELINE_PREFIX) or name == "pipeline.config_file":
            continue
        parts = name[len(PIPELINE_PREFIX):].split(".")
        value = _core_value(name, value)
        if len(parts) == 1:
            nested[parts[0]] = value
        else:
            nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


@dataclass(frozen=True)
class NodeSettings:
    """A validated snapshot of all parameters; the worker takes one per run."""

    parts: tuple[str, ...]
    max_input_points: int
    max_coordinate_m: float
    require_rgb: bool
    tf_timeout_s: float
    window_size: int
    window_max_age_s: float
    window_max_future_s: float
    window_time_jump_s: float
    trigger_mode: str
    every_n_frames: int
    max_rate_hz: float
    service_timeout_s: float
    color_by: str
    publish_detections: bool
    debug: bool
    fusion: FusionConfig
    pipeline: Any  # partslip_core.PipelineConfig
    sensor_to_fixed: Any = None  # partslip_ros.static_transform.StaticTransform or None

    @property
    def backend_info(self):
        """The configured detector backend's registry facts (``partslip_core.detect.BackendInfo``; None = unknown)."""
        from partslip_core.detect.registry import DetectorError, backend_info
        try:
            return backend_info(self.pipeline.detector.backend)
        except DetectorError:
            return None

    @property
    def extra_fields(self) -> tuple[str, ...]:
        """Per-point fields every input cloud must carry: the backend's preferred set (the ground_truth backend's
        gt_label/gt_instance), decoded and handed to the detector."""
        info = self.backend_info
        return info.point_fields[0] if info is not None and info.point_fields else ()

    @property
    def optional_fields(self) -> tuple[str, ...]:
        """Every other field a registered backend reads, decoded when a cloud carries it (so the window still
        holds them after a runtime backend change)."""
        from partslip_core.detect.registry import available_backends, backend_info
        names = (n for b in available_backends() for n in backend_info(b).field_names)
        return tuple(n for n in dict.fromkeys(names) if n not in self.extra_fields)


MAX_PARTS = 64
MAX_PART_NAME_CHARS = 100


def parse_parts(value: Any) -> tuple[str, ...]:
    """Part names from a string array or a comma-separated string ("", [], [''] or unset = none).

    Blank names, duplicates, more than ``MAX_PARTS`` names or names longer than ``MAX_PART_NAME_CHARS``
    are errors (detector prompts have a token budget: such inputs can only fail later)."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        value = [] if not text else text.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"parts must be a list of names or a comma-separated string; got {value!r}")
    names = [v.strip().strip("'\"").strip() for v in value]
    if names in ([], [""]):
        return ()
    if any(not n for n in names):
        raise SettingsError(f"parts contains an empty name: {list(value)!r}")
    if len(names) > MAX_PARTS:
        raise SettingsError(f"parts has {len(names)} names; at most {MAX_PARTS} are supported")
    long_names = [n for n in names if len(n) > MAX_PART_NAME_CHARS]
    if long_names:
        raise SettingsError(f"parts: a name has {len(long_names[0])} characters; at most {MAX_PART_NAME_CHARS} "
                            f"(starts {long_names[0][:30]!r})")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SettingsError(f"parts has duplicates: {', '.join(duplicates)}")
    return tuple(names)


def _node_parameters(values: Mapping[str, Any]) -> NodeParameters:
    names = node_parameter_defaults()
    try:
        return from_flat(NodeParameters, {n: _core_value(n, v) for n, v in values.items() if n in names})
    except ConfigError as error:
        raise SettingsError(str(error)) from error


def _fusion_config(values: Mapping[str, Any]) -> FusionConfig:
    flat = {name[len(FUSION_PREFIX):]: value for name, value in values.items() if name.startswith(FUSION_PREFIX)}
    try:
        return FusionConfig.from_parameters(flat)
    except ConfigError as error:
        raise SettingsError(str(error)) from error


def _pipeline_config(values: Mapping[str, Any]):
    from dataclasses import fields

    from partslip_core.config import PipelineConfig, config_from_dict
    try:
        return config_from_dict(_unflatten_pipeline(values))
    except ConfigError as error:
        # core messages name the field as "render.views: ..." / "vote.x must ..."; say its ROS name
        message = str(error)
        head = message.split(maxsplit=1)[0].rstrip(":").split(".")[0] if message else ""
        known = head in {f.name for f in fields(PipelineConfig)}
        raise SettingsError(f"{PIPELINE_PREFIX}{message}" if known else f"pipeline: {message}") from error


def settings_from_values(values: Mapping[str, Any]) -> NodeSettings:
    """Validate a full {parameter name: value} map; raises SettingsError naming the bad parameter."""
    node = _node_parameters(values)
    return NodeSettings(
        parts=parse_parts(values["parts"]),
        max_input_points=node.max_input_points,
        max_coordinate_m=node.max_coordinate_m,
        require_rgb=node.require_rgb,
        tf_timeout_s=node.tf_timeout_s,
        window_size=node.window.size,
        window_max_age_s=node.window.max_age_s,
        window_max_future_s=node.window.max_future_s,
        window_time_jump_s=node.window.time_jump_s,
        trigger_mode=node.trigger.mode,
        every_n_frames=node.trigger.every_n_frames,
        max_rate_hz=node.trigger.max_rate_hz,
        service_timeout_s=node.service_timeout_s,
        color_by=node.output.color_by,
        publish_detections=node.output.publish_detections,
        debug=node.debug,
        fusion=_fusion_config(values),
        pipeline=_pipeline_config(values),
        sensor_to_fixed=_static_transform(values),
    )


def _static_transform(values: Mapping[str, Any]):
    from partslip_ros.static_transform import StaticTransformError, static_transform_from_values
    try:
        return static_transform_from_values(values)
    except StaticTransformError as error:
        raise SettingsError(str(error)) from error


def all_defaults(config_file: str = "") -> dict[str, Any]:
    """Every parameter's default: node, fusion, and pipeline (from ``config_file`` when given)."""
    from partslip_core.config import load_config
    try:
        base = load_config(config_file or None)
    except ConfigError as error:
        raise SettingsError(f"pipeline.config_file: {error}") from error
    defaults = node_parameter_defaults()
    defaults["pipeline.config_file"] = config_file
    defaults.update(fusion_parameter_defaults())
    defaults.update(pipeline_parameter_defaults(base))
    return defaults


def descriptor_for(name: str, value: Any):
    """The ParameterDescriptor of parameter ``name`` (whose ROS value has the type of ``value``) from its schema
    field: description (+ unit), read_only, an integer or floating-point range for a bounded number, and the
    constraints in words (choices, exclusive bounds, bounds of array entries) as ``additional_constraints``.
    A ROS range is inclusive: an exclusive bound is the range's edge and the schema check refuses the edge."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    spec: ParamSpec = schema_fields()[name].spec
    descriptor = ParameterDescriptor(description=spec.doc + (f" Unit: {spec.unit}." if spec.unit else ""),
                                     read_only=spec.read_only, additional_constraints=spec.constraint_text(),
                                     dynamic_typing=spec.dynamic)
    bounded = spec.low is not None or spec.high is not None
    if bounded and isinstance(value, int) and not isinstance(value, bool):
        low = INT64[0] if spec.low is None else math.ceil(spec.ge) if spec.ge is not None else math.floor(spec.gt) + 1
        high = INT64[1] if spec.high is None else math.floor(spec.le) if spec.le is not None else math.ceil(spec.lt) - 1
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    elif bounded and isinstance(value, float):
        low = -sys.float_info.max if spec.low is None else float(spec.low)
        high = sys.float_info.max if spec.high is None else float(spec.high)
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


def _declare(node, name: str, default: Any):
    """Declare one parameter, its override (params file / -p) coerced int -> float first and checked against
    the schema (so a bad override stops the node with the schema's reason, not rclpy's)."""
    from partslip_ros.param_checks import coerce_value, type_error
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy's parsed --params-file / -p values
    value = default
    if name in overrides and overrides[name].value is not None:
        value = coerce_value(default, overrides[name].value)
        if name not in DYNAMIC_PARAMETERS:
            problem = type_error(name, default, value) or check_parameter(name, value)
            if problem:
                raise SettingsError(problem)
    return node.declare_parameter(name, value, descriptor_for(name, default), ignore_override=True).value


def declare_all(node) -> dict[str, Any]:
    """Declare every parameter on ``node`` (overrides from YAML/CLI apply) and return their values."""
    config_file = _declare(node, "pipeline.config_file", "")
    values = {"pipeline.config_file": config_file}
    for name, default in all_defaults(config_file).items():
        if name == "pipeline.config_file":
            continue
        values[name] = _declare(node, name, default)
    return values


def current_values(node) -> dict[str, Any]:
    """{name: value} of every parameter this module declares."""
    names = list(all_defaults(node.get_parameter("pipeline.config_file").value))
    return {name: node.get_parameter(name).value for name in names}


def describe_parameters(config_file: str = "") -> str:
    """Every parameter of the node: ROS name, ROS type, default, constraints, unit and doc."""
    lines = []
    for name, default in all_defaults(config_file).items():
        spec = schema_fields()[name].spec
        lines += entry(name, _ros_type(default, spec), default, spec)
    return "\n".join(lines)


def _ros_type(value: Any, spec: ParamSpec) -> str:
    if spec.dynamic:
        return "string or string[]"
    if isinstance(value, list):
        return "string[]" if value and isinstance(value[0], str) else "double[]"
    return {bool: "bool", int: "integer", float: "double", str: "string"}[type(value)]


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m partslip_ros.params [CONFIG_FILE]``: list every node parameter."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m partslip_ros.params", description=main.__doc__)
    parser.add_argument("config_file", nargs="?", default="", help="a pipeline YAML (pipeline.config_file)")
    args = parser.parse_args(argv)
    try:
        print(describe_parameters(args.config_file))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
