"""Lifecycle of PartSlipNode on real rclpy: configure (validation + detector build), activate, deactivate (stops
taking clouds, frees the detector), reactivate, and the autostart default that keeps today's behaviour."""

from __future__ import annotations

import gc
import itertools
import threading
import weakref

import pytest
import torch
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters
from rclpy.lifecycle import LifecyclePublisher, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from partslip_core.detect import ProjectedGroundTruthDetector
from partslip_ros import lifecycle
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
_names = itertools.count()
SUCCESS = TransitionCallbackReturn.SUCCESS
MANAGED = {"autostart": False}


def send(node, scan) -> None:
    node.submit(scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True))


def call_async(client_node, node, srv_type, name, request):
    """Send a request to the node's service ``name`` from ``client_node`` (spun elsewhere); returns the future."""
    client = client_node.create_client(srv_type, f"{node.get_fully_qualified_name()}/{name}")
    assert client.wait_for_service(timeout_sec=10), name
    return client.call_async(request)


def call(client_node, node, srv_type, name, request):
    """Call the node's service ``name`` from ``client_node`` (spun elsewhere) and return the response."""
    future = call_async(client_node, node, srv_type, name, request)
    assert wait_for(future.done, timeout=60), f"{name} did not answer"
    return future.result()


class GatedDetectors:
    """A detector_factory: the ground-truth detector, whose ``detect`` waits (up to 60 s) for ``gate`` to open;
    ``entered`` counts the runs that reached it. Keeps a run in flight for as long as a test needs."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = 0
        self._inner = None

    def __call__(self, settings, fused):
        self._inner = ProjectedGroundTruthDetector()  # reads gt_label/gt_instance from the run's point fields
        return self

    def detect(self, views, part_names, point_fields=None):
        self.entered += 1
        self.gate.wait(60)
        return self._inner.detect(views, part_names, point_fields)


def test_configure_with_unloadable_weights_fails_and_leaves_the_node_unconfigured(running_node, tmp_path):
    empty = tmp_path / "no_model_here"
    empty.mkdir()  # exists (passes the parameter check) but holds no model: only building the detector finds out
    node, outputs, source = running_node(f"lifecycle_bad_{next(_names)}", {
        **MANAGED, "pipeline.detector.backend": "owlv2", "pipeline.detector.weights": str(empty)})
    assert node.lifecycle_state == "unconfigured"
    response = call(source, node, ChangeState, "change_state",
                    ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    assert not response.success
    state = call(source, node, GetState, "get_state", GetState.Request()).current_state
    assert state.id == State.PRIMARY_STATE_UNCONFIGURED and node.lifecycle_state == "unconfigured"
    assert "cannot build detector 'owlv2'" in node.configure_failure and "incomplete" in node.configure_failure
    assert wait_for(lambda: outputs.lines("configure failed: cannot build detector")), "the reason is not logged"
    assert wait_for(lambda: any("incomplete" in d.get("configure_failure", "") and
                                d.get("lifecycle_state") == "unconfigured" for d in outputs.diagnostics),
                    timeout=5), "the reason is not in /diagnostics"
    assert node._detectors.size == 0
    assert not node.request_run().ok  # services answer, with the reason, instead of waiting for a run


def test_configure_then_activate_processes_clouds_and_clouds_before_are_counted(running_node, mug_scans):
    _, scans = mug_scans
    node, outputs, _ = running_node(f"lifecycle_gt_{next(_names)}", MANAGED)
    send(node, scans[0])  # unconfigured: dropped and counted, not queued for later
    assert node.trigger_configure() == SUCCESS and node.lifecycle_state == "inactive"
    send(node, scans[0])
    stats = node.stats_snapshot()
    assert stats.dropped_inactive == 2 and stats.accepted == 0 and stats.runs_ok == 0
    assert wait_for(lambda: outputs.lines("cloud dropped: the node is unconfigured, not active"))
    assert node.trigger_activate() == SUCCESS and node.lifecycle_state == "active"
    send(node, scans[1])
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=60)
    assert wait_for(lambda: len(outputs.segmentations) == 1)
    assert node.stats_snapshot().accepted == 1


def test_deactivate_frees_the_detector_and_reactivate_rebuilds_it(running_node, mug_scans, tiny_grounding_dino):
    import partslip_core.pipeline as pipeline
    _, scans = mug_scans
    node, outputs, _ = running_node(f"lifecycle_real_{next(_names)}", {
        **MANAGED, "pipeline.detector.backend": "grounding_dino", "pipeline.detector.weights": str(tiny_grounding_dino)})
    assert node.trigger_configure() == SUCCESS
    assert node._detectors.size == 1  # built at configure, before any cloud
    assert wait_for(lambda: len(outputs.lines("loading detector 'grounding_dino'")) == 1)
    detector = weakref.ref(node._detectors.build(node.settings))  # the cached one (no second load)
    assert node.trigger_activate() == SUCCESS
    send(node, scans[0])
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=120)
    assert len(outputs.lines("loading detector")) == 1  # the run used the configured detector

    pipeline._MASK_REFINERS._key = ("stand-in for a loaded SAM",)  # the core's model cache must be emptied too
    assert node.trigger_deactivate() == SUCCESS and node.lifecycle_state == "inactive"
    gc.collect()
    assert node._detectors.size == 0 and detector() is None, "the detector is still referenced"
    assert pipeline._MASK_REFINERS._key is None
    send(node, scans[1])
    assert node.stats_snapshot().dropped_inactive == 1 and not node.request_run().ok
    assert node.stats_snapshot().runs_ok == 1

    assert node.trigger_activate() == SUCCESS and node._detectors.size == 1
    assert wait_for(lambda: len(outputs.lines("loading detector 'grounding_dino'")) == 2)
    send(node, scans[1])
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 2, timeout=120)
    assert wait_for(lambda: len(outputs.segmentations) == 2)
    assert outputs.segmentations[-1].detector == "grounding_dino"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerator memory needs a CUDA device")
def test_deactivate_returns_the_detectors_cuda_memory(running_node, tiny_grounding_dino):
    """On CUDA: configure loads the weights onto the device, deactivate gives every byte back (allocated memory
    returns to where it was before configure) and empties the cache; reactivate loads them again."""
    node, _, _ = running_node(f"lifecycle_cuda_{next(_names)}", {
        **MANAGED, "pipeline.detector.backend": "grounding_dino", "pipeline.detector.weights": str(tiny_grounding_dino),
        "pipeline.device": "cuda"})
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    loaded, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    assert loaded > before, "configure put nothing on the device"
    assert node.trigger_deactivate() == SUCCESS
    gc.collect()
    assert torch.cuda.memory_allocated() <= before, "the detector's weights are still on the device"
    assert torch.cuda.memory_reserved() < reserved, "the cached blocks were not returned"
    assert node.trigger_activate() == SUCCESS and torch.cuda.memory_allocated() > before


def test_cleanup_returns_to_unconfigured_and_a_fixed_configuration_configures(running_node, tmp_path, mug_scans):
    _, scans = mug_scans
    empty = tmp_path / "empty"
    empty.mkdir()
    node, _, _ = running_node(f"lifecycle_fix_{next(_names)}", {
        **MANAGED, "pipeline.detector.backend": "owlv2", "pipeline.detector.weights": str(empty)})
    assert node.trigger_configure() != SUCCESS and node.configure_failure
    from rclpy.parameter import Parameter
    assert node.set_parameters([Parameter("pipeline.detector.backend", value="ground_truth")])[0].successful
    assert node.trigger_configure() == SUCCESS and node.configure_failure == ""
    assert node.trigger_activate() == SUCCESS
    send(node, scans[0])
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=60)
    assert node.trigger_deactivate() == SUCCESS and (node.trigger_cleanup()) == SUCCESS
    assert node.lifecycle_state == "unconfigured"
    assert node.trigger_shutdown() == SUCCESS and node.lifecycle_state == "finalized"


def test_autostart_is_the_default_and_the_node_is_active_at_once(running_node, mug_scans):
    _, scans = mug_scans
    node, outputs, source = running_node(f"lifecycle_auto_{next(_names)}")
    assert node.get_parameter("autostart").value is True
    state = call(source, node, GetState, "get_state", GetState.Request()).current_state
    assert state.id == State.PRIMARY_STATE_ACTIVE
    send(node, scans[0])
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=60)
    assert node.stats_snapshot().dropped_inactive == 0


def test_services_answer_while_a_run_is_in_flight(running_node, mug_scans):
    """A run held in the detector (gate closed) and a ~/segment call waiting for the next one: the lifecycle and
    parameter services still answer, and ~/trigger is queued, answered once the runs finish. Not timed: the
    answers must simply arrive while the run is still held (bench/bench_service_latency.py times them)."""
    _, scans = mug_scans
    detectors = GatedDetectors()
    node, outputs, source = running_node(f"lifecycle_busy_{next(_names)}", detector_factory=detectors)
    try:
        send(node, scans[0])
        assert wait_for(lambda: detectors.entered == 1, timeout=60), "the run did not reach the detector"
        segment = call_async(source, node, Trigger, "trigger", Trigger.Request())  # waits behind the held run
        state = call(source, node, GetState, "get_state", GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_ACTIVE
        names = call(source, node, GetParameters, "get_parameters", GetParameters.Request(names=["parts"]))
        assert list(names.values[0].string_array_value) == ["body", "handle"]
        assert node.busy.is_set() and not detectors.gate.is_set() and node.stats_snapshot().runs_ok == 0
        assert not segment.done()  # it waits for a run: the held one must finish first
    finally:
        detectors.gate.set()
    assert wait_for(segment.done, timeout=120) and segment.result().success, segment.result()
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 2, timeout=60)


def test_outputs_are_lifecycle_publishers_silent_while_inactive(running_node, mug_scans, monkeypatch):
    """Every result topic is a LifecyclePublisher: enabled by activate, disabled by deactivate (also the debug
    topics made at runtime). A run that outlives deactivate's wait publishes nothing and is counted as
    ``deactivated``; after reactivation the next cloud is published again."""
    _, scans = mug_scans
    monkeypatch.setattr(lifecycle, "DEACTIVATE_WAIT_S", 0.2)  # deactivate stops waiting for the held run
    detectors = GatedDetectors()
    node, outputs, _ = running_node(f"lifecycle_pubs_{next(_names)}", MANAGED, detector_factory=detectors)
    publishers = node._runner._publishers
    results = [publishers.cloud, publishers.markers, publishers.segmentation] + (
        [publishers.detections] if publishers.detections is not None else [])
    assert all(isinstance(p, LifecyclePublisher) for p in results)
    assert node.trigger_configure() == SUCCESS
    assert not any(p.is_activated for p in results)
    assert node.set_parameters([Parameter("debug", value=True)])[0].successful  # debug topics made while inactive
    debug = [publishers.debug._views, publishers.debug._superpoints]
    assert all(isinstance(p, LifecyclePublisher) and not p.is_activated for p in debug)

    assert node.trigger_activate() == SUCCESS
    assert all(p.is_activated for p in results + debug)
    send(node, scans[0])
    assert wait_for(lambda: detectors.entered == 1, timeout=60)
    assert node.trigger_deactivate() == SUCCESS  # the run is still held in the detector
    assert not any(p.is_activated for p in results + debug)
    detectors.gate.set()
    assert wait_for(lambda: node.stats_snapshot().runs_failed.get("deactivated") == 1, timeout=60), \
        node.stats_snapshot()
    assert wait_for(lambda: outputs.lines("the node was deactivated during the run"))
    assert node.stats_snapshot().runs_ok == 0 and outputs.segmentations == [] and outputs.clouds == []

    assert node.trigger_activate() == SUCCESS and all(p.is_activated for p in results + debug)
    send(node, scans[1])
    assert wait_for(lambda: len(outputs.segmentations) == 1 and len(outputs.clouds) == 1, timeout=60)
    assert wait_for(lambda: node.stats_snapshot().runs_ok == 1, timeout=10)  # counted just after publishing
    assert node.set_parameters([Parameter("debug", value=False)])[0].successful
    assert node.set_parameters([Parameter("debug", value=True)])[0].successful  # made while active: enabled
    assert publishers.debug._views.is_activated and publishers.debug._superpoints.is_activated


def test_a_transition_that_raises_is_logged_and_leaves_the_node_unconfigured_and_silent(running_node, mug_scans,
                                                                                        monkeypatch):
    """rclpy turns an exception in a transition callback into ERROR without a word: the node logs the traceback,
    keeps the reason, goes through on_error to unconfigured with its publishers disabled, and can be brought up."""
    _, scans = mug_scans
    node, outputs, _ = running_node(f"lifecycle_raise_{next(_names)}", MANAGED)
    assert node.trigger_configure() == SUCCESS

    def broken_subscription(*args, **kwargs):
        raise RuntimeError("no subscription for you")
    monkeypatch.setattr(node, "create_subscription", broken_subscription)
    assert node.trigger_activate() == TransitionCallbackReturn.ERROR
    assert node.lifecycle_state == "unconfigured" and "no subscription for you" in node.configure_failure
    assert not node._runner._publishers.segmentation.is_activated  # activate had enabled it before raising
    assert wait_for(lambda: outputs.lines("activate failed with an exception"))
    assert "no subscription for you" in outputs.lines("activate failed with an exception")[0]

    monkeypatch.undo()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    send(node, scans[0])
    assert wait_for(lambda: len(outputs.segmentations) == 1, timeout=60)
