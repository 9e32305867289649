"""pip / colcon install of the core library, the offline CLI and the ROS node's Python code."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "partslip_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 open-vocabulary part segmentation of point clouds (PartSLIP pipeline)",
    license="MIT",
    packages=find_packages(include=["partslip_core", "partslip_core.*", "partslip_ros", "partslip_ros.*"]),
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
        ("share/" + PACKAGE + "/config", glob("config/*")),
        ("share/" + PACKAGE + "/models", glob("models/*.md") + glob("models/*.yaml")),
    ],
    entry_points={
        "console_scripts": [
            "partslip = partslip_core.cli:main",
            "partslip_node = partslip_ros.node:main",
            "partslip_scan_publisher = partslip_ros.scan_publisher:main",
            "partslip_ros_demo = partslip_ros.demo:main",
        ],
    },
)
