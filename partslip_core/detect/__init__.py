"""2D part detectors behind one interface (see ``base.Detector``) and a registry to build them by name."""

from partslip_core.detect.base import Detector, DetectorError
from partslip_core.detect.ground_truth import GroundTruthNoise, ProjectedGroundTruthDetector
from partslip_core.detect.registry import BackendInfo, available_backends, backend_info, build_detector

__all__ = [
    "Detector", "DetectorError", "GroundTruthNoise", "ProjectedGroundTruthDetector",
    "BackendInfo", "available_backends", "backend_info", "build_detector",
]
