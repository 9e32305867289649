"""What the fourth round's vote options cost (issue 8, docs/quality.md "Fourth round"): segment() with the node
config (config/segment.yaml's pipeline, ground-truth detector) with and without vote.estimate_background,
refine_conflict_min_weight, refine_tie_margin and nested_part_margin, interleaved in one process so that both see
the same machine; medians of the per-stage wall times.

    .venv/bin/python bench/bench_vote_options.py --categories chair,cabinet,mug --points 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_robustness import apply_overrides, node_pipeline_config  # noqa: E402
from partslip_core.detect import ProjectedGroundTruthDetector  # noqa: E402
from partslip_core.pipeline import segment  # noqa: E402
from partslip_core.synthetic import CATEGORY_PARTS, make_object  # noqa: E402
from partslip_core.types import PointCloud  # noqa: E402

WITHOUT = ("vote.estimate_background=false", "vote.refine_conflict_min_weight=1.0", "vote.refine_tie_margin=0",
           "vote.nested_part_margin=0")
STAGES = ("vote", "instances", "total")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", default="chair,cabinet,mug")
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per variant (after one warm-up call)")
    args = parser.parse_args(argv)
    configs = {"without": apply_overrides(node_pipeline_config(), WITHOUT), "with": node_pipeline_config()}
    print("category | variant | " + " | ".join(f"{stage} ms" for stage in STAGES))
    for category in args.categories.split(","):
        obj = make_object(category, args.points, 0)
        cloud = PointCloud.from_arrays(obj.xyz, obj.rgb)
        detector = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance)
        times = {name: {stage: [] for stage in STAGES} for name in configs}
        for call in range(args.repeat + 1):
            for name, config in configs.items():  # interleaved: both variants see the same load
                timings = segment(cloud, CATEGORY_PARTS[category], config, detector).timings_ms
                if call:
                    for stage in STAGES:
                        times[name][stage].append(timings[stage])
        for name in configs:
            print(f"{category} | {name} | " + " | ".join(f"{np.median(times[name][s]):.1f}" for s in STAGES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
