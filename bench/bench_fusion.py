"""Fusion on the node's path, per stage: an organized RGB-D frame, a lidar sweep, an object-only scan.

Scans (``--scan``): ``rgbd`` = ``synthetic_scene.rgbd_tabletop_scan`` (an object on a table on a floor, 640 x 480
= 307,200 pixels, 10-13% NaN), ``lidar`` = ``lidar_tabletop_scan`` (128 x 2048), ``object`` = the object alone
(``synthetic.make_object(category, --points, seed)``, what ``bench_node_latency.py`` publishes; isolation keeps
it whole). Two paths, timed in the same process with ``time.process_time``, alternating, on the same input:

* ``before``: the fusion of commit be00afa (its filters.py and scene.py, read with ``git show``): bool-mask row copies,
  row-form ``voxelize``, ``voxel_inliers`` with 18 binary searches, isolation with open3d's ``segment_plane``
  and ``cluster_dbscan``;
* ``after``: today's row copies (indices + ``np.take``, as ``fusion._Cloud.keep``), ``filters.voxelize``
  (column by column), ``filters.voxel_inliers`` (dense grid) and ``scene.isolate_object``
  (``partslip_core.ransac``: open3d's RANSAC reproduced exactly, float32 scoring).

Single-threaded: OMP/MKL/OpenBLAS = 1 before numpy loads, and open3d (which ignores them and otherwise uses
every core, where its RANSAC is not reproducible run to run) set to 1 thread. Prints per-stage median ms
over ``--repeat`` runs after one warm-up, what each path kept, and whether the two outputs are identical
(voxels, outlier mask, isolation mask and summary, and ``fusion.fuse``'s output); exit status 1 if not.

    python bench/bench_fusion.py                                  # rgbd mug/kettle/bottle + object chair; 7 repeats
    python bench/bench_fusion.py --scan rgbd lidar --category mug --repeat 15 --json out/fusion.json
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import module_at_commit  # noqa: E402
from partslip_core import filters, scene  # noqa: E402
from partslip_core.fusion_config import FusionConfig  # noqa: E402
from partslip_core.synthetic import make_object  # noqa: E402
from partslip_core.synthetic_scene import flatten, lidar_tabletop_scan, rgbd_tabletop_scan  # noqa: E402
from partslip_ros.fusion import Frame, fuse  # noqa: E402

STAGES = ("finite", "voxel", "outliers", "isolation", "total")
BEFORE = "be00afa"
filters_before = module_at_commit(BEFORE, "partslip_core/filters.py", "filters_before")
scene_before = module_at_commit(BEFORE, "partslip_core/scene.py", "scene_before")
PATHS = {  # name -> (voxelize, voxel_inliers, isolate_object)
    "before": (filters_before.voxelize, filters_before.voxel_inliers, scene_before.isolate_object),
    "after": (filters.voxelize, filters.voxel_inliers, scene.isolate_object),
}


def run_path(name: str, xyz, rgb, extras, config: FusionConfig) -> tuple[dict, dict, dict]:
    """(outputs, stage -> CPU ms, stage -> points) of one path, stage by stage as ``fusion.fuse`` runs them."""
    voxelize, voxel_inliers, isolate = PATHS[name]
    ms, counts = {}, {}
    clock = time.process_time()

    def lap(stage: str, points: int) -> None:
        nonlocal clock
        now = time.process_time()
        ms[stage], counts[stage], clock = (now - clock) * 1e3, points, now

    finite = filters.finite_mask(xyz)
    if name == "before":  # fusion._Cloud.keep at be00afa: bool indexing
        xyz, rgb, extras = xyz[finite], rgb[finite], {n: v[finite] for n, v in extras.items()}
    else:  # today's fusion._Cloud.keep: indices + take, the same rows
        index = np.flatnonzero(finite)
        xyz, rgb = np.take(xyz, index, axis=0), np.take(rgb, index, axis=0)
        extras = {n: np.take(v, index, axis=0) for n, v in extras.items()}
    lap("finite", len(xyz))
    cloud = voxelize(xyz, rgb, extras, config.voxel_size)
    lap("voxel", len(cloud.xyz))
    inliers = voxel_inliers(cloud.cells, config.outlier_neighbors, config.outlier_std_ratio)
    kept_xyz = cloud.xyz[inliers] if name == "before" else np.take(cloud.xyz, np.flatnonzero(inliers), axis=0)
    lap("outliers", int(inliers.sum()))
    result = isolate(kept_xyz, config.isolation)
    lap("isolation", int(result.keep.sum()))
    ms["total"] = sum(ms.values())
    outputs = {"xyz": cloud.xyz, "rgb": cloud.rgb, "cells": cloud.cells, "label": cloud.extras["label"],
               "inliers": inliers, "keep": result.keep, "summary": result.summary(),
               "kept_label": cloud.extras["label"][inliers][result.keep]}
    return outputs, ms, counts


def identical(before: dict, after: dict) -> list[str]:
    """Names of the outputs that differ (bit for bit)."""
    return [k for k in before if not (before[k] == after[k] if isinstance(before[k], str)
                                      else np.array_equal(before[k], after[k]))]


def scans(kinds, categories, seed: int, points: int, object_category: str):
    """(name, xyz, rgb, labels) of each scan asked for."""
    for kind in kinds:
        if kind == "object":
            obj = make_object(object_category, points, seed)
            yield (f"object {object_category} ({points} points, seed {seed})", obj.xyz.astype(np.float32),
                   obj.rgb.astype(np.float32), obj.point_label.astype(np.int32))
            continue
        make = rgbd_tabletop_scan if kind == "rgbd" else lidar_tabletop_scan
        for index, category in enumerate(categories):
            columns = flatten(make(category, seed + index))
            yield (f"{kind} {category} (seed {seed + index})", columns["xyz"].astype(np.float32),
                   columns["rgb"].astype(np.float32), columns["label"].astype(np.int32))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", nargs="+", choices=("rgbd", "lidar", "object"), default=["rgbd", "object"])
    parser.add_argument("--category", nargs="+", default=["mug", "kettle", "bottle"], help="rgbd/lidar scenes")
    parser.add_argument("--object-category", default="chair", help="the object-only scan")
    parser.add_argument("--points", type=int, default=20_000, help="points of the object-only scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    o3d.utility.set_max_threads(1)
    config = FusionConfig()
    print(f"# {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
          f"open3d {o3d.__version__} (1 thread); voxel {config.voxel_size} m, outliers {config.outlier_method} "
          f"k={config.outlier_neighbors} ratio {config.outlier_std_ratio}; CPU time (process_time), median of "
          f"{args.repeat} after 1 warm-up, paths alternating")
    rows, all_same = [], True
    for name, xyz, rgb, labels in scans(args.scan, args.category, args.seed, args.points, args.object_category):
        extras = {"label": labels}
        times = {"before": [], "after": []}
        result = {}
        for run in range(args.repeat + 1):
            for path in ("before", "after"):
                outputs, ms, counts = run_path(path, xyz, rgb, extras, config)
                if run:
                    times[path].append(ms)
                result[path] = (outputs, counts)
        fused = fuse([Frame(0, "world", xyz, rgb, extras)], config)
        differ = identical(result["before"][0], result["after"][0])
        if not np.array_equal(fused.extras["label"], result["after"][0]["kept_label"]):
            differ.append("fusion.fuse")
        all_same &= not differ
        print(f"\n## {name}: {len(xyz)} points, {int(filters.finite_mask(xyz).sum())} finite, "
              f"{int((labels >= 0).sum())} on the object")
        print("| path | " + " | ".join(f"{s} ms" for s in STAGES) + " | voxels | after outliers | kept | purity |")
        print("| --- " * (len(STAGES) + 5) + "|")
        for path in ("before", "after"):
            medians = {s: float(np.median([t[s] for t in times[path]])) for s in STAGES}
            outputs, counts = result[path]
            kept = outputs["kept_label"]
            purity = float((kept >= 0).mean()) if len(kept) else 0.0
            print(f"| {path} | " + " | ".join(f"{medians[s]:.1f}" for s in STAGES)
                  + f" | {counts['voxel']} | {counts['outliers']} | {counts['isolation']} | {purity:.3f} |")
            rows.append({"scan": name, "path": path, "ms": medians, "counts": counts, "purity": purity})
        ratio = rows[-2]["ms"]["total"] / max(rows[-1]["ms"]["total"], 1e-9)
        print(f"speed-up (total): {ratio:.2f}x; isolation: {result['after'][0]['summary']}")
        print("outputs identical (voxels, outlier mask, isolation mask and summary, fusion.fuse): "
              + ("yes" if not differ else f"NO, differ: {', '.join(differ)}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all_same else 1


if __name__ == "__main__":
    raise SystemExit(main())
