"""The launch file's argument handling and orphan protection (issue 12, bugs 4 and 5). launch/launch_ros are
not installable here: the helpers the launch file uses are tested directly, the launch description only
where launch_ros exists, and the "dies with launch" guard with a real parent process that is killed."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from partslip_ros.launch_args import (EXIT_WITH_PARENT_ENV, LaunchArgumentError, bool_argument, log_level_arguments,
                                      namespace_argument, node_overrides, package_available, parts_parameter,
                                      resolved_topic, rviz_remappings, topic_argument)
from partslip_ros.params import SettingsError, parse_parts
from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import LAUNCH_FILE, REPO, launch_module, wait_for


@pytest.mark.parametrize("text, value, parts", [
    ("", None, None),
    ("[]", "", ()),
    ("''", "", ()),
    ("[handle, lid]", ["handle", "lid"], ("handle", "lid")),
    ("wheel, body", ["wheel", "body"], ("wheel", "body")),
    ("wheel,body", ["wheel", "body"], ("wheel", "body")),
    ("knob", ["knob"], ("knob",)),
    ("['handle', \"lid\"]", ["handle", "lid"], ("handle", "lid")),
    ("['']", "", ()),
])
def test_parts_launch_argument(text, value, parts):
    assert parts_parameter(text) == value
    if value is not None:
        assert parse_parts(value) == parts
        assert Parameter("parts", value=value).type_ in (Parameter.Type.STRING, Parameter.Type.STRING_ARRAY)


@pytest.mark.parametrize("text, problem", [("[handle, lid, handle]", "duplicates"), ("[handle, , lid]", "empty name")])
def test_bad_parts_launch_argument_stops_with_the_nodes_reason(text, problem):
    """One parser for the node, the launch file and the CLI's comma lists: the launch stops with the node's
    reason (a YAML parse used to turn "[a, ~]" into a part named "None" and "[a" into a yaml traceback)."""
    with pytest.raises(SettingsError, match=problem):
        parts_parameter(text)


def test_missing_rviz_is_detected_instead_of_aborting_the_launch():
    assert package_available("no_such_package_rviz_xyz") is False
    tree = ast.parse(LAUNCH_FILE.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    # parts go through node_overrides -> parts_parameter (test_launch_argument_helpers)
    assert {"package_available", "node_overrides", "EXIT_WITH_PARENT_ENV"} <= names
    assert "IfCondition" not in names  # rviz is decided in an OpaqueFunction after checking it exists


def test_launch_description_with_launch_ros_skips_missing_rviz():
    module = launch_module()
    from launch import LaunchContext
    context = LaunchContext()
    context.launch_configurations.update({"use_rviz": "true", "parts": "[]", "input_topic": ""})
    actions = module._rviz(context)
    if not package_available("rviz2"):
        assert type(actions[0]).__name__ == "LogInfo"
    assert module._overrides(context) == {"parts": ""}
    context.launch_configurations.update({"namespace": "robot1", "use_sim_time": "true", "log_level": "debug",
                                          "input_topic": "/camera/points", "params_file": str(REPO / "config" /
                                                                                              "segment.yaml")})
    assert module._overrides(context) == {"parts": "", "use_sim_time": True, "input_topic": "/camera/points"}
    context.launch_configurations["autostart"] = "false"
    assert module._overrides(context)["autostart"] is False
    node = module._node(context)[0]  # its name resolves when launch executes it (test_demo_and_launch runs it)
    assert type(node).__name__ == "LifecycleNode"
    assert (node.node_package, node.node_executable) == ("partslip_ros", "partslip_node")


@pytest.mark.parametrize("text, value", [("", None), ("true", True), ("False", False), ("1", True), ("off", False)])
def test_bool_launch_argument(text, value):
    assert bool_argument("use_sim_time", text) is value


@pytest.mark.parametrize("call, problem", [
    (lambda: bool_argument("use_sim_time", "maybe"), "use_sim_time:='maybe' must be true or false"),
    (lambda: node_overrides(autostart="later"), "autostart:='later' must be true or false"),
    (lambda: namespace_argument("robot 1"), "namespace:='robot 1' is not a valid ROS namespace"),
    (lambda: namespace_argument("1robot"), "not a valid ROS namespace"),
    (lambda: topic_argument("input_topic", "/camera points"), "input_topic:='/camera points' is not a valid"),
    (lambda: log_level_arguments("verbose"), "log_level:='verbose' must be one of debug, info, warn, error, fatal"),
])
def test_bad_launch_arguments_stop_the_launch_naming_the_argument(call, problem):
    with pytest.raises(LaunchArgumentError, match=re.escape(problem)):
        call()


def test_launch_argument_helpers():
    assert namespace_argument("") == "" and namespace_argument(" robot1/") == "robot1"  # PushRosNamespace applies
    assert namespace_argument("/robot1/") == "/robot1"
    assert log_level_arguments("") == [] and log_level_arguments("DEBUG") == ["--ros-args", "--log-level", "debug"]
    assert node_overrides() == {}  # nothing given: the params file decides everything
    assert node_overrides("/camera/points", "handle, lid", "false") == {
        "input_topic": "/camera/points", "parts": ["handle", "lid"], "use_sim_time": False}
    assert node_overrides(autostart="false") == {"autostart": False}
    assert node_overrides(autostart="True") == {"autostart": True}
    assert resolved_topic("/robot1", "points") == "/robot1/points"
    assert resolved_topic("/robot1", "~/markers") == "/robot1/partslip_node/markers"
    assert resolved_topic("/robot1", "/camera/points") == "/camera/points"
    assert rviz_remappings("", None) == []  # RViz's config already names the default topics
    assert rviz_remappings("", "/camera/points") == [("/points", "/camera/points")]
    assert rviz_remappings("robot1", None) == rviz_remappings("/robot1", None)
    assert dict(rviz_remappings("/robot1", None)) == {
        "/partslip_node/labeled_cloud": "/robot1/partslip_node/labeled_cloud",
        "/partslip_node/markers": "/robot1/partslip_node/markers", "/points": "/robot1/points"}


def test_the_launch_file_checks_every_argument_with_the_helpers():
    """launch_ros is not installable here: check the helper use by reading the file (the declared arguments:
    test_demo_and_launch.LAUNCH_ARGUMENTS)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert {"namespace_argument", "log_level_arguments", "node_overrides", "rviz_remappings"} <= names


def _send_to(source, topic: str, scan) -> None:
    publisher = source.create_publisher(PointCloud2, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    assert wait_for(lambda: publisher.get_subscription_count() == 1, timeout=10), f"nobody subscribes to {topic}"
    publisher.publish(scan_to_cloud(Header(frame_id="world", stamp=source.get_clock().now().to_msg()), scan, True))


@pytest.mark.parametrize("case", ["remap", "namespace", "parameter"])
def test_the_input_is_a_remappable_relative_topic(running_node, mug_scans, case):
    """The input 'points' follows a --ros-args remap and the namespace (as launch_ros passes them), and the
    input_topic parameter still works (input_topic:=/camera/points, today's users)."""
    tag = f"{case}_{os.getpid()}"
    kwargs, params, topic = {}, {"input_topic": "points"}, f"/remap_test_{tag}/points"
    if case == "remap":
        kwargs["cli_args"] = ["--ros-args", "-r", f"points:={topic}"]
    elif case == "namespace":
        kwargs["namespace"], topic = f"/remap_test_{tag}", f"/remap_test_{tag}/points"
    else:
        params["input_topic"] = topic
    node, outputs, source = running_node(f"remap_node_{case}", params, **kwargs)
    assert [s.topic_name for s in node.subscriptions] == [topic]
    _send_to(source, topic, mug_scans[1][0])
    assert wait_for(lambda: len(outputs.segmentations) == 1, timeout=60), node.stats_snapshot()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_node_exits_when_its_launch_parent_dies():
    """A launch that aborts (or is SIGKILLed) must not leave partslip_node running."""
    node_cmd = [sys.executable, "-m", "partslip_ros.node", "--params-file", str(REPO / "config" / "segment.yaml"),
                "--ros-args", "-p", "pipeline.detector.backend:=ground_truth", "-p", "pipeline.device:=cpu",
                "-r", f"__node:=orphan_check_{os.getpid()}"]
    parent_code = ("import subprocess, sys, time; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); "
                   "time.sleep(600)")
    env = {**os.environ, EXIT_WITH_PARENT_ENV: "1"}
    parent = subprocess.Popen([sys.executable, "-c", parent_code] + node_cmd, cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    node_pid = int(parent.stdout.readline())
    try:
        time.sleep(8.0)  # the node is up (or still importing: the guard is armed first thing in main)
        assert _alive(node_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: not _alive(node_pid), timeout=30), "the node outlived its parent"
    finally:
        if _alive(node_pid):
            os.kill(node_pid, signal.SIGKILL)
