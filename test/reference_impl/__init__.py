"""A straightforward LOOP implementation of the PartSLIP lifting stages: the oracle of the equivalence test
(test/core/test_reference_equivalence.py) and the baseline of the benchmarks (bench/bench_stages.py).

It is slow on purpose. It is written the way the authors' ``src/bbox2seg.py`` is written:
Python loops over views x superpoints x boxes, ``set`` intersections of superpoint point lists with
each view's visible points, a per-category union-find over superpoint pairs, and per-instance,
per-view box IoU checks. The z-buffer (the authors use pytorch3d's compiled rasterizer) is a Python
loop over points and over the pixels of each point's (2r+1)^2 footprint (about 17 s for 100k points
x 10 views at 800 px here, so no part of it needed vectorizing). It is not part of the product and
breaks the "no loops over points" rule knowingly.

What it computes is the semantics of OUR vectorized stages (partslip_core.render / vote /
instances), so the two can be checked EQUAL on the same inputs (same superpoints, same detections):
arithmetic is float32 like torch's, comparisons use the same strictness. Where our stages
deliberately differ from the authors' code, this package follows ours; ``AUTHORS_DIFFERENCES``
(differences.py) lists those places. The camera transform (``project_points``) is shared: it is a 3x3
matrix product in both implementations and sharing it keeps the inputs of the rasterizer bit-identical.

Modules: ``render`` (the loop z-buffer), ``lift`` (voting, instances, both timed), ``compare`` (ours vs
the reference), ``differences`` (``AUTHORS_DIFFERENCES``).
"""

from test.reference_impl.compare import Equivalence, compare, same_partition
from test.reference_impl.differences import AUTHORS_DIFFERENCES
from test.reference_impl.lift import (KeptBox, ReferenceInstances, ReferenceLift, ReferenceVotes, reference_instances,
                                      reference_lift, reference_vote)
from test.reference_impl.render import reference_index_map, reference_render

__all__ = ["AUTHORS_DIFFERENCES", "Equivalence", "KeptBox", "ReferenceInstances", "ReferenceLift", "ReferenceVotes",
           "compare", "reference_index_map", "reference_instances", "reference_lift", "reference_render",
           "reference_vote", "same_partition"]
