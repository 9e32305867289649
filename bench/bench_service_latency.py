"""Service response times of partslip_node while runs are in flight, and publish -> result latency of 2 MB clouds,
for the node's executor design and the single-executor alternatives (issue 10: "one executor with callback groups
instead of the companion node if it keeps services responsive during a run (< 50 ms)").

    python bench/bench_service_latency.py                                  # the three designs, 8 runs each
    python bench/bench_service_latency.py --designs companion --runs 4 --json out/service_latency.json

Designs (this script starts the node as its own process: ``--serve DESIGN`` + the node's command line):
  companion     the node as shipped (``partslip_ros.node.main``): input, timers, lifecycle and parameter services
                on a SingleThreadedExecutor; ``~/trigger`` and ``~/segment`` on a companion node with its own
                SingleThreadedExecutor thread (a call waits there for its run).
  mt_exclusive  one MultiThreadedExecutor (default thread count: the cores) for everything; ``~/trigger`` and
                ``~/segment`` on the node itself, in their own MutuallyExclusiveCallbackGroup.
  mt_reentrant  the same with a ReentrantCallbackGroup for those two services.
In every design the node's worker thread runs segmentation outside the executors.

Phases per design, one 2 MB cloud (x, y, z, rgb, gt_label, gt_instance; ~87k points) at a time, each published
after the previous result, so nothing queues:
  runs      while a cloud's run is in flight this process calls ``~/get_state`` (lifecycle) and
            ``~/get_parameters`` in turn, one call at a time, every ``--interval`` s; a sample counts when its answer
            came before the run's result. Also publish -> ``~/segmentation`` latency and its part outside the node's
            reported total (transport, decoding, queueing: where the environment notes saw MultiThreadedExecutor
            spikes of up to 2 s on 2 MB clouds).
  triggers  two ``~/trigger`` calls at once (each waits in the node for a run), and get_state / get_parameters
            meanwhile (samples answered while a trigger was still pending).
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
sys.path.insert(0, str(REPO))  # run as `python bench/bench_service_latency.py`

from bench.common import Row, environment, format_table, write_json  # noqa: E402
from bench.node_process import (ground_truth_overrides, node_command, object_cloud, private_ros_domain,  # noqa: E402
                                start_node, stop_node, wait_for_subscriber)

DESIGNS = ("companion", "mt_exclusive", "mt_reentrant")
TARGET_MS = 50.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"comma list of {', '.join(DESIGNS)}")
    parser.add_argument("--mb", type=float, default=2.0, help="cloud size in MB (24 bytes a point)")
    parser.add_argument("--category", default="chair")
    parser.add_argument("--runs", type=int, default=8, help="timed clouds per design (after one warm-up)")
    parser.add_argument("--views", type=int, default=6, help="how many of the 10 reference views to render")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between service calls")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds of node CPU measured with no input")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one result")
    parser.add_argument("--params-file", default=str(REPO / "config" / "segment.yaml"))
    parser.add_argument("--log-dir", default=str(REPO / "out" / "service_latency"))
    parser.add_argument("--json", default="")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ the node side

class _ServicesOnTheNode:
    """Stands in for the companion node: the same ``~/trigger``/``~/segment`` callbacks go on the node itself."""

    def __init__(self, node, group) -> None:
        self._node, self._group = node, group

    def create_service(self, srv_type, name: str, callback):
        return self._node.create_service(srv_type, name, callback, callback_group=self._group)

    def destroy_node(self) -> None:  # the node itself is destroyed by its shutdown
        pass


def serve(design: str, node_argv: list[str]) -> int:
    """The node process of one design (SIGINT/SIGTERM: clean shutdown, exit 0)."""
    import partslip_ros.node as node_module
    if design == "companion":
        return node_module.main(node_argv)
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from partslip_ros.process import StopRequest, ros_argv
    group = ReentrantCallbackGroup() if design == "mt_reentrant" else MutuallyExclusiveCallbackGroup()
    companion = node_module.create_service_node

    def services_on_the_node(node):
        create_node = rclpy.create_node
        rclpy.create_node = lambda *args, **kwargs: _ServicesOnTheNode(node, group)
        try:
            return companion(node)
        finally:
            rclpy.create_node = create_node

    node_module.create_service_node = services_on_the_node
    stop = StopRequest().install()
    rclpy.init(args=ros_argv(node_argv), signal_handler_options=SignalHandlerOptions.NO)
    node = node_module.PartSlipNode()
    executor = MultiThreadedExecutor(context=node.context)
    executor.add_node(node)
    threads = getattr(getattr(executor, "_executor", None), "_max_workers", "?")  # the pool rclpy sized by the cores
    node.get_logger().info(f"design {design}: one MultiThreadedExecutor, {threads} threads")
    try:
        while node.context.ok() and not stop.event.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.shutdown()
        rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------------------------ the driver side

class Driver:
    """This process's node: publishes clouds, receives results, calls the node's services and times them."""

    def __init__(self, rclpy, name: str, topic: str) -> None:
        from lifecycle_msgs.srv import GetState
        from partslip_ros.msg import PartSegmentation
        from rcl_interfaces.srv import GetParameters
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_srvs.srv import Trigger
        from partslip_ros.node import OUTPUT_QOS, NodeSpinner
        self.node = rclpy.create_node(f"service_latency_driver_{os.getpid()}_{name}")
        self.results: dict[int, tuple[int, float]] = {}  # stamp ns -> (receive ns, node total ms)
        self.condition = threading.Condition()
        self.node.create_subscription(PartSegmentation, f"/{name}/segmentation", self._result, OUTPUT_QOS)
        self.publisher = self.node.create_publisher(PointCloud2, topic,
                                                    QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.get_state = (self.node.create_client(GetState, f"/{name}/get_state"), GetState.Request())
        self.get_parameters = (self.node.create_client(GetParameters, f"/{name}/get_parameters"),
                               GetParameters.Request(names=["parts", "trigger.mode"]))
        self.trigger = (self.node.create_client(Trigger, f"/{name}/trigger"), Trigger.Request())
        self.spinner = NodeSpinner([self.node]).start()

    def _result(self, seg) -> None:
        received = time.time_ns()
        with self.condition:
            self.results[seg.header.stamp.sec * 1_000_000_000 + seg.header.stamp.nanosec] = (received,
                                                                                            float(seg.total_ms))
            self.condition.notify_all()

    def ready(self, timeout: float = 60.0) -> bool:
        clients = (self.get_state[0], self.get_parameters[0], self.trigger[0])
        return all(client.wait_for_service(timeout_sec=timeout) for client in clients)

    def call(self, service, timeout: float = 30.0):
        """(milliseconds to the answer, answer time ns, response); the answer is awaited in this thread."""
        client, request = service
        done = threading.Event()
        started = time.perf_counter()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        done.wait(timeout)
        return (time.perf_counter() - started) * 1e3, time.time_ns(), future.result() if future.done() else None

    def close(self) -> None:
        self.spinner.stop()
        self.node.destroy_node()


def runs_phase(args, driver: Driver, msg) -> dict[str, list[float]]:
    """One cloud at a time; service calls while its run is in flight. Returns samples by series name."""
    samples: dict[str, list[float]] = {"get_state": [], "get_parameters": [], "publish_to_result": [],
                                       "outside_node_total": [], "missing": []}
    services = (("get_state", driver.get_state), ("get_parameters", driver.get_parameters))
    for index in range(1 + args.runs):
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        driver.publisher.publish(msg)
        deadline, turn = time.monotonic() + args.timeout, 0
        while stamp not in driver.results and time.monotonic() < deadline:
            name, service = services[turn % 2]
            turn += 1
            ms, answered, response = driver.call(service)
            if response is None:
                samples["missing"].append(1.0)
            elif index > 0 and stamp not in driver.results:  # answered while the run was in flight
                samples[name].append(ms)
            time.sleep(args.interval)
        if stamp not in driver.results:
            print(f"  cloud {index}: no result within {args.timeout:.0f} s", flush=True)
            samples["missing"].append(1.0)
            continue
        received, total = driver.results[stamp]
        if index == 0:
            continue
        latency = (received - stamp) / 1e6
        samples["publish_to_result"].append(latency)
        samples["outside_node_total"].append(latency - total)
        print(f"  cloud {index}: publish -> result {latency:.0f} ms (node total {total:.0f} ms); "
              f"{turn} service calls during it", flush=True)
    return samples


def triggers_phase(args, driver: Driver) -> dict[str, list[float]]:
    """Two ~/trigger calls at once (each waits for its run); get_state / get_parameters while they are pending."""
    samples: dict[str, list[float]] = {"get_state_during_triggers": [], "get_parameters_during_triggers": [],
                                       "trigger": [], "trigger_failed": []}
    for _ in range(max(1, args.runs // 4)):
        pending: list[threading.Thread] = []
        for _ in range(2):
            def one_trigger() -> None:
                ms, _, response = driver.call(driver.trigger, timeout=args.timeout)
                samples["trigger" if response is not None and response.success else "trigger_failed"].append(ms)
            thread = threading.Thread(target=one_trigger)
            thread.start()
            pending.append(thread)
        time.sleep(0.2)  # both requests are in the node
        turn = 0
        while any(thread.is_alive() for thread in pending):
            name = ("get_state", "get_parameters")[turn % 2]
            turn += 1
            ms, _, response = driver.call(getattr(driver, name))
            if response is not None and any(thread.is_alive() for thread in pending):
                samples[f"{name}_during_triggers"].append(ms)
            time.sleep(args.interval)
        for thread in pending:
            thread.join()
    return samples


def measure_design(args, design: str, parts, msg, points: int) -> tuple[list[Row], dict]:
    import rclpy
    name, topic = f"svc_latency_{design}_{os.getpid()}", f"svc_latency_points_{design}_{os.getpid()}"
    overrides = {"input_topic": topic, "input_qos": "reliable", **ground_truth_overrides(parts, args.views,
                                                                                         args.image_size),
                 "queue_size": 2, "window.size": 1, "trigger.mode": "continuous", "trigger.every_n_frames": 1,
                 "trigger.max_rate_hz": 0.0, "service_timeout_s": args.timeout, "max_input_points": 10_000_000,
                 "window.max_age_s": 3600.0}  # a trigger late in the bench still finds the last cloud
    command = node_command(args.params_file, name, overrides)
    command[1:3] = [str(Path(__file__).resolve()), "--serve", design]  # this script as the node's entry point
    log = Path(args.log_dir) / f"{design}.log"
    process = start_node(command, log)
    driver = Driver(rclpy, name, topic)
    try:
        if not wait_for_subscriber(driver.publisher, process, log) or not driver.ready():
            return [], {"error": f"the node did not come up; see {log}"}
        time.sleep(1.0)
        print(f"design {design}: node {name} (pid {process.pid}, log {log})", flush=True)
        idle_cpu = cpu_percent(process.pid, args.idle_s)
        samples = runs_phase(args, driver, msg)
        samples.update(triggers_phase(args, driver))
        alive = process.poll() is None
    finally:
        stop_node(process)
        driver.close()
    rows = []
    notes = {"get_state": "lifecycle srv, run in flight", "get_parameters": "param srv, run in flight",
             "get_state_during_triggers": "while 2 ~/trigger wait", "get_parameters_during_triggers":
             "while 2 ~/trigger wait", "publish_to_result": f"{args.mb:g} MB cloud", "outside_node_total":
             "publish->result minus node total", "trigger": "waits for a run"}
    for series, note in notes.items():
        if samples.get(series):
            row = Row.from_samples(f"{design}: {series}", points, "cpu", samples[series], note)
            if series.startswith("get_"):
                row.note += f"; max {max(samples[series]):.0f} ms, {sum(v >= TARGET_MS for v in samples[series])}" \
                            f"/{len(samples[series])} >= {TARGET_MS:.0f} ms"
            rows.append(row)
    rows.append(Row(f"{design}: node CPU while idle", points, "cpu", text=f"{idle_cpu:.1f} %",
                    note=f"{args.idle_s:.0f} s, no input (an executor that busy-waits shows here)"))
    failures = {"missing": len(samples["missing"]), "trigger_failed": len(samples["trigger_failed"]), "alive": alive}
    return rows, failures


def cpu_percent(pid: int, seconds: float) -> float:
    """CPU time of process ``pid`` over ``seconds`` of wall time, in percent of one core (Linux /proc)."""
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    start = ticks()
    time.sleep(seconds)
    return 100.0 * (ticks() - start) / os.sysconf("SC_CLK_TCK") / seconds


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(argv[1], [sys.argv[0]] + argv[2:])
    args = parse_args(argv)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = set(designs) - set(DESIGNS)
    if unknown:
        raise SystemExit(f"--designs: unknown {sorted(unknown)}; choose from {', '.join(DESIGNS)}")
    private_ros_domain()
    import rclpy
    points = int(args.mb * 1_000_000 / 24)
    parts, msg = object_cloud(args.category, points)
    env = environment()
    print(f"bench_service_latency: {args.category}, {points} points ({len(msg.data) / 1e6:.2f} MB), {args.views} views "
          f"@ {args.image_size} px, 1 warm-up + {args.runs} runs per design; environment: {env}", flush=True)
    rclpy.init()
    rows, failures = [], {}
    try:
        for design in designs:
            design_rows, failures[design] = measure_design(args, design, parts, msg, points)
            rows += design_rows
            print(f"  {design}: {failures[design]}", flush=True)
    finally:
        rclpy.try_shutdown()
    print()
    print(format_table(rows))
    env["load_average_after"] = environment()["load_average_1_5_15"]
    print(f"failures: {failures}; load average after: {env['load_average_after']}")
    write_json(args.json, {"args": vars(args), "environment": env, "rows": rows, "failures": failures})
    ok = all(f.get("alive") and not f.get("missing") for f in failures.values())
    return 0 if ok and rows else 1


if __name__ == "__main__":
    sys.exit(main())
