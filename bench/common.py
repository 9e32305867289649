"""Helpers shared by the benchmark scripts: timing, statistics, the result table, environment notes, old code."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work so that wall-clock times belong to the stage that launched it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[T, float]:
    """(fn(), milliseconds), synchronized on CUDA before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, (time.perf_counter() - start) * 1000.0


@dataclass
class Row:
    """One line of the result table. median/p95 in ms, or ``text`` for ratio and 'skipped' rows."""

    stage: str
    points: int
    device: str
    median_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    runs: int = 0
    note: str = ""
    text: str = ""
    samples_ms: list[float] = field(default_factory=list)

    @staticmethod
    def from_samples(stage: str, points: int, device: str, samples: Sequence[float], note: str = "") -> "Row":
        values = np.asarray(samples, dtype=np.float64)
        return Row(stage, points, device, float(np.median(values)), float(np.percentile(values, 95)), len(values),
                   note, samples_ms=[round(float(v), 3) for v in values])


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width table: stage | points | device | median ms | p95 ms | runs | note."""
    header = ("stage", "points", "device", "median ms", "p95 ms", "runs", "note")
    lines = []
    for row in rows:
        if row.text:
            median, p95 = row.text, ""
        else:
            median = "" if row.median_ms is None else f"{row.median_ms:.1f}"
            p95 = "" if row.p95_ms is None else f"{row.p95_ms:.1f}"
        lines.append((row.stage, str(row.points), row.device, median, p95, str(row.runs or ""), row.note))
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(7)]
    fmt = lambda cells: " | ".join(c.ljust(w) if i in (0, 2, 6) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule] + [fmt(line) for line in lines])


def environment() -> dict[str, Any]:
    """What the numbers were measured on (load average matters: this machine is shared)."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def devices_from_arg(value: str) -> list[str]:
    """'auto' = cpu plus cuda when available; else a comma list such as 'cpu,cuda'."""
    if value == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [d.strip() for d in value.split(",") if d.strip()]
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: CUDA is not available (torch {torch.__version__})")
    return devices


def write_json(path: Optional[str], payload: dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
    print(f"wrote {out}")


REPO = Path(__file__).resolve().parents[1]


def module_at_commit(commit: str, path: str, name: str):
    """The module at ``path`` as it was at ``commit`` (``git show``), imported as ``name``: benches time the
    code before a change next to today's without keeping a copy of it. Needs the repository's history."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
