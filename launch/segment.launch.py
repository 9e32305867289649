"""Launch partslip_node (and optionally RViz) with config/segment.yaml.

    ros2 launch partslip_ros segment.launch.py input_topic:=/camera/depth/color/points \
        parts:="[handle, lid, body]" use_rviz:=true
    # parts also takes "handle, lid, body"; parts:="[]" leaves it unset (runs skipped until it is set)
    ros2 launch partslip_ros segment.launch.py namespace:=robot1 use_sim_time:=true log_level:=debug \
        params_file:=/path/to/my_segment.yaml

Arguments: ``namespace`` (the node becomes /<namespace>/partslip_node and its relative input ``points``
becomes /<namespace>/points), ``use_sim_time``, ``params_file``, ``log_level``
(debug|info|warn|error|fatal), ``input_topic``, ``parts``, ``use_rviz``, ``autostart``. Empty ``input_topic``,
``parts``, ``use_sim_time``, ``autostart`` leave the params file's values. The input is the relative topic
``points`` (parameter ``input_topic``), so an including launch file can also remap it the launch_ros way:
``GroupAction([SetRemap(src="points", dst="/camera/points"), IncludeLaunchDescription(...)])``.

Without launch_ros (pip installs) start the same node with the same YAML:
    partslip_node --params-file config/segment.yaml --ros-args -r points:=/camera/points \
        -r __ns:=/robot1 -p use_sim_time:=true --log-level debug

Shutdown: Ctrl-C stops the node cleanly (exit 0); the node also exits if launch itself dies
(PARTSLIP_EXIT_WITH_PARENT), so it is never left orphaned. use_rviz:=true without rviz2 installed
logs why and starts the node alone. Argument values are checked (partslip_ros.launch_args) before
anything starts.

Lifecycle: partslip_node is a managed (lifecycle) node, started with launch_ros's ``LifecycleNode`` action (launch
logs its state transitions, and an including launch file can send it ``ChangeState`` events). It configures and
activates itself (node parameter ``autostart``, default true): the same with and without launch (console script)
and on every distribution (Jazzy's LifecycleNode action has no ``autostart`` of its own; Kilted's is left off, so
no transition is ever requested twice). ``autostart:=false`` leaves it unconfigured for a lifecycle manager, for
``ros2 lifecycle set /partslip_node configure`` / ``activate``, or for ChangeState events from an including file:
``EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_node_name("/partslip_node"),
transition_id=Transition.TRANSITION_CONFIGURE))``; see partslip_ros/README.md, "Lifecycle".
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from partslip_ros.launch_args import (EXIT_WITH_PARENT_ENV, NODE_NAME, log_level_arguments, namespace_argument,
                                      node_overrides, package_available, rviz_remappings, topic_argument)


def _argument(context, name: str) -> str:
    """A launch argument's value ('' when it is not declared, e.g. a test context)."""
    return LaunchConfiguration(name, default="").perform(context)


def _overrides(context):
    """Launch arguments that override the YAML; empty ones leave the file's values alone."""
    return node_overrides(_argument(context, "input_topic"), _argument(context, "parts"),
                          _argument(context, "use_sim_time"), _argument(context, "autostart"))


def _node(context, *args, **kwargs):
    return [LifecycleNode(
        package="partslip_ros",
        executable="partslip_node",
        name=NODE_NAME,
        namespace=namespace_argument(_argument(context, "namespace")),
        output="screen",
        emulate_tty=True,
        parameters=[_argument(context, "params_file"), _overrides(context)],
        arguments=log_level_arguments(_argument(context, "log_level")),
        additional_env={EXIT_WITH_PARENT_ENV: "1"},
    )]


def _rviz(context, *args, **kwargs):
    if _argument(context, "use_rviz").lower() not in ("true", "1", "yes"):
        return []
    if not package_available("rviz2"):
        return [LogInfo(msg="use_rviz:=true but rviz2 is not installed: starting partslip_node without RViz")]
    share = get_package_share_directory("partslip_ros")
    namespace = namespace_argument(_argument(context, "namespace"))
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="partslip_rviz",
        arguments=["-d", os.path.join(share, "config", "partslip.rviz")],
        remappings=rviz_remappings(namespace, topic_argument("input_topic", _argument(context, "input_topic"))),
        parameters=[{k: v for k, v in _overrides(context).items() if k == "use_sim_time"}],
        output="log",
    )]


def generate_launch_description():
    share = get_package_share_directory("partslip_ros")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node (and of its relative input 'points')."),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: use /clock (bags, simulators); empty = from params_file."),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "segment.yaml"),
                              description="Node parameters (YAML, ros__parameters)."),
        DeclareLaunchArgument("log_level", default_value="",
                              description="Node log level: debug, info, warn, error or fatal; empty = info."),
        DeclareLaunchArgument("input_topic", default_value="",
                              description="PointCloud2 topic; empty = input_topic from params_file "
                                          "(default: the relative, remappable 'points')."),
        DeclareLaunchArgument("parts", default_value="",
                              description="Part names: \"[handle, lid]\" or \"handle, lid\"; \"[]\" = unset; "
                                          "empty = from params_file."),
        DeclareLaunchArgument("use_rviz", default_value="false",
                              description="Also start RViz with config/partslip.rviz."),
        DeclareLaunchArgument("autostart", default_value="",
                              description="true: the node configures and activates itself; false: it waits, "
                                          "unconfigured, for a lifecycle manager; empty = from params_file "
                                          "(default true)."),
        OpaqueFunction(function=_node),
        OpaqueFunction(function=_rviz),
    ])
