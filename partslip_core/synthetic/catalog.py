"""``make_object``: one procedurally varied object of a category, from its builder and a seed."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from partslip_core.synthetic.assembly import Piece, SyntheticObject, assemble
from partslip_core.synthetic.furniture import build_cabinet, build_chair, build_table, build_workbench
from partslip_core.synthetic.household import build_bottle, build_kettle, build_lamp, build_mug
from partslip_core.synthetic.robots import build_cart, build_robot_arm

_MIN_POINTS = 64

_BUILDERS: dict[str, Callable[[np.random.Generator], list[Piece]]] = {
    "bottle": build_bottle, "cabinet": build_cabinet, "chair": build_chair, "kettle": build_kettle,
    "lamp": build_lamp, "mug": build_mug, "table": build_table,
    "cart": build_cart, "robot_arm": build_robot_arm, "workbench": build_workbench,
}


def make_object(category: str, num_points: int = 20000, seed: int = 0) -> SyntheticObject:
    """A complete (all-around) surface sample of one procedurally varied object."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; known: {sorted(_BUILDERS)}")
    if num_points < _MIN_POINTS:
        raise ValueError(f"num_points must be >= {_MIN_POINTS}; got {num_points}")
    # The category enters the seed so that equal seeds do not give every category the same colours.
    rng = np.random.default_rng([int(seed), zlib.crc32(category.encode())])
    pieces = _BUILDERS[category](rng)
    return assemble(category, pieces, int(num_points), rng, colour_noise=rng.uniform(0.01, 0.04))
