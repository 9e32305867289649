"""2D part detectors behind one interface (see ``base.Detector``) and a registry to build them by name."""

from partslip_core.detect.base import Detector, DetectorError
from partslip_core.detect.ground_truth import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.detect.registry import available_backends, build_detector

__all__ = [
    "Detector", "DetectorError", "GroundTruthNoise", "ProjectedGroundTruthDetector",
    "available_backends", "build_detector",
]
