"""Build a detector from ``DetectorConfig.backend``. Heavy backends import lazily."""

from __future__ import annotations

from typing import Callable

from partslip_core.config import DetectorConfig, MaskConfig
from partslip_core.detect.base import Detector, DetectorError

_BUILDERS: dict[str, Callable[[DetectorConfig, str], Detector]] = {}


def register(name: str) -> Callable:
    def wrap(builder: Callable[[DetectorConfig, str], Detector]) -> Callable:
        _BUILDERS[name] = builder
        return builder
    return wrap


def available_backends() -> list[str]:
    return sorted(_BUILDERS)


def build_detector(config: DetectorConfig, device: str = "cpu") -> Detector:
    """Build the configured backend; unknown names and missing packages raise DetectorError."""
    if config.backend == "ground_truth":
        raise DetectorError("the 'ground_truth' detector projects known part labels: it is a test/eval tool "
                            "and must be constructed explicitly with ProjectedGroundTruthDetector(labels)")
    if config.backend not in _BUILDERS:
        raise DetectorError(f"unknown detector backend {config.backend!r}; known: {', '.join(available_backends())}")
    return _BUILDERS[config.backend](config, device)


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


def build_mask_refiner(config: MaskConfig, device: str = "cpu"):
    """The configured mask backend (``masks.backend``): None for "none", a SamMaskRefiner for "sam"."""
    if config.backend == "none":
        return None
    if config.backend == "sam":
        from partslip_core.detect.sam import SamMaskRefiner
        return SamMaskRefiner.from_config(config, device)
    raise DetectorError(f"unknown mask backend {config.backend!r}; known: none, sam")
