"""The main-job demo end to end (its own processes), and the launch file's declared interface."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "segment.launch.py"


def test_demo_segments_the_synthetic_sequence_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ)
    env.pop("ROS_DOMAIN_ID", None)  # the demo picks its own random domain
    done = subprocess.run([sys.executable, "-m", "partslip_ros.demo", "--category", "mug", "--frames", "2",
                           "--rate", "4", "--image-size", "200", "--device", "cpu", "--timeout", "60",
                           "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "result.json").read_text())
    assert summary["part_names"] == ["body", "handle"] and summary["frame_id"] == "world"
    assert summary["agreement_with_ground_truth"] > 0.9
    assert {i["label_name"] for i in summary["instances"]} == {"body", "handle"}
    latency = summary["latency_ms_publish_to_result"]
    assert len(latency["all_runs"]) == summary["results_received"] >= 1 and latency["final"] > 0
    segmentation = json.loads((out / "segmentation.json").read_text())
    assert segmentation["num_points"] == summary["num_points"]
    assert len(segmentation["instances"][0]["point_indices"]) == segmentation["instances"][0]["num_points"]
    markers = json.loads((out / "markers.json").read_text())["markers"]
    assert markers[0]["action"] == 3  # DELETEALL
    from partslip_core.io import read_ply
    cloud, extra = read_ply(out / "labeled_cloud.ply")
    assert cloud.num_points == summary["num_points"]
    assert np.bincount(np.asarray(extra["label"])[np.asarray(extra["label"]) >= 0]).tolist() == list(
        summary["points_per_part"].values())
    assert "agreement with ground truth" in done.stdout and "publish -> result latency" in done.stdout


LAUNCH_ARGUMENTS = ["namespace", "use_sim_time", "params_file", "log_level", "input_topic", "parts", "use_rviz",
                    "autostart"]


def test_launch_file_declares_the_documented_arguments_and_starts_the_console_script():
    tree = ast.parse(LAUNCH_FILE.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = [c.args[0].value for c in calls if getattr(c.func, "id", "") == "DeclareLaunchArgument"]
    assert declared == LAUNCH_ARGUMENTS
    node = [c for c in calls if getattr(c.func, "id", "") == "LifecycleNode"]  # the managed node's launch_ros action
    assert len(node) == 1
    keywords = {k.arg: getattr(k.value, "value", None) for k in node[0].keywords}
    assert keywords["package"] == "partslip_ros" and keywords["executable"] == "partslip_node"
    assert "autostart" not in keywords  # the node starts itself: launch must not request the transitions again
    # setup.py must install the console script the launch file runs
    assert "partslip_node = partslip_ros.node:main" in (REPO / "setup.py").read_text()


def test_launch_description_builds_with_launch_ros(installed_prefix):
    from .conftest import launch_module
    description = launch_module().generate_launch_description()
    names = [a.name for a in description.get_launch_arguments()]
    assert names == LAUNCH_ARGUMENTS


def _managed_bring_up(node_name: str) -> list:
    """What an including launch file adds for managed bring-up (``autostart:=false``): configure once the node's
    process has started, activate once it reached inactive (launch_ros ChangeState / OnStateTransition)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from launch_ros.events.matchers import matches_node_name
    from lifecycle_msgs.msg import Transition

    def change(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_node_name(node_name),
                                           transition_id=transition))
    return [RegisterEventHandler(OnProcessStart(on_start=[change(Transition.TRANSITION_CONFIGURE)])),
            RegisterEventHandler(OnStateTransition(goal_state="inactive",
                                                   entities=[change(Transition.TRANSITION_ACTIVATE)]))]


@pytest.mark.parametrize("bring_up", ["autostart", "launch_events"])
def test_ros2_launch_brings_the_node_up_active_and_shuts_it_down_cleanly(tmp_path, installed_prefix, bring_up,
                                                                         caplog):
    """``ros2 launch partslip_ros segment.launch.py ...`` end to end (launch.LaunchService with an
    IncludeLaunchDescription of the file, as ``ros2 launch`` runs it): the node process comes up in the namespace,
    its lifecycle state is active, activated exactly once (``autostart``: by itself, launch sends no transition;
    ``launch_events``: ``autostart:=false`` and the including launch file drives configure/activate), a cloud on
    the remapped input is segmented, and shutting launch down ends the node with exit status 0. Needs launch +
    launch_ros (a ROS 2 install, the Docker image): they are not on PyPI."""
    pytest.importorskip("launch_ros", reason="launch_ros ships with ROS 2 installs only (not on PyPI)")
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import rclpy
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from partslip_ros.msg import PartSegmentation
    from partslip_ros.node import OUTPUT_QOS, NodeSpinner
    from partslip_ros.scan_publisher import make_scans, scan_to_cloud
    from .conftest import wait_for

    prefix = installed_prefix
    params = tmp_path / "params.yaml"  # the test detector on CPU; everything else from the node's defaults
    params.write_text("/**:\n  ros__parameters:\n    pipeline.detector.backend: ground_truth\n"
                      "    pipeline.device: cpu\n    pipeline.render.image_size: 128\n    input_qos: reliable\n"
                      "    fixed_frame: world\n    trigger.every_n_frames: 1\n    window.size: 1\n")
    namespace = f"launch_e2e_{bring_up}_{os.getpid()}"
    obj, scans = make_scans("mug", 3000, 1, seed=2)
    arguments = {"namespace": namespace, "params_file": str(params), "parts": "[" + ", ".join(obj.part_names) + "]",
                 "input_topic": "scans", "log_level": "info", "use_rviz": "true",  # rviz2 absent: logged, skipped
                 "autostart": "true" if bring_up == "autostart" else "false"}
    exits, output = [], []
    service = LaunchService(argv=[], noninteractive=True)
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, context: exits.append(event.returncode))),
        RegisterEventHandler(OnProcessIO(on_stdout=lambda event: output.append(event.text.decode()),
                                         on_stderr=lambda event: output.append(event.text.decode()))),
        *(_managed_bring_up(f"/{namespace}/partslip_node") if bring_up == "launch_events" else []),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(prefix / "share" / "partslip_ros" / "launch" /
                                                                    "segment.launch.py")),
                                 launch_arguments=arguments.items()),
    ]))
    rclpy.init(context=(context := rclpy.Context()))
    client = rclpy.create_node(f"launch_e2e_client_{os.getpid()}", context=context)
    results, checked = [], []
    client.create_subscription(PartSegmentation, f"/{namespace}/partslip_node/segmentation", results.append,
                               OUTPUT_QOS)
    publisher = client.create_publisher(PointCloud2, f"/{namespace}/scans",
                                        QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    spinner = NodeSpinner([client]).start()

    def check() -> None:  # beside launch, which must run in the main thread; shuts launch down when done
        try:
            get_state = client.create_client(GetState, f"/{namespace}/partslip_node/get_state")
            assert get_state.wait_for_service(timeout_sec=90), "the launched node did not come up"

            def state() -> int:
                future = get_state.call_async(GetState.Request())
                assert wait_for(future.done, timeout=30)
                return future.result().current_state.id
            wait_for(lambda: state() == State.PRIMARY_STATE_ACTIVE, timeout=60, interval=0.2)  # launch_events: soon
            checked.append(("state", state()))
            assert wait_for(lambda: publisher.get_subscription_count() == 1, timeout=30)
            publisher.publish(scan_to_cloud(Header(frame_id="world", stamp=client.get_clock().now().to_msg()),
                                            scans[0], True))
            wait_for(lambda: len(results) == 1, timeout=90)
        finally:
            service.shutdown()

    checker = threading.Thread(target=check, daemon=True)
    watchdog = threading.Timer(300, service.shutdown)  # a hung launch fails the test instead of blocking it
    checker.start()
    watchdog.start()
    try:
        assert service.run() == 0
    finally:
        watchdog.cancel()
        checker.join(timeout=30)
        spinner.stop()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    assert checked == [("state", State.PRIMARY_STATE_ACTIVE)], "the node was not active after launch"
    assert len(results) == 1 and list(results[0].part_names) == list(obj.part_names), "no result from the node"
    assert exits == [0], f"the node exited with {exits}"
    assert "".join(output).count("active: listening on") == 1, "not activated exactly once"
    refused = [r.getMessage() for r in caplog.records
               if "Failed to make transition" in r.getMessage() or "Abandoning wait" in r.getMessage()]
    refused += [line for line in output if "Unable to start transition" in line]
    assert refused == [], "launch requested a transition the node had already made (or never got an answer)"
