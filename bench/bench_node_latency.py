"""Latency of partslip_node: publish a cloud -> receive its ~/segmentation, per run and per stage.

    python bench/bench_node_latency.py                                # 20k-point chair, 10 views @ 800 px, 10 runs
    python bench/bench_node_latency.py --superpoints cut_pursuit --runs 5 --json out/node_latency.json

The node runs as its own process (``python -m partslip_ros.node --params-file config/segment.yaml``
plus overrides: the ground-truth detector on CPU, window.size 1, every cloud triggers a run), exactly
as on a robot; this script is another process that publishes one synthetic object cloud (with
gt_label/gt_instance fields for the ground-truth detector) at a time and waits for its result before
the next, so nothing queues. Latency = receive time of the ~/segmentation message whose header stamp
is the published cloud's stamp - that stamp (one clock: both are taken in this process). The node's
own per-stage timings (segmentation message fields) are reported next to it; "outside segment()" =
latency - the node's reported total (transport both ways, conversion, fusion, publishing).
The issue's target: <= 400 ms publish -> result for a 20k-point fused object on the 2-core CPU.
Starting and stopping the node process: ``bench/node_process.py`` (shared with soak_node.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as `python bench/bench_node_latency.py`

from bench.common import Row, environment, format_table, write_json  # noqa: E402
from bench.node_process import (ground_truth_overrides, node_command, object_cloud, private_ros_domain,  # noqa: E402
                                start_node, stop_node, wait_for_subscriber)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--category", default="chair")
    parser.add_argument("--runs", type=int, default=10, help="timed clouds (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--views", type=int, default=10, help="how many of the 10 reference views to render")
    parser.add_argument("--image-size", type=int, default=800)
    parser.add_argument("--superpoints", default="", help="pipeline.superpoints.backend override (default: the YAML's)")
    parser.add_argument("--threads", type=int, default=None, help="pipeline.cpu_threads override")
    parser.add_argument("--device", default="cpu", help="pipeline.device of the node")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one result")
    parser.add_argument("--params-file", default=str(REPO / "config" / "segment.yaml"))
    parser.add_argument("--node-log", default=str(REPO / "out" / "node_latency_node.log"))
    parser.add_argument("--json", default="")
    return parser.parse_args(argv)


def latency_overrides(args: argparse.Namespace, topic: str, parts: Sequence[str]) -> dict:
    """One run per cloud, nothing queued: window.size 1, every cloud triggers, no rate limit."""
    overrides = {"input_topic": topic, "input_qos": "reliable",
                 **ground_truth_overrides(parts, args.views, args.image_size, args.device),
                 "queue_size": 2, "window.size": 1, "trigger.mode": "continuous", "trigger.every_n_frames": 1,
                 "trigger.max_rate_hz": 0.0}
    if args.superpoints:
        overrides["pipeline.superpoints.backend"] = args.superpoints
    if args.threads is not None:
        overrides["pipeline.cpu_threads"] = args.threads
    return overrides


class ResultWaiter:
    """Collects ~/segmentation messages by header stamp (ns) and lets the driver wait for one."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.results: dict[int, tuple[float, dict[str, float], float]] = {}

    def on_result(self, seg) -> None:
        received = time.time_ns()
        stamp = seg.header.stamp.sec * 1_000_000_000 + seg.header.stamp.nanosec
        stages = {name: float(ms) for name, ms in zip(seg.stage_names, seg.stage_ms)}
        with self.condition:
            self.results[stamp] = (received, stages, float(seg.total_ms))
            self.condition.notify_all()

    def wait(self, stamp: int, timeout: float) -> Optional[tuple[float, dict[str, float], float]]:
        with self.condition:
            self.condition.wait_for(lambda: stamp in self.results, timeout=timeout)
            return self.results.get(stamp)


def measure(args: argparse.Namespace, driver, publisher, msg, waiter: ResultWaiter
            ) -> tuple[list[float], list[float], dict[str, list[float]], int]:
    """Publish warm-up + timed clouds one at a time; returns latencies, node totals, node stages, failures."""
    latency, totals, stages, missing = [], [], {}, 0
    for index in range(args.warmup + args.runs):
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        publisher.publish(msg)
        result = waiter.wait(now, args.timeout)
        if result is None:
            missing += 1
            print(f"  cloud {index}: no result within {args.timeout:.0f} s", flush=True)
            continue
        received, node_stages, total = result
        if index < args.warmup:
            continue
        latency.append((received - now) / 1e6)
        totals.append(total)
        for name, ms in node_stages.items():
            stages.setdefault(name, []).append(ms)
        print(f"  cloud {index}: publish -> result {latency[-1]:.0f} ms (node total {total:.0f} ms)", flush=True)
    return latency, totals, stages, missing


def table_rows(args: argparse.Namespace, latency: list[float], totals: list[float],
               stages: dict[str, list[float]]) -> list[Row]:
    device = args.device
    rows = [Row.from_samples(f"node stage: {name}", args.points, device, values)
            for name, values in stages.items() if name != "total"]
    rows.append(Row.from_samples("node total (segment + fusion as reported)", args.points, device, totals))
    rows.append(Row.from_samples("outside the reported total", args.points, device,
                                 [lat - tot for lat, tot in zip(latency, totals)], "transport, conversion, publish"))
    rows.append(Row.from_samples("publish -> result", args.points, device, latency, "target <= 400 ms (CPU)"))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    private_ros_domain()
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from partslip_ros.msg import PartSegmentation
    from partslip_ros.node import OUTPUT_QOS, NodeSpinner
    parts, msg = object_cloud(args.category, args.points)
    name, topic = f"latency_node_{os.getpid()}", f"latency_points_{os.getpid()}"
    process = start_node(node_command(args.params_file, name, latency_overrides(args, topic, parts)), args.node_log)
    rclpy.init()
    waiter = ResultWaiter()
    driver = rclpy.create_node(f"latency_driver_{os.getpid()}")
    driver.create_subscription(PartSegmentation, f"/{name}/segmentation", waiter.on_result, OUTPUT_QOS)
    spinner = NodeSpinner([driver]).start()
    publisher = driver.create_publisher(PointCloud2, topic, QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
    try:
        if not wait_for_subscriber(publisher, process, args.node_log):
            return 1
        time.sleep(1.0)  # let the result subscription match too
        print(f"bench_node_latency: {args.category}, {args.points} points, {args.views} views @ {args.image_size} px, "
              f"{args.warmup} warm-up + {args.runs} runs -> {name} (pid {process.pid}, log {args.node_log})",
              flush=True)
        env = environment()
        print(f"environment: {env}", flush=True)
        latency, totals, stages, missing = measure(args, driver, publisher, msg, waiter)
        rows = table_rows(args, latency, totals, stages) if latency else []
        print()
        print(format_table(rows))
        alive = process.poll() is None
        env["load_average_after"] = environment()["load_average_1_5_15"]
        print(f"missing results: {missing}; node alive: {alive}; load average after: {env['load_average_after']}")
        write_json(args.json, {"args": vars(args), "environment": env, "rows": rows, "missing": missing})
        return 0 if alive and not missing and latency else 1
    finally:
        stop_node(process)
        spinner.stop()
        driver.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
