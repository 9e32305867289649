"""PartSlipNode: PointCloud2 window in; labeled cloud, markers and part instances out.

Threads: the executor thread only queues incoming clouds (bounded deque, oldest dropped and
counted), so callbacks never block. One worker thread decodes, transforms and windows the clouds,
decides when to run (continuous: every N clouds at most at a max rate; on demand: the services),
fuses the window, runs ``partslip_core.segment`` and publishes. The two services live on a small
companion node spun by its own executor, so a service call can wait for a run without stalling
the subscription. Console script: ``partslip_node --params-file config/segment.yaml``.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from partslip_ros import messages
from partslip_ros.fusion import FrameTransformer, FrameWindow, FusionError, Frame, fuse, transform_points
from partslip_ros.params import (GROUND_TRUTH_BACKEND, GT_INSTANCE_FIELD, GT_LABEL_FIELD, NodeSettings,
                                 SettingsError, declare_all, parse_parts, settings_from_values)
from partslip_ros.pointcloud import CloudFormatError, decode_cloud

OUTPUT_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
WARN_INTERVAL_S = 1.0

DetectorFactory = Callable[[NodeSettings, Any], Any]
"""(settings, fused cloud) -> the Detector for one run; replaces the node's own choice (tests, custom backends)."""


@dataclass
class NodeStats:
    """Counters for diagnostics and tests (read them with ``PartSlipNode.stats_snapshot``)."""

    received: int = 0
    accepted: int = 0
    dropped_queue_full: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    runs_ok: int = 0
    runs_failed: dict[str, int] = field(default_factory=dict)
    last_run_ms: float = 0.0
    last_latency_ms: float = 0.0
    last_num_points: int = 0
    last_num_instances: int = 0


@dataclass
class RunOutput:
    """What one run produced (messages already published) or why it failed."""

    ok: bool
    message: str
    segmentation: Any = None
    cloud: Optional[PointCloud2] = None


@dataclass
class RunRequest:
    """An on-demand run asked for by a service; the worker sets ``output`` and ``done``."""

    parts: Optional[tuple[str, ...]]
    done: threading.Event = field(default_factory=threading.Event)
    output: Optional[RunOutput] = None
    cancelled: bool = False


class RunFailure(Exception):
    """A run could not produce a result; ``reason`` is the counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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


def check_finite(changes: Sequence[Parameter]) -> None:
    """NaN/Inf make no sense for any parameter (and slip past ``a <= x`` range checks)."""
    for p in changes:
        value = p.value
        items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise SettingsError(f"{p.name} must be finite; got {list(items)}")


def check_backend(settings: NodeSettings) -> None:
    """Unknown detector backends are rejected when set, not on every later run."""
    from partslip_core.detect import available_backends
    known = available_backends() + [GROUND_TRUTH_BACKEND]
    backend = settings.pipeline.detector.backend
    if backend not in known:
        raise SettingsError(f"pipeline.detector.backend must be one of {', '.join(known)}; got {backend!r}")


class GuardedDetector:
    """Wraps the run's detector so an exception escaping it counts as ``detector_error``, not a node bug."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.name = str(getattr(detector, "name", type(detector).__name__))

    def detect(self, views, part_names):
        from partslip_core.detect import DetectorError
        try:
            return self.detector.detect(views, part_names)
        except DetectorError:
            raise
        except Exception as error:
            if find_out_of_memory(error) is not None:
                raise
            raise DetectorError(f"detector {self.name!r} raised {type(error).__name__}: {error}") from error


class PartSlipNode(Node):
    """The part segmentation node; see the module docstring for its threads and topics."""

    def __init__(self, node_name: str = "partslip_node", *, detector_factory: Optional[DetectorFactory] = None,
                 **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._detector_factory = detector_factory
        values = declare_all(self)
        self._param_names = list(values)
        self._settings = settings_from_values(values)
        if detector_factory is None:
            check_backend(self._settings)
        self._settings_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._validate_changes)
        self.add_post_set_parameters_callback(self._apply_changes)
        self._log_backend(self._settings)

        self.stats = NodeStats()
        self._stats_lock = threading.Lock()
        self._last_warn: dict[str, float] = {}
        self._window = FrameWindow(self._settings.window_size, self._settings.window_max_age_s)
        self._transformer = FrameTransformer(self, values["fixed_frame"], values["use_tf"],
                                             self._settings.tf_timeout_s)
        self._detectors: dict[tuple, Any] = {}
        self._frames_since_run = 0
        self._last_run_start = -float("inf")
        self._run_id = 0

        self._create_outputs()
        self._inbox: deque = deque(maxlen=int(values["queue_size"]))
        self._requests: deque[RunRequest] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.busy = threading.Event()  # set while a run is in progress
        # The DDS history only buffers until the executor takes a cloud; the bounded, counted queue is _inbox.
        qos = qos_profile_sensor_data if values["input_qos"] == "sensor_data" else QoSProfile(
            depth=max(10, int(values["queue_size"])), reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(PointCloud2, values["input_topic"], self.submit, qos)
        self.service_node = self._create_service_node()
        self.create_timer(1.0, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work_loop, name="partslip_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"listening on {self.resolve_topic_name(values['input_topic'])} ({values['input_qos']} QoS); "
            f"parts={list(self._settings.parts)}; trigger={self._settings.trigger_mode}; "
            f"fixed_frame={values['fixed_frame'] or '(first cloud)'}; "
            f"tf2_ros={'yes' if self._transformer.uses_tf else 'no'}")

    # ----------------------------------------------------------------------------- setup
    def _create_outputs(self) -> None:
        self.cloud_pub = self.create_publisher(PointCloud2, "~/labeled_cloud", OUTPUT_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS)
        from partslip_msgs.msg import PartSegmentation
        self.segmentation_pub = self.create_publisher(PartSegmentation, "~/segmentation", OUTPUT_QOS)
        self.detections_pub = None
        if messages.has_vision_msgs():
            self.detections_pub = self.create_publisher(messages.Detection3DArray, "~/detections", OUTPUT_QOS)
        self.diagnostics_pub = None
        try:
            from diagnostic_msgs.msg import DiagnosticArray
            self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        except ImportError:  # pragma: no cover - diagnostic_msgs ships with every ROS install
            pass

    def _create_service_node(self) -> Node:
        from partslip_msgs.srv import SegmentNow
        base = self.get_fully_qualified_name()
        # No global arguments: a command-line "__node:=name" remap must not rename this node too.
        node = rclpy.create_node(f"{self.get_name()}_services", namespace=self.get_namespace(), context=self.context,
                                 use_global_arguments=False)
        node.create_service(Trigger, f"{base}/trigger", self._on_trigger)
        node.create_service(SegmentNow, f"{base}/segment", self._on_segment_now)
        return node

    def _log_backend(self, settings: NodeSettings) -> None:
        if settings.uses_ground_truth:
            self.get_logger().warning(
                "detector backend 'ground_truth': boxes come from the gt_label/gt_instance fields of the input "
                "clouds (a TEST/DEMO detector for synthetic scans, not a perception model)")
        if not settings.parts:
            self.get_logger().warning("parameter 'parts' is empty: runs are skipped until it names at least one part")

    @property
    def settings(self) -> NodeSettings:
        with self._settings_lock:
            return self._settings

    # ----------------------------------------------------------------------------- parameters
    def _validate_changes(self, changes: Sequence[Parameter]) -> SetParametersResult:
        """Reject invalid runtime changes with the reason; valid ones apply on the next run."""
        values = {name: self.get_parameter(name).value for name in self._param_names}
        for p in changes:
            values[p.name] = p.value
        try:
            check_finite(changes)
            settings = settings_from_values(values)
            if any(p.name == "parts" for p in changes) and not settings.parts:
                raise SettingsError("parts must name at least one part")
            if self._detector_factory is None:
                check_backend(settings)
        except SettingsError as error:
            self.get_logger().warning(f"rejected parameter change: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_changes(self, changes: Sequence[Parameter]) -> None:
        values = {name: self.get_parameter(name).value for name in self._param_names}
        settings = settings_from_values(values)
        with self._settings_lock:
            self._settings = settings
        names = ", ".join(p.name for p in changes)
        self.get_logger().info(f"parameters changed ({names}); applied on the next run")
        if any(p.name in ("pipeline.detector.backend", "parts") for p in changes):
            self._log_backend(settings)

    # ----------------------------------------------------------------------------- input
    def submit(self, msg: PointCloud2) -> None:
        """Queue a cloud and return (the input subscription's callback; the oldest is dropped when full)."""
        with self._cond:
            self.stats.received += 1
            if len(self._inbox) == self._inbox.maxlen:
                self.stats.dropped_queue_full += 1
                self._warn("queue_full", f"input queue full ({self._inbox.maxlen}, inference slower than input); "
                                         f"dropped the oldest cloud ({self.stats.dropped_queue_full} so far)")
            self._inbox.append(msg)
            self._cond.notify()

    def _warn(self, key: str, text: str, error: bool = False) -> None:
        """Warn (or error) once per second per reason; repeats within the second go to debug (all are counted)."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= WARN_INTERVAL_S:
            self._last_warn[key] = now
            if error:  # one severity per call site: rclpy raises if a line logs at two severities
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)
        else:
            self.get_logger().debug(text)

    def _reject(self, reason: str, text: str, msg: PointCloud2) -> None:
        with self._stats_lock:
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
            count = self.stats.rejected[reason]
        self._warn("reject_" + reason, f"rejected cloud (frame {msg.header.frame_id!r}, {msg.width}x{msg.height}): "
                                       f"{text} [{reason}, {count} so far]")

    def _ingest(self, msg: PointCloud2, settings: NodeSettings) -> None:
        """Worker thread: decode, transform into the fixed frame and add to the window, or reject with a reason."""
        try:
            decoded = decode_cloud(msg, require_rgb=settings.require_rgb, extra_fields=settings.extra_fields,
                                   optional_fields=(GT_LABEL_FIELD, GT_INSTANCE_FIELD),
                                   max_points=settings.max_input_points)
            now_ns = self.get_clock().now().nanoseconds
            stamp_ns = _stamp_ns(msg.header.stamp) or now_ns
            if self._window.is_too_old(stamp_ns, now_ns):
                raise FusionError("too_old", f"stamp is {(now_ns - stamp_ns) / 1e9:.1f} s old > window.max_age_s "
                                             f"{settings.window_max_age_s} (replaying a bag? set use_sim_time)")
            matrix = self._transformer.lookup(msg.header.frame_id, stamp_ns)
        except (CloudFormatError, FusionError) as error:
            self._reject(error.reason, str(error), msg)
            return
        except Exception as error:  # a decoding bug must cost one cloud, never the worker thread
            self._warn("ingest_traceback", f"decoding a cloud failed unexpectedly:\n{traceback.format_exc()}", True)
            self._reject("internal_error", f"{type(error).__name__}: {error}", msg)
            return
        xyz = decoded.xyz if matrix is None else transform_points(decoded.xyz, matrix)
        self._window.add(Frame(stamp_ns, msg.header.frame_id, xyz, decoded.rgb, decoded.extras))
        self._frames_since_run += 1
        with self._stats_lock:
            self.stats.accepted += 1
        if decoded.num_nonfinite:
            self.get_logger().debug(f"dropped {decoded.num_nonfinite} non-finite points of {decoded.num_input}")

    # ----------------------------------------------------------------------------- worker
    def _continuous_wait(self, settings: NodeSettings) -> Optional[float]:
        """Seconds until a continuous run is due (0 = now), None = not due (too few new clouds / on demand)."""
        if settings.trigger_mode != "continuous" or self._frames_since_run < settings.every_n_frames:
            return None
        if settings.max_rate_hz <= 0:
            return 0.0
        return max(0.0, self._last_run_start + 1.0 / settings.max_rate_hz - time.monotonic())

    def _next_work(self) -> tuple[list, Optional[RunRequest], bool]:
        """Block until there is input, a request, a due continuous run or stop; returns (clouds, request, run)."""
        with self._cond:
            while not self._stop:
                if self._inbox or self._requests:
                    clouds = list(self._inbox)
                    self._inbox.clear()
                    return clouds, self._requests.popleft() if self._requests else None, False
                wait = self._continuous_wait(self.settings)
                if wait == 0.0:
                    return [], None, True
                self._cond.wait(timeout=wait)
            return [], None, False

    def _work_loop(self) -> None:
        while not self._stop:
            try:
                self._work_once()
            except Exception:  # last line of defence: a bug here must not silently end all processing
                self._warn("worker", f"worker error (the node goes on):\n{traceback.format_exc()}", True)
                time.sleep(0.1)

    def _work_once(self) -> None:
        """Wait for work, ingest the queued clouds, then serve a request or a due continuous run."""
        clouds, request, due = self._next_work()
        settings = self.settings
        self._window.configure(settings.window_size, settings.window_max_age_s)
        self._transformer.timeout_s = settings.tf_timeout_s
        for msg in clouds:
            self._ingest(msg, settings)
        if request is not None:
            self._serve(request, settings)
        elif due or (clouds and self._continuous_wait(settings) == 0.0):
            self._run_safely(settings, settings.parts)

    def _serve(self, request: RunRequest, settings: NodeSettings) -> None:
        if request.cancelled:
            return
        request.output = self._run_safely(settings, request.parts or settings.parts)
        request.done.set()

    def _run_safely(self, settings: NodeSettings, parts: Sequence[str]) -> RunOutput:
        """One run; every failure is logged with its reason and counted, and the node keeps serving."""
        self._frames_since_run = 0
        self._last_run_start = time.monotonic()
        self.busy.set()
        try:
            return self._run(settings, parts)
        except Exception as error:  # a bug or an unexpected library error must not kill the worker
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
        self._warn("run_traceback", f"run failed unexpectedly:\n{traceback.format_exc()}", True)
        return "internal_error", f"{type(error).__name__}: {error}"

    def _fail(self, reason: str, text: str) -> RunOutput:
        with self._stats_lock:
            self.stats.runs_failed[reason] = self.stats.runs_failed.get(reason, 0) + 1
        self._warn("run_" + reason, f"no result published: {text} [{reason}]")
        return RunOutput(ok=False, message=text)

    def _detector(self, settings: NodeSettings, fused):
        """Cached real detector, or a per-run ground-truth projection detector (test/demo backend)."""
        from partslip_core.detect import DetectorError, ProjectedGroundTruthDetector, build_detector
        if self._detector_factory is not None:
            return self._detector_factory(settings, fused)
        if settings.uses_ground_truth:
            if GT_LABEL_FIELD not in fused.extras or GT_INSTANCE_FIELD not in fused.extras:
                raise RunFailure("missing_ground_truth", "the 'ground_truth' backend needs gt_label/gt_instance "
                                 "in every cloud of the window (clouds received before the switch lack them)")
            return ProjectedGroundTruthDetector(fused.extras[GT_LABEL_FIELD].astype(np.int64),
                                                fused.extras[GT_INSTANCE_FIELD].astype(np.int64))
        from partslip_core.types import resolve_device
        cfg = settings.pipeline.detector
        key = (repr(cfg), settings.pipeline.device)
        if key not in self._detectors:  # built once per configuration: loading weights is slow
            try:
                device = str(resolve_device(settings.pipeline.device))
                self.get_logger().info(f"loading detector {cfg.backend!r} on {device}")
                self._detectors = {key: build_detector(cfg, device)}
            except (DetectorError, RuntimeError) as error:  # an OOM while loading stays an OOM (_classify)
                raise RunFailure("detector_error", str(error)) from error
        return self._detectors[key]

    def _segment(self, settings: NodeSettings, parts: Sequence[str]):
        """Fuse the window and segment it; returns (fused cloud, result, detector name)."""
        from partslip_core import InputError, PointCloud, segment
        from partslip_core.detect import DetectorError
        if not parts:
            raise RunFailure("no_parts", "parameter 'parts' is empty: set it to the part names to segment")
        try:
            fused = fuse(self._window.frames(self.get_clock().now().nanoseconds), settings.fusion)
            detector = GuardedDetector(self._detector(settings, fused))
            cloud = PointCloud.from_arrays(fused.xyz, fused.rgb)
            result = segment(cloud, list(parts), settings.pipeline, detector)
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
        header = Header(frame_id=self._transformer.fixed_frame)
        header.stamp.sec, header.stamp.nanosec = divmod(fused.stamp_ns, 1_000_000_000)
        self._run_id += 1
        timings = {f"fusion_{k}": v for k, v in fused.timings_ms.items()} | dict(result.timings_ms)
        info = messages.RunInfo(detector_name, fused.num_frames, fused.window_start_ns, self._run_id, timings,
                                (time.perf_counter() - started) * 1e3)
        output = self._publish(header, fused, result, info, settings)
        latency_ms = (self.get_clock().now().nanoseconds - fused.stamp_ns) / 1e6
        with self._stats_lock:
            self.stats.runs_ok += 1
            self.stats.last_run_ms, self.stats.last_latency_ms = info.total_ms, latency_ms
            self.stats.last_num_points, self.stats.last_num_instances = fused.num_points, len(result.instances)
        self.get_logger().debug("stage timings (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
        self.get_logger().info(f"run {self._run_id}: {output.message}; {info.total_ms:.0f} ms run, "
                               f"{latency_ms:.0f} ms since the newest cloud's stamp")
        return output

    def _publish(self, header: Header, fused, result, info: messages.RunInfo, settings: NodeSettings) -> RunOutput:
        cloud = messages.labeled_cloud(header, fused.xyz, fused.rgb, result, settings.color_by)
        segmentation = messages.part_segmentation_msg(header, fused.xyz, result, info)
        segmentation.total_ms = float(info.total_ms)
        self.cloud_pub.publish(cloud)
        self.marker_pub.publish(messages.marker_array(header, fused.xyz, result))
        if self.detections_pub is not None and settings.publish_detections:
            self.detections_pub.publish(messages.detection3d_array(header, result))
        self.segmentation_pub.publish(segmentation)
        counts = ", ".join(f"{i.label_name}#{i.instance_id}({i.num_points})" for i in result.instances) or "none"
        summary = (f"{fused.num_points} points from {fused.num_frames} cloud(s), "
                   f"{int((result.point_label >= 0).sum())} labeled; instances: {counts}")
        return RunOutput(ok=True, message=summary, segmentation=segmentation, cloud=cloud)

    # ----------------------------------------------------------------------------- services
    def request_run(self, parts: Optional[Sequence[str]] = None, timeout_s: Optional[float] = None) -> RunOutput:
        """Ask the worker for a run on the current window and wait for it (any thread but the worker)."""
        request = RunRequest(parts=tuple(parts) if parts else None)
        with self._cond:
            self._requests.append(request)
            self._cond.notify()
        timeout = timeout_s if timeout_s and timeout_s > 0 else self.settings.service_timeout_s
        if not request.done.wait(timeout):
            request.cancelled = True
            return RunOutput(ok=False, message=f"no result within {timeout:.1f} s (a run that already started "
                                                "still publishes when it finishes)")
        return request.output

    def _on_trigger(self, request, response):
        output = self.request_run()
        response.success, response.message = output.ok, output.message
        return response

    def _on_segment_now(self, request, response):
        try:
            parts = parse_parts(list(request.parts))
        except SettingsError as error:
            response.success, response.message = False, str(error)
            return response
        output = self.request_run(parts or None, float(request.timeout_s))
        response.success, response.message = output.ok, output.message
        if output.ok:
            response.segmentation, response.cloud = output.segmentation, output.cloud
        return response

    # ----------------------------------------------------------------------------- diagnostics
    def stats_snapshot(self) -> NodeStats:
        with self._stats_lock, self._cond:
            s = self.stats
            return NodeStats(s.received, s.accepted, s.dropped_queue_full, dict(s.rejected), s.runs_ok,
                             dict(s.runs_failed), s.last_run_ms, s.last_latency_ms, s.last_num_points,
                             s.last_num_instances)

    def _publish_diagnostics(self) -> None:
        if self.diagnostics_pub is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        s = self.stats_snapshot()
        values = {"received": s.received, "accepted": s.accepted, "dropped_queue_full": s.dropped_queue_full,
                  "runs_ok": s.runs_ok, "last_run_ms": round(s.last_run_ms, 1),
                  "last_latency_ms": round(s.last_latency_ms, 1), "last_num_points": s.last_num_points,
                  "last_num_instances": s.last_num_instances, "window_frames": len(self._window),
                  "run_in_progress_s": round(time.monotonic() - self._last_run_start, 1) if self.busy.is_set() else 0}
        values.update({f"rejected_{k}": v for k, v in s.rejected.items()})
        values.update({f"run_failed_{k}": v for k, v in s.runs_failed.items()})
        level = DiagnosticStatus.WARN if (s.rejected or s.runs_failed or s.dropped_queue_full) else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: part segmentation",
                                  message=f"{s.runs_ok} runs, {s.accepted}/{s.received} clouds accepted",
                                  hardware_id=self.get_name(),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    # ----------------------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop the worker (a run in progress finishes first) and destroy both nodes."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._worker.join()
        for request in list(self._requests):
            request.output = RunOutput(ok=False, message="node shutting down")
            request.done.set()
        self.service_node.destroy_node()
        self.destroy_node()


class NodeSpinner:
    """Spins groups of nodes, each group on its own SingleThreadedExecutor in a background thread."""

    def __init__(self, *groups: Sequence[Node]) -> None:
        self._executors = []
        self._threads = []
        for group in groups:
            executor = SingleThreadedExecutor(context=group[0].context)
            for node in group:
                executor.add_node(node)
            self._executors.append(executor)
            self._threads.append(threading.Thread(target=self._spin, args=(executor,), daemon=True))

    @staticmethod
    def _spin(executor) -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def start(self) -> "NodeSpinner":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Shut the executors down and join their threads (do this before rclpy.shutdown)."""
        for executor in self._executors:
            executor.shutdown(timeout_sec=5.0)
        for thread in self._threads:
            thread.join(timeout=10.0)


def ros_argv(argv: Sequence[str]) -> list[str]:
    """Turn a bare ``--params-file FILE`` into ``--ros-args --params-file FILE --`` placed first."""
    args, files, in_ros, i = [], [], False, 0
    while i < len(argv):
        arg = argv[i]
        in_ros = True if arg == "--ros-args" else (False if arg == "--" else in_ros)
        if arg == "--params-file" and not in_ros:
            if i + 1 >= len(argv):
                raise SystemExit("--params-file needs a file name")
            files.append(argv[i + 1])
            i += 2
            continue
        args.append(arg)
        i += 1
    front = [item for path in files for item in ("--ros-args", "--params-file", path, "--")]
    return args[:1] + front + args[1:]  # before other ROS args, so a later -p name:=value still wins


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``partslip_node``: the same node and YAML as launch/segment.launch.py, without launch_ros."""
    rclpy.init(args=ros_argv(list(sys.argv if argv is None else argv)))
    try:
        node = PartSlipNode()
    except Exception as error:  # invalid parameter values or types: say which and exit
        print(f"partslip_node: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    services = NodeSpinner([node.service_node]).start()
    try:
        spin_until_shutdown(node)
    finally:
        services.stop()
        node.shutdown()
        rclpy.try_shutdown()
    return 0


def spin_until_shutdown(node: Node) -> None:
    """Spin ``node`` on a SingleThreadedExecutor until Ctrl-C or an external shutdown; join it after."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=5.0)


if __name__ == "__main__":
    sys.exit(main())
