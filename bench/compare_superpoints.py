"""Compare the superpoint backends on the synthetic objects: purity w.r.t. ground-truth parts and instances.

    .venv/bin/python bench/compare_superpoints.py [--points 10000] [--seeds 3]

Purity = share of points whose superpoint's majority ground-truth label is their own (1.0 = no superpoint
straddles two parts). Prints one row per backend and category, then the mean.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from partslip_core.config import NormalizeConfig, SuperpointConfig
from partslip_core.evaluate import superpoint_purity as purity
from partslip_core.normalize import normalize
from partslip_core.superpoints import compute_superpoints, cut_pursuit_available
from partslip_core.synthetic import CATEGORY_PARTS, make_object
from partslip_core.types import PointCloud


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    backends = (["cut_pursuit"] if cut_pursuit_available() else []) + ["graph"]
    print(f"{'backend':<12} {'category':<9} {'part purity':>11} {'instance purity':>15} {'superpoints':>11} {'ms':>7}")
    for backend in backends:
        rows = []
        for category in sorted(CATEGORY_PARTS):
            for seed in range(args.seeds):
                obj = make_object(category, num_points=args.points, seed=seed)
                canonical = normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), NormalizeConfig())
                start = time.perf_counter()
                sps = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(backend=backend))
                elapsed = (time.perf_counter() - start) * 1000
                instance_key = np.where(obj.point_instance >= 0, obj.point_label * 10000 + obj.point_instance, -1)
                rows.append((category, purity(sps.point_superpoint, obj.point_label),
                             purity(sps.point_superpoint, instance_key), sps.num_superpoints, elapsed))
        for category in sorted(CATEGORY_PARTS):
            sel = np.array([r[1:] for r in rows if r[0] == category])
            print(f"{backend:<12} {category:<9} {sel[:, 0].mean():>11.3f} {sel[:, 1].mean():>15.3f} "
                  f"{sel[:, 2].mean():>11.0f} {np.median(sel[:, 3]):>7.0f}")
        table = np.array([r[1:] for r in rows])
        print(f"{backend:<12} {'mean':<9} {table[:, 0].mean():>11.3f} {table[:, 1].mean():>15.3f} "
              f"{table[:, 2].mean():>11.0f} {np.median(table[:, 3]):>7.0f}")


if __name__ == "__main__":
    main()
