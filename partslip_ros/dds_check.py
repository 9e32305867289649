"""Measure how many large best-effort PointCloud2 messages reach another process, with and without a profile.

    python -m partslip_ros.dds_check [--mb 10] [--count 23] [--rate 5] [--profile config/fastdds_shm.xml]

Starts a subscriber process (sensor-data QoS, as the node's input) and publishes ``--count`` clouds of about
``--mb`` MB at ``--rate`` Hz from this process, once with the default DDS setup and once with the profile
(both ends use the same setting, through FASTDDS_DEFAULT_PROFILES_FILE); prints delivered/sent and the median
latency. Every run uses its own random ROS_DOMAIN_ID and localhost discovery.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3, 2


def profile_env(profile: Optional[Path], base: Optional[dict] = None) -> dict:
    """A copy of the environment using ``profile`` for Fast DDS (None = the default transports). Only the
    Fast DDS 3 variable is set (Jazzy/Kilted warn about the old one); Humble needs FASTRTPS_... instead."""
    env = dict(os.environ if base is None else base)
    for name in PROFILE_VARIABLES:
        env.pop(name, None)
    if profile is not None:
        env[PROFILE_VARIABLES[0]] = str(Path(profile).resolve())
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def _subscriber(seconds: float) -> None:
    """Child: count clouds and their latencies, print one JSON line at the end."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from partslip_ros.stamps import stamp_to_ns
    rclpy.init()
    node = rclpy.create_node("dds_check_subscriber")
    latencies: list[float] = []

    def received(msg) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        latencies.append((time.time_ns() - stamp) / 1e6)

    node.create_subscription(PointCloud2, "dds_check", received, qos_profile_sensor_data)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(latencies), "latencies_ms": latencies}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def _publish(mb: float, count: int, rate: float) -> None:
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from partslip_ros.pointcloud import build_cloud, xyz_rgb_columns
    rclpy.init()
    node = rclpy.create_node("dds_check_publisher")
    publisher = node.create_publisher(PointCloud2, "dds_check", qos_profile_sensor_data)
    points = int(mb * 1e6 / 16)  # x, y, z, rgb float32
    rng = np.random.default_rng(0)
    msg = build_cloud(Header(frame_id="world"), xyz_rgb_columns(rng.random((points, 3)), rng.random((points, 3))))
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # let the subscriber match this writer too (best effort drops samples sent before)
    for _ in range(count):
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        time.sleep(1.0 / rate)
    node.destroy_node()
    rclpy.try_shutdown()


def measure(profile: Optional[Path], mb: float, count: int, rate: float) -> dict:
    """{"sent", "received", "median_ms"} for one configuration (a fresh domain, both ends configured alike)."""
    env = profile_env(profile)
    env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(101, 200))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    listen_s = count / rate + 15.0
    child = subprocess.Popen([sys.executable, "-m", "partslip_ros.dds_check", "--subscriber", str(listen_s)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        publisher = subprocess.run([sys.executable, "-m", "partslip_ros.dds_check", "--publisher", str(mb),
                                    str(count), str(rate)], cwd=REPO, env=env, timeout=listen_s + 60)
        output, _ = child.communicate(timeout=listen_s + 60)
    finally:  # a publisher that hung or failed must not leave the subscriber process behind
        if child.poll() is None:
            child.kill()
            child.wait()
    if publisher.returncode != 0 or not output.strip():
        raise RuntimeError(f"dds_check run failed (publisher exit {publisher.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    latencies = sorted(result["latencies_ms"])
    median = latencies[len(latencies) // 2] if latencies else float("nan")
    return {"sent": count, "received": result["received"], "median_ms": round(median, 1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--subscriber"]:
        _subscriber(float(argv[1]))
        return 0
    if argv[:1] == ["--publisher"]:
        _publish(float(argv[1]), int(argv[2]), float(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="cloud size in MB")
    parser.add_argument("--count", type=int, default=23, help="clouds sent per configuration")
    parser.add_argument("--rate", type=float, default=5.0, help="clouds per second")
    parser.add_argument("--profile", default=str(REPO / "config" / "fastdds_shm.xml"))
    args = parser.parse_args(argv)
    for name, profile in (("default transports", None), (f"profile {args.profile}", Path(args.profile))):
        result = measure(profile, args.mb, args.count, args.rate)
        print(f"{name}: {result['received']}/{result['sent']} clouds of {args.mb:g} MB delivered, median latency "
              f"{result['median_ms']} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
