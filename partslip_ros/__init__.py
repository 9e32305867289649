"""partslip_ros: the ROS 2 node around partslip_core (PointCloud2 window in; labeled cloud, markers, parts out).

Modules: ``pointcloud`` (PointCloud2 <-> numpy), ``fusion`` (frames, fused object cloud), ``window`` (the
input window and the stamp rules), ``static_transform`` (the sensor_to_fixed parameter), ``node_parameters``
(the node's own parameters, in the core's schema), ``params`` and ``param_checks`` (ROS parameters <-> typed
settings: declarations, descriptors, checks when set), ``messages`` (result -> ROS messages),
``node`` (PartSlipNode, wiring only, and the ``partslip_node`` console script) with ``intake`` (decode,
stamp-check and window a cloud), ``runner`` (one run: fuse, segment, publish, failure reasons), ``detectors``
(built once, failures remembered), ``node_state`` (counters, diagnostics, services), ``log_policy``,
``process`` (signals, executors, clean shutdown); ``launch_args`` (launch-file argument parsing),
``dds_check`` (large-cloud delivery check), ``scan_publisher`` (synthetic scans), ``demo`` (the end-to-end
demo). No algorithm code lives here: that is ``partslip_core``.
"""

__version__ = "0.1.0"
