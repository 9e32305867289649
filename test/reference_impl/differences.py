"""Where our stages (and so the loop reference) deliberately differ from the authors' PartSLIP code: one entry
per difference, each a config field or a documented rule (docs/quality.md "Differences from the authors' code").
"""

AUTHORS_DIFFERENCES = (
    "whole-object boxes: ours drops a box holding >= 98% of the view's VISIBLE points; the authors test all N "
    "projected points (hidden ones too) with mean() < 0.98",
    "small parts: ours lets a small part win only when tied with the best score; in the authors' code the "
    "small part with the highest index among those scoring >= 0.5 wins, even over a higher-scoring large part",
    "box fraction vectors (instances.box_profile_normalization): by default (active_boxes) ours normalizes the L1 "
    "distance by the number of boxes where either superpoint has points inside and treats 'no view sees both' as no "
    "evidence (distance 0: merge on adjacency); the authors (fraction_sum, also in this file) divide by the larger "
    "fraction sum and return 1 (never merge) when no view sees both",
    "adjacency: ours uses gap <= 0.02, the authors gap < 0.02",
    "instance confirmation: ours uses the kept boxes (whole-object boxes removed) and scores an instance by its "
    "best matching box; the authors use all boxes of the view and give no score",
    "robustness options, all off in the reference preset (config/segment.yaml turns most on; docs/quality.md): "
    "vote.whole_object_rule explained, vote.uncovered_weight, vote.part_view_normalization / view_agreement_fill, "
    "vote.prefer_smaller_boxes, vote.refine_points, vote.score_weighting, vote.reestimate_iterations / "
    "min_box_agreement, vote.adaptive_uncovered / background_hit_rate (per-part uncovered weight from the "
    "detector's estimated miss rate) / estimate_background / background_separation / background_min_share (rates "
    "read off the views when the object has unlabeled surfaces), vote.refine_conflict_score / "
    "refine_conflict_min_weight, vote.refine_tie_margin, vote.min_part_points, vote.specific_part_margin, "
    "vote.specific_margin_per_miss / specific_margin_max / specific_margin_looseness, "
    "vote.nested_part_margin / nested_part_min_score, "
    "instances.unconfirmed split, instances.slab_distance, instances.regroup_distance; "
    "this loop reference implements none of them (the equivalence test runs the reference behaviour)",
    "the authors skip the inside test when a superpoint's 2D bounds have IoU < 1e-6 with the box, which "
    "counts a superpoint with one visible point (zero-area bounds) as outside every box; ours does not",
    "superpoints.backend: the authors run L0 cut pursuit (CPU-only C++); ours adds torch, a greedy L0 merge of the "
    "same energy on the same graph (partslip_core/superpoints_torch.py, same code on CPU and CUDA), and auto = cut "
    "pursuit on CPU when pycut-pursuit imports, torch otherwise and always on CUDA. The reference preset keeps auto "
    "and normal_max_nn 30; config/segment.yaml uses torch with normal_max_nn 16 (docs/superpoints.md). The loop "
    "reference takes superpoints as an input, so the equivalence test does not cover this stage",
    "render.backend: the authors rasterize with pytorch3d; ours also has a pure-torch splatter with pytorch3d's "
    "conventions, and auto (both presets) picks the splatter on CPU and pytorch3d on CUDA when it imports. This "
    "file's loop z-buffer follows the splatter's rules; test_render.py compares the two backends only where "
    "pytorch3d is installed",
    "render.uncoloured: the authors need rgb; a cloud without rgb is rendered shaded (default: headlight Lambert on "
    "normals + depth, render.shaded_grey, times an albedo from per-point intensity when the cloud has it: "
    "render.intensity_albedo) or flat mid grey (flat); clouds with rgb render identically either way",
    "masks.backend: sam (off by default: none in both presets) is the PartSLIP++ step, a SAM mask per box prompt "
    "(partslip_core/detect/sam.py; by default clipped to the box grown by masks.clip_margin) used for voting "
    "instead of the rectangle; PartSLIP's code votes with boxes, as this file does",
)
