"""How the node logs: losses that are designed behaviour, not faults, and repeated faults.

With any sensor faster than inference the bounded input queue overflows all the time: that is the
design (the oldest cloud is dropped so the next run sees fresh data), so it must not warn once per
second forever. ``SteadyStateDrops`` warns when an overflow episode starts (a change), then logs an
info summary at most every ``interval_s`` while it goes on, and ends the episode after a quiet
interval (the next overflow warns again). Every drop is still counted (``/diagnostics``).
``RateLimitedLog`` is for faults (a rejected cloud, a failed run): at most one warning or error per
second per reason, the repeats at debug level (the caller counts every one).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

SUMMARY_INTERVAL_S = 30.0
WARN_INTERVAL_S = 1.0


class RateLimitedLog:
    """``log(key, text, error=False)``: warn (or error) once per ``interval_s`` per key, repeats at debug.
    Thread-safe (the executor and worker threads both report)."""

    def __init__(self, logger, interval_s: float = WARN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, text: str, error: bool = False) -> None:
        now = self._clock()
        with self._lock:
            due = now - self._last.get(key, -float("inf")) >= self.interval_s
            if due:
                self._last[key] = now
        if not due:
            self._logger.debug(text)
        elif error:  # one severity per call site: rclpy raises if a line logs at two severities
            self._logger.error(text)
        else:
            self._logger.warning(text)


class SteadyStateDrops:
    """Turns individual drop events into (level, text) log lines; not thread-safe (call under the node's lock)."""

    def __init__(self, what: str, interval_s: float = SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.interval_s = interval_s
        self._clock = clock
        self._active = False
        self._since_summary = 0
        self._last_summary = 0.0
        self.total = 0

    def record(self, detail: str) -> Optional[tuple[str, str]]:
        """One drop; returns the line to log now, if any."""
        now = self._clock()
        self.total += 1
        if not self._active:
            self._active, self._since_summary, self._last_summary = True, 0, now
            return ("warning", f"{self.what}: {detail}. Expected while the input is faster than inference; "
                               f"counted in /diagnostics, summarized every {self.interval_s:.0f} s")
        self._since_summary += 1
        return self.poll(now)

    def poll(self, now: Optional[float] = None) -> Optional[tuple[str, str]]:
        """Summary due at ``now`` (also call it from a timer, so an episode's end is noticed)."""
        now = self._clock() if now is None else now
        if not self._active or now - self._last_summary < self.interval_s:
            return None
        count, self._since_summary, self._last_summary = self._since_summary, 0, now
        if count == 0:
            self._active = False
            return ("info", f"{self.what}: no more drops ({self.total} in all)")
        return ("info", f"{self.what}: {count} more in the last {self.interval_s:.0f} s ({self.total} in all)")
