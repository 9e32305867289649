"""Build a detector from ``DetectorConfig.backend``, and what each backend needs (``BackendInfo``). Heavy
backends import lazily."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection

from partslip_core.config import DetectorConfig, MaskConfig
from partslip_core.detect.base import Detector, DetectorError
from partslip_core.detect.ground_truth import ProjectedGroundTruthDetector  # numpy only: a light import


@dataclass(frozen=True)
class BackendInfo:
    """What a caller (the ROS node, the CLI) needs to know about a backend without special-casing its name.

    point_fields: the per-point fields ``detect`` reads (``PointCloud.fields``), as alternative sets: a cloud
    must carry every field of one set; () = none (image-only detectors). The first set is the preferred one
    (the node requires it of every input cloud). loads_weights: False = nothing to check or download
    (``pipeline.detector.weights`` is ignored). warning: logged once when the backend is configured (test and
    demo tools say so). options: keyword arguments ``build_detector`` passes on to the builder.
    """

    name: str
    point_fields: tuple[tuple[str, ...], ...] = ()
    loads_weights: bool = True
    warning: str = ""
    options: tuple[str, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        """Every field name of every set, preferred set first, without repeats."""
        return tuple(dict.fromkeys(name for names in self.point_fields for name in names))

    def missing_fields(self, available: Collection[str]) -> str:
        """'' when ``available`` holds one complete set, else what is missing (for the error message)."""
        if not self.point_fields or any(all(n in available for n in names) for names in self.point_fields):
            return ""
        return " or ".join("/".join(names) for names in self.point_fields)


_BUILDERS: dict[str, Callable[..., Detector]] = {}
_INFO: dict[str, BackendInfo] = {}


def register(name: str, *, point_fields: tuple[tuple[str, ...], ...] = (), loads_weights: bool = True,
             warning: str = "", options: tuple[str, ...] = ()) -> Callable:
    """Decorator: ``builder(config, device, **options)`` builds backend ``name`` (see BackendInfo for the rest)."""
    def wrap(builder: Callable[..., Detector]) -> Callable:
        _BUILDERS[name] = builder
        _INFO[name] = BackendInfo(name, tuple(tuple(names) for names in point_fields), loads_weights, warning,
                                  tuple(options))
        return builder
    return wrap


def available_backends() -> list[str]:
    return sorted(_BUILDERS)


def backend_info(name: str) -> BackendInfo:
    """The registered facts about backend ``name``; unknown names raise DetectorError."""
    if name not in _INFO:
        raise DetectorError(f"unknown detector backend {name!r}; known: {', '.join(available_backends())}")
    return _INFO[name]


def build_detector(config: DetectorConfig, device: str = "cpu", **options: Any) -> Detector:
    """Build the configured backend; unknown names, options it does not take and missing packages raise
    DetectorError."""
    info = backend_info(config.backend)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise DetectorError(f"detector backend {config.backend!r} takes no option(s) {', '.join(unknown)}"
                            f" (it takes: {', '.join(info.options) or 'none'})")
    return _BUILDERS[config.backend](config, device, **options)


# Real backends. Each builder imports its module (and through it torch/transformers/GLIP) only when called,
# so `import partslip_core.detect` stays light and a missing optional package fails at build time with a
# DetectorError that says what to install.

@register("grounding_dino")
def _build_grounding_dino(config: DetectorConfig, device: str) -> Detector:
    from partslip_core.detect.hf import GroundingDinoDetector
    return GroundingDinoDetector.from_config(config, device)


@register("owlv2")
def _build_owlv2(config: DetectorConfig, device: str) -> Detector:
    from partslip_core.detect.hf import Owlv2Detector
    from partslip_core.detect.prompts import DEFAULT_OWL_TEMPLATE
    template = getattr(config, "query_template", "") or DEFAULT_OWL_TEMPLATE  # field may be added to DetectorConfig
    return Owlv2Detector.from_config(config, device, query_template=template)


@register("glip")
def _build_glip(config: DetectorConfig, device: str) -> Detector:
    from partslip_core.detect.glip import GlipDetector
    return GlipDetector.from_config(config, device)


@register("ground_truth", point_fields=ProjectedGroundTruthDetector.FIELD_NAMES, loads_weights=False,
          options=("noise", "seed"),
          warning="detector backend 'ground_truth': boxes come from the per-point ground truth of the input "
                  "(gt_label/gt_instance fields) projected into the views: a TEST/DEMO detector for synthetic "
                  "scans and the evaluation of the 3D stages, not a perception model")
def _build_ground_truth(config: DetectorConfig, device: str, noise=None, seed: int = 0) -> Detector:
    """Reads the labels from each cloud's point fields (``ProjectedGroundTruthDetector.FIELD_NAMES``);
    ``noise`` (GroundTruthNoise) degrades the boxes (``partslip eval --box-noise``)."""
    return ProjectedGroundTruthDetector(noise=noise, seed=seed)


def build_mask_refiner(config: MaskConfig, device: str = "cpu"):
    """The configured mask backend (``masks.backend``): None for "none", a SamMaskRefiner for "sam"."""
    if config.backend == "none":
        return None
    if config.backend == "sam":
        from partslip_core.detect.sam import SamMaskRefiner
        return SamMaskRefiner.from_config(config, device)
    raise DetectorError(f"unknown mask backend {config.backend!r}; known: none, sam")
