"""End-to-end demo without RViz: synthetic scans -> partslip_node -> files and a printed summary.

    python -m partslip_ros.demo                  # or: bash scripts/demo.sh [options]

Starts ``partslip_node`` as its own process with ``config/segment.yaml`` (the same console script
and YAML a robot without launch_ros uses), both processes on the Fast DDS shared-memory profile
``config/fastdds_shm.xml`` (``--dds-profile ''`` for the DDS defaults), publishes the bundled
synthetic scan sequence (a chair seen from a sensor moving along an arc) at ``--rate`` Hz, and collects
every result. The node runs after each new cloud on the growing window, so the results show the fusion
filling in the object.

The detector is the ground-truth projection detector (``ground_truth`` backend): it reads the
``gt_label``/``gt_instance`` fields of the synthetic scans, because detector weights cannot be
downloaded here. It is a TEST/DEMO detector; pass ``--detector grounding_dino --weights PATH`` (or
glip / owlv2) to run a real one. Outputs in ``--out`` (default out/demo): labeled_cloud.ply,
result.json (summary, instances with grasp hints, latencies, agreement with ground truth),
segmentation.json and markers.json (full message dumps).
"""

from __future__ import annotations

import argparse
import array
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from partslip_ros.stamps import stamp_to_ns

REPO = Path(__file__).resolve().parents[1]


def params_file(name: str = "segment.yaml") -> Path:
    """config/<name> of the source tree, else of the installed share directory."""
    local = REPO / "config" / name
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory("partslip_ros")) / "config" / name


def msg_to_dict(msg: Any, max_items: Optional[int] = None) -> Any:
    """A ROS message as plain JSON-able data (byte buffers summarized by length)."""
    if hasattr(msg, "get_fields_and_field_types"):
        out = {}
        for name, kind in msg.get_fields_and_field_types().items():
            value = getattr(msg, name)
            if name == "data" and kind.startswith("sequence<uint8"):
                out[name] = f"<{len(value)} bytes>"
            else:
                out[name] = msg_to_dict(value, max_items)
        return out
    if isinstance(msg, (list, tuple, array.array, np.ndarray)):
        items = list(msg)
        shown = items if max_items is None else items[:max_items]
        return [msg_to_dict(v, max_items) for v in shown]
    if isinstance(msg, (np.floating, float)):
        return float(msg)
    if isinstance(msg, (np.integer, int)) and not isinstance(msg, bool):
        return int(msg)
    return msg


def node_command(args: argparse.Namespace, node_name: str, parts: Sequence[str], topic: str) -> list[str]:
    overrides = {
        "input_topic": topic, "parts": json.dumps(list(parts)), "pipeline.detector.backend": args.detector,
        "pipeline.detector.weights": args.weights, "window.size": args.frames, "trigger.every_n_frames": 1,
        "trigger.max_rate_hz": 0.0, "pipeline.device": args.device,
    }
    if args.image_size:
        overrides["pipeline.render.image_size"] = args.image_size
    command = [sys.executable, "-m", "partslip_ros.node", "--params-file", str(params_file()),
               "--ros-args", "-r", f"__node:={node_name}"]
    for name, value in overrides.items():
        command += ["-p", f"{name}:={value}" if value != "" else f"{name}:=''"]
    return command


class ResultCollector:
    """Subscribes to the node's outputs and records each result with its wall-clock receive time."""

    def __init__(self, rclpy_module, node_fqn: str) -> None:
        from partslip_ros.msg import PartSegmentation
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from partslip_ros.node import OUTPUT_QOS
        self.node = rclpy_module.create_node("partslip_demo_collector")
        self.segmentations: list[tuple[int, Any]] = []
        self.clouds: dict[int, Any] = {}
        self.markers: dict[int, Any] = {}
        self.node.create_subscription(PartSegmentation, f"{node_fqn}/segmentation", self._on_segmentation, OUTPUT_QOS)
        self.node.create_subscription(PointCloud2, f"{node_fqn}/labeled_cloud", self._keyed(self.clouds), OUTPUT_QOS)
        self.node.create_subscription(MarkerArray, f"{node_fqn}/markers", self._keyed(self.markers), OUTPUT_QOS)

    @staticmethod
    def _stamp(msg) -> int:
        return stamp_to_ns(msg.header.stamp)

    def _on_segmentation(self, msg) -> None:
        self.segmentations.append((time.time_ns(), msg))

    def _keyed(self, store: dict):
        def callback(msg) -> None:
            header = msg.markers[-1].header if hasattr(msg, "markers") else msg.header
            store[stamp_to_ns(header.stamp)] = msg
        return callback

    def result_for(self, stamp_ns: int):
        """(receive_ns, segmentation) of the result whose newest cloud has this stamp, else None."""
        return next(((t, s) for t, s in self.segmentations if self._stamp(s) == stamp_ns), None)

    def latest(self):
        return self.segmentations[-1] if self.segmentations else None


def ground_truth_agreement(cloud_points: np.ndarray, scans) -> float:
    """Share of labeled-cloud points whose label equals the nearest scan point's true label."""
    from scipy.spatial import cKDTree
    xyz = np.stack([cloud_points["x"], cloud_points["y"], cloud_points["z"]], 1)
    reference = np.concatenate([s.xyz for s in scans])
    truth = np.concatenate([s.point_label for s in scans])
    _, index = cKDTree(reference).query(xyz)
    return float((cloud_points["label"] == truth[index]).mean())


def latencies_ms(collector: ResultCollector) -> list[float]:
    """Per result: wall-clock receive time minus the stamp of the newest cloud it used (= its header stamp)."""
    return [(t - collector._stamp(s)) / 1e6 for t, s in collector.segmentations]


def write_outputs(out: Path, collector: ResultCollector, final, scans, args, part_names) -> dict:
    """labeled_cloud.ply, result.json, segmentation.json, markers.json; returns the summary."""
    from partslip_core.io import write_ply
    from partslip_ros.pointcloud import read_structured, unpack_rgb
    out.mkdir(parents=True, exist_ok=True)
    received_ns, seg = final
    stamp = collector._stamp(seg)
    points = read_structured(collector.clouds[stamp])
    xyz = np.stack([points["x"], points["y"], points["z"]], 1)
    write_ply(out / "labeled_cloud.ply", xyz, unpack_rgb(points["rgb"]),
              extra={"label": points["label"], "instance": points["instance"], "score": points["score"]})
    seg_dict = msg_to_dict(seg)
    (out / "segmentation.json").write_text(json.dumps(seg_dict, indent=1))
    (out / "markers.json").write_text(json.dumps(msg_to_dict(collector.markers.get(stamp)), indent=1))
    lat = latencies_ms(collector)
    summary = {
        "category": args.category, "seed": args.seed, "frames": args.frames, "detector": seg.detector,
        "part_names": list(seg.part_names), "frame_id": seg.header.frame_id, "num_points": seg.num_points,
        "num_labeled_points": seg.num_labeled_points,
        "points_per_part": dict(zip(seg.part_names, [int(c) for c in seg.points_per_part])),
        "agreement_with_ground_truth": round(ground_truth_agreement(points, scans), 4),
        "instances": [{k: v for k, v in inst.items() if k != "point_indices"} for inst in seg_dict["instances"]],
        "stage_ms": {n: round(float(v), 1) for n, v in zip(seg.stage_names, seg.stage_ms)},
        "run_ms": round(float(seg.total_ms), 1),
        "latency_ms_publish_to_result": {"final": round((received_ns - stamp) / 1e6, 1),
                                         "all_runs": [round(v, 1) for v in lat],
                                         "median": round(float(np.median(lat)), 1)},
        "results_received": len(collector.segmentations),
        "input_points_per_frame": [int(s.num_points) for s in scans],
    }
    (out / "result.json").write_text(json.dumps(summary, indent=1))
    return summary


def print_summary(summary: dict, out: Path) -> None:
    print(f"\n=== partslip_ros demo: {summary['category']} (seed {summary['seed']}), {summary['frames']} scans "
          f"of {summary['input_points_per_frame']} points, detector {summary['detector']} ===")
    print(f"fused cloud in frame '{summary['frame_id']}': {summary['num_points']} points, "
          f"{summary['num_labeled_points']} labeled; per part: {summary['points_per_part']}")
    print(f"agreement with ground truth: {summary['agreement_with_ground_truth']:.1%}")
    for inst in summary["instances"]:
        size = inst["bbox_size"]
        print(f"  {inst['label_name']:>8} #{inst['instance_id']}: {inst['num_points']:5d} points, score "
              f"{inst['score']:.2f}, box {size['x']:.3f} x {size['y']:.3f} x {size['z']:.3f} m"
              + (f", grasp width {inst['grasp_width']:.3f} m" if inst["has_grasp_axis"] else ""))
    lat = summary["latency_ms_publish_to_result"]
    print(f"publish -> result latency: final {lat['final']:.0f} ms; all {summary['results_received']} runs "
          f"{lat['all_runs']} ms (median {lat['median']:.0f}); last run {summary['run_ms']:.0f} ms "
          f"(stages {summary['stage_ms']})")
    print(f"outputs: {out}/labeled_cloud.ply, result.json, segmentation.json, markers.json")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--category", default="chair",
                        help="synthetic object: bottle, cabinet, chair, kettle, lamp, mug, table")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--num-points", type=int, default=12000, help="points of the complete object")
    parser.add_argument("--frames", type=int, default=4, help="scans published (and fused)")
    parser.add_argument("--rate", type=float, default=1.0, help="scans per second")
    parser.add_argument("--detector", default="ground_truth",
                        help="ground_truth (demo) | glip | grounding_dino | owlv2")
    parser.add_argument("--weights", default="", help="detector weights path for a real detector")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--image-size", type=int, default=0, help="render size override (0 = config/segment.yaml)")
    parser.add_argument("--out", default="out/demo", help="output folder (relative to the current directory)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the final result")
    parser.add_argument("--dds-profile", default=None,
                        help="Fast DDS profile for both processes (default: config/fastdds_shm.xml, shared "
                             "memory for large clouds); '' = DDS defaults")
    return parser.parse_args(argv)


def wait_for_final(publisher, collector: ResultCollector, process, timeout: float):
    """The result for the last published scan; after a timeout (or if the node died) the latest result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if publisher.done and collector.result_for(publisher.published_stamps_ns[-1]) is not None:
            return collector.result_for(publisher.published_stamps_ns[-1])
        time.sleep(0.1)
    return collector.latest()


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from partslip_ros.dds_check import profile_env
    profile = params_file("fastdds_shm.xml") if args.dds_profile is None else args.dds_profile
    configured = profile_env(Path(profile) if profile else None)  # before rclpy starts:
    os.environ.clear()  # the profile applies to this process and to the node process it starts
    os.environ.update(configured)
    import rclpy
    from rclpy.parameter import Parameter

    from partslip_ros.process import NodeSpinner, set_parent_death_signal
    from partslip_ros.scan_publisher import ScanPublisher

    rclpy.init()
    topic, node_name = "partslip_demo/points", "partslip_node"
    publisher = ScanPublisher("partslip_demo_scans", parameter_overrides=[
        Parameter("category", value=args.category), Parameter("seed", value=args.seed),
        Parameter("num_points", value=args.num_points), Parameter("num_frames", value=args.frames),
        Parameter("rate_hz", value=args.rate), Parameter("topic", value=topic), Parameter("reliable", value=False),
        Parameter("wait_for_subscriber_s", value=120.0)])
    collector = ResultCollector(rclpy, f"/{node_name}")
    # The node gets SIGINT when the demo dies (Linux), so no node outlives it.
    process = subprocess.Popen(node_command(args, node_name, publisher.part_names, topic), cwd=REPO,
                               preexec_fn=functools.partial(set_parent_death_signal, signal.SIGINT))
    spinner = NodeSpinner([publisher, collector.node]).start()
    try:
        final = wait_for_final(publisher, collector, process, args.timeout)
        time.sleep(0.3)  # the cloud and markers of the final run follow the segmentation message closely
    finally:
        spinner.stop()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    if final is None:
        print(f"demo: no result within {args.timeout:.0f} s (node exit code {process.returncode}); "
              "see the node's log above", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    if final[1].num_input_clouds < args.frames:
        print(f"demo: note: the final result fused {final[1].num_input_clouds} of {args.frames} scans "
              "(the others were dropped or lost on the way)", file=sys.stderr)
    summary = write_outputs(Path(args.out), collector, final, publisher.scans, args, publisher.part_names)
    publisher.destroy_node()
    collector.node.destroy_node()
    rclpy.try_shutdown()
    print_summary(summary, Path(args.out))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
