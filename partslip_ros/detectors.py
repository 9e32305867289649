"""The node's detectors: built once per configuration, a failed build remembered, errors classified.

Loading weights is slow, and a detector that cannot be built (missing weights, wrong files) will not
build on the next run either: ``DetectorCache`` keeps the built detector per (detector config, device)
and remembers a failure until those parameters change (or ``forget_failures`` is called), so the log
and the hub are not hit on every run; the failure text is shown in diagnostics (``failure``).
"""

from __future__ import annotations

import gc
import threading
from typing import Any, Callable, Optional

from partslip_ros.params import NodeSettings


class RunFailure(Exception):
    """A run could not produce a result; ``reason`` is the counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def find_out_of_memory(error: BaseException) -> Optional[BaseException]:
    """The (accelerator) out-of-memory error that ``error`` is or was raised from, else None."""
    import torch
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.OutOfMemoryError) or (
                isinstance(current, RuntimeError) and "out of memory" in str(current).lower()):
            return current
        current = current.__cause__ or current.__context__
    return None


def release_accelerator_memory() -> None:
    """Collect the failed run's garbage and return cached CUDA blocks, so the next run starts clean."""
    import torch
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class GuardedDetector:
    """Wraps the run's detector so an exception escaping it counts as ``detector_error``, not a node bug."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.name = str(getattr(detector, "name", type(detector).__name__))

    def detect(self, views, part_names, point_fields=None):
        from partslip_core.detect import DetectorError
        from partslip_core.detect.base import run_detector
        try:
            return run_detector(self.detector, views, part_names, point_fields)
        except DetectorError:
            raise
        except Exception as error:
            if find_out_of_memory(error) is not None:
                raise
            raise DetectorError(f"detector {self.name!r} raised {type(error).__name__}: {error}") from error


class DetectorCache:
    """The detector of the current configuration; ``log`` is called with one line when a build starts."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._built: dict[tuple, Any] = {}
        self._failed: dict[tuple, str] = {}

    @property
    def failure(self) -> str:
        """The remembered build failure of the last configuration tried ('' = none)."""
        with self._lock:
            return next(iter(self._failed.values()), "")

    def forget_failures(self) -> None:
        with self._lock:
            self._failed.clear()

    def get(self, settings: NodeSettings, fused) -> Any:
        """The cached (or newly built) detector for this run; a run whose fused cloud lacks the per-point fields
        the backend reads (``BackendInfo.point_fields``) fails first with reason ``missing_point_fields``."""
        missing = settings.backend_info.missing_fields(fused.extras) if settings.backend_info else ""
        if missing:
            raise RunFailure("missing_point_fields", f"detector backend {settings.pipeline.detector.backend!r} "
                             f"needs the per-point fields {missing} in every cloud of the window (clouds "
                             "received before the backend was set may lack them)")
        return self.build(settings)

    @property
    def size(self) -> int:
        """How many built detectors the cache holds (0 or 1)."""
        with self._lock:
            return len(self._built)

    def clear(self, forget_failures: bool = False) -> int:
        """Drop the built detector (lifecycle deactivate/cleanup); returns how many were dropped. Its memory is
        freed once no run holds it (``partslip_ros.lifecycle.free_detector_memory`` also empties the caches)."""
        with self._lock:
            dropped = len(self._built)
            self._built = {}
            if forget_failures:
                self._failed.clear()
        return dropped

    def build(self, settings: NodeSettings) -> Any:
        """The cached real detector of ``settings``, built now if needed (lifecycle configure/activate and runs);
        raises RunFailure("detector_error") with the reason, remembered until the detector parameters change."""
        from partslip_core.detect import DetectorError, build_detector
        from partslip_core.types import resolve_device
        cfg = settings.pipeline.detector
        key = (repr(cfg), settings.pipeline.device)
        with self._lock:
            if key in self._built:
                return self._built[key]
            if key in self._failed:
                raise RunFailure("detector_error", f"{self._failed[key]} (not retried until a pipeline.detector.* "
                                                   "or pipeline.device parameter is set)")
        try:
            device = str(resolve_device(settings.pipeline.device))
            self._log(f"loading detector {cfg.backend!r} on {device}")
            detector = build_detector(cfg, device)
        except Exception as error:  # missing or corrupt weights (any error type): remembered, not retried per run
            if find_out_of_memory(error) is not None:
                raise  # an OOM while loading stays an OOM (the node classifies it and frees memory)
            what = str(error) if isinstance(error, DetectorError) else f"{type(error).__name__}: {error}"
            with self._lock:
                self._failed = {key: f"cannot build detector {cfg.backend!r}: {what}"}
            raise RunFailure("detector_error", self._failed[key]) from error
        with self._lock:
            self._built = {key: detector}  # one at a time: weights are large
            self._failed.clear()
        return detector
