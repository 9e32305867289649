"""The main-job demo end to end (its own processes), and the launch file's declared interface."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
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


LAUNCH_ARGUMENTS = ["namespace", "use_sim_time", "params_file", "log_level", "input_topic", "parts", "use_rviz"]


def test_launch_file_declares_the_documented_arguments_and_starts_the_console_script():
    tree = ast.parse(LAUNCH_FILE.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = [c.args[0].value for c in calls if getattr(c.func, "id", "") == "DeclareLaunchArgument"]
    assert declared == LAUNCH_ARGUMENTS
    keywords = {k.arg: getattr(k.value, "value", None) for c in calls if getattr(c.func, "id", "") == "Node"
                for k in c.keywords}
    assert any(getattr(k.value, "value", None) == "partslip_node" for c in calls for k in c.keywords
               if k.arg == "executable")
    assert keywords.get("package") in ("partslip_ros", "rviz2")
    # setup.py must install the console script the launch file runs
    assert "partslip_node = partslip_ros.node:main" in (REPO / "setup.py").read_text()


def test_launch_description_builds_with_launch_ros():
    from .conftest import launch_module
    description = launch_module().generate_launch_description()
    names = [a.name for a in description.get_launch_arguments()]
    assert names == LAUNCH_ARGUMENTS
