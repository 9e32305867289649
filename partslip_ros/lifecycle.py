"""Lifecycle glue of PartSlipNode (``rclpy.lifecycle``): the ``autostart`` parameter, the checks and detector
build of the configure/activate transitions, and freeing the detector's memory on deactivate/cleanup/shutdown.

States (the standard managed-node machine, services ``~/change_state``, ``~/get_state`` ...):
    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive --cleanup--> unconfigured
configure validates the parameters against this machine and builds the detector (a failure returns FAILURE:
the node stays unconfigured, the reason is logged, kept in ``configure_failure`` and shown in /diagnostics);
activate subscribes to the input (rebuilding the detector a deactivate freed); deactivate unsubscribes, stops
taking clouds (queued or submitted ones are dropped and counted as ``dropped_inactive``) and frees the detector.

``autostart`` (default true, read-only) configures and activates the node in its constructor, so the console
script and the launch file behave as before. In that start a detector that cannot be built does not stop the
node: the reason is logged once and every run fails with ``detector_error`` until the weights are fixed (the
behaviour before lifecycle). Transitions requested through the services or ``trigger_*`` are strict.
"""

from __future__ import annotations

import functools
import traceback
from typing import Callable, Optional

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2

from partslip_ros.detectors import DetectorCache, RunFailure, release_accelerator_memory
from partslip_ros.param_checks import check_environment, check_finite
from partslip_ros.params import NodeSettings, SettingsError, descriptor_for, settings_from_values

AUTOSTART_PARAMETER = "autostart"
DEACTIVATE_WAIT_S = 5.0  # deactivate waits this long for a run in flight before freeing the detector


def declare_autostart(node) -> bool:
    """The read-only ``autostart`` parameter's value (declared with the others from the schema,
    ``node_parameters.NodeParameters.autostart``; declared here for a node that did not)."""
    if node.has_parameter(AUTOSTART_PARAMETER):
        value = node.get_parameter(AUTOSTART_PARAMETER).value
    else:
        value = node.declare_parameter(AUTOSTART_PARAMETER, True, descriptor_for(AUTOSTART_PARAMETER, True)).value
    if not isinstance(value, bool):
        raise SettingsError(f"{AUTOSTART_PARAMETER} must be true or false; got {value!r}")
    return value


def prepare_detector(detectors: DetectorCache, settings: NodeSettings, custom_detector: bool) -> Optional[str]:
    """Build the configured detector now (weights, device); None when ready, else the reason it cannot be built.

    An injected ``detector_factory`` builds per run from the cloud: nothing to do here. An explicit transition
    retries a remembered failure (the user may have fixed the files)."""
    if custom_detector:
        return None
    detectors.forget_failures()
    try:
        detectors.build(settings)
    except RunFailure as error:
        return str(error)
    return None


def free_detector_memory(detectors: DetectorCache) -> int:
    """Drop the cached detector and the core's model cache (mask refiner), collect garbage and return cached
    CUDA blocks (``torch.cuda.empty_cache`` when CUDA is in use). Returns how many detectors were dropped."""
    from partslip_core.pipeline import clear_model_cache
    dropped = detectors.clear()
    clear_model_cache()
    release_accelerator_memory()
    return dropped


def logged_transition(callback: Callable) -> Callable:
    """A transition callback whose exception is logged with its traceback and returns ERROR (rclpy turns an
    exception into ERROR silently); ERROR leads to ``on_error``, which leaves the node unconfigured."""
    @functools.wraps(callback)
    def wrapper(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return callback(self, state)
        except Exception:
            name = callback.__name__.removeprefix("on_")
            self.configure_failure = f"{name} raised: {traceback.format_exc().strip().splitlines()[-1]}"
            self.get_logger().error(f"{name} failed with an exception:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
    return wrapper


class LifecycleTransitions:
    """The transition callbacks of PartSlipNode (mixed in before ``rclpy.lifecycle.LifecycleNode``); they use the
    node's settings, detector cache, queue (``_cond``/``_inbox``), ``_run_lock`` and ``_active`` flag."""

    def _autostart(self) -> None:
        """configure + activate now (the console script and launch file default); a detector that cannot be
        built is logged and reported by every run, as before lifecycle, instead of stopping the node."""
        self._lenient_build = True
        try:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SettingsError(f"autostart: configure failed: {self.configure_failure}")
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise SettingsError(f"autostart: activate failed: {self.configure_failure}")
        finally:
            self._lenient_build = False

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active', 'finalized' (or a transition state)."""
        return self._state_machine.current_state[1]

    @logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters against this machine and build the detector; a failure stays unconfigured."""
        try:
            values = {name: self.get_parameter(name).value for name in self._param_names}
            check_finite(values)
            settings = settings_from_values(values)
            check_environment(settings, custom_detector=self._detector_factory is not None)
        except SettingsError as error:
            return self._transition_failed("configure", str(error))
        with self._settings_lock:
            self._settings = settings
        reason = prepare_detector(self._detectors, settings, self._detector_factory is not None)
        if reason is not None and not self._lenient_build:
            return self._transition_failed("configure", reason)
        if reason is not None:
            self.get_logger().error(f"{reason}; every run fails with detector_error until it is fixed")
        self.configure_failure = ""
        return super().on_configure(state)

    @logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Rebuild the detector a deactivate freed (autostart: configure just built it), then subscribe."""
        if not self._lenient_build:
            reason = prepare_detector(self._detectors, self.settings, self._detector_factory is not None)
            if reason is not None:
                return self._transition_failed("activate", reason)
        enabled = super().on_activate(state)  # the lifecycle publishers, before any run can publish
        if enabled != TransitionCallbackReturn.SUCCESS:
            return enabled
        topic, qos_name, queue_size, uses_tf = self._input
        # The DDS history only buffers until the executor takes a cloud; the bounded, counted queue is _inbox.
        qos = qos_profile_sensor_data if qos_name == "sensor_data" else QoSProfile(
            depth=max(10, queue_size), reliability=ReliabilityPolicy.RELIABLE)
        with self._cond:
            self._active = True
            self._cond.notify_all()
        if self._subscription is None:
            self._subscription = self.create_subscription(PointCloud2, topic, self.submit, qos)
        settings = self.settings
        self.get_logger().info(
            f"active: listening on {self.resolve_topic_name(topic)} ({qos_name} QoS); "
            f"parts={list(settings.parts)}; trigger={settings.trigger_mode}; "
            f"fixed_frame={self._intake.transformer.fixed_frame or '(first cloud)'}; "
            f"tf2_ros={'yes' if uses_tf else 'no'}")
        return TransitionCallbackReturn.SUCCESS

    @logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive("deactivated")
        return super().on_deactivate(state)  # then the lifecycle publishers go silent

    @logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Back to unconfigured: no detector, no remembered build failure, an empty window."""
        self._detectors.clear(forget_failures=True)
        free_detector_memory(self._detectors)
        with self._run_lock:
            self._intake.window.clear()
        self.configure_failure = ""
        self.get_logger().info("cleaned up: unconfigured")
        return super().on_cleanup(state)

    @logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive("lifecycle shutdown (finalized)")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition failed with ERROR (an exception): stop, free, silence the publishers -> unconfigured."""
        self._go_inactive("error in a transition")
        super().on_deactivate(state)  # the lifecycle publishers (rclpy's on_error leaves them as they were)
        return TransitionCallbackReturn.SUCCESS

    def _transition_failed(self, transition: str, reason: str) -> TransitionCallbackReturn:
        self.configure_failure = reason
        self.get_logger().error(f"{transition} failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def _go_inactive(self, why: str) -> None:
        """Stop taking clouds (unsubscribe, drop the queue: counted), let a run in flight finish, free the detector."""
        with self._cond:
            self._active = False
            dropped = len(self._inbox)
            self._inbox.clear()
            self._cond.notify_all()
        if dropped:
            self._stats.add(dropped_inactive=dropped)
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._run_lock.acquire(timeout=DEACTIVATE_WAIT_S):
            self._run_lock.release()
        else:
            self.get_logger().warning(f"{why}: a run is still in progress; its detector is freed when it ends")
        freed = free_detector_memory(self._detectors)
        self.get_logger().info(f"{why}: not taking clouds ({dropped} queued dropped); freed {freed} detector(s) "
                               "and the cached accelerator memory")
