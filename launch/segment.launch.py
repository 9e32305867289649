"""Launch partslip_node (and optionally RViz) with config/segment.yaml.

    ros2 launch partslip_ros segment.launch.py input_topic:=/camera/depth/color/points \
        parts:="[handle, lid, body]" use_rviz:=true
    # parts also takes "handle, lid, body"; parts:="[]" leaves it unset (runs skipped until it is set)

Without launch_ros (pip installs) start the same node with the same YAML:
    partslip_node --params-file config/segment.yaml --ros-args -p input_topic:=/camera/points

Shutdown: Ctrl-C stops the node cleanly (exit 0); the node also exits if launch itself dies
(PARTSLIP_EXIT_WITH_PARENT), so it is never left orphaned. use_rviz:=true without rviz2 installed
logs why and starts the node alone.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from partslip_ros.launch_args import EXIT_WITH_PARENT_ENV, package_available, parts_parameter


def _overrides(context):
    """Launch arguments that override the YAML; empty ones leave the file's values alone."""
    overrides = {}
    topic = LaunchConfiguration("input_topic").perform(context)
    if topic:
        overrides["input_topic"] = topic
    parts = parts_parameter(LaunchConfiguration("parts").perform(context))
    if parts is not None:
        overrides["parts"] = parts
    return overrides


def _node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    return [Node(
        package="partslip_ros",
        executable="partslip_node",
        name="partslip_node",
        output="screen",
        emulate_tty=True,
        parameters=[params_file, _overrides(context)],
        additional_env={EXIT_WITH_PARENT_ENV: "1"},
    )]


def _rviz(context, *args, **kwargs):
    if LaunchConfiguration("use_rviz").perform(context).lower() not in ("true", "1", "yes"):
        return []
    if not package_available("rviz2"):
        return [LogInfo(msg="use_rviz:=true but rviz2 is not installed: starting partslip_node without RViz")]
    share = get_package_share_directory("partslip_ros")
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="partslip_rviz",
        arguments=["-d", os.path.join(share, "config", "partslip.rviz")],
        output="log",
    )]


def generate_launch_description():
    share = get_package_share_directory("partslip_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "segment.yaml"),
                              description="Node parameters (YAML, ros__parameters)."),
        DeclareLaunchArgument("input_topic", default_value="",
                              description="PointCloud2 topic; empty = input_topic from params_file."),
        DeclareLaunchArgument("parts", default_value="",
                              description="Part names: \"[handle, lid]\" or \"handle, lid\"; \"[]\" = unset; "
                                          "empty = from params_file."),
        DeclareLaunchArgument("use_rviz", default_value="false",
                              description="Also start RViz with config/partslip.rviz."),
        OpaqueFunction(function=_node),
        OpaqueFunction(function=_rviz),
    ])
