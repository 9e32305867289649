"""Soak test of partslip_node: N minutes of clouds at a chosen rate and size, printed as it goes.

    python bench/soak_node.py --minutes 3 --rate 10 --points 100000
    python bench/soak_node.py --minutes 3 --rate 30 --points 300000 --report-every 10

The node runs as its own process (``python -m partslip_ros.node --params-file config/segment.yaml``
plus overrides: the ground-truth detector, small views), exactly as on a robot; this script publishes
a synthetic object (with gt_label/gt_instance fields) from a paced thread, listens to the node's
/diagnostics (messages received / accepted / dropped, runs, failures) and ~/segmentation (results,
end-to-end latency = result receive time - stamp of the newest cloud in it), and samples the node
process's RSS. Every ``--report-every`` seconds it prints one line; at the end one SUMMARY line.
Exit status 1 when the node died or a run failed. Starting and stopping the node process:
``bench/node_process.py`` (shared with bench_node_latency.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as `python bench/soak_node.py`

from bench.node_process import (ground_truth_overrides, node_command, object_cloud, private_ros_domain,  # noqa: E402
                                start_node, stop_node, wait_for_subscriber)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=10.0, help="clouds per second")
    parser.add_argument("--points", type=int, default=100_000, help="points per cloud")
    parser.add_argument("--category", default="mug")
    parser.add_argument("--views", type=int, default=4, help="how many of the 10 reference views to render")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--window", type=int, default=4, help="window.size (clouds fused per run)")
    parser.add_argument("--every-n", type=int, default=1, help="trigger.every_n_frames")
    parser.add_argument("--max-run-rate", type=float, default=0.0, help="trigger.max_rate_hz (0 = no limit)")
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--report-every", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds excluded from the RSS growth figure")
    parser.add_argument("--qos", choices=("reliable", "sensor_data"), default="reliable",
                        help="input QoS of publisher and node. Between two processes Fast DDS (default "
                             "transports) delivered ~1 of 50 best-effort 2.4 MB samples here and all reliable ones")
    parser.add_argument("--node-log", default=str(REPO / "out" / "soak_node.log"))
    return parser.parse_args(argv)


def soak_overrides(args: argparse.Namespace, topic: str, parts: Sequence[str]) -> dict:
    return {"input_topic": topic, "input_qos": args.qos, **ground_truth_overrides(parts, args.views, args.image_size),
            "queue_size": args.queue_size, "window.size": args.window, "trigger.mode": "continuous",
            "trigger.every_n_frames": args.every_n, "trigger.max_rate_hz": float(args.max_run_rate)}


def rss_mb(pid: int) -> float:
    """Current resident memory of process ``pid`` in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024.0
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return 0.0


@dataclass
class Observed:
    """What the driver saw; lists grow for the whole run (a few numbers per second)."""

    sent: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)
    results: int = 0
    latency_ms: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "-"
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:.0f}/{p95:.0f}/{max(values):.0f}"


def make_listener(ros, observed: Observed, node_fqn: str):
    """A driver-side node: /diagnostics of our node and its ~/segmentation results."""
    from diagnostic_msgs.msg import DiagnosticArray
    from partslip_ros.msg import PartSegmentation
    from partslip_ros.node import OUTPUT_QOS
    listener = ros.create_node(f"soak_listener_{os.getpid()}")

    def on_diagnostics(array) -> None:
        for status in array.status:
            if status.name.startswith(node_fqn + ":"):
                with observed.lock:
                    observed.diagnostics = {kv.key: kv.value for kv in status.values}

    def on_result(seg) -> None:
        stamp = seg.header.stamp.sec * 1e9 + seg.header.stamp.nanosec
        with observed.lock:
            observed.results += 1
            observed.latency_ms.append((listener.get_clock().now().nanoseconds - stamp) / 1e6)
            observed.run_ms.append(float(seg.total_ms))
            for stage, ms in zip(seg.stage_names, seg.stage_ms):
                observed.stage_ms.setdefault(stage, []).append(float(ms))

    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    listener.create_subscription(PartSegmentation, f"{node_fqn}/segmentation", on_result, OUTPUT_QOS)
    return listener


def publish_loop(node, publisher, msg, rate_hz: float, seconds: float, observed: Observed,
                 stop: threading.Event) -> None:
    """Paced publishing (absolute schedule, so a slow publish does not lower the mean rate)."""
    period, start = 1.0 / rate_hz, time.monotonic()
    for i in range(int(seconds * rate_hz)):
        delay = start + i * period - time.monotonic()
        if stop.wait(max(0.0, delay)):
            return
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        with observed.lock:
            observed.sent += 1


def report_line(elapsed: float, observed: Observed, interval_latency: list[float], pid: int) -> str:
    with observed.lock:
        d, sent, results = dict(observed.diagnostics), observed.sent, observed.results
        peak = max((mb for _, mb in observed.rss), default=0.0)
    failed = sum(int(v) for k, v in d.items() if k.startswith("run_failed_"))
    rejected = sum(int(v) for k, v in d.items() if k.startswith("rejected_"))
    return (f"t={elapsed:6.0f}s sent={sent} in={d.get('received', '?')} accepted={d.get('accepted', '?')} "
            f"dropped={d.get('dropped_queue_full', '?')} rejected={rejected} runs={d.get('runs_ok', '?')} "
            f"failed={failed} out={results} rss={rss_mb(pid):.0f}MiB peak={peak:.0f}MiB "
            f"latency_ms(p50/p95/max)={percentiles(interval_latency)} last_run_ms={d.get('last_run_ms', '?')}")


def rss_growth_per_min(rss: list[tuple[float, float]], warmup_s: float) -> float:
    """Least-squares slope of RSS after the warm-up, MiB per minute (0 with too few samples)."""
    points = np.array([(t, mb) for t, mb in rss if t >= warmup_s])
    if len(points) < 10:
        return 0.0
    return float(np.polyfit(points[:, 0] / 60.0, points[:, 1], 1)[0])


def summary_line(args: argparse.Namespace, observed: Observed, elapsed: float, alive: bool) -> str:
    d = observed.diagnostics
    failed = {k[len("run_failed_"):]: v for k, v in d.items() if k.startswith("run_failed_")}
    rss = [mb for _, mb in observed.rss]
    warm = [mb for t, mb in observed.rss if t >= args.warmup] or rss or [0.0]
    return (f"SUMMARY minutes={elapsed / 60:.1f} rate_hz={args.rate:g} points={args.points} views={args.views} "
            f"image_size={args.image_size} window={args.window} sent={observed.sent} "
            f"received={d.get('received', 0)} accepted={d.get('accepted', 0)} "
            f"dropped={d.get('dropped_queue_full', 0)} runs_ok={d.get('runs_ok', 0)} runs_failed={failed or 0} "
            f"results={observed.results} rss_start_mib={rss[0] if rss else 0:.0f} "
            f"rss_after_warmup_mib={warm[0]:.0f} rss_peak_mib={max(rss, default=0):.0f} "
            f"rss_end_mib={rss[-1] if rss else 0:.0f} "
            f"rss_slope_mib_per_min={rss_growth_per_min(observed.rss, args.warmup):+.1f} "
            f"latency_ms_p50/p95/max={percentiles(observed.latency_ms)} "
            f"run_ms_p50/p95/max={percentiles(observed.run_ms)} node_alive={alive}\n"
            f"stage medians (ms): {stage_medians(observed.stage_ms)}")


def stage_medians(stage_ms: dict[str, list[float]]) -> str:
    return ", ".join(f"{name}={np.median(values):.0f}" for name, values in stage_ms.items() if name != "total")


def monitor(args, observed: Observed, process: subprocess.Popen, publisher_thread: threading.Thread) -> float:
    """Sample RSS every second and print a line every ``report_every`` s until publishing ends; returns elapsed."""
    start = time.monotonic()
    next_report, seen_latency = start + args.report_every, 0
    while publisher_thread.is_alive() and process.poll() is None:
        time.sleep(1.0)
        now = time.monotonic()
        with observed.lock:
            observed.rss.append((now - start, rss_mb(process.pid)))
        if now >= next_report:
            with observed.lock:
                interval = observed.latency_ms[seen_latency:]
                seen_latency = len(observed.latency_ms)
            print(report_line(now - start, observed, interval, process.pid), flush=True)
            next_report += args.report_every
    return time.monotonic() - start


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    private_ros_domain()
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from partslip_ros.node import NodeSpinner
    parts, msg = object_cloud(args.category, args.points)
    name, topic = f"soak_node_{os.getpid()}", f"soak_points_{os.getpid()}"
    process = start_node(node_command(REPO / "config" / "segment.yaml", name, soak_overrides(args, topic, parts)),
                         args.node_log)
    rclpy.init()
    observed, stop = Observed(), threading.Event()
    driver = rclpy.create_node(f"soak_driver_{os.getpid()}")
    listener = make_listener(rclpy, observed, f"/{name}")
    spinner = NodeSpinner([driver], [listener]).start()
    qos = qos_profile_sensor_data if args.qos == "sensor_data" else QoSProfile(
        depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publisher = driver.create_publisher(PointCloud2, topic, qos)
    try:
        if not wait_for_subscriber(publisher, process, args.node_log):
            return 1
        print(f"soak: {args.points} points at {args.rate:g} Hz ({args.qos}) for {args.minutes:g} min -> {name} "
              f"(pid {process.pid}, log {args.node_log})", flush=True)
        thread = threading.Thread(target=publish_loop, args=(driver, publisher, msg, args.rate, args.minutes * 60,
                                                             observed, stop), daemon=True)
        thread.start()
        elapsed = monitor(args, observed, process, thread)
        time.sleep(3.0)  # the last diagnostics (published every second) and results
        alive = process.poll() is None
        print(summary_line(args, observed, elapsed, alive), flush=True)
        failed = any(k.startswith("run_failed_") for k in observed.diagnostics)
        return 0 if alive and not failed else 1
    finally:
        stop.set()
        stop_node(process)
        spinner.stop()
        driver.destroy_node()
        listener.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
