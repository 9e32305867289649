"""``colcon build`` from a clean workspace builds the messages and the node, and the node runs from the
install space (issue 10).

The repository's files (what a clone has: tracked and untracked-but-not-ignored files, no venv, no build
outputs, none of the message modules scripts/build_msgs.sh generates) are copied to <tmp>/ws/src/partslip_ros
and built with ``colcon build`` against the ROS prefix this interpreter uses (the venv of the ROS 2 PyPI wheels,
or a sourced ROS install). The tests then source ``install/local_setup.sh`` as a user would and check the
layout, that the messages import from the install space, and that ``lib/partslip_ros/partslip_node`` (what
``ros2 run partslip_ros partslip_node`` starts) comes up active and segments a cloud.

The build takes ~25 s on the 2-core VM (colcon-core 0.21, cmake 3.25, contended); it runs once per session.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PACKAGE = "partslip_ros"
# Paths never copied into the workspace when the repository is not a git checkout (a clone has none of them).
NOT_IN_A_CLONE = {".git", ".venv", "build", "install", "log", "out", "__pycache__", ".pytest_cache"}


def console_scripts() -> dict[str, str]:
    """setup.py's console_scripts entry points: {script name: 'module:function'}."""
    for node in ast.walk(ast.parse((REPO / "setup.py").read_text())):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = [element.value for element in value.elts]
                    return {name.strip(): target.strip() for name, target in (e.split("=") for e in entries)}
    raise AssertionError("setup.py declares no console_scripts")


def clone_files() -> list[str]:
    """Paths (relative to the repository) of the files a clone of the working tree would have."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                check=True, capture_output=True).stdout.decode().split("\0")
        return sorted(path for path in listed if path and (REPO / path).is_file())  # drops deleted files
    generated = {REPO / PACKAGE / "msg", REPO / PACKAGE / "srv"}  # by scripts/build_msgs.sh, gitignored
    files = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [name for name in subfolders
                         if name not in NOT_IN_A_CLONE and Path(folder, name) not in generated]
        files += [str(Path(folder, name).relative_to(REPO)) for name in names if not name.endswith((".so", ".pyc"))]
    return sorted(files)


def build_environment() -> dict[str, str]:
    """The environment to build in: this interpreter's ROS prefix (the wheels' venv) on the search paths."""
    env = dict(os.environ)
    prefix = Path(sys.prefix)
    if (prefix / "share" / "ament_cmake" / "cmake").is_dir():  # the ROS 2 PyPI wheels: the venv is the prefix
        for name in ("CMAKE_PREFIX_PATH", "AMENT_PREFIX_PATH"):
            env[name] = os.pathsep.join(filter(None, [str(prefix), env.get(name)]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class Workspace:
    """A built colcon workspace: its root, the package's install prefix and the sourced environment."""

    def __init__(self, root: Path, build_seconds: float) -> None:
        self.root, self.build_seconds = root, build_seconds
        self.prefix = root / "install" / PACKAGE
        sourced = subprocess.run(["sh", "-c", '. "$1/install/local_setup.sh" && env -0', "sh", str(root)],
                                 check=True, capture_output=True, env=dict(os.environ)).stdout.decode()
        self.env = dict(line.split("=", 1) for line in sourced.split("\0") if "=" in line)

    def python(self, code: str, cwd: Path) -> dict:
        """Run ``code`` with this interpreter in the sourced environment; it prints one JSON object."""
        done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    colcon = Path(sys.executable).with_name("colcon")
    colcon = str(colcon) if colcon.exists() else shutil.which("colcon")
    if colcon is None or shutil.which("cmake") is None:
        pytest.skip("needs colcon (requirements-dev.txt) and cmake")
    root = tmp_path_factory.mktemp("colcon_ws")
    source = root / "src" / PACKAGE
    for path in clone_files():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    env = build_environment()
    env["COLCON_HOME"] = str(root / "colcon_home")  # no user defaults (mixins, event handlers)
    start = time.monotonic()
    done = subprocess.run([colcon, "build", "--event-handlers", "console_direct+",
                           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=270)  # < pytest-timeout
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"colcon build failed ({seconds:.0f} s):\n{(done.stdout + done.stderr)[-6000:]}"
    print(f"colcon build: {seconds:.1f} s")
    return Workspace(root, seconds)


def test_colcon_discovers_one_package_and_installs_it_where_ros_tools_look(workspace):
    """One ament_cmake package: console scripts in lib/partslip_ros (``ros2 run``), launch/config/models in share
    (``ros2 launch``, the launch file's params_file default), the ament index entries, the interfaces."""
    prefix = workspace.prefix
    assert sorted(p.name for p in (workspace.root / "install").iterdir() if p.is_dir()) == [PACKAGE]
    manifest = ET.parse(prefix / "share" / PACKAGE / "package.xml").getroot()
    assert manifest.findtext("export/build_type") == "ament_cmake"
    assert manifest.findtext("member_of_group") == "rosidl_interface_packages"
    for name in console_scripts():
        script = prefix / "lib" / PACKAGE / name
        assert script.is_file() and os.access(script, os.X_OK), script
        assert script.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert sorted(p.name for p in (prefix / "lib" / PACKAGE).iterdir()) == sorted(console_scripts())
    share = prefix / "share" / PACKAGE
    assert (share / "launch" / "segment.launch.py").is_file()
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in (REPO / "config").iterdir())
    assert (share / "models" / "README.md").is_file()
    assert {"PartInstance.msg", "PartSegmentation.msg"} <= {p.name for p in (share / "msg").iterdir()}
    assert (share / "srv" / "SegmentNow.srv").is_file()
    index = prefix / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / PACKAGE).is_file()
    interfaces = (index / "rosidl_interfaces" / PACKAGE).read_text().split()
    assert {"msg/PartInstance.idl", "msg/PartSegmentation.idl", "srv/SegmentNow.idl"} <= set(interfaces)


def test_messages_and_node_import_from_the_install_space(workspace, tmp_path):
    """In the sourced environment, from another directory: partslip_ros (our __init__, not rosidl's empty one),
    its msg/srv modules and partslip_core come from the install space, and the messages (de)serialize through
    the install space's typesupport libraries."""
    found = workspace.python(
        "import json, partslip_core, partslip_ros, partslip_ros.node\n"
        "from partslip_ros.msg import PartInstance, PartSegmentation\n"
        "from partslip_ros.srv import SegmentNow\n"
        "from rclpy.serialization import deserialize_message, serialize_message\n"
        "sent = PartSegmentation(part_names=['handle'], instances=[PartInstance(label_name='handle', num_points=3)])\n"
        "back = deserialize_message(serialize_message(sent), PartSegmentation)\n"
        "libraries = sorted({line.split()[-1] for line in open('/proc/self/maps') if 'libpartslip_ros__' in line})\n"
        "print(json.dumps({'modules': [m.__file__ for m in (partslip_ros, partslip_ros.node, partslip_core)],\n"
        "    'messages': [__import__(c.__module__, fromlist=['_']).__file__ for c in (PartSegmentation, SegmentNow)],\n"
        "    'version': partslip_ros.__version__, 'round_trip': back == sent, 'libraries': libraries,\n"
        "    'request_fields': sorted(SegmentNow.Request.get_fields_and_field_types())}))", cwd=tmp_path)
    for path in found["modules"] + found["messages"] + found["libraries"]:
        assert Path(path).is_relative_to(workspace.prefix), path
    assert found["libraries"], "the typesupport libraries were not loaded"
    assert found["version"] == ET.parse(REPO / "package.xml").getroot().findtext("version")
    assert found["round_trip"]
    assert found["request_fields"] == ["parts", "timeout_s"]


def test_installed_node_comes_up_active_and_segments_a_cloud(workspace, ros, tmp_path):
    """lib/partslip_ros/partslip_node with the installed config/segment.yaml, started from another directory in
    the sourced environment: lifecycle state active (autostart), a cloud on its input is segmented, the install
    space's message libraries are the ones loaded, and SIGINT ends it with exit status 0."""
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from partslip_ros.msg import PartSegmentation
    from partslip_ros.node import OUTPUT_QOS, NodeSpinner
    from partslip_ros.scan_publisher import make_scans, scan_to_cloud

    name, topic = f"colcon_node_{os.getpid()}", f"/colcon_in_{os.getpid()}"
    obj, scans = make_scans("mug", 3000, 1, seed=2)
    overrides = {"input_topic": topic, "input_qos": "reliable", "fixed_frame": "world", "window.size": 1,
                 "trigger.every_n_frames": 1, "parts": "[" + ", ".join(obj.part_names) + "]",
                 "pipeline.detector.backend": "ground_truth", "pipeline.device": "cpu",
                 "pipeline.render.image_size": 128, "pipeline.render.views": "[10.0, 0.0, 10.0, 120.0, 30.0, 240.0]"}
    command = [str(workspace.prefix / "lib" / PACKAGE / "partslip_node"),
               "--params-file", str(workspace.prefix / "share" / PACKAGE / "config" / "segment.yaml"),
               "--ros-args", "-r", f"__node:={name}"]
    for key, value in overrides.items():
        command += ["-p", f"{key}:={value}"]
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=workspace.env, stdout=out, stderr=subprocess.STDOUT)
    client = ros.create_node(f"colcon_client_{os.getpid()}")
    results: list = []
    client.create_subscription(PartSegmentation, f"/{name}/segmentation", results.append, OUTPUT_QOS)
    publisher = client.create_publisher(PointCloud2, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    get_state = client.create_client(GetState, f"/{name}/get_state")
    spinner = NodeSpinner([client]).start()
    try:
        assert get_state.wait_for_service(timeout_sec=120), f"the installed node did not come up:\n{log.read_text()}"
        state = get_state.call_async(GetState.Request())
        assert wait_for(state.done, timeout=30)
        assert state.result().current_state.id == State.PRIMARY_STATE_ACTIVE, log.read_text()
        assert wait_for(lambda: publisher.get_subscription_count() == 1, timeout=30), log.read_text()
        publisher.publish(scan_to_cloud(Header(frame_id="world", stamp=client.get_clock().now().to_msg()),
                                        scans[0], True))
        assert wait_for(lambda: len(results) == 1, timeout=120), f"no result:\n{log.read_text()}"
        result = results[0]
        assert list(result.part_names) == list(obj.part_names)
        assert result.num_points > 0 and result.num_labeled_points > 0.5 * result.num_points
        assert result.instances and {i.label_name for i in result.instances} <= set(obj.part_names)
        maps = Path(f"/proc/{process.pid}/maps")
        if maps.exists():
            loaded = {line.split()[-1] for line in maps.read_text().splitlines() if "libpartslip_ros__" in line}
            assert loaded and all(Path(path).is_relative_to(workspace.prefix) for path in loaded), loaded
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        spinner.stop()
        client.destroy_node()
    assert process.returncode == 0, log.read_text()[-3000:]
