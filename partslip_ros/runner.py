"""One run of the node: fuse the window, segment it with ``partslip_core.segment``, publish the results.

Every failure becomes a reason (the counter key in ``/diagnostics``) and one rate-limited log line, and the
worker goes on: fusion and input errors, detector errors (a detector that raises anything counts as
``detector_error``), out of memory (cached accelerator memory is released), and bugs (``internal_error``
with the traceback). Worker thread only.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from partslip_ros import messages
from partslip_ros.debug_outputs import DebugPublishers
from partslip_ros.detectors import (DetectorCache, GuardedDetector, RunFailure, find_out_of_memory,
                                    release_accelerator_memory)
from partslip_ros.fusion import FusionError, fuse
from partslip_ros.intake import INTENSITY_FIELD, CloudIntake
from partslip_ros.log_policy import RateLimitedLog
from partslip_ros.node_state import RunOutput, StatsBook
from partslip_ros.params import NodeSettings
from partslip_ros.stamps import ns_to_stamp

OUTPUT_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)

DetectorFactory = Callable[[NodeSettings, Any], Any]
"""(settings, fused cloud) -> the Detector for one run; replaces the node's own choice (tests, custom backends)."""


def output_publisher(node: Node, msg_type, topic: str, qos):
    """A lifecycle publisher on a lifecycle node (it publishes only while the node is active: ``publish`` is a
    no-op while inactive, and rclpy enables/disables it in activate/deactivate), a plain one on a plain node."""
    create = getattr(node, "create_lifecycle_publisher", None)
    return create(msg_type, topic, qos) if create is not None else node.create_publisher(msg_type, topic, qos)


@dataclass
class Publishers:
    """The node's result topics (latched: transient local, depth 1; lifecycle publishers: silent unless the node is
    active); ``detections`` None without vision_msgs; ``debug`` the debug topics (advertised only while the
    ``debug`` parameter is true)."""

    cloud: Any
    markers: Any
    segmentation: Any
    detections: Any = None
    debug: Optional[DebugPublishers] = None

    @classmethod
    def create(cls, node: Node, debug: bool = False) -> "Publishers":
        from partslip_ros.msg import PartSegmentation
        detections = None
        if messages.has_vision_msgs():
            detections = output_publisher(node, messages.Detection3DArray, "~/detections", OUTPUT_QOS)
        return cls(output_publisher(node, PointCloud2, "~/labeled_cloud", OUTPUT_QOS),
                   output_publisher(node, MarkerArray, "~/markers", OUTPUT_QOS),
                   output_publisher(node, PartSegmentation, "~/segmentation", OUTPUT_QOS), detections,
                   DebugPublishers(node, OUTPUT_QOS, debug))

    @property
    def enabled(self) -> bool:
        """False while the lifecycle publishers are disabled (node not active): a result would go nowhere."""
        return getattr(self.cloud, "is_activated", True)


class SegmentRunner:
    """Runs and publishes for one node. ``closing`` is set by shutdown when it abandons a run in flight:
    that run must not publish (its node is being destroyed) and its failure is not reported."""

    def __init__(self, node: Node, publishers: Publishers, intake: CloudIntake, detectors: DetectorCache,
                 detector_factory: Optional[DetectorFactory], stats: StatsBook, log: RateLimitedLog) -> None:
        self._node = node
        self._publishers = publishers
        self._intake = intake
        self._detectors = detectors
        self._detector_factory = detector_factory
        self._stats = stats
        self._log = log
        self.closing = False
        self.busy = threading.Event()  # set while a run is in progress
        self.last_start = -float("inf")  # time.monotonic() of the last run's start
        self.last_isolation = ""  # what object isolation removed in the last run (diagnostics)
        self.run_id = 0

    def debug_outputs(self, enabled: bool) -> None:
        """Advertise (or withdraw) ``~/debug/*`` as the ``debug`` parameter changes (executor thread)."""
        if self._publishers.debug is not None:
            self._publishers.debug.set_enabled(enabled)

    def run_safely(self, settings: NodeSettings, parts: Sequence[str]) -> RunOutput:
        """One run; every failure is logged with its reason and counted, and the node keeps serving."""
        self._intake.frames_since_run = 0
        self.last_start = time.monotonic()
        self.busy.set()
        try:
            return self._run(settings, parts)
        except Exception as error:  # a bug or an unexpected library error must not kill the worker
            if self.closing:  # the node was destroyed under an abandoned run: nothing left to report to
                return RunOutput(ok=False, message="node shut down during the run")
            reason, text = self._classify(error)
        finally:
            self.busy.clear()
        if reason == "out_of_memory":  # here the traceback (and the tensors its frames hold) is already gone
            release_accelerator_memory()
        return self._fail(reason, text)

    def _classify(self, error: Exception) -> tuple[str, str]:
        """(reason, message) of a failed run, as strings: keeping ``error`` would pin its frames' tensors."""
        oom = find_out_of_memory(error)
        if oom is not None:
            return "out_of_memory", (f"out of memory ({type(oom).__name__}: {oom}); freed the cached memory. "
                                     "Lower pipeline.render.image_size, the number of views, "
                                     "pipeline.detector.batch_size or fusion.max_points")
        if isinstance(error, RunFailure):
            return error.reason, str(error)
        self._log("run_traceback", f"run failed unexpectedly:\n{traceback.format_exc()}", True)
        return "internal_error", f"{type(error).__name__}: {error}"

    def _fail(self, reason: str, text: str) -> RunOutput:
        self._stats.count("runs_failed", reason)
        self._log("run_" + reason, f"no result published: {text} [{reason}]")
        return RunOutput(ok=False, message=text)

    def _detector(self, settings: NodeSettings, fused):
        """The injected factory's detector, else the cache's (built once per detector configuration)."""
        if self._detector_factory is not None:
            return self._detector_factory(settings, fused)
        return self._detectors.get(settings, fused)

    def _segment(self, settings: NodeSettings, parts: Sequence[str]):
        """Fuse the window and segment it; returns (fused cloud, result, detector name)."""
        from partslip_core import InputError, PointCloud, segment
        from partslip_core.detect import DetectorError
        from partslip_core.normalize import up_vector
        if not parts:
            raise RunFailure("no_parts", "parameter 'parts' is empty: set it to the part names to segment")
        try:
            fused = fuse(self._intake.frames_for_run(), settings.fusion,
                         up_vector(settings.pipeline.normalize.up_axis))
            self.last_isolation = fused.notes.get("isolation", "")
            detector = GuardedDetector(self._detector(settings, fused))
            # every decoded per-point field goes to the detector (the ground_truth backend reads gt_label/gt_instance)
            cloud = PointCloud.from_arrays(fused.xyz, fused.rgb, intensity=fused.extras.get(INTENSITY_FIELD),
                                           fields=fused.extras)
            result = segment(cloud, list(parts), settings.pipeline, detector, keep_views=settings.debug)
        except FusionError as error:
            raise RunFailure(error.reason, str(error)) from error
        except InputError as error:
            raise RunFailure("bad_input", str(error)) from error
        except DetectorError as error:
            raise RunFailure("detector_error", str(error)) from error
        return fused, result, detector.name

    def _run(self, settings: NodeSettings, parts: Sequence[str]) -> RunOutput:
        started = time.perf_counter()
        fused, result, detector_name = self._segment(settings, parts)
        header = Header(frame_id=self._intake.transformer.fixed_frame, stamp=ns_to_stamp(fused.stamp_ns))
        self.run_id += 1
        timings = {f"fusion_{k}": v for k, v in fused.timings_ms.items()} | dict(result.timings_ms)
        info = messages.RunInfo(detector_name, fused.num_frames, fused.window_start_ns, self.run_id, timings,
                                (time.perf_counter() - started) * 1e3)
        output = self._publish(header, fused, result, info, settings)
        latency_ms = (self._node.get_clock().now().nanoseconds - fused.stamp_ns) / 1e6
        self._stats.set(last_run_ms=info.total_ms, last_latency_ms=latency_ms, last_num_points=fused.num_points,
                        last_num_instances=len(result.instances))
        self._report_unlabelled(result.diagnosis)
        self._stats.add(runs_ok=1)  # after the figures: whoever waits for runs_ok reads this run's figures
        logger = self._node.get_logger()
        logger.debug("stage timings (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
        logger.info(f"run {self.run_id}: {output.message}; {info.total_ms:.0f} ms run, "
                    f"{latency_ms:.0f} ms since the newest cloud's stamp")
        return output

    def _report_unlabelled(self, diagnosis) -> None:
        """A run whose points mostly ended unlabelled: one rate-limited warning with the reason, and a count."""
        if diagnosis is None or not diagnosis.applies:
            return
        self._stats.count("unlabelled", diagnosis.reason)
        self._log("unlabelled_" + diagnosis.reason,
                  f"run {self.run_id}: mostly unlabelled [{diagnosis.reason}]: {diagnosis.message}")

    def _publish(self, header: Header, fused, result, info: messages.RunInfo, settings: NodeSettings) -> RunOutput:
        cloud = messages.labeled_cloud(header, fused.xyz, fused.rgb, result, settings.color_by)
        segmentation = messages.part_segmentation_msg(header, fused.xyz, result, info)
        segmentation.total_ms = float(info.total_ms)
        if self.closing:
            raise RunFailure("shutting_down", "the node shut down before the result could be published")
        publishers = self._publishers
        if not publishers.enabled:  # a deactivate that stopped waiting for this run: counted, not silently lost
            raise RunFailure("deactivated", "the node was deactivated during the run: the result is not published")
        publishers.cloud.publish(cloud)
        publishers.markers.publish(messages.marker_array(header, fused.xyz, result))
        if publishers.detections is not None and settings.publish_detections:
            publishers.detections.publish(messages.detection3d_array(header, result))
        publishers.segmentation.publish(segmentation)
        if publishers.debug is not None and settings.debug:
            try:  # the results are out: a debug-view failure is logged, it does not fail the run
                publishers.debug.publish(header, fused.xyz, result)
            except Exception:
                self._stats.add(debug_failures=1)
                self._log("debug_outputs", f"debug outputs not published:\n{traceback.format_exc()}", True)
        counts = ", ".join(f"{i.label_name}#{i.instance_id}({i.num_points})" for i in result.instances) or "none"
        summary = (f"{fused.num_points} points from {fused.num_frames} cloud(s), "
                   f"{int((result.point_label >= 0).sum())} labeled; instances: {counts}")
        return RunOutput(ok=True, message=summary, segmentation=segmentation, cloud=cloud)
