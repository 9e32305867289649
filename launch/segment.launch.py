"""Launch partslip_node (and optionally RViz) with config/segment.yaml.

    ros2 launch partslip_ros segment.launch.py input_topic:=/camera/depth/color/points \
        parts:="[handle, lid, body]" use_rviz:=true

Without launch_ros (pip installs) start the same node with the same YAML:
    partslip_node --params-file config/segment.yaml --ros-args -p input_topic:=/camera/points
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _overrides(context):
    """Launch arguments that override the YAML; empty ones leave the file's values alone."""
    overrides = {}
    topic = LaunchConfiguration("input_topic").perform(context)
    if topic:
        overrides["input_topic"] = topic
    parts = LaunchConfiguration("parts").perform(context).strip()
    if parts:
        value = yaml.safe_load(parts)  # "[handle, lid]" or "handle"
        overrides["parts"] = [str(p) for p in (value if isinstance(value, list) else [value])]
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
    )]


def generate_launch_description():
    share = get_package_share_directory("partslip_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "segment.yaml"),
                              description="Node parameters (YAML, ros__parameters)."),
        DeclareLaunchArgument("input_topic", default_value="",
                              description="PointCloud2 topic; empty = input_topic from params_file."),
        DeclareLaunchArgument("parts", default_value="",
                              description="Part names as a YAML list, e.g. \"[handle, lid]\"; empty = from params_file."),
        DeclareLaunchArgument("use_rviz", default_value="false", description="Also start RViz with config/partslip.rviz."),
        OpaqueFunction(function=_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="partslip_rviz",
            arguments=["-d", os.path.join(share, "config", "partslip.rviz")],
            condition=IfCondition(LaunchConfiguration("use_rviz")),
            output="log",
        ),
    ])
