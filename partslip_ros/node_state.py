"""The node's bookkeeping as plain data: counters, run results and requests, the diagnostics status, and the
two services (thin adapters onto ``PartSlipNode.request_run``). No threads or algorithm here."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from sensor_msgs.msg import PointCloud2

from partslip_ros.params import SettingsError, parse_parts


@dataclass
class NodeStats:
    """Counters for diagnostics and tests (read them with ``PartSlipNode.stats_snapshot``)."""

    received: int = 0
    accepted: int = 0
    dropped_queue_full: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    runs_ok: int = 0
    runs_failed: dict[str, int] = field(default_factory=dict)
    unlabelled: dict[str, int] = field(default_factory=dict)  # runs mostly unlabelled, per diagnosis reason
    last_run_ms: float = 0.0
    last_latency_ms: float = 0.0
    last_num_points: int = 0
    last_num_instances: int = 0
    window_resets: int = 0
    dropped_inactive: int = 0  # clouds that arrived or were queued while the node was not active (lifecycle)
    debug_failures: int = 0  # runs whose ~/debug/* outputs failed (the results were published)

    def copy(self) -> "NodeStats":
        return dataclasses.replace(self, rejected=dict(self.rejected), runs_failed=dict(self.runs_failed),
                                   unlabelled=dict(self.unlabelled))


class StatsBook:
    """``NodeStats`` behind a lock: the executor thread (received, queue drops) and the worker write them."""

    def __init__(self) -> None:
        self._stats = NodeStats()
        self._lock = threading.Lock()

    def add(self, **increments: int) -> None:
        """Add to integer counters, e.g. ``add(received=1, dropped_queue_full=1)``."""
        with self._lock:
            for name, value in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + value)

    def count(self, table: str, reason: str) -> int:
        """One more in ``rejected``, ``runs_failed`` or ``unlabelled`` under ``reason``; returns the new count."""
        with self._lock:
            counts = getattr(self._stats, table)
            counts[reason] = counts.get(reason, 0) + 1
            return counts[reason]

    def set(self, **values: Any) -> None:
        """Set fields (the last run's figures)."""
        with self._lock:
            for name, value in values.items():
                setattr(self._stats, name, value)

    def snapshot(self) -> NodeStats:
        with self._lock:
            return self._stats.copy()


@dataclass
class RunOutput:
    """What one run produced (messages already published) or why it failed."""

    ok: bool
    message: str
    segmentation: Any = None
    cloud: Optional[PointCloud2] = None


@dataclass
class RunRequest:
    """An on-demand run asked for by a service; the worker sets ``output`` and ``done``."""

    parts: Optional[tuple[str, ...]]
    done: threading.Event = field(default_factory=threading.Event)
    output: Optional[RunOutput] = None
    cancelled: bool = False


def diagnostic_status(name: str, hardware_id: str, stats: NodeStats, extra: dict[str, Any]):
    """diagnostic_msgs/DiagnosticStatus: every counter, ``extra`` (window size, failures, isolation) as values.
    Queue overflow is designed behaviour (input faster than inference): counted, not a warning level."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    s = stats
    values = {"received": s.received, "accepted": s.accepted, "dropped_queue_full": s.dropped_queue_full,
              "runs_ok": s.runs_ok, "last_run_ms": round(s.last_run_ms, 1),
              "last_latency_ms": round(s.last_latency_ms, 1), "last_num_points": s.last_num_points,
              "last_num_instances": s.last_num_instances, "window_resets": s.window_resets}
    if s.debug_failures:
        values["debug_failures"] = s.debug_failures
    if s.dropped_inactive:
        values["dropped_inactive"] = s.dropped_inactive
    values.update({k: v for k, v in extra.items() if v not in ("", None)})
    values.update({f"rejected_{k}": v for k, v in s.rejected.items()})
    values.update({f"run_failed_{k}": v for k, v in s.runs_failed.items()})
    values.update({f"unlabelled_{k}": v for k, v in s.unlabelled.items()})
    level = DiagnosticStatus.WARN if (s.rejected or s.runs_failed or s.unlabelled) else DiagnosticStatus.OK
    return DiagnosticStatus(level=level, name=name, hardware_id=hardware_id,
                            message=f"{s.runs_ok} runs, {s.accepted}/{s.received} clouds accepted",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def create_service_node(node):
    """``~/trigger`` and ``~/segment`` on a companion node (its own executor: a call may wait for a run)."""
    import rclpy
    from partslip_ros.srv import SegmentNow
    from std_srvs.srv import Trigger

    def on_trigger(request, response):
        output = node.request_run()
        response.success, response.message = output.ok, output.message
        return response

    def on_segment_now(request, response):
        try:
            parts = parse_parts(list(request.parts))
        except SettingsError as error:
            response.success, response.message = False, str(error)
            return response
        output = node.request_run(parts or None, float(request.timeout_s))
        response.success, response.message = output.ok, output.message
        if output.ok:
            response.segmentation, response.cloud = output.segmentation, output.cloud
        return response

    base = node.get_fully_qualified_name()
    # No global arguments: a command-line "__node:=name" remap must not rename this node too.
    services = rclpy.create_node(f"{node.get_name()}_services", namespace=node.get_namespace(), context=node.context,
                                 use_global_arguments=False)
    services.create_service(Trigger, f"{base}/trigger", on_trigger)
    services.create_service(SegmentNow, f"{base}/segment", on_segment_now)
    return services
