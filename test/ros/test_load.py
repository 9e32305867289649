"""Bounded load test (the CI form; ``bench/soak_node.py`` is the long one).

A publisher thread sends 100k-point clouds at 10 Hz, then 300k-point clouds at 20 Hz, over real DDS
(sensor-data QoS) to a node that runs after every cloud, far slower than the input. While loaded:
the clouds waiting in the node stay within its bounded queue (the excess is counted as dropped),
the process's memory stays bounded, and the node answers a parameter change and a trigger service
call in bounded time. Afterwards every received cloud is accounted for and no run failed.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from partslip_ros.scan_publisher import scan_to_cloud

from .conftest import wait_for

_names = itertools.count()
QUEUE_SIZE = 4
PHASES = ((100_000, 10.0, 5.0), (300_000, 20.0, 4.0))  # (points, rate Hz, seconds)


def rss_mb() -> float:
    """Resident memory of this process (node, publisher and test share it), MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024.0


@dataclass
class Publisher:
    """Publishes ``msg`` at ``rate_hz`` for ``seconds`` from its own thread (fresh stamp each time)."""

    node: object
    publisher: object
    sent: int = 0

    def run(self, msg: PointCloud2, rate_hz: float, seconds: float) -> None:
        period, start = 1.0 / rate_hz, time.monotonic()
        for i in range(int(seconds * rate_hz)):
            time.sleep(max(0.0, start + i * period - time.monotonic()))
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.publisher.publish(msg)
            self.sent += 1


def timed(call, timeout: float) -> tuple[float, object]:
    """(seconds until ``call()``'s future is done, its result); fails past ``timeout``."""
    started = time.monotonic()
    future = call()
    assert wait_for(future.done, timeout=timeout, interval=0.005), f"no answer within {timeout} s"
    return time.monotonic() - started, future.result()


@pytest.mark.slow
def test_under_load_the_queue_and_memory_stay_bounded_and_the_node_stays_responsive(verbose_node, ros):
    from partslip_core.synthetic import make_object
    topic = f"load_{next(_names)}"
    params = {"input_qos": "sensor_data", "queue_size": QUEUE_SIZE, "window.size": 2,
              "pipeline.render.views": [10.0, 0.0, 30.0, 180.0], "fusion.max_points": 20_000}
    node, outputs, source = verbose_node(topic, params)
    clouds = [scan_to_cloud(Header(frame_id="world"), make_object("mug", n, seed=1), True) for n, _, _ in PHASES]
    pub = Publisher(source, source.create_publisher(PointCloud2, topic, qos_profile_sensor_data))
    assert wait_for(lambda: pub.publisher.get_subscription_count() > 0, timeout=10)
    time.sleep(0.5)  # best effort: let the node's reader match ours before sending

    def load() -> None:
        for msg, (_, rate, seconds) in zip(clouds, PHASES):
            pub.run(msg, rate, seconds)

    thread = threading.Thread(target=load, name="load_publisher")
    thread.start()
    assert wait_for(lambda: node.stats_snapshot().runs_ok >= 1, timeout=20), node.stats_snapshot()
    warm_rss, samples, waiting = rss_mb(), [], []
    params_client = AsyncParameterClient(source, node.get_fully_qualified_name())
    trigger = source.create_client(Trigger, f"{node.get_fully_qualified_name()}/trigger")
    assert params_client.wait_for_services(timeout_sec=10) and trigger.wait_for_service(timeout_sec=10)
    answers = {}
    while thread.is_alive():
        s = node.stats_snapshot()
        waiting.append(s.received - s.accepted - s.dropped_queue_full - sum(s.rejected.values()))
        samples.append(rss_mb())
        if "parameter" not in answers and pub.sent > 15:
            answers["parameter"] = timed(lambda: params_client.set_parameters(
                [Parameter("pipeline.detector.score_threshold", value=0.4)]), timeout=5)
        if "trigger" not in answers and pub.sent > 60:  # during the 300k phase
            answers["trigger"] = timed(lambda: trigger.call_async(Trigger.Request()), timeout=30)
        time.sleep(0.1)
    thread.join()
    assert wait_for(lambda: not node.busy.is_set(), timeout=30)
    time.sleep(1.0)
    s = node.stats_snapshot()
    (parameter_s, parameter), (trigger_s, triggered) = answers["parameter"], answers["trigger"]
    print(f"\nload: sent {pub.sent}, received {s.received}, accepted {s.accepted}, dropped (queue full) "
          f"{s.dropped_queue_full}, runs {s.runs_ok}, failed {s.runs_failed}; waiting max {max(waiting)}; "
          f"RSS warm {warm_rss:.0f} MiB, peak {max(samples):.0f} MiB; parameter answered in "
          f"{parameter_s * 1e3:.0f} ms, trigger in {trigger_s * 1e3:.0f} ms; "
          f"last run {s.last_run_ms:.0f} ms")
    # Bounded queue: what waits in the node is the queue plus the batch being ingested; the rest is dropped.
    assert max(waiting) <= 2 * QUEUE_SIZE
    assert s.dropped_queue_full > 0 and s.received <= pub.sent
    assert s.received == s.accepted + s.dropped_queue_full and s.rejected == {}
    assert s.runs_failed == {} and s.runs_ok >= 3 and s.last_num_points > 0
    # Bounded memory: 4 queued + 4 ingesting 7.2 MB clouds, a 2-cloud window and one run fit well in 400 MiB.
    assert max(samples) - warm_rss < 400, f"RSS grew from {warm_rss:.0f} to {max(samples):.0f} MiB"
    # Responsive: parameters from the executor at once; a trigger waits for at most the run in progress + its own.
    assert parameter.results[0].successful and node.settings.pipeline.detector.score_threshold == 0.4
    assert triggered.success and "instances" in triggered.message, triggered.message
    assert parameter_s < 2.0 and trigger_s < 20.0
