"""Human-readable listings of the parameter schema: one block per field (name, type, default, constraints, unit,
doc), for ``partslip config --describe`` (``describe``) and the node's ``python -m partslip_ros.params``
(``entry``), and values written as in YAML (``format_value``, also in the CLI's option help). The schema itself
(declaration, walking, checking) is ``partslip_core.schema``.
"""

from __future__ import annotations

import textwrap
import typing
from typing import Any

from partslip_core.schema import ParamSpec, SectionInfo, walk


def type_name(hint: Any) -> str:
    """Short type for listings: bool, int, float, str, float[3], list[str], list[float[2]]."""
    if hint is Any:
        return "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and args and args[-1] is not Ellipsis and len(set(args)) == 1:
        return f"{type_name(args[0])}[{len(args)}]"
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]"
    return getattr(hint, "__name__", str(hint))


def describe(config: Any, prefix: str = "") -> str:
    """Every parameter of a config tree: name, type, default, constraints, unit and doc (one block each)."""
    sections: list[SectionInfo] = []
    infos = walk(config, prefix, sections)
    section_docs = {s.name: s.spec.doc for s in sections}
    lines: list[str] = []
    current = None
    for info in infos:
        section = info.name.rsplit(".", 1)[0] if "." in info.name else ""
        if section != current and section in section_docs:
            lines += ["", f"[{section}] {section_docs[section]}"]
        current = section
        lines += entry(info.name, type_name(info.type), info.default, info.spec)
    return "\n".join(lines).lstrip("\n")


def entry(name: str, type_text: str, default: Any, spec: ParamSpec) -> list[str]:
    """One listing block: ``name  (type; default; constraints; unit; read-only)``, then the doc, wrapped."""
    facts = [type_text, f"default {format_value(default)}", spec.constraint_text(),
             spec.unit and f"unit {spec.unit}", "read-only" if spec.read_only else ""]
    return [f"{name}  ({'; '.join(f for f in facts if f)})"] + textwrap.wrap(
        spec.doc, width=100, initial_indent="    ", subsequent_indent="    ")


def format_value(value: Any) -> str:
    """A value as it is written in YAML (true, 0.5, 'text', [1, 2])."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else str(value)
