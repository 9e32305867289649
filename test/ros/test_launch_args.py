"""The launch file's argument handling and orphan protection (issue 12, bugs 4 and 5). launch/launch_ros are
not installable here: the helpers the launch file uses are tested directly, the launch description only
where launch_ros exists, and the "dies with launch" guard with a real parent process that is killed."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rclpy.parameter import Parameter

from partslip_ros.launch_args import EXIT_WITH_PARENT_ENV, package_available, parts_parameter
from partslip_ros.params import SettingsError, parse_parts

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
    assert {"package_available", "parts_parameter", "EXIT_WITH_PARENT_ENV"} <= names
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
