"""partslip_node as a separate process for the node benchmarks (bench_node_latency.py, soak_node.py).

The node runs exactly as on a robot (``python -m partslip_ros.node --params-file ...`` plus ``-p``
overrides: the ground-truth detector on synthetic object clouds that carry gt_label/gt_instance); the
benchmark is another process. A private ROS_DOMAIN_ID and localhost-only discovery keep it away from
other ROS traffic.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
VIEWS = [10.0, 0.0, 10.0, 90.0, 10.0, 180.0, 10.0, 270.0, 40.0, 0.0, 40.0, 120.0, 40.0, 240.0,
         -20.0, 60.0, -20.0, 180.0, -20.0, 300.0]  # the 10 reference views, flat [elevation, azimuth, ...]


def private_ros_domain() -> None:
    """A random ROS_DOMAIN_ID and localhost discovery for this process and the node it starts (before rclpy)."""
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(101, 215))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def ground_truth_overrides(parts: Sequence[str], views: int, image_size: int, device: str = "cpu") -> dict[str, Any]:
    """The parameters every node benchmark sets: ground-truth detector, the first ``views`` reference views."""
    return {"parts": "[" + ", ".join(parts) + "]", "fixed_frame": "world",
            "pipeline.detector.backend": "ground_truth", "pipeline.device": device,
            "pipeline.render.image_size": image_size,
            "pipeline.render.views": "[" + ", ".join(str(v) for v in VIEWS[:2 * views]) + "]"}


def node_command(params_file: str | Path, name: str, overrides: Mapping[str, Any]) -> list[str]:
    """The console command of a node called ``name`` with ``-p key:=value`` per override."""
    command = [sys.executable, "-m", "partslip_ros.node", "--params-file", str(params_file),
               "--ros-args", "-r", f"__node:={name}"]
    for key, value in overrides.items():
        command += ["-p", f"{key}:={value}"]
    return command


def start_node(command: Sequence[str], log_path: str | Path) -> subprocess.Popen:
    """Start the node with its output in ``log_path``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return subprocess.Popen(list(command), cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def wait_for_subscriber(publisher, process: subprocess.Popen, log_path: str | Path, seconds: float = 60.0) -> bool:
    """Whether the node subscribed to ``publisher``'s topic within ``seconds`` (says why not on stderr)."""
    deadline = time.monotonic() + seconds
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    if publisher.get_subscription_count() == 0:
        print(f"the node did not subscribe within {seconds:.0f} s; see {log_path}", file=sys.stderr)
        return False
    return True


def stop_node(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (a clean shutdown, as Ctrl-C), then kill after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def object_cloud(category: str, points: int):
    """(part names, PointCloud2 in "world") of a synthetic object with ground-truth fields, seed 0."""
    from std_msgs.msg import Header
    from partslip_core.synthetic import make_object
    from partslip_ros.scan_publisher import scan_to_cloud
    obj = make_object(category, points, seed=0)
    return list(obj.part_names), scan_to_cloud(Header(frame_id="world"), obj, True)
