"""Parameters as ROS users write them (issue 12, bugs 5-8), on real rclpy nodes initialized by rcl's own
argument and params-file parser: integers for floats, comma lists and empty ``parts``, devices that are
not there, misspelled keys, and values that used to be accepted only to fail later."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from partslip_ros.node import NodeSpinner, PartSlipNode, ros_argv
from partslip_ros.params import SettingsError

from .conftest import wait_for

pytest.importorskip("partslip_ros.msg", reason="build it with scripts/build_msgs.sh")
REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()
BASE = ["pipeline.device:=cpu", "pipeline.detector.backend:=ground_truth"]


class NodeFromArgs:
    """PartSlipNode in its own context, made from a command line as ``partslip_node`` gets it."""

    def __init__(self) -> None:
        self.created = []

    def __call__(self, *ros_args: str, params_file: str = ""):
        args = ["partslip_node"] + (["--params-file", params_file] if params_file else [])
        args += ["--ros-args"] + [item for value in BASE + list(ros_args) for item in ("-p", value)]
        context = rclpy.Context()
        rclpy.init(args=ros_argv(args), context=context)
        try:
            node = PartSlipNode(f"hygiene_{next(_names)}", context=context)
        except Exception:
            rclpy.try_shutdown(context=context)
            raise
        self.created.append((node, context))
        return node


@pytest.fixture
def node_from_args(ros):
    make = NodeFromArgs()
    yield make
    for node, context in make.created:
        node.shutdown()
        rclpy.try_shutdown(context=context)


def yaml_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / f"params_{next(_names)}.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return str(path)


def test_integers_are_accepted_for_float_parameters_everywhere(node_from_args, tmp_path, ros):
    params = yaml_file(tmp_path, "fusion:\n  voxel_size: 0\n  target_point: [0, 0, 1]")
    node = node_from_args("window.max_age_s:=0", "trigger.max_rate_hz:=2", params_file=params)
    settings = node.settings
    assert settings.fusion.voxel_size == 0.0 and settings.window_max_age_s == 0.0 and settings.max_rate_hz == 2.0
    assert settings.fusion.isolation.target_point == (0.0, 0.0, 1.0)  # fusion.target_point: an IsolationConfig field
    assert node.get_parameter("fusion.voxel_size").type_ == Parameter.Type.DOUBLE
    result = node.set_parameters([Parameter("fusion.voxel_size", value=1)])[0]  # as `ros2 param set ... 1` sends it
    assert result.successful, result.reason
    assert node.get_parameter("fusion.voxel_size").value == 1.0 and node.settings.fusion.voxel_size == 1.0
    refused = node.set_parameters([Parameter("fusion.voxel_size", value="big")])[0]
    assert not refused.successful and node.settings.fusion.voxel_size == 1.0


def test_integer_for_a_float_over_the_parameter_service(ros):
    """The `ros2 param set /node fusion.voxel_size 1` path: the parameter service of a running node."""
    from rclpy.parameter_client import AsyncParameterClient
    node = PartSlipNode(f"hygiene_{next(_names)}", parameter_overrides=[
        Parameter("pipeline.device", value="cpu"), Parameter("pipeline.detector.backend", value="ground_truth")])
    client_node = rclpy.create_node(f"hygiene_client_{next(_names)}")
    spinner = NodeSpinner([node, client_node]).start()
    try:
        client = AsyncParameterClient(client_node, node.get_fully_qualified_name())
        assert client.wait_for_services(timeout_sec=10)
        future = client.set_parameters([Parameter("fusion.voxel_size", value=1)])
        assert wait_for(future.done, timeout=10)
        assert future.result().results[0].successful, future.result().results[0].reason
        assert node.settings.fusion.voxel_size == 1.0
    finally:
        spinner.stop()
        node.shutdown()
        client_node.destroy_node()


@pytest.mark.parametrize("args, yaml_body, expected", [
    (["parts:=wheel, body"], "", ("wheel", "body")),
    (["parts:=[]"], "", ()),
    ([], "parts: []", ()),
    ([], 'parts: ""', ()),
    ([], "parts: [lid, body]", ("lid", "body")),
    ([], 'parts: "lid,body , knob"', ("lid", "body", "knob")),
])
def test_parts_take_lists_comma_strings_and_empty_values(node_from_args, tmp_path, args, yaml_body, expected):
    node = node_from_args(*args, params_file=yaml_file(tmp_path, yaml_body) if yaml_body else "")
    assert node.settings.parts == expected
    assert node.set_parameters([Parameter("parts", value="spout, lid")])[0].successful
    assert node.settings.parts == ("spout", "lid")


def test_a_device_that_is_not_there_is_refused_when_set(node_from_args):
    import torch
    with pytest.raises(SettingsError, match="cuda:99"):
        node_from_args("pipeline.device:=cuda:99")
    node = node_from_args()
    result = node.set_parameters([Parameter("pipeline.device", value="cuda:99")])[0]
    assert not result.successful and "cuda:99" in result.reason and node.settings.pipeline.device == "cpu"
    if not torch.cuda.is_available():
        result = node.set_parameters([Parameter("pipeline.device", value="cuda")])[0]
        assert not result.successful and "CUDA is not available" in result.reason


@pytest.mark.parametrize("override, words", [
    ("queue_size:=many", "queue_size must be an integer"),
    ("pipeline.detector.weights:=/nonexistent/model.pth", "does not exist"),
    ("pipeline.render.views:=[1e308, 1e308]", "elevation"),
    ("parts:=" + ",".join(f"p{i}" for i in range(500)), "at most 64"),
    ("parts:=" + "x" * 10_000, "at most 100"),
    ("window.max_future_s:=-1.0", "window.max_future_s"),
    ("window.max_age_s:=.nan", "window.max_age_s"),  # refused by rclpy's range check
    ("fusion.target_point:=[0.0, .inf, 0.0]", "fusion.target_point must be finite"),
])
def test_values_that_would_fail_later_stop_the_node_at_start(node_from_args, override, words):
    with pytest.raises(Exception, match=words):
        node_from_args("pipeline.detector.backend:=owlv2", override)


@pytest.mark.parametrize("name, value, words", [
    ("pipeline.detector.weights", "/nonexistent/model.pth", "does not exist"),
    ("pipeline.render.views", [1e308, 1e308], "elevation"),
    ("parts", [f"p{i}" for i in range(500)], "at most 64"),
    ("parts", ["x" * 10_000], "at most 100"),
])
def test_the_same_values_are_refused_at_runtime(node_from_args, name, value, words):
    node = node_from_args("pipeline.detector.backend:=owlv2")
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and words in result.reason


def test_a_misspelled_key_is_named_with_the_closest_known_one(node_from_args, tmp_path, ros):
    listener = ros.create_node(f"hygiene_rosout_{next(_names)}")
    lines = []
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    listener.create_subscription(Log, "/rosout", lines.append, qos)  # the node logs while it starts
    spinner = NodeSpinner([listener]).start()
    try:
        node = node_from_args(params_file=yaml_file(tmp_path, "windw:\n  size: 3\nfusion:\n  voxl_size: 0.01"))
        name = node.get_logger().name
        found = lambda: [m.msg for m in lines if m.name == name and m.level == Log.WARN and "unknown" in m.msg]
        assert wait_for(lambda: len(found()) == 2, timeout=10), [m.msg for m in lines]
        text = " ".join(found())
        assert "'windw.size'" in text and "'window.size'" in text and "'fusion.voxel_size'" in text
        assert node.settings.window_size == 4  # ignored, with the warning
    finally:
        spinner.stop()
        listener.destroy_node()


def test_a_missing_params_file_is_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "partslip_ros.node", "--params-file", "/nonexistent.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no such file" in done.stderr and "Traceback" not in done.stderr + done.stdout
