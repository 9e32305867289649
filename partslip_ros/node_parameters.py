"""The node's own ROS parameters (input, window, trigger, outputs), declared with the core's schema.

Each field is a ``partslip_core.schema.param`` (doc, range, choices, unit, read-only), the same mechanism
as ``PipelineConfig`` (``pipeline.*``) and ``FusionConfig`` (``fusion.*``): ``partslip_ros.params``
walks the three trees into declarations, descriptors and validation. Nested sections become dotted
names (``window.size``, ``trigger.mode``); ``pipeline_config_file`` is named ``pipeline.config_file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partslip_core.schema import check, param

TRIGGER_MODES = ("continuous", "on_demand")
QOS_PROFILES = ("sensor_data", "reliable")
COLOR_MODES = ("part", "input")


@dataclass
class WindowParameters:
    size: int = param(4, ge=1, le=100, doc="Clouds kept in the fusion window.")
    max_age_s: float = param(10.0, ge=0.0, le=3600.0, unit="s",
                             doc="Clouds older than this (by stamp, against the node clock) leave the window; "
                                 "0 = no age limit.")
    max_future_s: float = param(0.5, ge=0.0, le=3600.0, unit="s",
                                doc="Clouds stamped more than this ahead of the node clock are rejected "
                                    "(future_stamp): a wrong sensor clock must not pin the window.")
    time_jump_s: float = param(5.0, ge=0.0, le=3600.0, unit="s",
                               doc="A cloud stamped more than this before the newest cloud in the window means time "
                                   "went backwards (bag loop, simulator reset): the window is cleared (logged once "
                                   "per jump); 0 = only on a node-clock jump.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class SensorToFixedParameters:
    frame: str = param("", read_only=True, doc="Without tf2_ros: clouds in this frame are moved into fixed_frame by "
                                               "the static transform below ('' = off; needs fixed_frame).")
    xyz: tuple[float, float, float] = param((0.0, 0.0, 0.0), read_only=True, unit="m",
                                            doc="Static transform translation: the sensor frame's origin in "
                                                "fixed_frame.")
    rpy: tuple[float, float, float] = param((0.0, 0.0, 0.0), read_only=True, unit="rad",
                                            doc="Static transform rotation as roll, pitch, yaw (fixed axes, as tf2 / "
                                                "static_transform_publisher).")
    quaternion: tuple[float, float, float, float] = param((0.0, 0.0, 0.0, 0.0), read_only=True,
                                                          doc="Static transform rotation as x, y, z, w; all zeros = "
                                                              "use rpy instead.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class TriggerParameters:
    mode: str = param("continuous", choices=TRIGGER_MODES,
                      doc="continuous: run every every_n_frames clouds at most max_rate_hz; on_demand: only on the "
                          "~/trigger or ~/segment services.")
    every_n_frames: int = param(4, ge=1, le=1000, doc="Continuous mode: new clouds needed before the next run.")
    max_rate_hz: float = param(1.0, ge=0.0, le=100.0, unit="Hz", doc="Continuous mode: most runs per second; "
                                                                     "0 = no limit.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class OutputParameters:
    color_by: str = param("part", choices=COLOR_MODES, doc="rgb of the labeled cloud: part (palette, gray = "
                                                           "unlabeled) or input (sensor colours).")
    publish_detections: bool = param(True, doc="Publish vision_msgs/Detection3DArray when vision_msgs is installed.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class NodeParameters:
    """Every parameter of partslip_node besides ``fusion.*`` and ``pipeline.<section>.<field>``."""

    parts: Any = param("", dynamic=True, doc="Part names to segment: a list [handle, lid, body] or a comma list "
                                             "\"handle, lid\" (required; empty = unset: runs are skipped).")
    input_topic: str = param("points", read_only=True, doc="PointCloud2 topic to subscribe to; the relative default "
                                                           "follows the namespace and remaps (--ros-args -r "
                                                           "points:=/camera/points).")
    input_qos: str = param("sensor_data", choices=QOS_PROFILES, read_only=True,
                           doc="QoS of the input: sensor_data (best effort) or reliable.")
    queue_size: int = param(4, ge=1, le=100, read_only=True,
                            doc="Bounded input queue; when full the oldest cloud is dropped (counted).")
    max_input_points: int = param(1_000_000, ge=1, le=100_000_000, doc="Clouds with more points are rejected with a "
                                                                       "warning.")
    max_coordinate_m: float = param(10_000.0, ge=1.0, le=1e7, unit="m",
                                    doc="Clouds with a coordinate beyond +-this (fixed frame) are rejected (garbage or "
                                        "a frame mix-up; float32 cannot resolve mm there).")
    require_rgb: bool = param(True, doc="Reject clouds without rgb/rgba; false accepts them (rendered shaded by "
                                        "geometry, see pipeline.render.uncoloured).")
    fixed_frame: str = param("", read_only=True, doc="Frame the window is fused in and results are published in; "
                                                     "'' = the first cloud's frame.")
    use_tf: bool = param(True, read_only=True, doc="Transform clouds with tf2_ros when it is installed.")
    tf_timeout_s: float = param(0.1, ge=0.0, le=10.0, unit="s", doc="How long to wait for a transform per cloud.")
    window: WindowParameters = param(default_factory=WindowParameters, doc="The window of clouds fused per run.")
    sensor_to_fixed: SensorToFixedParameters = param(default_factory=SensorToFixedParameters,
                                                     doc="A static sensor pose for installs without tf2_ros.")
    trigger: TriggerParameters = param(default_factory=TriggerParameters, doc="When runs happen.")
    service_timeout_s: float = param(300.0, ge=0.1, le=3600.0, unit="s", doc="How long the services wait for a run.")
    output: OutputParameters = param(default_factory=OutputParameters, doc="What the result topics carry.")
    debug: bool = param(False, doc="Publish ~/debug/views (rgb8 mosaic of the rendered views with the detector's "
                                   "boxes and part names; built only while subscribed) and ~/debug/superpoints "
                                   "(cloud coloured by superpoint).")
    pipeline_config_file: str = param("", name="pipeline.config_file", read_only=True,
                                      doc="partslip_core YAML whose values become the pipeline.* defaults.")
    autostart: bool = param(True, read_only=True, doc="Configure and activate the node when it starts (lifecycle); "
                                                      "false = it waits, unconfigured, for `ros2 lifecycle set <node> "
                                                      "configure` then `activate`.")

    def __post_init__(self) -> None:
        check(self)
