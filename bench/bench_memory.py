"""Memory over many consecutive segment() runs: peak RSS, CUDA peak memory, and growth (a leak check).

Runs ``partslip_core.segment`` ``--runs`` times (default 500) on one synthetic object with the
ground-truth projection detector and samples the process RSS after every run (after gc.collect()
and glibc's malloc_trim(0), so that freed-but-cached heap pages do not read as growth; --no-trim
turns that off). Reports peak RSS (getrusage), RSS after run 1, after run ``--baseline-run``
(default 50: caches are warm by then) and after the last run, the growth between those two single
samples, the growth between the median of the first and of the last 10% of samples in that range,
and a least-squares slope. On CUDA it also reports max_memory_allocated / max_memory_reserved and
the allocated bytes at both checkpoints. Exit status 1 when the windowed or the fitted growth
exceeds ``--max-growth-mib`` (single samples jitter by tens of MiB as big arrays come and go).

    python bench/bench_memory.py                         # 500 runs, 5000 points, 800 px, cpu
    python bench/bench_memory.py --runs 120 --points 5000 --image-size 400 --json out/memory.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_memory.py`

from bench.common import environment, write_json  # noqa: E402
from partslip_core import PipelineConfig, PointCloud, segment  # noqa: E402
from partslip_core.detect import ProjectedGroundTruthDetector  # noqa: E402
from partslip_core.synthetic import make_object  # noqa: E402

MIB = 1024.0 * 1024.0


def current_rss_bytes() -> int:
    """Resident set size now (psutil when present, else /proc/self/statm)."""
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc malloc_trim), so that RSS samples
    show what is still referenced rather than where the allocator's free lists happen to stand."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


@dataclass
class Sample:
    run: int
    rss: int
    cuda_allocated: int
    ms: float


def run_loop(args: argparse.Namespace) -> list[Sample]:
    obj = make_object(args.category, args.points, seed=args.seed)
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb)
    config = PipelineConfig(device=args.device)
    if args.threads is not None:
        config.cpu_threads = args.threads
    config.render.image_size = args.image_size
    detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=0)
    on_cuda = torch.device(args.device).type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    samples = []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        result = segment(cloud, obj.part_names, config, detector)
        elapsed = (time.perf_counter() - start) * 1000.0
        del result
        if args.trim:
            release_free_memory()
        samples.append(Sample(run, current_rss_bytes(), torch.cuda.memory_allocated() if on_cuda else 0, elapsed))
        if run == 1 or run % args.print_every == 0:
            print(f"  run {run:4d}: rss {samples[-1].rss / MIB:8.1f} MiB, {elapsed:7.0f} ms", flush=True)
    return samples


def summarize(samples: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    base_index = min(args.baseline_run, len(samples)) - 1
    base, last = samples[base_index], samples[-1]
    tail = samples[base_index:]
    runs = np.array([s.run for s in tail], dtype=np.float64)
    rss = np.array([s.rss for s in tail], dtype=np.float64) / MIB
    slope = float(np.polyfit(runs, rss, 1)[0] * 100.0) if len(tail) > 1 else 0.0
    window = max(5, len(tail) // 10)
    window_growth = float(np.median(rss[-window:]) - np.median(rss[:window]))
    summary: dict[str, Any] = {
        "runs": len(samples), "baseline_run": base.run,
        "peak_rss_mib": peak_rss_bytes() / MIB,
        "rss_after_run_1_mib": samples[0].rss / MIB,
        f"rss_after_run_{base.run}_mib": base.rss / MIB,
        f"rss_after_run_{last.run}_mib": last.rss / MIB,
        "rss_growth_mib": (last.rss - base.rss) / MIB,
        "rss_window_growth_mib": window_growth,
        "window_runs": window,
        "rss_slope_mib_per_100_runs": slope,
        "rss_slope_growth_mib": slope * (last.run - base.run) / 100.0,
        "max_rss_after_baseline_mib": float(rss.max()),
        "median_run_ms": float(np.median([s.ms for s in samples])),
        "p95_run_ms": float(np.percentile([s.ms for s in samples], 95)),
    }
    if torch.device(args.device).type == "cuda":
        summary.update({
            "cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / MIB,
            "cuda_max_reserved_mib": torch.cuda.max_memory_reserved() / MIB,
            f"cuda_allocated_after_run_{base.run}_mib": base.cuda_allocated / MIB,
            f"cuda_allocated_after_run_{last.run}_mib": last.cuda_allocated / MIB,
            "cuda_allocated_growth_mib": (last.cuda_allocated - base.cuda_allocated) / MIB,
        })
    return summary


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--baseline-run", type=int, default=50, help="growth is measured from this run to the last")
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=800)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--category", default="cabinet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-growth-mib", type=float, default=16.0,
                        help="exit 1 when the windowed or the fitted growth exceeds this")
    parser.add_argument("--no-trim", dest="trim", action="store_false",
                        help="sample RSS without gc.collect() + malloc_trim(0) after each run")
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None,
                        help="PipelineConfig.cpu_threads: CPU thread budget of a run (default: the pipeline's "
                             "default; 0 = library defaults, all cores)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be >= 2")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    print(f"bench_memory: segment() x {args.runs} on {args.category} ({args.points} points), {args.image_size} px, "
          f"{args.device}, cpu_threads {PipelineConfig().cpu_threads if args.threads is None else args.threads}; "
          f"environment {environment()}", flush=True)
    samples = run_loop(args)
    summary = summarize(samples, args)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key.ljust(width)}  {value:.1f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    ok = max(summary["rss_window_growth_mib"], summary["rss_slope_growth_mib"]) <= args.max_growth_mib
    print(f"growth check (run {summary['baseline_run']} -> {summary['runs']}: median of the last {summary['window_runs']} "
          f"samples minus median of the first {summary['window_runs']}, and the fitted slope x runs, both <= "
          f"{args.max_growth_mib} MiB): {'OK' if ok else 'FAILED'}")
    write_json(args.json, {"args": vars(args), "environment": environment(), "summary": summary,
                           "rss_mib_per_run": [round(s.rss / MIB, 2) for s in samples],
                           "ms_per_run": [round(s.ms, 1) for s in samples]})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
