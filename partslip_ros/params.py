"""ROS parameters of the node: declaration with descriptors, validation, and mapping to typed settings.

Node parameters (topics, window, trigger, fusion) are listed in ``NODE_PARAMETERS``. Every field of
``partslip_core.PipelineConfig`` is exposed as ``pipeline.<section>.<field>`` (``pipeline.device``,
``pipeline.detector.score_threshold`` ...), generated from the dataclasses so the two never drift;
their defaults come from ``pipeline.config_file`` when it names a core YAML (else the reference preset).
``render.views`` is a flat double array [elev0, azim0, elev1, azim1, ...].

``settings_from_values`` is pure (no ROS): it turns a {name: value} map into ``NodeSettings`` or
raises ``SettingsError`` with the reason, which the node returns when it rejects a runtime change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from partslip_ros.fusion import FusionConfig

PIPELINE_PREFIX = "pipeline."
FUSION_PREFIX = "fusion."
TRIGGER_MODES = ("continuous", "on_demand")
QOS_PROFILES = ("sensor_data", "reliable")
COLOR_MODES = ("part", "input")
GROUND_TRUTH_BACKEND = "ground_truth"
GT_LABEL_FIELD = "gt_label"
GT_INSTANCE_FIELD = "gt_instance"
DYNAMIC_PARAMETERS = ("parts",)  # a list or a comma-separated string; validated by parse_parts


class SettingsError(ValueError):
    """A parameter value is invalid; the message names the parameter and the reason."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, read-only flag and optional numeric range."""

    default: Any
    description: str
    read_only: bool = False
    range: Optional[tuple[float, float]] = None


NODE_PARAMETERS: dict[str, ParamSpec] = {
    "parts": ParamSpec("", "Part names to segment: a list [handle, lid, body] or a comma list \"handle, lid\" "
                           "(required; empty = unset: runs are skipped)."),
    "input_topic": ParamSpec("points", "PointCloud2 topic to subscribe to; the relative default follows the "
                                       "namespace and remaps (--ros-args -r points:=/camera/points).",
                             read_only=True),
    "input_qos": ParamSpec("sensor_data", "QoS of the input: sensor_data (best effort) or reliable.", read_only=True),
    "queue_size": ParamSpec(4, "Bounded input queue; when full the oldest cloud is dropped (counted).",
                            read_only=True, range=(1, 100)),
    "max_input_points": ParamSpec(1_000_000, "Clouds with more points are rejected with a warning.",
                                  range=(1, 100_000_000)),
    "max_coordinate_m": ParamSpec(10_000.0, "Clouds with a coordinate beyond +-this (m, fixed frame) are rejected "
                                            "(garbage or a frame mix-up; float32 cannot resolve mm there).",
                                  range=(1.0, 1e7)),
    "require_rgb": ParamSpec(True, "Reject clouds without rgb/rgba; false accepts them (rendered shaded by "
                                   "geometry, see pipeline.render.uncoloured)."),
    "fixed_frame": ParamSpec("", "Frame the window is fused in and results are published in; '' = the "
                                 "first cloud's frame.", read_only=True),
    "use_tf": ParamSpec(True, "Transform clouds with tf2_ros when it is installed.", read_only=True),
    "tf_timeout_s": ParamSpec(0.1, "How long to wait for a transform per cloud.", range=(0.0, 10.0)),
    "window.size": ParamSpec(4, "Clouds kept in the fusion window.", range=(1, 100)),
    "window.max_age_s": ParamSpec(10.0, "Clouds older than this (by stamp, against the node clock) leave "
                                        "the window; 0 = no age limit.", range=(0.0, 3600.0)),
    "window.max_future_s": ParamSpec(0.5, "Clouds stamped more than this ahead of the node clock are rejected "
                                          "(future_stamp): a wrong sensor clock must not pin the window.",
                                     range=(0.0, 3600.0)),
    "window.time_jump_s": ParamSpec(5.0, "A cloud stamped more than this before the newest cloud in the window "
                                         "means time went backwards (bag loop, simulator reset): the window is "
                                         "cleared (logged once per jump); 0 = only on a node-clock jump.",
                                    range=(0.0, 3600.0)),
    "sensor_to_fixed.frame": ParamSpec("", "Without tf2_ros: clouds in this frame are moved into fixed_frame by "
                                           "the static transform below ('' = off; needs fixed_frame).",
                                       read_only=True),
    "sensor_to_fixed.xyz": ParamSpec([0.0, 0.0, 0.0], "Static transform translation (m): the sensor frame's origin "
                                                      "in fixed_frame.", read_only=True),
    "sensor_to_fixed.rpy": ParamSpec([0.0, 0.0, 0.0], "Static transform rotation as roll, pitch, yaw (rad, fixed "
                                                      "axes, as tf2 / static_transform_publisher).", read_only=True),
    "sensor_to_fixed.quaternion": ParamSpec([0.0, 0.0, 0.0, 0.0], "Static transform rotation as x, y, z, w; all "
                                                                  "zeros = use rpy instead.", read_only=True),
    "trigger.mode": ParamSpec("continuous", "continuous: run every every_n_frames clouds at most max_rate_hz; "
                                            "on_demand: only on the ~/trigger or ~/segment services."),
    "trigger.every_n_frames": ParamSpec(4, "Continuous mode: new clouds needed before the next run.",
                                        range=(1, 1000)),
    "trigger.max_rate_hz": ParamSpec(1.0, "Continuous mode: most runs per second; 0 = no limit.",
                                     range=(0.0, 100.0)),
    "service_timeout_s": ParamSpec(300.0, "How long the services wait for a run.", range=(0.1, 3600.0)),
    "output.color_by": ParamSpec("part", "rgb of the labeled cloud: part (palette, gray = unlabeled) or input."),
    "output.publish_detections": ParamSpec(True, "Publish vision_msgs/Detection3DArray when vision_msgs is installed."),
    "debug": ParamSpec(False, "Publish ~/debug/views (rgb8 mosaic of the rendered views with the detector's boxes "
                              "and part names; built only while subscribed) and ~/debug/superpoints (cloud "
                              "coloured by superpoint)."),
    "pipeline.config_file": ParamSpec("", "partslip_core YAML whose values become the pipeline.* defaults.",
                                      read_only=True),
}

FUSION_DESCRIPTIONS = {
    "voxel_size": "Voxel edge (m) of the fused cloud; 0 = no downsampling.",
    "outlier_neighbors": "Statistical outlier removal neighbours; 0 = off.",
    "outlier_std_ratio": "Points farther than mean + ratio * std of neighbour distance are outliers.",
    "outlier_method": "grid: outlier statistics on the voxel grid (no kNN, default); knn: k-NN over voxel centroids.",
    "crop_enabled": "Keep only points inside [crop_min, crop_max] (fixed frame).",
    "crop_min": "Crop box lower corner [x, y, z] (m, fixed frame); also cluster_select crop.",
    "crop_max": "Crop box upper corner [x, y, z] (m, fixed frame); also cluster_select crop.",
    "plane_distance": "Isolation: points within this distance (m) of a plane belong to it.",
    "cluster_eps": "Isolation: points closer than this (m) chain into one cluster.",
    "cluster_min_points": "Isolation: smaller clusters are noise.",
    "icp_max_distance": "ICP correspondence distance (m).",
    "seed": "Seed of the random choices (max_points subsampling, plane RANSAC): runs are reproducible.",
    "isolate_object": "Scene inputs: remove support planes (table, floor) and keep one object cluster "
                      "(see partslip_core.scene).",
    "max_planes": "Isolation: most planes removed (largest first).",
    "plane_min_fraction": "Isolation: a plane must hold this share of the remaining points to count.",
    "cluster_select": "Isolation: which cluster is the object: largest | nearest (to target_point) | crop "
                      "(most points inside crop_min/crop_max).",
    "target_point": "Isolation, cluster_select nearest: the point (fixed frame, m) the object is nearest to.",
    "icp": "Refine the window's alignment with ICP (open3d) onto the newest cloud.",
    "max_points": "Fused clouds above this are randomly subsampled (seeded).",
}


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


def pipeline_parameter_defaults(config) -> dict[str, Any]:
    """{"pipeline.<section>.<field>": ROS value} for every field of a PipelineConfig."""
    values: dict[str, Any] = {}
    for top in dataclasses.fields(config):
        value = getattr(config, top.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                values[f"{PIPELINE_PREFIX}{top.name}.{f.name}"] = _flatten_value(getattr(value, f.name))
        else:
            values[f"{PIPELINE_PREFIX}{top.name}"] = _flatten_value(value)
    return values


def fusion_parameter_defaults() -> dict[str, Any]:
    defaults = FusionConfig()
    return {f"{FUSION_PREFIX}{f.name}": _flatten_value(getattr(defaults, f.name)) for f in dataclasses.fields(defaults)}


def _unflatten_pipeline(values: Mapping[str, Any]) -> dict[str, Any]:
    """pipeline.* ROS values -> nested dict for ``config_from_dict`` (views back to pairs)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if not name.startswith(PIPELINE_PREFIX) or name == "pipeline.config_file":
            continue
        parts = name[len(PIPELINE_PREFIX):].split(".")
        if isinstance(value, (list, tuple)):
            value = [v for v in value if v != ""]  # [''] stands for an empty string list
        if len(parts) == 1:
            nested[parts[0]] = value
        else:
            nested.setdefault(parts[0], {})[parts[1]] = value
    views = nested.get("render", {}).get("views")
    if views is not None:
        if len(views) == 0 or len(views) % 2:
            raise SettingsError(f"pipeline.render.views must hold [elevation, azimuth] pairs; got {len(views)} values")
        pairs = [(float(views[i]), float(views[i + 1])) for i in range(0, len(views), 2)]
        bad = [p for p in pairs if not (-90.0 < p[0] < 90.0 and -360.0 <= p[1] <= 360.0)]
        if bad:
            raise SettingsError(f"pipeline.render.views: elevation must be in (-90, 90) and azimuth in [-360, 360] "
                                f"degrees; got {bad[:3]}")
        nested["render"]["views"] = pairs
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
    def uses_ground_truth(self) -> bool:
        return self.pipeline.detector.backend == GROUND_TRUTH_BACKEND

    @property
    def extra_fields(self) -> tuple[str, ...]:
        return (GT_LABEL_FIELD, GT_INSTANCE_FIELD) if self.uses_ground_truth else ()


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


def _choice(values: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = values[name]
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _fusion_config(values: Mapping[str, Any]) -> FusionConfig:
    kwargs = {name[len(FUSION_PREFIX):]: value for name, value in values.items() if name.startswith(FUSION_PREFIX)}
    for key in ("crop_min", "crop_max", "target_point"):
        if key in kwargs:
            kwargs[key] = tuple(float(v) for v in kwargs[key])
    try:
        return FusionConfig(**kwargs)
    except (TypeError, ValueError) as error:
        raise SettingsError(str(error)) from error


def _pipeline_config(values: Mapping[str, Any]):
    from partslip_core.config import ConfigError, config_from_dict
    try:
        return config_from_dict(_unflatten_pipeline(values))
    except ConfigError as error:
        raise SettingsError(f"pipeline: {error}") from error


def settings_from_values(values: Mapping[str, Any]) -> NodeSettings:
    """Validate a full {parameter name: value} map; raises SettingsError naming the bad parameter."""
    return NodeSettings(
        parts=parse_parts(values["parts"]),
        max_input_points=int(values["max_input_points"]),
        max_coordinate_m=float(values["max_coordinate_m"]),
        require_rgb=bool(values["require_rgb"]),
        tf_timeout_s=float(values["tf_timeout_s"]),
        window_size=int(values["window.size"]),
        window_max_age_s=float(values["window.max_age_s"]),
        window_max_future_s=float(values["window.max_future_s"]),
        window_time_jump_s=float(values["window.time_jump_s"]),
        trigger_mode=_choice(values, "trigger.mode", TRIGGER_MODES),
        every_n_frames=int(values["trigger.every_n_frames"]),
        max_rate_hz=float(values["trigger.max_rate_hz"]),
        service_timeout_s=float(values["service_timeout_s"]),
        color_by=_choice(values, "output.color_by", COLOR_MODES),
        publish_detections=bool(values["output.publish_detections"]),
        debug=bool(values["debug"]),
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
    from partslip_core.config import ConfigError, load_config
    try:
        base = load_config(config_file or None)
    except ConfigError as error:
        raise SettingsError(f"pipeline.config_file: {error}") from error
    defaults = {name: spec.default for name, spec in NODE_PARAMETERS.items()}
    defaults["pipeline.config_file"] = config_file
    defaults.update(fusion_parameter_defaults())
    defaults.update(pipeline_parameter_defaults(base))
    return defaults


def _descriptor(name: str, value: Any):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    spec = NODE_PARAMETERS.get(name)
    if spec is not None:
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        if spec.range is not None and isinstance(value, bool) is False and isinstance(value, int):
            low, high = int(spec.range[0]), int(spec.range[1])
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        elif spec.range is not None and isinstance(value, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]), step=0.0)]
        return descriptor
    if name.startswith(FUSION_PREFIX):
        key = name[len(FUSION_PREFIX):]
        text = FUSION_DESCRIPTIONS.get(key, f"Fusion setting {key} (see fusion.FusionConfig).")
        return ParameterDescriptor(description=text)
    return ParameterDescriptor(description=f"partslip_core PipelineConfig field {name[len(PIPELINE_PREFIX):]} "
                                           "(see config/partslip_reference.yaml); changes apply on the next run.")


def _declare(node, name: str, default: Any):
    """Declare one parameter, its override (params file / -p) coerced int -> float first."""
    from partslip_ros.param_checks import coerce_value, type_error
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy's parsed --params-file / -p values
    value = default
    if name in overrides and overrides[name].value is not None:
        value = coerce_value(default, overrides[name].value)
        problem = None if name in DYNAMIC_PARAMETERS else type_error(name, default, value)
        if problem:
            raise SettingsError(problem)
    descriptor = _descriptor(name, default)
    if name in DYNAMIC_PARAMETERS:
        descriptor.dynamic_typing = True
    return node.declare_parameter(name, value, descriptor, ignore_override=True).value


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
