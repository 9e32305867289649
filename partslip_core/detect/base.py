"""The detector interface every 2D grounding backend implements."""

from __future__ import annotations

from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from partslip_core.types import RenderedViews, ViewDetections


class DetectorError(RuntimeError):
    """A detector could not be built or could not run (missing package, bad checkpoint, OOM ...)."""


@runtime_checkable
class Detector(Protocol):
    """Finds boxes of the named parts in each rendered view.

    ``detect`` gets all K views at once (so a backend can batch them) and returns exactly K
    ``ViewDetections`` whose labels index into ``part_names``. Real backends read only
    ``views.images``; the ground-truth projection detector (tests/eval) reads the index maps and the
    ``gt_label``/``gt_instance`` per-point fields. ``point_fields`` are the cloud's extra per-point
    fields (``PointCloud.fields``: name -> (N,) array, in the point order ``views`` index); every
    backend accepts the keyword, most ignore it. A backend that needs fields declares them in the
    registry (``register(..., point_fields=)``) so callers can supply them or fail early.
    """

    name: str

    def detect(self, views: RenderedViews, part_names: Sequence[str],
               point_fields: Optional[Mapping[str, np.ndarray]] = None) -> list[ViewDetections]:
        ...


def run_detector(detector: Detector, views: RenderedViews, part_names: Sequence[str],
                 point_fields: Optional[Mapping[str, np.ndarray]] = None) -> list[ViewDetections]:
    """``detector.detect`` with the cloud's per-point fields when it takes them.

    Detectors written before ``point_fields`` existed (``detect(views, part_names)``) keep working: they
    are called without the keyword, which only backends that read fields need."""
    if _accepts_point_fields(detector.detect):
        return detector.detect(views, part_names, point_fields=point_fields)
    return detector.detect(views, part_names)


def _accepts_point_fields(detect) -> bool:
    import inspect
    try:
        parameters = inspect.signature(detect).parameters.values()
    except (TypeError, ValueError):  # a builtin or C extension: assume the current interface
        return True
    return any(p.name == "point_fields" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
