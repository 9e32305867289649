"""Compare the superpoint backends on the synthetic objects: purity w.r.t. ground-truth parts and instances.

    .venv/bin/python bench/compare_superpoints.py [--points 10000] [--seeds 3] [--backends cut_pursuit,torch]
    .venv/bin/python bench/compare_superpoints.py --device cuda --backends torch
    .venv/bin/python bench/compare_superpoints.py --scan partial      # single noisy scans (also: fused)

Purity = share of points whose superpoint's majority ground-truth label is their own (1.0 = no superpoint
straddles two parts). Prints one row per backend and category, then the mean, then each backend's mean
minus cut pursuit's (the issue's target for torch: part purity within 0.01, a comparable count).
Times are per call with ``--threads`` torch threads (default 1, as segment()).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/compare_superpoints.py`

from bench.common import synchronize  # noqa: E402
from partslip_core.config import NormalizeConfig, SuperpointConfig  # noqa: E402
from partslip_core.evaluate import superpoint_purity as purity  # noqa: E402
from partslip_core.normalize import normalize  # noqa: E402
from partslip_core.superpoints import compute_superpoints, cut_pursuit_available  # noqa: E402
from partslip_core.synthetic import CATEGORY_PARTS, SCAN_KINDS, make_object, make_scan  # noqa: E402
from partslip_core.threads import torch_threads  # noqa: E402
from partslip_core.types import PointCloud  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backends", default="cut_pursuit,torch,graph")
    parser.add_argument("--device", default="cpu", help="where the torch backend runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (PipelineConfig.cpu_threads)")
    parser.add_argument("--normal-max-nn", type=int, default=None, help="override superpoints.normal_max_nn")
    parser.add_argument("--scan", choices=SCAN_KINDS, default="full",
                        help="full surface, one noisy partial scan, or 4 fused scans (synthetic.make_scan)")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b != "cut_pursuit" or cut_pursuit_available()]
    overrides = {} if args.normal_max_nn is None else {"normal_max_nn": args.normal_max_nn}
    print(f"points {args.points}, {args.scan} scans, seeds {args.seeds}, device {args.device}, threads {args.threads}, "
          f"{overrides}")
    print(f"{'backend':<12} {'category':<10} {'part purity':>11} {'instance purity':>15} {'superpoints':>11} {'ms':>7}")
    means = {}
    for backend in backends:
        rows = []
        config = SuperpointConfig(backend=backend, **overrides)
        device = args.device if backend == "torch" else "cpu"
        for category in sorted(CATEGORY_PARTS):
            for seed in range(args.seeds):
                obj = make_scan(make_object(category, num_points=args.points, seed=seed), args.scan, seed)
                canonical = normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), NormalizeConfig())
                with torch_threads(args.threads):
                    synchronize(device)
                    start = time.perf_counter()
                    sps = compute_superpoints(canonical.xyz, canonical.rgb, None, config, threads=args.threads,
                                              device=device)
                    synchronize(device)
                elapsed = (time.perf_counter() - start) * 1000
                instance_key = np.where(obj.point_instance >= 0, obj.point_label * 10000 + obj.point_instance, -1)
                rows.append((category, purity(sps.point_superpoint, obj.point_label),
                             purity(sps.point_superpoint, instance_key), sps.num_superpoints, elapsed))
        for category in sorted(CATEGORY_PARTS):
            sel = np.array([r[1:] for r in rows if r[0] == category])
            print(f"{backend:<12} {category:<10} {sel[:, 0].mean():>11.3f} {sel[:, 1].mean():>15.3f} "
                  f"{sel[:, 2].mean():>11.0f} {np.median(sel[:, 3]):>7.0f}")
        table = np.array([r[1:] for r in rows])
        means[backend] = table[:, :3].mean(axis=0)
        print(f"{backend:<12} {'mean':<10} {table[:, 0].mean():>11.3f} {table[:, 1].mean():>15.3f} "
              f"{table[:, 2].mean():>11.0f} {np.median(table[:, 3]):>7.0f}", flush=True)
    if "cut_pursuit" in means:
        for backend, mean in means.items():
            if backend != "cut_pursuit":
                delta = mean - means["cut_pursuit"]
                print(f"{backend} - cut_pursuit: part purity {delta[0]:+.4f}, instance purity {delta[1]:+.4f}, "
                      f"superpoints {mean[2] / means['cut_pursuit'][2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
