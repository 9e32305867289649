"""PartSlipNode: PointCloud2 window in; labeled cloud, markers and part instances out.

Threads: the executor thread only queues incoming clouds (bounded deque, oldest dropped and
counted), so callbacks never block. One worker thread decodes, transforms and windows the clouds,
decides when to run (continuous: every N clouds at most at a max rate; on demand: the services),
fuses the window, runs ``partslip_core.segment`` and publishes (lifecycle publishers: only while active).
The two services live on a small companion node spun by its own executor, so a service call can wait for a
run without stalling the subscription; one MultiThreadedExecutor with callback groups was measured as the
alternative and not adopted (bench/bench_service_latency.py; partslip_ros/README.md, "Services during a run").
Console script: ``partslip_node --params-file config/segment.yaml``.

The node is wiring: the input side (``intake``: decoding, stamps and the window in ``window``), one run
(``runner``: fusion, segmentation, publishing, failure reasons), parameters (``params``, ``param_checks``),
detectors (``detectors``), fusion and object isolation (``fusion``, ``partslip_core.scene``), counters,
diagnostics and services (``node_state``), the ``debug`` topics (``debug_outputs``), log policy (``log_policy``),
signals and shutdown (``process``), lifecycle transitions (``lifecycle``: configure builds the detector, activate
subscribes, deactivate stops taking clouds and frees the detector; ``autostart`` true by default).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from typing import Optional, Sequence

from rclpy.lifecycle import LifecycleNode
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import PointCloud2

from partslip_ros.detectors import DetectorCache
from partslip_ros.fusion import FrameTransformer
from partslip_ros.intake import CloudIntake
from partslip_ros.lifecycle import LifecycleTransitions, declare_autostart, free_detector_memory
from partslip_ros.log_policy import RateLimitedLog, SteadyStateDrops
from partslip_ros.node_state import (NodeStats, RunOutput, RunRequest, StatsBook, create_service_node,
                                     diagnostic_status)
from partslip_ros.param_checks import (SchemaCheckedParameters, check_environment, check_finite, coerce_value,
                                       unknown_keys)
from partslip_ros.params import NodeSettings, SettingsError, all_defaults, declare_all, settings_from_values
from partslip_ros.process import NodeSpinner, ros_argv, run_console  # noqa: F401 - NodeSpinner, ros_argv: re-exported
from partslip_ros.runner import OUTPUT_QOS, DetectorFactory, Publishers, SegmentRunner  # noqa: F401 - OUTPUT_QOS too

SHUTDOWN_WAIT_S = 5.0  # a run in flight gets this long to finish and publish; then it is abandoned
DETECTOR_PARAMETERS = ("pipeline.detector.", "pipeline.device")


class PartSlipNode(SchemaCheckedParameters, LifecycleTransitions, LifecycleNode):
    """The part segmentation node (a managed lifecycle node); see the module docstring for threads and topics."""

    def __init__(self, node_name: str = "partslip_node", *, detector_factory: Optional[DetectorFactory] = None,
                 **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._detector_factory = detector_factory
        values = declare_all(self)  # wrong types raise SettingsError: the node does not come up
        check_finite(values)  # NaN/Inf: ranged parameters are refused by rclpy, the others here
        autostart = declare_autostart(self)
        self._param_names = list(values)
        self._defaults = all_defaults(values["pipeline.config_file"])
        self._settings = settings_from_values(values)
        check_environment(self._settings, custom_detector=detector_factory is not None)
        for line in unknown_keys(getattr(self, "_parameter_overrides", {}), list(self._parameters)):
            self.get_logger().warning(line)
        self._settings_lock = threading.Lock()
        self.add_pre_set_parameters_callback(self._coerce_changes)
        self.add_on_set_parameters_callback(self._validate_changes)
        self.add_post_set_parameters_callback(self._apply_changes)
        self._log_backend(self._settings)

        self._stats = StatsBook()
        self._log = RateLimitedLog(self.get_logger())
        self._queue_drops = SteadyStateDrops("input queue full")
        transformer = FrameTransformer(self, values["fixed_frame"], values["use_tf"], self._settings.tf_timeout_s,
                                       static=self._settings.sensor_to_fixed)
        self._intake = CloudIntake(self._settings, transformer, lambda: self.get_clock().now().nanoseconds,
                                   self._stats, self._log, self.get_logger())
        self._detectors = DetectorCache(self.get_logger().info)
        self._runner = SegmentRunner(self, Publishers.create(self, self._settings.debug), self._intake,
                                     self._detectors, detector_factory, self._stats, self._log)
        self.busy = self._runner.busy  # set while a run is in progress
        self.diagnostics_pub = self._create_diagnostics()

        self._inbox: deque = deque(maxlen=int(values["queue_size"]))
        self._requests: deque[RunRequest] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._active = False  # lifecycle state 'active': clouds are taken and runs happen
        self._run_lock = threading.Lock()  # held by the worker while it serves; deactivate waits on it
        self._subscription = None
        self._input = (values["input_topic"], values["input_qos"], int(values["queue_size"]), transformer.uses_tf)
        self._lenient_build = False  # autostart: a detector build failure does not stop the node
        self.configure_failure = ""  # why the last configure/activate failed ('' = it did not)
        self.service_node = create_service_node(self)
        self.create_timer(1.0, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work_loop, name="partslip_worker", daemon=True)
        self._worker.start()
        if autostart:
            self._autostart()

    # ----------------------------------------------------------------------------- setup
    def _create_diagnostics(self):
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:  # pragma: no cover - diagnostic_msgs ships with every ROS install
            self.get_logger().warning("diagnostic_msgs is not installed: no /diagnostics")
            return None
        return self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _log_backend(self, settings: NodeSettings) -> None:
        info = settings.backend_info
        if info is not None and info.warning:  # test/demo backends say so (partslip_core.detect.BackendInfo)
            self.get_logger().warning(info.warning)
        if not settings.parts:
            self.get_logger().warning("parameter 'parts' is empty: runs are skipped until it names at least one part")

    @property
    def settings(self) -> NodeSettings:
        with self._settings_lock:
            return self._settings

    # ----------------------------------------------------------------------------- parameters
    def _coerce_changes(self, changes: Sequence[Parameter]) -> list[Parameter]:
        """``ros2 param set ... fusion.voxel_size 1``: integers for float parameters become floats."""
        out = []
        for p in changes:
            value = coerce_value(self._defaults.get(p.name), p.value)
            out.append(p if value is p.value else Parameter(p.name, value=value))
        return out

    def _validate_changes(self, changes: Sequence[Parameter]) -> SetParametersResult:
        """Reject invalid runtime changes with the reason; valid ones apply on the next run."""
        values = {name: self.get_parameter(name).value for name in self._param_names}
        for p in changes:
            values[p.name] = p.value
        try:
            check_finite({p.name: p.value for p in changes})
            settings = settings_from_values(values)
            if any(p.name == "parts" for p in changes) and not settings.parts:
                raise SettingsError("parts must name at least one part")
            check_environment(settings, custom_detector=self._detector_factory is not None)
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
        if any(p.name.startswith(DETECTOR_PARAMETERS) for p in changes):
            self._detectors.forget_failures()  # new weights or device: building is worth another try
        if any(p.name == "debug" for p in changes):
            self._runner.debug_outputs(settings.debug)
        if any(p.name in ("pipeline.detector.backend", "parts") for p in changes):
            self._log_backend(settings)

    # ----------------------------------------------------------------------------- input
    def submit(self, msg: PointCloud2) -> None:
        """Queue a cloud and return (the input subscription's callback; the oldest is dropped when full)."""
        line = None
        if not self._active:
            self._stats.add(received=1, dropped_inactive=1)
            self._log("inactive", f"cloud dropped: the node is {self.lifecycle_state}, not active "
                                  "(counted as dropped_inactive)")
            return
        with self._cond:
            full = len(self._inbox) == self._inbox.maxlen
            self._stats.add(received=1, dropped_queue_full=int(full))
            if full:
                line = self._queue_drops.record(f"{self._inbox.maxlen} clouds waiting, dropping the oldest")
            self._inbox.append(msg)
            self._cond.notify()
        self._log_line(line)

    def _log_line(self, line: Optional[tuple[str, str]]) -> None:
        if line is not None:
            (self.get_logger().warning if line[0] == "warning" else self.get_logger().info)(line[1])

    # ----------------------------------------------------------------------------- worker
    def _continuous_wait(self, settings: NodeSettings) -> Optional[float]:
        """Seconds until a continuous run is due (0 = now), None = not due (too few new clouds / on demand)."""
        if settings.trigger_mode != "continuous" or self._intake.frames_since_run < settings.every_n_frames:
            return None
        if settings.max_rate_hz <= 0:
            return 0.0
        return max(0.0, self._runner.last_start + 1.0 / settings.max_rate_hz - time.monotonic())

    def _next_work(self) -> tuple[list, Optional[RunRequest], bool]:
        """Block until there is input, a request, a due continuous run or stop; returns (clouds, request, run)."""
        with self._cond:
            while not self._stop:
                if self._inbox or self._requests:
                    clouds = list(self._inbox)
                    self._inbox.clear()
                    return clouds, self._requests.popleft() if self._requests else None, False
                wait = self._continuous_wait(self.settings) if self._active else None
                if wait == 0.0:
                    return [], None, True
                self._cond.wait(timeout=wait)
            return [], None, False

    def _work_loop(self) -> None:
        while not self._stop:
            try:
                self._work_once()
            except Exception:  # last line of defence: a bug here must not silently end all processing
                self._log("worker", f"worker error (the node goes on):\n{traceback.format_exc()}", True)
                time.sleep(0.1)

    def _work_once(self) -> None:
        """Wait for work, ingest the queued clouds, then serve a request or a due continuous run."""
        clouds, request, due = self._next_work()
        with self._run_lock:
            if self._active or self._stop:
                self._serve_work(clouds, request, due)
                return
        if clouds:  # queued just before a deactivate
            self._stats.add(dropped_inactive=len(clouds))
        if request is not None:
            request.output = RunOutput(ok=False, message=f"node is {self.lifecycle_state}, not active")
            request.done.set()

    def _serve_work(self, clouds: list, request: Optional[RunRequest], due: bool) -> None:
        settings = self.settings
        self._intake.configure(settings)
        for msg in clouds:
            self._intake.ingest(msg, settings)
        if self._stop:  # shutting down: no new run; queued requests are answered by shutdown, this one here
            if request is not None:
                request.output = RunOutput(ok=False, message="node shutting down")
                request.done.set()
            return
        if request is not None:
            self._serve(request, settings)
        elif due or (clouds and self._continuous_wait(settings) == 0.0):
            self._runner.run_safely(settings, settings.parts)

    def _serve(self, request: RunRequest, settings: NodeSettings) -> None:
        if request.cancelled:
            return
        request.output = self._runner.run_safely(settings, request.parts or settings.parts)
        request.done.set()

    # ----------------------------------------------------------------------------- services
    def request_run(self, parts: Optional[Sequence[str]] = None, timeout_s: Optional[float] = None) -> RunOutput:
        """Ask the worker for a run on the current window and wait for it (any thread but the worker)."""
        if not self._active:
            return RunOutput(ok=False, message=f"node is {self.lifecycle_state}, not active (lifecycle: "
                                               "configure and activate it, or start it with autostart true)")
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

    # ----------------------------------------------------------------------------- diagnostics
    def stats_snapshot(self) -> NodeStats:
        return self._stats.snapshot()

    def _publish_diagnostics(self) -> None:
        with self._cond:
            line = self._queue_drops.poll()
        self._log_line(line)
        if self.diagnostics_pub is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray
        in_progress = round(time.monotonic() - self._runner.last_start, 1) if self.busy.is_set() else 0
        extra = {"window_frames": len(self._intake.window), "run_in_progress_s": in_progress,
                 "detector_failure": self._detectors.failure, "isolation": self._runner.last_isolation,
                 "lifecycle_state": self.lifecycle_state, "configure_failure": self.configure_failure}
        status = diagnostic_status(f"{self.get_fully_qualified_name()}: part segmentation", self.get_name(),
                                   self.stats_snapshot(), extra)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    # ----------------------------------------------------------------------------- shutdown
    def shutdown(self, wait_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop the worker and destroy both nodes. A run in flight gets ``wait_s`` to finish and publish
        (the context is still valid); after that it is abandoned (it stops at its next publish). Idempotent."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        if self.busy.is_set():
            self.get_logger().info(f"shutting down: waiting up to {wait_s:.0f} s for the run in progress")
        self._worker.join(timeout=wait_s)
        if self._worker.is_alive():
            self.get_logger().info("shutting down: abandoned the run in progress (it publishes nothing)")
        self._runner.closing = True
        free_detector_memory(self._detectors)
        for request in list(self._requests):
            request.output = RunOutput(ok=False, message="node shutting down")
            request.done.set()
        self.service_node.destroy_node()
        self.destroy_node()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``partslip_node``: the same node and YAML as launch/segment.launch.py, without launch_ros.
    SIGINT/SIGTERM (also twice, as under ``ros2 launch``) shut it down cleanly with exit status 0."""
    return run_console(PartSlipNode, argv, "partslip_node")


if __name__ == "__main__":
    sys.exit(main())
