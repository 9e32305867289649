"""The worker's input side: decode a queued cloud, check its stamp and coordinates, move it into the fixed
frame and add it to the window, or reject it with a reason (logged, rate limited, and counted).

Stamp rules: ``window``. Decoding: ``pointcloud``. Frames: ``fusion.FrameTransformer``. Worker thread only,
except ``len(window)`` for diagnostics.
"""

from __future__ import annotations

import traceback
from typing import Callable

import numpy as np
from sensor_msgs.msg import PointCloud2

from partslip_ros.fusion import Frame, FrameTransformer, FusionError, transform_points
from partslip_ros.log_policy import RateLimitedLog
from partslip_ros.node_state import StatsBook
from partslip_ros.params import NodeSettings
from partslip_ros.pointcloud import CloudFormatError, decode_cloud
from partslip_ros.stamps import stamp_to_ns
from partslip_ros.window import FrameWindow, StampPolicy

INTENSITY_FIELD = "intensity"  # lidar XYZI: shades clouds without rgb (pipeline.render.intensity_albedo)
OPTIONAL_FIELDS = (INTENSITY_FIELD,)  # decoded when present, with the detector backend's other fields


class CloudIntake:
    """Queued clouds -> window frames. ``clock_ns`` is the node clock (sim time aware), ``logger`` the node's."""

    def __init__(self, settings: NodeSettings, transformer: FrameTransformer, clock_ns: Callable[[], int],
                 stats: StatsBook, log: RateLimitedLog, logger) -> None:
        self.window = FrameWindow(settings.window_size, settings.window_max_age_s)
        self.stamps = StampPolicy()
        self.transformer = transformer
        self.frames_since_run = 0  # accepted since the last run started (continuous trigger)
        self._clock_ns = clock_ns
        self._stats = stats
        self._log = log
        self._logger = logger

    def configure(self, settings: NodeSettings) -> None:
        """Apply the run's settings snapshot (window size/age, tf timeout)."""
        self.window.configure(settings.window_size, settings.window_max_age_s)
        self.transformer.timeout_s = settings.tf_timeout_s

    def reject(self, reason: str, text: str, msg: PointCloud2) -> None:
        count = self._stats.count("rejected", reason)
        self._log("reject_" + reason, f"rejected cloud (frame {msg.header.frame_id!r}, {msg.width}x{msg.height}): "
                                      f"{text} [{reason}, {count} so far]")

    def ingest(self, msg: PointCloud2, settings: NodeSettings) -> None:
        """Decode, check the stamp, transform into the fixed frame and add to the window, or reject with a reason."""
        try:
            decoded = decode_cloud(msg, require_rgb=settings.require_rgb, extra_fields=settings.extra_fields,
                                   optional_fields=OPTIONAL_FIELDS + settings.optional_fields,
                                   max_points=settings.max_input_points)
            now_ns = self._clock_ns()
            cloud_ns = stamp_to_ns(msg.header.stamp) or now_ns  # an unstamped cloud counts as received now
            admission = self.stamps.admit(self.window, cloud_ns, now_ns, settings.window_max_future_s,
                                          settings.window_time_jump_s)
            self.window_cleared(admission.cleared)
            matrix = self.transformer.lookup(msg.header.frame_id, cloud_ns)
            xyz = decoded.xyz if matrix is None else transform_points(decoded.xyz, matrix)
            reach = float(np.abs(xyz).max())  # decode_cloud rejects empty and all-NaN clouds
            if not reach <= settings.max_coordinate_m:
                raise FusionError("out_of_range", f"a coordinate is {reach:.3g} m from the fixed frame's origin > "
                                                  f"max_coordinate_m {settings.max_coordinate_m:g} (garbage values "
                                                  "or a frame mix-up)")
        except (CloudFormatError, FusionError) as error:
            self.reject(error.reason, str(error), msg)
            return
        except Exception as error:  # a decoding bug must cost one cloud, never the worker thread
            self._log("ingest_traceback", f"decoding a cloud failed unexpectedly:\n{traceback.format_exc()}", True)
            self.reject("internal_error", f"{type(error).__name__}: {error}", msg)
            return
        if admission.restart:  # only now: a cloud rejected above must not empty the window
            self.window.clear()
            self.window_cleared(admission.restart)
        self.window.add(Frame(cloud_ns, msg.header.frame_id, xyz, decoded.rgb, decoded.extras))
        self.frames_since_run += 1
        self._stats.add(accepted=1)
        if decoded.num_nonfinite:
            self._logger.debug(f"dropped {decoded.num_nonfinite} non-finite points of {decoded.num_input}")

    def window_cleared(self, why: str) -> None:
        """Log a backwards time jump once (it is one event) and count it."""
        if why:
            self._stats.add(window_resets=1)
            self._logger.warning(f"time went backwards: {why}; cleared the window and started over")

    def frames_for_run(self) -> list[Frame]:
        """The window at the node clock's now (a backwards clock jump since the last cloud clears it first)."""
        now_ns = self._clock_ns()
        self.window_cleared(self.stamps.observe_clock(self.window, now_ns))
        return self.window.frames(now_ns)
