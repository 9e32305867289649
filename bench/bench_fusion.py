"""Fusion of one organized RGB-D frame (640 x 480, NaN where nothing is hit) on the node's path, per stage.

The frame is ``partslip_core.synthetic_scene.rgbd_tabletop_scan`` (an object on a table on a floor, 307,200
pixels). Two paths are timed in the same process, alternating, on the same frame:

* ``before``: the fusion of ``partslip_ros/fusion.py`` at commit d3723b7 (copied below): voxel downsample
  with ``np.unique`` + ``bincount`` + ``lexsort``, statistical outlier removal as a 20-NN query over the
  voxel centroids (cKDTree), isolation on the survivors;
* ``after``: ``partslip_ros.fusion.fuse`` as the node runs it (NaN drop, ``filters.voxelize``, grid-density
  outliers ``filters.voxel_inliers``, isolation).

Both get the whole organized frame; the NaN drop (done by the node's decoder before) is timed as its own
row in both. Single-threaded (OMP/MKL/OpenBLAS = 1, set before numpy loads). Prints per-stage median ms over
``--repeat`` runs after one warm-up, and what each path kept (voxels, outliers, object points, purity).

    python bench/bench_fusion.py                       # mug, kettle, bottle; 7 repeats
    python bench/bench_fusion.py --category mug --repeat 15 --json out/fusion.json
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
from scipy.spatial import cKDTree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from partslip_core.scene import isolate_object  # noqa: E402
from partslip_core.synthetic_scene import flatten, rgbd_tabletop_scan  # noqa: E402
from partslip_ros.fusion import Frame, FusionConfig, fuse  # noqa: E402


# --- the fusion filters before issue 11's fusion bullet, verbatim, for the comparison ----------------------
def old_voxel_downsample(xyz, rgb, extras, voxel):
    if voxel <= 0 or xyz.shape[0] == 0:
        return xyz, rgb, extras
    cells = np.floor((xyz - xyz.min(axis=0)) / voxel).astype(np.int64)
    dims = cells.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) < 2.0 ** 62:
        key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    num = counts.shape[0]

    def mean(values):
        sums = np.stack([np.bincount(inverse, weights=values[:, d], minlength=num) for d in range(values.shape[1])], 1)
        return (sums / counts[:, None]).astype(np.float32)

    centroids = mean(xyz)
    colors = None if rgb is None else mean(rgb)
    if not extras:
        return centroids, colors, {}
    dist = np.linalg.norm(xyz - centroids[inverse], axis=1)
    order = np.lexsort((dist, inverse))
    first = order[np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]]
    return centroids, colors, {name: values[first] for name, values in extras.items()}


def old_statistical_inliers(xyz, neighbors, std_ratio):
    if neighbors <= 0 or xyz.shape[0] <= neighbors:
        return np.ones(xyz.shape[0], bool)
    dist, _ = cKDTree(xyz).query(xyz, k=neighbors + 1)
    mean_dist = dist[:, 1:].mean(axis=1)
    return mean_dist <= mean_dist.mean() + std_ratio * mean_dist.std()


def old_fuse(xyz, rgb, extras, config: FusionConfig):
    """(kept label per point, stage -> ms, stage -> points) of the old path."""
    ms, counts = {}, {}
    start = time.perf_counter()
    finite = np.isfinite(xyz).all(axis=1)
    xyz, rgb, extras = xyz[finite], rgb[finite], {n: v[finite] for n, v in extras.items()}
    ms["finite"], counts["finite"] = (time.perf_counter() - start) * 1e3, len(xyz)
    start = time.perf_counter()
    xyz, rgb, extras = old_voxel_downsample(xyz, rgb, extras, config.voxel_size)
    ms["voxel"], counts["voxel"] = (time.perf_counter() - start) * 1e3, len(xyz)
    start = time.perf_counter()
    keep = old_statistical_inliers(xyz, config.outlier_neighbors, config.outlier_std_ratio)
    xyz, extras = xyz[keep], {n: v[keep] for n, v in extras.items()}
    ms["outliers"], counts["outliers"] = (time.perf_counter() - start) * 1e3, len(xyz)
    start = time.perf_counter()
    keep = isolate_object(xyz, config.isolation()).keep
    ms["isolation"], counts["isolation"] = (time.perf_counter() - start) * 1e3, int(keep.sum())
    ms["total"] = sum(ms.values())
    return extras["label"][keep], ms, counts


def new_fuse(xyz, rgb, extras, config: FusionConfig):
    start = time.perf_counter()
    fused = fuse([Frame(0, "world", xyz, rgb, extras)], config)
    total = (time.perf_counter() - start) * 1e3
    ms = dict(fused.timings_ms)
    ms["total"] = total
    return fused.extras["label"], ms, dict(fused.counts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", nargs="+", default=["mug", "kettle", "bottle"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    config = FusionConfig()
    print(f"# {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
          f"1 thread; voxel {config.voxel_size} m, outliers {config.outlier_method} k={config.outlier_neighbors} "
          f"ratio {config.outlier_std_ratio}; median of {args.repeat} after 1 warm-up")
    rows = []
    for index, category in enumerate(args.category):
        scan = flatten(rgbd_tabletop_scan(category, args.seed + index))
        xyz, rgb = scan["xyz"].astype(np.float32), scan["rgb"].astype(np.float32)
        extras = {"label": scan["label"].astype(np.int32)}
        times = {"before": [], "after": []}
        result = {}
        for run in range(args.repeat + 1):
            for name, path in (("before", old_fuse), ("after", new_fuse)):
                labels, ms, counts = path(xyz, rgb, extras, config)
                if run:
                    times[name].append(ms)
                result[name] = (labels, counts)
        print(f"\n## {category} (seed {args.seed + index}): {len(xyz)} pixels, "
              f"{int(np.isfinite(xyz).all(axis=1).sum())} finite, {int((scan['label'] >= 0).sum())} on the object")
        stages = ["finite", "voxel", "outliers", "isolation", "total"]
        print("| path | " + " | ".join(f"{s} ms" for s in stages) + " | voxels | after outliers | kept | purity |")
        print("| --- " * (len(stages) + 5) + "|")
        for name in ("before", "after"):
            medians = {s: float(np.median([t.get(s, 0.0) for t in times[name]])) for s in stages}
            labels, counts = result[name]
            purity = float((labels >= 0).mean()) if len(labels) else 0.0
            print(f"| {name} | " + " | ".join(f"{medians[s]:.1f}" for s in stages)
                  + f" | {counts['voxel']} | {counts['outliers']} | {counts['isolation']} | {purity:.3f} |")
            rows.append({"category": category, "path": name, "ms": medians, "counts": counts, "purity": purity})
        ratio = rows[-2]["ms"]["total"] / max(rows[-1]["ms"]["total"], 1e-9)
        print(f"speed-up (total): {ratio:.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
