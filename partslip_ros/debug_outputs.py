"""The node's debug topics (parameter ``debug``, off by default, settable at runtime).

``~/debug/views``: sensor_msgs/Image (rgb8) mosaic of the rendered views with the detector's boxes, masks and
part names (``partslip_core.debug.views_mosaic``). Drawing it costs ~40 ms (10 views of 800 px in 320 px
tiles, 2-core VM), so it is built only while the topic has a subscriber. ``~/debug/superpoints``: PointCloud2 of the fused cloud (the run's frame) with one
colour per superpoint and the superpoint id. The publishers exist only while ``debug`` is true: with it
off, the node advertises nothing extra and ``segment`` keeps no views.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2

from partslip_ros import messages

VIEWS_TOPIC = "~/debug/views"
SUPERPOINTS_TOPIC = "~/debug/superpoints"
TILE_SIZE = 320  # pixels per view tile of the mosaic


class DebugPublishers:
    """Creates/destroys the two debug publishers as ``debug`` changes (executor thread) and publishes a run's
    debug outputs (worker thread); one lock keeps a publisher from being destroyed while it publishes."""

    def __init__(self, node: Node, qos: Any, enabled: bool) -> None:
        self._node = node
        self._qos = qos
        self._lock = threading.Lock()
        self._views = None
        self._superpoints = None
        self.set_enabled(enabled)

    @property
    def enabled(self) -> bool:
        return self._views is not None

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            if enabled and self._views is None:
                self._views = self._create(Image, VIEWS_TOPIC)
                self._superpoints = self._create(PointCloud2, SUPERPOINTS_TOPIC)
            elif not enabled and self._views is not None:
                destroy = getattr(self._node, "destroy_lifecycle_publisher", self._node.destroy_publisher)
                destroy(self._views)
                destroy(self._superpoints)
                self._views = self._superpoints = None

    def _create(self, msg_type, topic: str):
        """A lifecycle publisher on a lifecycle node (silent unless it is active; one made while the node is
        active starts enabled), else a plain one."""
        create = getattr(self._node, "create_lifecycle_publisher", None)
        if create is None:
            return self._node.create_publisher(msg_type, topic, self._qos)
        publisher = create(msg_type, topic, self._qos)
        if getattr(self._node, "lifecycle_state", "") == "active":
            publisher.on_activate(None)
        return publisher

    def publish(self, header, xyz: np.ndarray, result) -> None:
        """Publish what ``result`` carries (``segment(..., keep_views=True)`` for the mosaic); no-op when off."""
        with self._lock:
            if self._views is None:
                return
            if result.point_superpoint is not None:
                self._superpoints.publish(messages.superpoint_cloud(header, xyz, result.point_superpoint))
            if result.views is not None and self._views.get_subscription_count() > 0:
                from partslip_core.debug import views_mosaic
                mosaic = views_mosaic(result.views, result.detections, result.part_names, tile_size=TILE_SIZE,
                                      kept=result.kept_boxes)
                self._views.publish(messages.rgb8_image(header, mosaic))
