"""partslip_ros: the ROS 2 node around partslip_core (PointCloud2 window in; labeled cloud, markers, parts out).

Modules: ``pointcloud`` (PointCloud2 <-> numpy), ``fusion`` (window, frames, fused object cloud),
``params`` (ROS parameters <-> typed settings), ``messages`` (result -> ROS messages), ``node``
(PartSlipNode and the ``partslip_node`` console script), ``scan_publisher`` (synthetic scans),
``demo`` (the end-to-end demo). No algorithm code lives here: that is ``partslip_core``.
"""

__version__ = "0.1.0"
