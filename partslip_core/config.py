"""One typed configuration object for the whole pipeline, loaded from YAML and validated on load.

The defaults are the paper-faithful preset described in ``shared/docs/partslip.md`` (and written out
in ``config/partslip_reference.yaml``); every field can be overridden from YAML, the CLI or ROS
parameters. Validation happens in ``__post_init__`` so a bad value fails where it is set, with the
field's name in the message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

REFERENCE_VIEWS: tuple[tuple[float, float], ...] = (
    (10.0, 0.0), (10.0, 90.0), (10.0, 180.0), (10.0, 270.0),
    (40.0, 0.0), (40.0, 120.0), (40.0, 240.0),
    (-20.0, 60.0), (-20.0, 180.0), (-20.0, 300.0),
)
SMALL_PART_NAMES: tuple[str, ...] = (
    "handle", "button", "wheel", "knob", "switch", "bulb", "shaft", "touchpad", "camera", "screw",
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class NormalizeConfig:
    """How the input cloud is brought into the renderer's canonical frame.

    ``up_axis`` names the input's up axis: ROS clouds are Z-up (REP 103), the reference renderer
    (and PartNet shapes) are Y-up; the cloud is rotated so that this axis becomes +Y.
    """

    up_axis: str = "z"
    max_points: int = 300_000  # larger inputs are rejected, not silently truncated

    def __post_init__(self) -> None:
        _require(self.up_axis in ("x", "y", "z", "-x", "-y", "-z"),
                 f"normalize.up_axis must be one of x, y, z, -x, -y, -z; got {self.up_axis!r}")
        _require(self.max_points > 0, f"normalize.max_points must be > 0; got {self.max_points}")


@dataclass
class RenderConfig:
    """Point rasterization of K views (reference: pytorch3d PointsRasterizer, FoV perspective)."""

    backend: str = "auto"  # auto | torch | pytorch3d
    views: list[tuple[float, float]] = field(default_factory=lambda: [tuple(v) for v in REFERENCE_VIEWS])
    image_size: int = 800
    point_radius: float = 0.005  # in NDC units, as pytorch3d's PointsRasterizationSettings.radius
    camera_distance: float = 2.2
    fov_degrees: float = 60.0
    znear: float = 0.01
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # clouds without rgb: shaded = grey by the angle to the camera (headlight Lambert on estimated
    # normals) and depth, so a detector sees shape; flat = constant mid grey (what the reference would draw)
    uncoloured: str = "shaded"  # shaded | flat

    def __post_init__(self) -> None:
        _require(self.uncoloured in ("shaded", "flat"),
                 f"render.uncoloured must be shaded or flat; got {self.uncoloured!r}")
        _require(self.backend in ("auto", "torch", "pytorch3d"),
                 f"render.backend must be auto, torch or pytorch3d; got {self.backend!r}")
        _require(len(self.views) > 0, "render.views must list at least one (elevation, azimuth) pair")
        views = []
        for view in self.views:
            _require(len(view) == 2, f"render.views entries must be [elevation, azimuth]; got {view!r}")
            views.append((float(view[0]), float(view[1])))
        self.views = views
        _require(16 <= self.image_size <= 4096, f"render.image_size must be in [16, 4096]; got {self.image_size}")
        _require(0.0 < self.point_radius < 0.5, f"render.point_radius must be in (0, 0.5); got {self.point_radius}")
        _require(self.camera_distance > 1.0,
                 f"render.camera_distance must exceed 1 (the normalized radius); got {self.camera_distance}")
        _require(1.0 <= self.fov_degrees < 179.0, f"render.fov_degrees must be in [1, 179); got {self.fov_degrees}")
        _require(len(self.background) == 3 and all(0.0 <= c <= 1.0 for c in self.background),
                 f"render.background must be three values in [0, 1]; got {self.background!r}")
        self.background = tuple(float(c) for c in self.background)


@dataclass
class DetectorConfig:
    """Which 2D grounding detector runs on the rendered views, and its thresholds."""

    backend: str = "glip"  # glip | grounding_dino | owlv2 | ground_truth (tests/eval only)
    weights: str = ""  # local path (file or directory) or hub id; empty = the backend's default id
    config_file: str = ""  # GLIP only: the maskrcnn_benchmark YAML config
    score_threshold: float = 0.5
    nms_iou: float = 0.6
    max_detections_per_view: int = 100
    batch_size: int = 10  # views per forward pass
    half_precision: bool = True  # fp16 on CUDA only; ignored on CPU
    query_template: str = "a photo of a {part}"  # OWLv2: one text query per part

    def __post_init__(self) -> None:
        _require(bool(self.backend), "detector.backend must be set")
        _require(0.0 <= self.score_threshold <= 1.0,
                 f"detector.score_threshold must be in [0, 1]; got {self.score_threshold}")
        _require(0.0 < self.nms_iou <= 1.0, f"detector.nms_iou must be in (0, 1]; got {self.nms_iou}")
        _require(self.max_detections_per_view > 0,
                 f"detector.max_detections_per_view must be > 0; got {self.max_detections_per_view}")
        _require(self.batch_size > 0, f"detector.batch_size must be > 0; got {self.batch_size}")
        _require("{part}" in self.query_template,
                 f"detector.query_template must contain '{{part}}'; got {self.query_template!r}")


@dataclass
class SuperpointConfig:
    """Over-segmentation into superpoints (reference: L0 cut pursuit on a kNN graph)."""

    # auto: cut_pursuit (the paper's, C++, CPU) when importable and the run is on CPU, else torch
    # (greedy L0 merge, same code on CPU and CUDA); graph: the older numpy fallback. docs/superpoints.md
    backend: str = "auto"  # auto | cut_pursuit | torch | graph
    knn: int = 10
    regularization: float = 0.05
    normal_radius: float = 0.1  # in normalized units (object radius 1)
    normal_max_nn: int = 30
    rgb_weight: float = 0.3
    min_size: int = 10  # components of <= min_size points merge into a neighbour
    graph_feature_threshold: float = 0.25  # graph backend: max feature distance of a kept edge
    max_extent: float = 0.0  # > 0: split every superpoint by a voxel grid of this size (normalized units)
    graph_max_extent: float = 0.2  # graph backend: voxel size (normalized units) capping a superpoint's spread

    def __post_init__(self) -> None:
        _require(self.backend in ("auto", "cut_pursuit", "torch", "graph"),
                 f"superpoints.backend must be auto, cut_pursuit, torch or graph; got {self.backend!r}")
        _require(1 <= self.knn <= 64, f"superpoints.knn must be in [1, 64]; got {self.knn}")
        _require(self.regularization > 0, f"superpoints.regularization must be > 0; got {self.regularization}")
        _require(self.normal_radius > 0, f"superpoints.normal_radius must be > 0; got {self.normal_radius}")
        _require(self.normal_max_nn >= 3, f"superpoints.normal_max_nn must be >= 3; got {self.normal_max_nn}")
        _require(self.rgb_weight >= 0, f"superpoints.rgb_weight must be >= 0; got {self.rgb_weight}")
        _require(self.min_size >= 0, f"superpoints.min_size must be >= 0; got {self.min_size}")
        _require(self.graph_feature_threshold > 0,
                 f"superpoints.graph_feature_threshold must be > 0; got {self.graph_feature_threshold}")
        _require(self.max_extent >= 0, f"superpoints.max_extent must be >= 0; got {self.max_extent}")
        _require(self.graph_max_extent > 0, f"superpoints.graph_max_extent must be > 0; got {self.graph_max_extent}")


@dataclass
class VoteConfig:
    """Box-to-superpoint semantic voting."""

    score_threshold: float = 0.5
    whole_object_fraction: float = 0.98  # boxes covering this share of a view's points are dropped
    small_part_names: list[str] = field(default_factory=lambda: list(SMALL_PART_NAMES))
    # ties: a small part wins only ties for the best score (shared/docs/partslip.md);
    # priority: any small part passing the threshold wins (the authors' bbox2seg.py does this)
    small_part_rule: str = "ties"
    # Robustness to real detectors (partslip_core/vote.py, docs/quality.md); defaults = reference behaviour.
    # fraction: drop every box covering >= whole_object_fraction (reference); explained: only when the
    # view's other boxes already cover whole_object_explained of its points (keeps a dominant part's box)
    whole_object_rule: str = "fraction"
    whole_object_explained: float = 0.8
    uncovered_weight: float = 1.0  # weight of visible points in no box of the view (1 = reference, 0 = abstain)
    score_weighting: bool = False  # a box votes with its detector score instead of 1
    reestimate_iterations: int = 0  # EM-style passes dropping boxes that disagree with the other views' vote
    min_box_agreement: float = 0.0  # share of a box's labeled points that must carry its label to keep it
    prefer_smaller_boxes: bool = False  # ties go to the part with the smaller (more specific) boxes
    refine_points: bool = False  # points may overrule their superpoint's label with their own vote
    part_view_normalization: bool = False  # a part's score counts only the views where it has a box
    min_part_views: int = 3  # ... if it has boxes in at least this many views (else all views count)

    def __post_init__(self) -> None:
        _require(0.0 <= self.score_threshold <= 1.0,
                 f"vote.score_threshold must be in [0, 1]; got {self.score_threshold}")
        _require(self.whole_object_rule in ("fraction", "explained"),
                 f"vote.whole_object_rule must be fraction or explained; got {self.whole_object_rule!r}")
        _require(0.0 <= self.whole_object_explained <= 1.0,
                 f"vote.whole_object_explained must be in [0, 1]; got {self.whole_object_explained}")
        _require(0.0 <= self.uncovered_weight <= 1.0,
                 f"vote.uncovered_weight must be in [0, 1]; got {self.uncovered_weight}")
        _require(0 <= self.reestimate_iterations <= 10,
                 f"vote.reestimate_iterations must be in [0, 10]; got {self.reestimate_iterations}")
        _require(self.min_part_views >= 1, f"vote.min_part_views must be >= 1; got {self.min_part_views}")
        _require(0.0 <= self.min_box_agreement <= 1.0,
                 f"vote.min_box_agreement must be in [0, 1]; got {self.min_box_agreement}")
        _require(0.0 < self.whole_object_fraction <= 1.0,
                 f"vote.whole_object_fraction must be in (0, 1]; got {self.whole_object_fraction}")
        self.small_part_names = [str(n) for n in self.small_part_names]
        _require(self.small_part_rule in ("ties", "priority"),
                 f"vote.small_part_rule must be ties or priority; got {self.small_part_rule!r}")


@dataclass
class InstanceConfig:
    """Grouping of labeled superpoints into part instances."""

    enabled: bool = True
    adjacency_distance: float = 0.02  # normalized units; gap between axis-aligned bounds
    box_profile_distance: float = 0.2  # normalized L1 distance of per-box "fraction inside" vectors
    max_size_ratio: float = 100.0
    min_box_iou: float = 0.5  # an instance must match a box of its part with IoU above this in some view
    split_extent: float = 0.0  # > 0: group grid-split superpoints (normalized units); 0 = reference
    # active_boxes (ours, default): mean |difference| over boxes holding points of either, 0 (merge on
    # adjacency) when no view sees both; fraction_sum (the authors): divide by the larger fraction sum, 1
    # (never merge) when no view sees both. A documented deviation (bench/reference_impl.py AUTHORS_DIFFERENCES).
    box_profile_normalization: str = "active_boxes"
    # drop (reference): a merged group matching no box is discarded; split: fall back to the groups it was
    # merged from (merges backed by box evidence only), then to one group per box it overlaps
    unconfirmed: str = "drop"
    slab_distance: float = 0.0  # > 0: also join same-part instances within this gap when one box matches their union
    regroup_distance: float = 0.0  # > 0: join unconfirmed same-part fragments within this gap that the boxes see alike

    def __post_init__(self) -> None:
        _require(self.box_profile_normalization in ("active_boxes", "fraction_sum"),
                 f"instances.box_profile_normalization must be active_boxes or fraction_sum; "
                 f"got {self.box_profile_normalization!r}")
        _require(self.unconfirmed in ("drop", "split"),
                 f"instances.unconfirmed must be drop or split; got {self.unconfirmed!r}")
        _require(self.slab_distance >= 0, f"instances.slab_distance must be >= 0; got {self.slab_distance}")
        _require(self.regroup_distance >= 0, f"instances.regroup_distance must be >= 0; got {self.regroup_distance}")
        _require(self.adjacency_distance >= 0, f"instances.adjacency_distance must be >= 0; got {self.adjacency_distance}")
        _require(self.box_profile_distance > 0,
                 f"instances.box_profile_distance must be > 0; got {self.box_profile_distance}")
        _require(self.max_size_ratio >= 1, f"instances.max_size_ratio must be >= 1; got {self.max_size_ratio}")
        _require(0.0 <= self.min_box_iou < 1.0, f"instances.min_box_iou must be in [0, 1); got {self.min_box_iou}")
        _require(self.split_extent >= 0, f"instances.split_extent must be >= 0; got {self.split_extent}")


@dataclass
class MaskConfig:
    """Optional mask refinement of the detector's boxes (PartSLIP++): each box prompts SAM in its view and
    voting uses the mask instead of the rectangle. ``none`` keeps box voting (the reference)."""

    backend: str = "none"  # none | sam
    weights: str = ""  # known model name (sam_vit_base ...), save_pretrained folder or hub id; "" = sam_vit_base
    allow_download: bool = False  # hub ids: False = local HuggingFace cache only (fail fast offline)
    batch_size: int = 10  # views per image-encoder pass
    max_prompts: int = 256  # boxes (summed over views) per mask-decoder pass; bounds memory
    half_precision: bool = True  # fp16 autocast on CUDA only; ignored on CPU
    multimask_output: bool = False  # True: 3 candidate masks per box, the best predicted IoU wins
    mask_threshold: float = 0.0  # on SAM's mask logits (SamProcessor's default)
    clip_to_box: bool = True  # a mask never reaches beyond its box grown by clip_margin (bounds SAM's leaks)
    clip_margin: float = 0.1  # of the box's width/height, each side: a box edge cut 10% short loses nothing
    min_mask_score: float = 0.0  # masks scoring lower (SAM's predicted IoU), or empty, fall back to the box

    def __post_init__(self) -> None:
        _require(self.backend in ("none", "sam"), f"masks.backend must be none or sam; got {self.backend!r}")
        _require(self.batch_size > 0, f"masks.batch_size must be > 0; got {self.batch_size}")
        _require(self.max_prompts > 0, f"masks.max_prompts must be > 0; got {self.max_prompts}")
        _require(0.0 <= self.clip_margin <= 1.0, f"masks.clip_margin must be in [0, 1]; got {self.clip_margin}")
        _require(0.0 <= self.min_mask_score <= 1.0, f"masks.min_mask_score must be in [0, 1]; got {self.min_mask_score}")


@dataclass
class PipelineConfig:
    """Everything ``partslip_core.segment`` needs besides the cloud, the part names and the detector."""

    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    seed: int = 0
    cpu_threads: int = 1  # torch / cut-pursuit threads during segment(); 0 = library defaults (all cores)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    vote: VoteConfig = field(default_factory=VoteConfig)
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)

    def __post_init__(self) -> None:
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 f"device must be cpu, cuda, cuda:N or auto; got {self.device!r}")
        _require(self.cpu_threads >= 0, f"cpu_threads must be >= 0; got {self.cpu_threads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(PipelineConfig)}
_SECTION_CLASSES = {
    "normalize": NormalizeConfig, "render": RenderConfig, "detector": DetectorConfig,
    "superpoints": SuperpointConfig, "vote": VoteConfig, "instances": InstanceConfig, "masks": MaskConfig,
}


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping; got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    _require(not unknown, f"unknown key(s) in {name!r}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"bad value in {name!r}: {error}") from error


def config_from_dict(values: Mapping[str, Any] | None, base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a validated config from nested mappings, overriding ``base`` (default: the reference preset)."""
    merged = (base or PipelineConfig()).to_dict()
    values = dict(values or {})
    unknown = sorted(set(values) - set(_SECTIONS))
    _require(not unknown, f"unknown top-level key(s): {', '.join(unknown)} (known: {', '.join(sorted(_SECTIONS))})")
    for key, value in values.items():
        if key in _SECTION_CLASSES:
            if value is None:
                continue
            _require(isinstance(value, Mapping), f"section {key!r} must be a mapping; got {type(value).__name__}")
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    sections = {name: _build_section(name, cls, merged[name]) for name, cls in _SECTION_CLASSES.items()}
    scalars = {k: v for k, v in merged.items() if k not in _SECTION_CLASSES}
    try:
        return PipelineConfig(**scalars, **sections)
    except TypeError as error:
        raise ConfigError(str(error)) from error


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML config file (None = reference preset), then apply nested ``overrides``."""
    base = PipelineConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        _require(isinstance(data, Mapping), f"config file {path} must hold a mapping at top level")
        base = config_from_dict(data)
    return config_from_dict(overrides, base=base) if overrides else base
