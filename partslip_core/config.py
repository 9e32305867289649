"""One typed configuration object for the whole pipeline, loaded from YAML and validated on load.

The defaults are the paper-faithful preset described in ``shared/docs/partslip.md`` (and written out
in ``config/partslip_reference.yaml``); every field can be overridden from YAML, the CLI or ROS
parameters. Every field is declared with ``schema.param`` (doc, range, choices, unit): that one
declaration drives validation (in ``__post_init__``, so a bad value fails where it is set, with the
field's name in the message), ``partslip config --describe`` and the node's ROS parameter descriptors.
Only relational rules are written out here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from partslip_core.schema import ConfigError, check, param

__all__ = ["ConfigError", "PipelineConfig", "NormalizeConfig", "RenderConfig", "DetectorConfig", "SuperpointConfig",
           "VoteConfig", "InstanceConfig", "MaskConfig", "config_from_dict", "load_config", "REFERENCE_VIEWS",
           "SMALL_PART_NAMES", "UP_AXES"]

REFERENCE_VIEWS: tuple[tuple[float, float], ...] = (
    (10.0, 0.0), (10.0, 90.0), (10.0, 180.0), (10.0, 270.0),
    (40.0, 0.0), (40.0, 120.0), (40.0, 240.0),
    (-20.0, 60.0), (-20.0, 180.0), (-20.0, 300.0),
)
SMALL_PART_NAMES: tuple[str, ...] = (
    "handle", "button", "wheel", "knob", "switch", "bulb", "shaft", "touchpad", "camera", "screw",
)
UP_AXES = ("x", "y", "z", "-x", "-y", "-z")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class NormalizeConfig:
    """How the input cloud is brought into the renderer's canonical frame.

    ``up_axis`` names the input's up axis: ROS clouds are Z-up (REP 103), the reference renderer
    (and PartNet shapes) are Y-up; the cloud is rotated so that this axis becomes +Y.
    """

    schema_prefix: ClassVar[str] = "normalize."
    up_axis: str = param("z", choices=UP_AXES, doc="The INPUT's up axis (ROS REP 103: z; PartNet: y; an optical-"
                                                    "frame camera: -y); the renderer works Y-up.")
    max_points: int = param(300_000, ge=1, doc="Larger inputs are rejected with a reason, not silently truncated "
                                               "(downsample first).")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class RenderConfig:
    """Point rasterization of K views (reference: pytorch3d PointsRasterizer, FoV perspective)."""

    schema_prefix: ClassVar[str] = "render."
    backend: str = param("auto", choices=("auto", "torch", "pytorch3d"),
                         doc="auto: the torch splatter on CPU, pytorch3d on CUDA when importable.")
    views: list[tuple[float, float]] = param([tuple(v) for v in REFERENCE_VIEWS], min_length=1, unit="deg",
                                             doc="Camera views as [elevation, azimuth] pairs (ROS: one flat list e0, a0, "
                                                 "e1, a1, ...); elevation in (-90, 90), azimuth in [-360, 360] (the 10 "
                                                 "reference views by default).")
    image_size: int = param(800, ge=16, le=4096, unit="px", doc="Square render size (the reference renders 800 px; "
                                                                "400 is about 4x faster on CPU).")
    point_radius: float = param(0.005, gt=0.0, lt=0.5, unit="NDC",
                                doc="Splat radius, as pytorch3d's PointsRasterizationSettings.radius.")
    camera_distance: float = param(2.2, gt=1.0, unit="normalized",
                                   doc="Camera distance from the centre; must exceed 1 (the normalized radius).")
    fov_degrees: float = param(60.0, ge=1.0, lt=179.0, unit="deg", doc="Vertical field of view.")
    znear: float = param(0.01, gt=0.0, unit="normalized", doc="Near clipping plane distance.")
    background: tuple[float, float, float] = param((1.0, 1.0, 1.0), ge=0.0, le=1.0,
                                                   doc="Background colour, rgb in [0, 1].")
    uncoloured: str = param("shaded", choices=("shaded", "flat"),
                            doc="Clouds without rgb: shaded = grey by the angle to the camera (headlight Lambert on "
                                "estimated normals) and depth, so a detector sees shape; flat = constant mid grey "
                                "(what the reference would draw).")
    intensity_albedo: float = param(0.5, ge=0.0, le=1.0, unit="fraction",
                                    doc="Shaded clouds that carry per-point intensity (lidar XYZI): the grey is "
                                        "multiplied by the albedo 1 - w + w * i, i = the intensity scaled to [0, 1] "
                                        "between its 2nd and 98th percentile in the cloud; 0 ignores intensity.")

    def __post_init__(self) -> None:
        check(self)
        bad = [v for v in self.views if not (-90.0 < v[0] < 90.0 and -360.0 <= v[1] <= 360.0)]
        _require(not bad, f"render.views: elevation must be in (-90, 90) and azimuth in [-360, 360] degrees; "
                          f"got {[list(v) for v in bad[:3]]}")


@dataclass
class DetectorConfig:
    """Which 2D grounding detector runs on the rendered views, and its thresholds."""

    schema_prefix: ClassVar[str] = "detector."
    backend: str = param("glip", pattern=r".+", pattern_doc="a non-empty backend name",
                         doc="The 2D detector backend: glip | grounding_dino | owlv2 (ground_truth: tests/eval/demo "
                             "only, reads the cloud's gt_label/gt_instance point fields); plugins add more.")
    weights: str = param("", doc="Local path (file or directory) or hub id; empty = the backend's default id.")
    config_file: str = param("", doc="GLIP only: the maskrcnn_benchmark YAML config.")
    score_threshold: float = param(0.5, ge=0.0, le=1.0, doc="Boxes scoring below this are dropped.")
    nms_iou: float = param(0.6, gt=0.0, le=1.0, doc="IoU above which overlapping boxes of one part are suppressed.")
    max_detections_per_view: int = param(100, ge=1, doc="Most boxes kept per view (highest scores first).")
    batch_size: int = param(10, ge=1, doc="Views per detector forward pass.")
    half_precision: bool = param(True, doc="fp16 on CUDA only; ignored on CPU.")
    query_template: str = param("a photo of a {part}", pattern=r".*\{part\}.*",
                                pattern_doc="a text containing '{part}'", doc="OWLv2: the text query of each part.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class SuperpointConfig:
    """Over-segmentation into superpoints (reference: L0 cut pursuit on a kNN graph)."""

    schema_prefix: ClassVar[str] = "superpoints."
    backend: str = param("auto", choices=("auto", "cut_pursuit", "torch", "graph"),
                         doc="auto: cut_pursuit (the paper's, C++, CPU) when importable and the run is on CPU, else "
                             "torch (greedy L0 merge, same code on CPU and CUDA); graph: the older numpy fallback "
                             "(docs/superpoints.md).")
    knn: int = param(10, ge=1, le=64, doc="Neighbours of each point in the superpoint graph.")
    regularization: float = param(0.05, gt=0.0, doc="L0 cut-pursuit regularization strength (larger = fewer, "
                                                   "larger superpoints).")
    normal_radius: float = param(0.1, gt=0.0, unit="normalized", doc="Radius of the normal estimation "
                                                                     "neighbourhood (object radius 1).")
    normal_max_nn: int = param(30, ge=3, doc="Most neighbours used per normal estimate.")
    rgb_weight: float = param(0.3, ge=0.0, doc="Weight of colour against normals in the superpoint features.")
    min_size: int = param(10, ge=0, doc="Components of <= min_size points merge into a neighbour.")
    graph_feature_threshold: float = param(0.25, gt=0.0, doc="graph backend: max feature distance of a kept edge.")
    max_extent: float = param(0.0, ge=0.0, unit="normalized", doc="> 0: split every superpoint by a voxel grid of "
                                                                  "this size; 0 = off (reference).")
    graph_max_extent: float = param(0.2, gt=0.0, unit="normalized",
                                    doc="graph backend: voxel size capping a superpoint's spread.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class VoteConfig:
    """Box-to-superpoint semantic voting. The robustness options (docs/quality.md) default to the reference."""

    schema_prefix: ClassVar[str] = "vote."
    score_threshold: float = param(0.5, ge=0.0, le=1.0, doc="A superpoint takes its best part's label when that "
                                                             "part's score reaches this; else it stays unlabeled.")
    whole_object_fraction: float = param(0.98, gt=0.0, le=1.0, doc="Boxes covering this share of a view's visible "
                                                                    "points are whole-object boxes (dropped).")
    small_part_names: list[str] = param(list(SMALL_PART_NAMES), doc="Parts treated as small by small_part_rule.")
    small_part_rule: str = param("ties", choices=("ties", "priority"),
                                 doc="ties: a small part wins only ties for the best score (shared/docs/partslip.md); "
                                     "priority: any small part passing the threshold wins (the authors' bbox2seg.py).")
    whole_object_rule: str = param("fraction", choices=("fraction", "explained"),
                                   doc="fraction: drop every box covering >= whole_object_fraction (reference); "
                                       "explained: only when the view's other boxes already cover "
                                       "whole_object_explained of its points (keeps a dominant part's box).")
    whole_object_explained: float = param(0.8, ge=0.0, le=1.0, doc="whole_object_rule explained: the share other "
                                                                    "boxes must cover.")
    uncovered_weight: float = param(1.0, ge=0.0, le=1.0, doc="Weight of visible points in no box of the view "
                                                              "(1 = reference, 0 = they abstain).")
    score_weighting: bool = param(False, doc="A box votes with its detector score instead of 1.")
    reestimate_iterations: int = param(0, ge=0, le=10, doc="EM-style passes dropping boxes that disagree with the "
                                                           "other views' vote.")
    min_box_agreement: float = param(0.0, ge=0.0, le=1.0, doc="Re-estimation: share of a box's labeled points that "
                                                               "must carry its label to keep it.")
    prefer_smaller_boxes: bool = param(False, doc="Ties go to the part with the smaller (more specific) boxes.")
    refine_points: bool = param(False, doc="Points may overrule their superpoint's label with their own vote.")
    refine_conflict_score: float = param(0.0, ge=0.0, le=1.0, doc="refine_points: a point whose own score for its "
                                                                  "superpoint's label is below this may take any part "
                                                                  "(two coplanar fronts in one superpoint); 0 = off.")
    refine_tie_margin: float = param(0.0, ge=0.0, le=1.0, doc="refine_points: > 0, a point that only ties with the "
                                     "smaller-box part stays with its superpoint when that part has at least as many "
                                     "clear points (beating every other part by this margin) as tied ones (a mug "
                                     "handle's root); 0 = ties always move.")
    refine_conflict_min_weight: float = param(1.0, ge=0.0, le=1.0, doc="refine_conflict_score with adaptive_uncovered: "
                                              "only between parts whose uncovered weight is at least this (1 = parts "
                                              "the detector never missed).")
    part_view_normalization: bool = param(False, doc="A part's score counts only the views where it has a box ...")
    min_part_views: int = param(3, ge=1, doc="... if it has boxes in at least this many views (else all views count).")
    view_agreement_fill: float = param(0.0, ge=0.0, le=1.0, doc="part_view_normalization: > 0, a part keeps the "
                                       "per-part normalization only when one of its boxes is spanned (x extent / width "
                                       "x y extent / height >= this) by the points that min_part_views views' boxes of "
                                       "the part agree on in 3D (false positives of a part the object lacks do not "
                                       "agree). 0 = off.")
    specific_part_margin: float = param(0.0, ge=0.0, le=1.0, doc="prefer_smaller_boxes: a part whose boxes are at "
                                                               "most half the best part's size wins when its score is "
                                                               "within this of the best (a bulb inside a shade). 0 = ties only.")
    specific_margin_per_miss: float = param(0.0, ge=0.0, le=2.0, doc="prefer_smaller_boxes: the margin above, per "
                                            "part, is at least this x the detector's estimated miss rate of that part "
                                            "(0 for a part boxed in every view, partslip_core/vote_cleanup.py). 0 = off.")
    specific_margin_max: float = param(0.15, ge=0.0, le=1.0, doc="specific_margin_per_miss: the largest margin (a "
                                       "part hidden in most views of a partial scan has a high estimated miss rate).")
    specific_margin_looseness: float = param(0.025, ge=0.0, le=1.0, doc="specific_margin_per_miss applies only when "
                                             "the boxes fit the points voted for them more loosely than this (median "
                                             "edge gap / box size; a jittery detector).")
    nested_part_margin: float = param(0.0, ge=0.0, le=1.0, doc="prefer_smaller_boxes: a part whose boxes lie inside "
                                      "another part's box in most views (a bulb in the shade, a handle on a door; "
                                      "vote_cleanup.nested_parts) wins when its score is within min(this, its "
                                      "estimated miss rate) of the best, only when the boxes fit loosely "
                                      "(specific_margin_looseness). 0 = off.")
    nested_part_min_score: float = param(0.7, ge=0.0, le=1.0, doc="nested_part_margin: a part wins by a margin only "
                                         "with at least this score (the big part's points beside it score lower).")
    min_part_points: int = param(0, ge=0, doc="A part left on fewer points than this in the whole cloud (a false "
                                              "positive's sliver) is dropped: its points become unlabeled. 0 = off.")
    min_part_agreement: float = param(0.0, ge=0.0, le=1.0, doc="A part none of whose boxes has at least this share "
                                                              "of its labeled points labeled as the part (false "
                                                              "positives only) is dropped. 0 = off.")
    adaptive_uncovered: bool = param(False, doc="Each part's uncovered-point weight follows how often the detector "
                                                "missed that part (box counts across views): 1 when never, down "
                                                "to uncovered_weight (partslip_core/detector_recall.py).")
    background_hit_rate: float = param(0.01, gt=0.0, lt=0.5, doc="adaptive_uncovered: how often a point of no "
                                                                 "part falls inside a box of a given part.")
    estimate_background: bool = param(False, doc="adaptive_uncovered: when the object has unlabeled surfaces (a "
                                      "cabinet's carcass), estimate each part's background hit rate and miss rate "
                                      "from the views (binomial mixtures, partslip_core/detector_recall.py).")
    background_separation: float = param(0.6, gt=0.0, le=1.0, doc="estimate_background: a group of points counts as "
                                         "unlabeled surface when boxes cover it at most this x as often as the rest.")
    background_min_share: float = param(0.1, gt=0.0, le=1.0, unit="fraction", doc="estimate_background: ... and it "
                                        "holds at least this share of the visible points.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class InstanceConfig:
    """Grouping of labeled superpoints into part instances."""

    schema_prefix: ClassVar[str] = "instances."
    enabled: bool = param(True, doc="Group labeled superpoints into part instances.")
    adjacency_distance: float = param(0.02, ge=0.0, unit="normalized",
                                      doc="Superpoints whose axis-aligned bounds are within this gap are adjacent.")
    box_profile_distance: float = param(0.2, gt=0.0, doc="Adjacent superpoints merge when the normalized L1 distance "
                                                         "of their per-box 'fraction inside' vectors is below this.")
    max_size_ratio: float = param(100.0, ge=1.0, doc="Superpoints whose sizes differ by more than this never merge.")
    min_box_iou: float = param(0.5, ge=0.0, lt=1.0, doc="An instance must match a box of its part with IoU above this "
                                                        "in some view.")
    split_extent: float = param(0.0, ge=0.0, unit="normalized",
                                doc="> 0: group grid-split superpoints; 0 = reference.")
    box_profile_normalization: str = param(
        "active_boxes", choices=("active_boxes", "fraction_sum"),
        doc="active_boxes (ours): mean |difference| over boxes holding points of either, 0 (merge on adjacency) "
            "when no view sees both; fraction_sum (the authors): divide by the larger fraction sum, 1 (never merge) "
            "when no view sees both. A documented deviation (test/reference_impl/differences.py AUTHORS_DIFFERENCES).")
    unconfirmed: str = param("drop", choices=("drop", "split"),
                             doc="drop (reference): a merged group matching no box is discarded; split: fall back to "
                                 "the groups it was merged from (merges backed by box evidence only), then to one "
                                 "group per box it overlaps.")
    slab_distance: float = param(0.0, ge=0.0, unit="normalized", doc="> 0: also join same-part instances within this "
                                                                     "gap when one box matches their union.")
    regroup_distance: float = param(0.0, ge=0.0, unit="normalized",
                                    doc="> 0: join unconfirmed same-part fragments within this gap that the boxes "
                                        "see alike.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class MaskConfig:
    """Optional mask refinement of the detector's boxes (PartSLIP++): each box prompts SAM in its view and
    voting uses the mask instead of the rectangle. ``none`` keeps box voting (the reference)."""

    schema_prefix: ClassVar[str] = "masks."
    backend: str = param("none", choices=("none", "sam"), doc="none: box voting (reference); sam: a SAM mask per box.")
    weights: str = param("", doc="Known model name (sam_vit_base ...), save_pretrained folder or hub id; "
                                 "'' = sam_vit_base.")
    allow_download: bool = param(False, doc="Hub ids: false = local HuggingFace cache only (fail fast offline).")
    batch_size: int = param(10, ge=1, doc="Views per image-encoder pass.")
    max_prompts: int = param(256, ge=1, doc="Boxes (summed over views) per mask-decoder pass; bounds memory.")
    half_precision: bool = param(True, doc="fp16 autocast on CUDA only; ignored on CPU.")
    multimask_output: bool = param(False, doc="true: 3 candidate masks per box, the best predicted IoU wins.")
    mask_threshold: float = param(0.0, doc="Threshold on SAM's mask logits (SamProcessor's default).")
    clip_to_box: bool = param(True, doc="A mask never reaches beyond its box grown by clip_margin (bounds SAM's "
                                        "leaks).")
    clip_margin: float = param(0.1, ge=0.0, le=1.0, doc="Growth of the box, as a share of its width/height on each "
                                                         "side: a box edge cut 10% short loses nothing.")
    min_mask_score: float = param(0.0, ge=0.0, le=1.0, doc="Masks scoring lower (SAM's predicted IoU), or empty, "
                                                            "fall back to the box.")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class PipelineConfig:
    """Everything ``partslip_core.segment`` needs besides the cloud, the part names and the detector."""

    device: str = param("cpu", pattern=r"cpu|auto|cuda(:\d+)?", pattern_doc="cpu, cuda, cuda:N or auto",
                        doc="Where the pipeline runs; auto = cuda when available.")
    seed: int = param(0, ge=0, doc="Seed of every random choice in a run (reproducible results).")
    cpu_threads: int = param(1, ge=0, doc="torch / cut-pursuit threads during segment(); 0 = library defaults "
                                          "(all cores; see docs/performance.md).")
    normalize: NormalizeConfig = param(default_factory=NormalizeConfig, doc="Input cloud -> canonical frame.")
    render: RenderConfig = param(default_factory=RenderConfig, doc="Point rendering of the K views.")
    detector: DetectorConfig = param(default_factory=DetectorConfig, doc="The 2D grounding detector.")
    superpoints: SuperpointConfig = param(default_factory=SuperpointConfig, doc="Over-segmentation into superpoints.")
    vote: VoteConfig = param(default_factory=VoteConfig, doc="Box-to-superpoint semantic voting.")
    instances: InstanceConfig = param(default_factory=InstanceConfig, doc="Part instances from labeled superpoints.")
    masks: MaskConfig = param(default_factory=MaskConfig, doc="Optional SAM mask per box (PartSLIP++), off by default.")

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTION_CLASSES = {f.name: f.default_factory for f in dataclasses.fields(PipelineConfig)
                    if f.default_factory is not dataclasses.MISSING}
_SCALARS = [f.name for f in dataclasses.fields(PipelineConfig) if f.name not in _SECTION_CLASSES]


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    _require(not unknown, f"unknown key(s) in {name!r}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**values)


def config_from_dict(values: Mapping[str, Any] | None, base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a validated config from nested mappings, overriding ``base`` (default: the reference preset)."""
    merged = (base or PipelineConfig()).to_dict()
    values = dict(values or {})
    known = _SCALARS + list(_SECTION_CLASSES)
    unknown = sorted(set(values) - set(known))
    _require(not unknown, f"unknown top-level key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for key, value in values.items():
        if key in _SECTION_CLASSES:
            if value is None:
                continue
            _require(isinstance(value, Mapping), f"section {key!r} must be a mapping; got {type(value).__name__}")
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    sections = {name: _build_section(name, cls, merged[name]) for name, cls in _SECTION_CLASSES.items()}
    return PipelineConfig(**{k: merged[k] for k in _SCALARS}, **sections)


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
