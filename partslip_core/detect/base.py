"""The detector interface every 2D grounding backend implements."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from partslip_core.types import RenderedViews, ViewDetections


class DetectorError(RuntimeError):
    """A detector could not be built or could not run (missing package, bad checkpoint, OOM ...)."""


@runtime_checkable
class Detector(Protocol):
    """Finds boxes of the named parts in each rendered view.

    ``detect`` gets all K views at once (so a backend can batch them) and returns exactly K
    ``ViewDetections`` whose labels index into ``part_names``. Real backends read only
    ``views.images``; the ground-truth projection detector (tests/eval) reads the index maps.
    """

    name: str

    def detect(self, views: RenderedViews, part_names: Sequence[str]) -> list[ViewDetections]:
        ...
