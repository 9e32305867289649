"""Parameter hygiene at set time: integer-for-float coercion, unknown keys, schema reasons, and checks that need
the machine.

ROS users write ``0`` and ``1`` for float parameters (``fusion: {voxel_size: 0}``, ``-p window.max_age_s:=0``,
``ros2 param set ... fusion.voxel_size 1``); rclpy would reject those as the wrong type, so overrides and
runtime changes of float parameters are converted here (``coerce_value``). Overrides that name no
declared parameter (``windw.size``) get a warning naming the closest known key. Values that are valid in
form but cannot work on this machine (a CUDA device that is not there, a weights path that does not exist)
are rejected with a reason when they are set, not on every later run (``check_environment``).
``SchemaCheckedParameters`` gives every refused set the schema's reason (and the node's warning line) before
rclpy's own descriptor range check, which would only say "out of range".
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from partslip_core.models import looks_like_path
from partslip_ros.params import NodeSettings, SettingsError, check_parameter

# Names rclpy or the ROS middleware declare or read themselves; never "unknown".
_SYSTEM_PREFIXES = ("qos_overrides.", "use_sim_time", "start_type_description_service", "start_parameter_event")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coerce_value(default: Any, value: Any) -> Any:
    """``value`` converted to the type of ``default`` where that loses nothing (int -> float, int list ->
    float list); anything else is returned unchanged, for rclpy's type check to reject with its reason."""
    if isinstance(default, float) and _is_int(value):
        return float(value)
    if (isinstance(default, (list, tuple)) and default and all(isinstance(v, float) for v in default)
            and isinstance(value, (list, tuple)) and value and all(_is_int(v) or isinstance(v, float) for v in value)):
        return [float(v) for v in value]
    return value


def type_error(name: str, default: Any, value: Any) -> Optional[str]:
    """Why ``value`` cannot be parameter ``name`` (whose default is ``default``), else None."""
    expected = _kind(default)
    got = _kind(value)
    if expected is None or got is None or expected == got:
        return None
    return f"{name} must be {expected}; got {value!r} ({got})"


def _kind(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if _is_int(value):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return "a list of strings"
        if value and all(_is_int(v) or isinstance(v, float) for v in value):
            return "a list of numbers"
        return None
    return None


def unknown_keys(override_names: Iterable[str], known: Sequence[str]) -> list[str]:
    """One warning line per override that names no known parameter, with the closest known key."""
    lines = []
    for name in sorted(set(override_names) - set(known)):
        if name.startswith(_SYSTEM_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"unknown parameter {name!r} (from the params file or -p) is ignored{hint}")
    return lines


def check_finite(values: Mapping[str, Any]) -> None:
    """NaN/Inf make no sense for any parameter (and slip past ``a <= x`` range checks)."""
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise SettingsError(f"{name} must be finite; got {list(items)}")


def check_backend(settings: NodeSettings) -> None:
    """Unknown detector backends are rejected when set, not on every later run."""
    from partslip_core.detect import available_backends
    known = available_backends()
    backend = settings.pipeline.detector.backend
    if backend not in known:
        raise SettingsError(f"pipeline.detector.backend must be one of {', '.join(known)}; got {backend!r}")


def check_device(device: str) -> None:
    """``pipeline.device`` must exist on this machine (cuda without CUDA, or cuda:N beyond the last GPU, fail)."""
    from partslip_core.types import resolve_device
    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as error:
        raise SettingsError(f"pipeline.device {device!r} cannot be used here: {error}") from error


def check_weights(weights: str) -> None:
    if weights and looks_like_path(weights) and not Path(weights).expanduser().exists():
        raise SettingsError(f"pipeline.detector.weights {weights!r} does not exist (give an existing file or "
                            "folder, a hub id, or '' for the default model; see `partslip models list`)")


def check_environment(settings: NodeSettings, custom_detector: bool = False) -> None:
    """Checks of values against this machine; raises SettingsError with the reason."""
    check_device(settings.pipeline.device)
    if not custom_detector:
        check_backend(settings)
        if settings.backend_info.loads_weights:  # known after check_backend
            check_weights(settings.pipeline.detector.weights)


class SchemaCheckedParameters:
    """Node mixin: ``set_parameters`` / ``set_parameters_atomically`` (what ``ros2 param set`` and the parameter
    services end in) check each new value against its schema field first: a value of the wrong type, outside
    the declared range, not finite or not one of the choices is refused with the schema's reason ("window.size
    must be in [1, 100]; got 0" instead of rclpy's "out of range" or "Wrong parameter type, expected '2'") and a
    "rejected parameter change" warning, as values the node's own validation refuses are. Read-only and
    undeclared names are left to rclpy (its reason names them)."""

    def set_parameters(self, parameter_list):
        results = []
        for parameter in parameter_list:
            refusal = self._schema_refusal([parameter])
            results.append(refusal if refusal is not None else super().set_parameters([parameter])[0])
        return results

    def set_parameters_atomically(self, parameter_list):
        refusal = self._schema_refusal(parameter_list)
        return refusal if refusal is not None else super().set_parameters_atomically(parameter_list)

    def _schema_refusal(self, parameter_list):
        from rcl_interfaces.msg import SetParametersResult
        for parameter in parameter_list:
            if parameter.value is None or not self.has_parameter(parameter.name):
                continue
            if self.describe_parameter(parameter.name).read_only:
                continue
            current = self.get_parameter(parameter.name).value
            value = coerce_value(current, parameter.value)
            if self.describe_parameter(parameter.name).dynamic_typing:
                reason = check_parameter(parameter.name, value)
            else:
                reason = type_error(parameter.name, current, value) or check_parameter(parameter.name, value)
            if reason:
                self.get_logger().warning(f"rejected parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return None
