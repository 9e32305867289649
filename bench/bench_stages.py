"""Time every PartSLIP stage on synthetic objects, next to the loop reference implementation.

For each cloud size and device: one untimed warm-up pass, then ``--repeat`` timed passes of
normalize, render, the ground-truth projection detector (a test tool, outside the lifting total),
superpoints, vote and instances. "lifting total" = render + superpoints + vote + instances (the
issue's definition). The loop reference (test/reference_impl/, CPU only) renders, votes and
groups on the same normalized cloud with the SAME superpoints and detections; its lifting total
adds the CPU time of cut pursuit (the authors' superpoints) on the same cloud, whichever backend ours
uses (``--superpoints``, default torch: the fast backend; cut_pursuit: the paper-faithful one).
"segment()" times the whole public call (normalize .. instances, ground-truth detector included) with
the same config: the issue's CPU target is <= 250 ms at 20k points, 800 px, one thread.

The outputs are checked equal: index maps (reference z-buffer vs ours), per-point semantic labels
and the superpoint score matrix (exactly), instance partitions (up to renumbering) with equal
labels and scores. Prints one table, then the equivalence results.

    python bench/bench_stages.py                       # 20k and 100k points, cpu (+cuda if present)
    python bench/bench_stages.py --points 20000 --repeat 3 --image-size 400 --json out/stages.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_stages.py`

from bench.common import Row, devices_from_arg, environment, format_table, timed, write_json  # noqa: E402
from test.reference_impl import Equivalence, ReferenceLift, compare, reference_lift, reference_render  # noqa: E402
from partslip_core.config import PipelineConfig  # noqa: E402
from partslip_core.detect import ProjectedGroundTruthDetector
from partslip_core.instances import InstanceGroups, group_instances
from partslip_core.normalize import normalize
from partslip_core.pipeline import segment
from partslip_core.render import choose_backend, render_views
from partslip_core.superpoints import compute_superpoints, cut_pursuit_available
from partslip_core.synthetic import SyntheticObject, make_object
from partslip_core.threads import torch_threads
from partslip_core.types import NormalizedCloud, PointCloud, RenderedViews, SemanticVotes, Superpoints, ViewDetections
from partslip_core.vote import vote

OUR_STAGES = ("normalize", "render", "detect (ground truth)", "superpoints", "vote", "instances", "lifting total",
              "lifting w/o superpoints", "segment()")
STAGE_NOTES = {"detect (ground truth)": "test tool; not in lifting total",
               "segment()": "the public call, ground-truth detector",
               "lifting total": "render + superpoints + vote + instances",
               "lifting w/o superpoints": "render + vote + instances"}


@dataclass
class OursRun:
    """One timed pass of our stages and what it produced (kept for the equivalence check)."""

    timings_ms: dict[str, float]
    canonical: NormalizedCloud
    views: RenderedViews
    detections: list[ViewDetections]
    superpoints: Superpoints
    votes: SemanticVotes
    groups: InstanceGroups


@dataclass
class SizeResult:
    points: int
    rows: list[Row] = field(default_factory=list)
    equivalence: list[str] = field(default_factory=list)
    reference_ms: dict[str, float] = field(default_factory=dict)
    equivalent: bool = True


def run_ours(cloud: PointCloud, obj: SyntheticObject, config: PipelineConfig, device: str) -> OursRun:
    """One pass of our stages with the thread budget that segment() uses (config.cpu_threads)."""
    with torch_threads(config.cpu_threads):
        return _run_ours(cloud, obj, config, device)


def _run_ours(cloud: PointCloud, obj: SyntheticObject, config: PipelineConfig, device: str) -> OursRun:
    t: dict[str, float] = {}
    canonical, t["normalize"] = timed(lambda: normalize(cloud, config.normalize), device)
    views, t["render"] = timed(lambda: render_views(canonical.xyz, canonical.rgb, config.render, device), device)
    detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=0)
    detections, t["detect (ground truth)"] = timed(lambda: detector.detect(views, obj.part_names), device)
    sp, t["superpoints"] = timed(lambda: compute_superpoints(canonical.xyz, canonical.rgb, canonical.normals,
                                                             config.superpoints, threads=config.cpu_threads,
                                                             device=device), device)
    votes, t["vote"] = timed(lambda: vote(sp, views, detections, obj.part_names, config.vote, device), device)
    groups, t["instances"] = timed(lambda: group_instances(canonical.xyz, sp, votes, views, config.instances, device),
                                   device)
    t["lifting w/o superpoints"] = t["render"] + t["vote"] + t["instances"]
    t["lifting total"] = t["lifting w/o superpoints"] + t["superpoints"]
    device_config = dataclasses.replace(config, device=device)
    _, t["segment()"] = timed(lambda: segment(cloud, obj.part_names, device_config, detector), device)
    return OursRun(t, canonical, views, list(detections), sp, votes, groups)


def time_ours(cloud: PointCloud, obj: SyntheticObject, config: PipelineConfig, device: str,
              repeat: int) -> tuple[dict[str, list[float]], OursRun]:
    run_ours(cloud, obj, config, device)  # warm-up: allocator, thread pools, lazy imports
    samples: dict[str, list[float]] = {stage: [] for stage in OUR_STAGES}
    last = None
    for _ in range(repeat):
        last = run_ours(cloud, obj, config, device)
        for stage in OUR_STAGES:
            samples[stage].append(last.timings_ms[stage])
    assert last is not None
    return samples, last


def run_reference(run: OursRun, obj: SyntheticObject, config: PipelineConfig
                  ) -> tuple[dict[str, float], RenderedViews, ReferenceLift]:
    ref_views, render_ms = timed(lambda: reference_render(run.canonical.xyz, run.canonical.rgb, config.render))
    lift = reference_lift(run.canonical.xyz, run.superpoints.point_superpoint, run.superpoints.num_superpoints,
                          ref_views, run.detections, obj.part_names, config.vote, config.instances)
    return {"render": render_ms, **lift.timings_ms}, ref_views, lift


def check(run: OursRun, lift: ReferenceLift) -> Equivalence:
    return compare(run.votes.point_label, run.votes.superpoint_scores, run.groups.point_instance,
                   run.groups.instance_label, run.groups.instance_score, lift)


def describe(eq: Equivalence, maps_equal: Optional[bool]) -> str:
    maps = "" if maps_equal is None else f"index maps {'EQUAL' if maps_equal else 'DIFFER'}; "
    verdict = "EQUAL" if eq.ok else "DIFFER: " + "; ".join(eq.problems)
    return (f"{maps}semantic labels {'equal' if eq.semantic_equal else f'{eq.label_mismatches} differ'}, "
            f"score matrix {'equal' if eq.scores_equal else 'differs'}, instance partition "
            f"{'equal' if eq.partition_equal else 'differs'} -> {verdict}")


def predicted_reference_s(points: int, earlier: dict[int, dict[str, float]]) -> Optional[float]:
    """Seconds the reference should take at ``points``, from the largest smaller size already run:
    the z-buffer scales linearly, vote and instances (superpoints x visible points) quadratically."""
    smaller = [n for n in earlier if n < points]
    if not smaller:
        return None
    base = max(smaller)
    grow = points / base
    ms = earlier[base]
    return (ms["render"] * grow + (ms["vote"] + ms["instances"]) * grow * grow) / 1000.0


def ratio_rows(points: int, device: str, ours: dict[str, list[float]], ref: dict[str, float],
               superpoints_cpu_ms: float) -> list[Row]:
    med = {stage: float(np.median(values)) for stage, values in ours.items()}
    ref_lift = ref["render"] + superpoints_cpu_ms + ref["vote"] + ref["instances"]
    pairs = [("lifting total", ref_lift, med["lifting total"], "ref incl. cut pursuit (the authors' superpoints)"),
             ("lifting w/o superpoints", ref_lift - superpoints_cpu_ms, med["lifting w/o superpoints"],
              "render + vote + instances"),
             ("render", ref["render"], med["render"], "authors: compiled pytorch3d, not a loop"),
             ("vote + instances", ref["vote"] + ref["instances"], med["vote"] + med["instances"],
              "the authors' Python-loop part")]
    return [Row(f"RATIO ref/ours: {name}", points, device, text=f"{r / max(o, 1e-9):.1f}x", note=note)
            for name, r, o, note in pairs]


def bench_size(points: int, args: argparse.Namespace, devices: list[str],
               reference_done: dict[int, dict[str, float]]) -> SizeResult:
    obj = make_object(args.category, points, seed=args.seed)
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb)
    config = make_config(args)
    result = SizeResult(points)
    runs: dict[str, tuple[dict[str, list[float]], OursRun]] = {}
    for device in devices:
        samples, last = time_ours(cloud, obj, config, device, args.repeat)
        runs[device] = (samples, last)
        result.rows += [Row.from_samples(stage, points, device, samples[stage], STAGE_NOTES.get(stage, ""))
                        for stage in OUR_STAGES]
        print(f"  [{points} pts, {device}] ours done: lifting median "
              f"{np.median(samples['lifting total']):.0f} ms", flush=True)
    if args.no_reference:
        return result
    predicted = predicted_reference_s(points, reference_done)
    if predicted is not None and predicted > args.reference_budget_s:
        result.rows.append(Row("reference (loop)", points, "cpu", text="skipped",
                               note=f"predicted {predicted:.0f} s > budget {args.reference_budget_s:.0f} s"))
        result.equivalence.append(f"{points} pts: reference skipped (predicted {predicted:.0f} s)")
        return result
    add_reference(result, runs, obj, config, args, reference_done)
    return result


def add_reference(result: SizeResult, runs: dict[str, tuple[dict[str, list[float]], OursRun]], obj: SyntheticObject,
                  config: PipelineConfig, args: argparse.Namespace,
                  reference_done: dict[int, dict[str, float]]) -> None:
    points = result.points
    base_device = "cpu" if "cpu" in runs else next(iter(runs))
    ref_samples: dict[str, list[float]] = {"render": [], "vote": [], "instances": []}
    for _ in range(args.ref_repeat):
        ref_ms, ref_views, lift = run_reference(runs[base_device][1], obj, config)
        for stage in ref_samples:
            ref_samples[stage].append(ref_ms[stage])
    ref_median = {stage: float(np.median(v)) for stage, v in ref_samples.items()}
    reference_done[points] = ref_median
    result.reference_ms = ref_median
    sp_cpu = cut_pursuit_ms(runs[base_device][1], config, args.ref_repeat)
    ref_no_sp = [r + v + i for r, v, i in zip(ref_samples["render"], ref_samples["vote"], ref_samples["instances"])]
    result.rows += [Row.from_samples(f"ref {stage} (loop)", points, "cpu", ref_samples[stage]) for stage in ref_samples]
    result.rows.append(Row.from_samples("ref lifting total", points, "cpu", [t + sp_cpu for t in ref_no_sp],
                                        f"incl. cut pursuit median {sp_cpu:.0f} ms"))
    result.rows.append(Row.from_samples("ref lifting w/o superpoints", points, "cpu", ref_no_sp))
    for device, (samples, run) in runs.items():
        result.rows += ratio_rows(points, device, samples, ref_median, sp_cpu)
        maps_equal = bool(np.array_equal(run.views.pixel_point_index, ref_views.pixel_point_index))
        lift_here = lift if device == base_device else reference_lift(
            run.canonical.xyz, run.superpoints.point_superpoint, run.superpoints.num_superpoints, run.views,
            run.detections, obj.part_names, config.vote, config.instances)
        eq = check(run, lift_here)
        result.equivalent &= eq.ok and maps_equal
        result.equivalence.append(f"{points} pts, ours on {device} vs reference: {describe(eq, maps_equal)} "
                                  f"({run.superpoints.num_superpoints} superpoints, {len(run.votes.box_label)} kept "
                                  f"boxes, {len(run.groups.instance_label)} instances)")


def cut_pursuit_ms(run: OursRun, config: PipelineConfig, repeat: int) -> float:
    """Median CPU time of the authors' superpoints (cut pursuit) on the run's cloud; NaN if not importable."""
    if not cut_pursuit_available():
        return float("nan")
    cp_config = dataclasses.replace(config.superpoints, backend="cut_pursuit")
    with torch_threads(config.cpu_threads):
        samples = [timed(lambda: compute_superpoints(run.canonical.xyz, run.canonical.rgb, run.canonical.normals,
                                                     cp_config, threads=config.cpu_threads))[1]
                   for _ in range(max(1, repeat))]
    return float(np.median(samples))


def make_config(args: argparse.Namespace) -> PipelineConfig:
    """The default (reference) preset with the benchmark's image size, thread budget and superpoint backend."""
    config = PipelineConfig()
    config.render.image_size = args.image_size
    config.superpoints.backend = args.superpoints
    if args.normal_max_nn is not None:
        config.superpoints.normal_max_nn = args.normal_max_nn
    config.render.backend = args.render_backend
    if args.threads is not None:
        config.cpu_threads = args.threads
    if config.instances.split_extent > 0:
        raise SystemExit("the loop reference implements instances.split_extent = 0 (the reference preset) only")
    return config


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes of our stages per size and device")
    parser.add_argument("--ref-repeat", type=int, default=2, help="timed passes of the loop reference")
    parser.add_argument("--device", default="auto", help="auto (cpu + cuda if present) or a list: cpu,cuda")
    parser.add_argument("--image-size", type=int, default=800, help="render size (800 = reference)")
    parser.add_argument("--category", default="cabinet", help="synthetic category (cabinet has small parts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-budget-s", type=float, default=120.0,
                        help="skip the reference at a size predicted to take longer than this")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="PipelineConfig.cpu_threads: CPU thread budget of a run (default: the pipeline's "
                             "default; 0 = library defaults, all cores)")
    parser.add_argument("--superpoints", default="torch", choices=("auto", "torch", "cut_pursuit", "graph"),
                        help="superpoint backend of our side (default torch; the reference side is cut pursuit)")
    parser.add_argument("--normal-max-nn", type=int, default=None,
                        help="superpoints.normal_max_nn of our side (default 30, the reference's; torch keeps its "
                             "purity with 16 at half the kNN cost)")
    parser.add_argument("--render-backend", default="auto", choices=("auto", "torch", "pytorch3d"),
                        help="render.backend (auto: torch splatter on CPU, pytorch3d on CUDA when importable)")
    parser.add_argument("--json", default="", help="write rows, equivalence results and environment here")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    devices = devices_from_arg(args.device)
    env = environment()
    print(f"bench_stages: {args.category}, points {args.points}, image {args.image_size}px, devices {devices}, "
          f"repeat {args.repeat} (+1 warm-up), reference repeat {args.ref_repeat}; cpu_threads "
          f"{make_config(args).cpu_threads}; render backend "
          f"{[choose_backend(make_config(args).render, d) for d in devices]}, superpoints {args.superpoints} "
          f"(normal_max_nn {make_config(args).superpoints.normal_max_nn}), "
          f"cut pursuit {'yes' if cut_pursuit_available() else 'NOT importable (reference ratios lack it)'}")
    print(f"environment: {env}", flush=True)
    reference_done: dict[int, dict[str, float]] = {}
    results = [bench_size(points, args, devices, reference_done) for points in sorted(args.points)]
    rows = [row for r in results for row in r.rows]
    print()
    print(format_table(rows))
    print("\nequivalence (reference loop vs ours, same superpoints and detections):")
    for line in (line for r in results for line in r.equivalence):
        print("  " + line)
    env["load_average_after"] = environment()["load_average_1_5_15"]
    payload: dict[str, Any] = {"args": vars(args), "environment": env, "rows": rows,
                               "equivalence": [line for r in results for line in r.equivalence]}
    write_json(args.json, payload)
    return 0 if all(r.equivalent for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
