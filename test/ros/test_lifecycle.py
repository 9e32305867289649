"""Lifecycle of PartSlipNode on real rclpy: configure (validation + detector build), activate, deactivate (stops
taking clouds, frees the detector), reactivate, and the autostart default that keeps today's behaviour."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Header

from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

pytest.importorskip("partslip_msgs", reason="build it with scripts/build_msgs.sh")
_names = itertools.count()
SUCCESS = TransitionCallbackReturn.SUCCESS
MANAGED = {"autostart": False}


def send(node, scan) -> None:
    node.submit(scan_to_cloud(Header(frame_id="world", stamp=node.get_clock().now().to_msg()), scan, True))


def call(client_node, node, srv_type, name, request):
    """Call the node's lifecycle service ``name`` from ``client_node`` (spun elsewhere) and return the response."""
    client = client_node.create_client(srv_type, f"{node.get_fully_qualified_name()}/{name}")
    assert client.wait_for_service(timeout_sec=10), name
    future = client.call_async(request)
    assert wait_for(future.done, timeout=60), f"{name} did not answer"
    client_node.destroy_client(client)
    return future.result()


@pytest.fixture(scope="module")
def tiny_grounding_dino(tmp_path_factory):
    """A real, tiny, random-weight Grounding DINO folder (the core tests' builder)."""
    pytest.importorskip("transformers")
    from ..core.detect.conftest import build_tiny_grounding_dino
    root = tmp_path_factory.mktemp("tiny_gd_lifecycle")
    return build_tiny_grounding_dino(root / "model", root / "scratch")


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
