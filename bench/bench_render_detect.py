"""Render and ground-truth detector: the version before issue 11's second pass next to the current one.

CPU process time (``time.process_time``: less sensitive than wall time to the other jobs on a shared machine),
one process, old and new interleaved, 1 thread. "old" is commit be00afa's partslip_core/render.py and
partslip_core/detect/ground_truth.py (read with ``git show``), "new" the working tree; ``segment()`` runs the
pipeline with each pair. Outputs are compared first (index maps, images, visibility, screen coordinates, boxes).

    python bench/bench_render_detect.py                      # chair, 20k points, 800 px, 10 views, median of 11
    python bench/bench_render_detect.py --category cabinet --repeat 9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import module_at_commit  # noqa: E402
from partslip_core import pipeline  # noqa: E402
from partslip_core import render as new_render  # noqa: E402
from partslip_core.config import PipelineConfig  # noqa: E402
from partslip_core.detect import ground_truth as new_gt  # noqa: E402
from partslip_core.normalize import normalize  # noqa: E402
from partslip_core.synthetic import make_object  # noqa: E402
from partslip_core.types import PointCloud  # noqa: E402

BEFORE = "be00afa"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--category", default="chair")
    parser.add_argument("--points", type=int, default=20000)
    args = parser.parse_args()
    old_render = module_at_commit(BEFORE, "partslip_core/render.py", "render_before")
    old_gt = module_at_commit(BEFORE, "partslip_core/detect/ground_truth.py", "ground_truth_before")
    torch.set_num_threads(1)
    obj = make_object(args.category, args.points, seed=0)
    config = PipelineConfig()
    config.superpoints.backend, config.superpoints.normal_max_nn = "torch", 16  # config/segment.yaml's choice
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb)
    canon = normalize(cloud, config.normalize)

    def detector(module):
        return module.ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, seed=0)

    def segment(render_module, gt_module):
        pipeline.render_views = (render_module.render_views if render_module is new_render else
                                 lambda *a, intensity=None, **k: render_module.render_views(*a, **k))
        try:
            return pipeline.segment(cloud, obj.part_names, config, detector(gt_module))
        finally:
            pipeline.render_views = new_render.render_views

    rgb_old = old_render.render_views(canon.xyz, canon.rgb, config.render)
    rgb_new = new_render.render_views(canon.xyz, canon.rgb, config.render)
    grey_old = old_render.render_views(canon.xyz, None, config.render, normals=canon.normals)
    grey_new = new_render.render_views(canon.xyz, None, config.render, normals=canon.normals)
    fields = ("images", "pixel_point_index", "point_screen_xy", "point_visible", "view_angles")
    same_views = all(np.array_equal(getattr(a, f), getattr(b, f)) for a, b in ((rgb_old, rgb_new), (grey_old, grey_new))
                     for f in fields)
    boxes_old = detector(old_gt).detect(rgb_old, obj.part_names)
    boxes_new = detector(new_gt).detect(rgb_new, obj.part_names)
    same_boxes = all(np.array_equal(getattr(a, f), getattr(b, f)) for a, b in zip(boxes_old, boxes_new)
                     for f in ("boxes", "labels", "scores"))
    print(f"outputs identical: views {same_views}, ground-truth boxes {same_boxes}")
    cases = {
        "render (rgb)": (lambda: old_render.render_views(canon.xyz, canon.rgb, config.render),
                         lambda: new_render.render_views(canon.xyz, canon.rgb, config.render)),
        "render (no rgb: shaded)": (
            lambda: old_render.render_views(canon.xyz, None, config.render, normals=canon.normals),
            lambda: new_render.render_views(canon.xyz, None, config.render, normals=canon.normals)),
        "detect (ground truth)": (lambda: detector(old_gt).detect(rgb_old, obj.part_names),
                                  lambda: detector(new_gt).detect(rgb_new, obj.part_names)),
        "segment()": (lambda: segment(old_render, old_gt), lambda: segment(new_render, new_gt)),
    }
    samples = {name: ([], []) for name in cases}
    for old, new in cases.values():  # warm-up
        old(), new()
    for _ in range(args.repeat):
        for name, pair in cases.items():
            for side, run in enumerate(pair):
                start = time.process_time()
                run()
                samples[name][side].append((time.process_time() - start) * 1e3)
    print(f"{args.category}, {args.points} points, {config.render.image_size} px, {len(config.render.views)} views, "
          f"1 thread; CPU process time, median (min) of {args.repeat}; load average "
          f"{[round(v, 2) for v in os.getloadavg()]}")
    print("| stage | before ms | after ms | after / before |\n| --- | --- | --- | --- |")
    for name, (old, new) in samples.items():
        print(f"| {name} | {np.median(old):.1f} ({min(old):.1f}) | {np.median(new):.1f} ({min(new):.1f}) | "
              f"{np.median(new) / np.median(old):.2f} |")
    return 0 if same_views and same_boxes else 1


if __name__ == "__main__":
    sys.exit(main())
