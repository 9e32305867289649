"""Launch-argument handling for launch/segment.launch.py, importable without launch/launch_ros (testable here).

``parts:=...`` arrives as one string: ``"[handle, lid]"`` (a YAML list), ``"handle, lid"`` (a comma list, as
the CLI takes it), ``"[]"`` or ``"''"`` (unset: runs are skipped until parts is set). launch_ros cannot pass
an empty list as a parameter (it has no element type), so "unset" is passed as the empty string, which the
node reads as no parts. RViz is started only when the rviz2 package is installed; otherwise the launch
logs why and starts the node alone (a missing rviz2 used to abort the launch and orphan the node).
"""

from __future__ import annotations

from typing import Optional, Union

EXIT_WITH_PARENT_ENV = "PARTSLIP_EXIT_WITH_PARENT"  # set by the launch file: the node dies with launch


def parts_parameter(text: str) -> Optional[Union[str, list[str]]]:
    """The ``parts`` parameter value for a launch argument; None = not given (the params file decides).

    Parsed by the node's own rule (``params.parse_parts``: one parser for the node, launch and the CLI's
    comma lists), so a bad value (an empty name, duplicates) stops the launch with the node's message."""
    from partslip_ros.params import parse_parts
    text = (text or "").strip()
    if not text:
        return None
    names = parse_parts(text)
    return list(names) if names else ""


def package_available(package: str) -> bool:
    """Whether ``package`` is installed in the ament index (rviz2 is optional)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # pragma: no cover - ament_index_python ships with every ROS install
        return False
    try:
        get_package_prefix(package)
    except (PackageNotFoundError, LookupError, OSError, ValueError):  # OSError: no AMENT_PREFIX_PATH at all
        return False
    return True
