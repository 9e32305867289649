"""Launch-argument handling for launch/segment.launch.py, importable without launch/launch_ros (testable here).

``parts:=...`` arrives as one string: ``"[handle, lid]"`` (a YAML list), ``"handle, lid"`` (a comma list, as
the CLI takes it), ``"[]"`` or ``"''"`` (unset: runs are skipped until parts is set). launch_ros cannot pass
an empty list as a parameter (it has no element type), so "unset" is passed as the empty string, which the
node reads as no parts. RViz is started only when the rviz2 package is installed; otherwise the launch
logs why and starts the node alone (a missing rviz2 used to abort the launch and orphan the node).

The other arguments (``namespace``, ``use_sim_time``, ``autostart``, ``log_level``, ``input_topic``) are checked
here too, so a typo stops the launch with a message naming the argument instead of a node that starts and
misbehaves. An argument left empty leaves the params file's value alone (launch_ros cannot tell "not given" from
a default).
"""

from __future__ import annotations

from typing import Any, Optional, Union

EXIT_WITH_PARENT_ENV = "PARTSLIP_EXIT_WITH_PARENT"  # set by the launch file: the node dies with launch
NODE_NAME = "partslip_node"
DEFAULT_INPUT = "points"  # the node's input topic name (parameter input_topic's default), relative: remappable
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
RVIZ_OUTPUTS = ("labeled_cloud", "markers")  # the node topics config/partslip.rviz shows, as /partslip_node/<x>


class LaunchArgumentError(ValueError):
    """A launch argument has a value the node cannot use; the message names the argument."""


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


def bool_argument(name: str, text: str) -> Optional[bool]:
    """``true``/``false`` (also 1/0, yes/no, on/off, any case) -> bool; empty -> None (not given)."""
    word = (text or "").strip().lower()
    if not word:
        return None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise LaunchArgumentError(f"{name}:={text!r} must be true or false")


def namespace_argument(text: str) -> str:
    """The node's namespace ('' = none), validated by rclpy's rule. Kept as given: a relative ``robot1`` is
    still prefixed by an including launch file's ``PushRosNamespace``, an absolute ``/robot1`` is not."""
    text = (text or "").strip().rstrip("/")
    if not text:
        return ""
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace
    try:
        validate_namespace(absolute_namespace(text))
    except InvalidNamespaceException as error:
        raise LaunchArgumentError(f"namespace:={text!r} is not a valid ROS namespace: {error}") from None
    return text


def absolute_namespace(namespace: str) -> str:
    """``robot1`` -> ``/robot1``; '' stays '' (the root)."""
    return namespace if not namespace or namespace.startswith("/") else "/" + namespace


def topic_argument(name: str, text: str) -> Optional[str]:
    """A topic name argument ('' = not given), validated as rcl would (relative names allowed)."""
    text = (text or "").strip()
    if not text:
        return None
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name
    try:
        validate_topic_name(text)
    except InvalidTopicNameException as error:
        raise LaunchArgumentError(f"{name}:={text!r} is not a valid topic name: {error}") from None
    return text


def log_level_arguments(text: str) -> list[str]:
    """``--ros-args --log-level <level>`` for the node ('' = none: the default, info)."""
    level = (text or "").strip().lower()
    if not level:
        return []
    if level not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level:={text!r} must be one of {', '.join(LOG_LEVELS)}")
    return ["--ros-args", "--log-level", level]


def node_overrides(input_topic: str = "", parts: str = "", use_sim_time: str = "",
                   autostart: str = "") -> dict[str, Any]:
    """Parameters the launch arguments set on top of the params file (only the arguments that were given)."""
    overrides: dict[str, Any] = {}
    start = bool_argument("autostart", autostart)
    if start is not None:
        overrides["autostart"] = start
    topic = topic_argument("input_topic", input_topic)
    if topic is not None:
        overrides["input_topic"] = topic
    names = parts_parameter(parts)
    if names is not None:
        overrides["parts"] = names
    sim_time = bool_argument("use_sim_time", use_sim_time)
    if sim_time is not None:
        overrides["use_sim_time"] = sim_time
    return overrides


def resolved_topic(namespace: str, name: str) -> str:
    """Absolute name of a node topic: ``~/x`` -> <ns>/partslip_node/x, ``x`` -> <ns>/x, ``/x`` unchanged."""
    namespace = absolute_namespace(namespace)
    if name.startswith("/"):
        return name
    if name.startswith("~/"):
        return f"{namespace}/{NODE_NAME}/{name[2:]}"
    return f"{namespace}/{name}"


def rviz_remappings(namespace: str, input_topic: Optional[str]) -> list[tuple[str, str]]:
    """RViz's config shows /points and /partslip_node/<output>: remap them to this launch's node."""
    remaps = [(f"/{NODE_NAME}/{name}", resolved_topic(namespace, f"~/{name}")) for name in RVIZ_OUTPUTS]
    remaps.append((f"/{DEFAULT_INPUT}", resolved_topic(namespace, input_topic or DEFAULT_INPUT)))
    return [(source, target) for source, target in remaps if source != target]
