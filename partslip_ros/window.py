"""The input window and the stamp policy: which clouds may join it, and when it starts over.

Stamps decide the output header (the newest cloud's stamp) and the age limit, so a bad stamp must
never pin the window. The rules (``StampPolicy.admit``), in order:

* node clock went backwards (simulator reset, ``ros2 bag play --loop`` with ``use_sim_time``): the
  window is cleared and the jump logged once; the cloud is then judged against the new time;
* stamp more than ``window.max_future_s`` ahead of the node clock: rejected (``future_stamp``);
* stamp older than ``window.max_age_s``: rejected (``too_old``);
* stamp more than ``window.time_jump_s`` before the newest cloud in the window (a bag restarting
  without sim time, a sensor clock reset): the window is cleared, the jump logged once, the cloud kept
  (only if the cloud passes its other checks too: a rejected cloud never clears the window).

The window keeps the ``size`` newest clouds by stamp, sorted; with future stamps rejected and backwards
jumps clearing it, no stamp can pin a cloud in it or evict every new cloud on arrival.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from partslip_ros.fusion import Frame, FusionError


class FrameWindow:
    """The last ``max_frames`` received frames not older than ``max_age_s`` (0 = no age limit)."""

    def __init__(self, max_frames: int, max_age_s: float) -> None:
        self._frames: deque[Frame] = deque()
        self.configure(max_frames, max_age_s)

    def configure(self, max_frames: int, max_age_s: float) -> None:
        if max_frames < 1:
            raise ValueError(f"window size must be >= 1; got {max_frames}")
        self.max_frames = int(max_frames)
        self.max_age_ns = int(max(max_age_s, 0.0) * 1e9)
        while len(self._frames) > self.max_frames:
            self._frames.popleft()

    def __len__(self) -> int:
        return len(self._frames)

    def is_too_old(self, stamp_ns: int, now_ns: int) -> bool:
        return self.max_age_ns > 0 and now_ns - stamp_ns > self.max_age_ns

    @property
    def newest_stamp_ns(self) -> Optional[int]:
        return max((f.stamp_ns for f in self._frames), default=None)

    def add(self, frame: Frame) -> None:
        """Append a frame (out-of-order stamps are kept sorted); the oldest leaves when the window is full.
        ``StampPolicy`` keeps future stamps out, so the oldest is never the cloud that just arrived for long."""
        self._frames.append(frame)
        if len(self._frames) > 1 and self._frames[-2].stamp_ns > frame.stamp_ns:
            self._frames = deque(sorted(self._frames, key=lambda f: f.stamp_ns))
        while len(self._frames) > self.max_frames:
            self._frames.popleft()

    def frames(self, now_ns: int) -> list[Frame]:
        """Frames still inside the age limit at ``now_ns`` (older ones are dropped for good), oldest first."""
        while self._frames and self.is_too_old(self._frames[0].stamp_ns, now_ns):
            self._frames.popleft()
        return list(self._frames)

    def clear(self) -> None:
        self._frames.clear()


@dataclass
class Admission:
    """What ``StampPolicy.admit`` decided for a cloud it did not reject. ``cleared``: why the window was
    emptied already (the node clock went back; '' = it was not). ``restart``: why the window must start over
    when this cloud joins it (its stamp jumped back; '' = it need not): the caller clears the window only
    once the cloud has passed every other check, so a cloud rejected later cannot empty the window."""

    cleared: str = ""
    restart: str = ""


class StampPolicy:
    """Applies the module's stamp rules to one cloud at a time (worker thread only)."""

    def __init__(self) -> None:
        self._last_now_ns: Optional[int] = None

    def observe_clock(self, window: FrameWindow, now_ns: int) -> str:
        """Clear the window if the node clock went backwards since the last call; returns why ('' = it did not)."""
        cleared = ""
        if self._last_now_ns is not None and now_ns < self._last_now_ns:
            window.clear()
            cleared = (f"the node clock went back {(self._last_now_ns - now_ns) / 1e9:.3f} s "
                       "(simulator reset or bag loop with use_sim_time)")
        self._last_now_ns = now_ns
        return cleared

    def admit(self, window: FrameWindow, stamp_ns: int, now_ns: int, max_future_s: float,
              time_jump_s: float) -> Admission:
        """Clear the window on a node-clock jump; raise FusionError(future_stamp / too_old) to reject the cloud."""
        admission = Admission(self.observe_clock(window, now_ns))
        if now_ns > 0 and stamp_ns - now_ns > max_future_s * 1e9:
            raise FusionError("future_stamp", f"stamp is {(stamp_ns - now_ns) / 1e9:.3f} s ahead of the node clock "
                                              f"> window.max_future_s {max_future_s} (sensor clock not synchronized? "
                                              "use_sim_time mismatch?)")
        if window.is_too_old(stamp_ns, now_ns):
            raise FusionError("too_old", f"stamp is {(now_ns - stamp_ns) / 1e9:.1f} s old > window.max_age_s "
                                         f"{window.max_age_ns / 1e9:g} (replaying a bag? set use_sim_time)")
        newest = window.newest_stamp_ns
        if time_jump_s > 0 and newest is not None and newest - stamp_ns > time_jump_s * 1e9:
            admission.restart = (f"stamps went back {(newest - stamp_ns) / 1e9:.3f} s > window.time_jump_s "
                                 f"{time_jump_s:g} (bag restarted, sensor clock reset)")
        return admission
