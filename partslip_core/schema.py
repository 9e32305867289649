"""One parameter schema: each config field declares its doc, range, choices and unit where it is defined.

A config dataclass declares a field with ``param(default, doc=..., ge=0, unit="m")``; the ``ParamSpec``
is kept in the field's ``metadata[SCHEMA_KEY]``. From that single declaration:

- ``check(config)`` (called by each config's ``__post_init__``) validates types, ranges, choices,
  patterns and lengths and normalizes values (int -> float, sequences -> tuples), raising
  ``ConfigError`` with the field's dotted name;
- ``walk(cls)`` lists every leaf field of a config tree with its dotted name, type, default and spec;
  ``schema_listing.describe`` prints that list (``partslip config --describe``), the ROS layer builds its
  ParameterDescriptors from it (``partslip_ros.params``), and ``from_flat`` builds a config from
  flat ``{dotted name: value}`` maps (ROS parameters).

Relational rules (crop_max > crop_min, ...) stay explicit code in the dataclasses' ``__post_init__``.
A nested config field is a section (``render.image_size``) unless declared with ``flatten=True``:
then its fields join the parent's names (``FusionConfig.isolation`` -> ``fusion.cluster_select``).
``name=`` gives a field a different parameter name than its attribute (``select`` -> ``cluster_select``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional

SCHEMA_KEY = "partslip"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""


@dataclass(frozen=True)
class ParamSpec:
    """What a field accepts and means. Bounds apply to a number, or to each number of a sequence.

    ge/gt/le/lt: inclusive / exclusive lower and upper bounds; choices: allowed strings; pattern: a regular
    expression a string must match fully, described by ``pattern_doc``; min_length: fewest entries of a list;
    read_only: set at start only (ROS); dynamic: any ROS type (``parts``); name: the parameter name when it
    differs from the attribute; flatten: a nested config whose fields take the parent's names."""

    doc: str
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_doc: str = ""
    unit: str = ""
    min_length: int = 0
    read_only: bool = False
    dynamic: bool = False
    name: str = ""
    flatten: bool = False

    @property
    def low(self) -> Optional[float]:
        return self.ge if self.ge is not None else self.gt

    @property
    def high(self) -> Optional[float]:
        return self.le if self.le is not None else self.lt

    def bounds_text(self) -> str:
        """'[0, 1]', '(0, 0.5)', '>= 0', '< 179' or '' (no bound)."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            opening, closing = "[" if self.ge is not None else "(", "]" if self.le is not None else ")"
            return f"{opening}{_num(low)}, {_num(high)}{closing}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_num(low)}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {_num(high)}"
        return ""

    def in_bounds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def constraint_text(self) -> str:
        """Everything the spec constrains, in words (docs, ROS ``additional_constraints``)."""
        parts = []
        bounds = self.bounds_text()
        if bounds:
            parts.append(f"in {bounds}" if bounds[0] in "[(" else bounds)
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.pattern_doc:
            parts.append(self.pattern_doc)
        if self.min_length:
            parts.append(f"at least {self.min_length} entr{'y' if self.min_length == 1 else 'ies'}")
        return "; ".join(parts)


def param(default: Any = dataclasses.MISSING, *, doc: str, default_factory: Any = dataclasses.MISSING,
          **spec: Any) -> Any:
    """A dataclass field with its ``ParamSpec`` (keyword arguments as ``ParamSpec``'s). A list default (of
    immutable items) is copied per instance (it becomes a default_factory)."""
    if isinstance(default, list):  # items are immutable (tuples, strings): a shallow copy is a copy
        default, default_factory = dataclasses.MISSING, functools.partial(list, default)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={SCHEMA_KEY: ParamSpec(doc=doc, **spec)})


UNDECLARED = ParamSpec(doc="")  # a field declared without ``param``: no checks, no doc (a test flags it)


def spec_of(f: dataclasses.Field) -> ParamSpec:
    return f.metadata.get(SCHEMA_KEY, UNDECLARED)


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (cached: ``check`` runs on every construction)."""
    return typing.get_type_hints(cls)


def is_config(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


# --------------------------------------------------------------------------------------------- walking

@dataclass(frozen=True)
class FieldInfo:
    """One leaf parameter of a config tree: dotted ``name``, attribute ``path`` from the root, resolved
    ``type`` (a typing annotation), ``default`` value and ``spec``."""

    name: str
    path: tuple[str, ...]
    type: Any
    default: Any
    spec: ParamSpec


@dataclass(frozen=True)
class SectionInfo:
    """A nested config (not flattened): dotted ``name`` and its spec (the section's doc)."""

    name: str
    spec: ParamSpec


def walk(config: Any, prefix: str = "", sections: Optional[list] = None) -> list[FieldInfo]:
    """Every leaf field of a config class or instance, depth first in declaration order; defaults come from
    ``config`` when it is an instance. Nested sections are appended to ``sections`` when it is given."""
    return list(_walk(config, prefix, (), sections))


def _walk(config: Any, prefix: str, path: tuple[str, ...], sections: Optional[list]):
    cls = config if isinstance(config, type) else type(config)
    instance = None if isinstance(config, type) else config
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        hint = hints[f.name]
        value = getattr(instance, f.name) if instance is not None else _default(f)
        name = prefix + (spec.name or f.name)
        if is_config(hint):
            if not spec.flatten and sections is not None:
                sections.append(SectionInfo(name, spec))
            yield from _walk(value if value is not None else hint, prefix if spec.flatten else name + ".",
                             path + (f.name,), sections)
        else:
            yield FieldInfo(name, path + (f.name,), hint, value, spec)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_flat(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from ``{dotted name: value}`` (names as ``walk(cls)`` gives them, without ``prefix``);
    left-out fields keep their defaults. Errors name the field as ``prefix`` + name."""
    known = {info.name: info for info in walk(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(prefix + n for n in unknown)}")
    tree: dict = {}
    for name, value in values.items():
        node = tree
        for part in known[name].path[:-1]:
            node = node.setdefault(part, {})
        node[known[name].path[-1]] = value
    return _construct(cls, tree, prefix)


def _construct(cls: type, tree: Mapping[str, Any], prefix: str) -> Any:
    hints = type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        hint, spec = hints[f.name], spec_of(f)
        if is_config(hint):
            child_prefix = prefix if spec.flatten else f"{prefix}{spec.name or f.name}."
            kwargs[f.name] = _construct(hint, tree[f.name], child_prefix)
        else:
            kwargs[f.name] = tree[f.name]
    own_prefix = getattr(cls, "schema_prefix", "")
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if own_prefix or not prefix:  # the class names its fields itself (``render.``), or there is no prefix
            raise
        raise ConfigError(f"{prefix}{error}") from error


# --------------------------------------------------------------------------------------------- checking

def check(config: Any) -> None:
    """Validate and normalize every field of ``config`` in place against its spec (``__post_init__``).
    Nested configs are checked by their own ``__post_init__``; here only their type is. Messages name the
    field as ``<schema_prefix><name>`` (the class attribute ``schema_prefix``, e.g. ``"render."``)."""
    for attribute, name, hint, spec, nested in _plan(type(config)):
        value = getattr(config, attribute)
        if nested:
            if not isinstance(value, hint):
                raise ConfigError(f"{name} must be a {hint.__name__}; got {type(value).__name__}")
            continue
        checked = check_value(name, value, hint, spec)
        if checked is not value:
            object.__setattr__(config, attribute, checked)


@functools.lru_cache(maxsize=None)
def _plan(cls: type) -> tuple:
    """(attribute, message name, type, spec, is a nested config) per field of ``cls`` (``check`` runs on every
    construction: resolve the annotations once)."""
    prefix, hints = getattr(cls, "schema_prefix", ""), type_hints(cls)
    return tuple((f.name, prefix + (spec_of(f).name or f.name), hints[f.name], spec_of(f), is_config(hints[f.name]))
                 for f in dataclasses.fields(cls))


def check_value(name: str, value: Any, hint: Any, spec: ParamSpec) -> Any:
    """``value`` normalized to ``hint`` (int -> float, lists -> tuples ...) and checked against ``spec``;
    raises ConfigError('<name> must be ...; got ...')."""
    value = _coerce(name, value, hint)
    bounded = spec.ge is not None or spec.gt is not None or spec.le is not None or spec.lt is not None
    for number in (value,) if type(value) in (int, float) else _numbers(value) if type(value) in (list, tuple) else ():
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be finite; got {_show(value)}")
        if bounded and not spec.in_bounds(number):
            where = spec.bounds_text()
            where = f"in {where}" if where[0] in "[(" else where
            each = " values" if isinstance(value, (list, tuple)) else ""
            raise ConfigError(f"{name}{each} must be {where}; got {_show(value)}")
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.pattern and not re.fullmatch(spec.pattern, value, flags=re.S):
        raise ConfigError(f"{name} must be {spec.pattern_doc or 'of the form ' + spec.pattern}; got {value!r}")
    if spec.min_length and len(value) < spec.min_length:
        raise ConfigError(f"{name} must hold at least {spec.min_length} entr{'y' if spec.min_length == 1 else 'ies'}; "
                          f"got {_show(value)}")
    return value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    if type(value) is hint or hint is Any:  # the common case, before the slower checks below
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) in (list, tuple):
        return _coerce_sequence(name, value, hint)
    else:  # pragma: no cover - a field type this schema does not know
        raise TypeError(f"{name}: unsupported field type {hint!r}")
    raise ConfigError(f"{name} must be {kind(hint)}; got {_show(value)} ({_kind_of(value)})")


def _coerce_sequence(name: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be {kind(hint)}; got {_show(value)} ({_kind_of(value)})")
    fixed = origin is tuple and args and args[-1] is not Ellipsis
    if fixed and len(value) != len(args):
        raise ConfigError(f"{name} must be {kind(hint)}; got {len(value)} value(s): {_show(value)}")
    items = []
    for index, item in enumerate(value):
        item_hint = args[index] if fixed else args[0]
        try:
            items.append(_coerce(name, item, item_hint))
        except ConfigError:
            if typing.get_origin(item_hint) in (list, tuple):
                raise ConfigError(f"{name} entries must be {kind(item_hint)}; got {_show(item)}") from None
            raise ConfigError(f"{name} must be {kind(hint)}; got {_show(value)}") from None
    return origin(items)


def _numbers(value: Any) -> list:
    """Every float/int inside a (possibly nested) list or tuple, booleans excluded."""
    found = []
    for item in value:
        if type(item) in (float, int):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found += _numbers(item)
    return found


def kind(hint: Any) -> str:
    """'an integer', 'a number', '3 numbers', 'a list of strings' ... (in messages)."""
    simple = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string", Any: "any value"}
    if hint in simple:
        return simple[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and args and args[-1] is not Ellipsis and len(set(args)) == 1:
        return f"{len(args)} {_plural(args[0])}"
    if origin in (list, tuple):
        return f"a list of {_plural(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    names = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if hint in names:
        return names[hint]
    return f"[{kind(hint)}] entries"


def _kind_of(value: Any) -> str:
    kinds = ((bool, "a boolean"), (numbers.Integral, "an integer"), (numbers.Real, "a number"), (str, "a string"),
             ((list, tuple), "a list"))
    return next((text for types, text in kinds if isinstance(value, types)), type(value).__name__)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _show(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else text[:77] + "..."
