"""Furniture builders (chair, table, cabinet, workbench): each returns the pieces of one object, whose
front faces +x. They draw from ``rng`` in a fixed order: the same seed always gives the same object."""

from __future__ import annotations

import numpy as np

from partslip_core.synthetic.assembly import Piece, jitter_colour, part_palette
from partslip_core.synthetic.primitives import Box, Cylinder, Surface, rot_y


def _leg(round_leg: bool, width: float, height: float, x: float, y: float) -> Surface:
    """A vertical leg from the floor to ``height`` (top face omitted: it is hidden under the top)."""
    if round_leg:
        return Cylinder(radius=width / 2, height=height, top=False).place([x, y, height / 2])
    return Box(size=[width, width, height], faces=(True,) * 5 + (False,)).place([x, y, height / 2])


def build_chair(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["seat", "back", "leg", "arm"])
    w, d, t = rng.uniform(0.40, 0.56), rng.uniform(0.38, 0.52), rng.uniform(0.03, 0.07)
    seat_z = rng.uniform(0.38, 0.48)  # underside of the seat
    top = seat_z + t
    pieces = [Piece("seat", [Box(size=[d, w, t]).place([0, 0, seat_z + t / 2])], colours["seat"])]
    bw, bt, bh = w * rng.uniform(0.8, 1.0), rng.uniform(0.025, 0.05), rng.uniform(0.35, 0.55)
    tilt = np.deg2rad(rng.uniform(0, 14))
    back = Box(size=[bt, bw, bh], faces=(True,) * 4 + (False, True)).place([0, 0, bh / 2])
    back.place([0, 0, 0], rot_y(-tilt))  # lean backwards (-x) about the bottom edge
    pieces.append(Piece("back", [back.place([-d / 2 + bt / 2, 0, top])], colours["back"]))
    round_leg, lw, inset = rng.random() < 0.5, rng.uniform(0.025, 0.05), rng.uniform(0.0, 0.04)
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _leg(round_leg, lw, seat_z, sx * (d / 2 - inset - lw / 2), sy * (w / 2 - inset - lw / 2))
            pieces.append(Piece("leg", [leg], jitter_colour(colours["leg"], rng)))
    if rng.random() < 0.5:
        pieces += _chair_arms(rng, d, w, top, colours["arm"])
    return pieces


def _chair_arms(rng: np.random.Generator, d: float, w: float, top: float, colour: np.ndarray) -> list[Piece]:
    """Two armrests, each a horizontal rest plus a vertical support (one instance per side)."""
    length, aw, at = d * rng.uniform(0.6, 0.85), rng.uniform(0.04, 0.06), rng.uniform(0.02, 0.035)
    rise, sw = rng.uniform(0.17, 0.26), rng.uniform(0.02, 0.035)
    x_mid = -d / 2 + length / 2 + 0.02
    arms = []
    for sy in (-1, 1):
        y = sy * (w / 2 - aw / 2)
        rest = Box(size=[length, aw, at]).place([x_mid, y, top + rise + at / 2])
        support = Box(size=[sw, sw, rise], faces=(True,) * 4 + (False, False))
        support.place([x_mid + length / 2 - sw, y, top + rise / 2])
        arms.append(Piece("arm", [rest, support], jitter_colour(colour, rng)))
    return arms


def build_table(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["tabletop", "leg"])
    t, height = rng.uniform(0.02, 0.05), rng.uniform(0.68, 0.78)
    round_leg, lw = rng.random() < 0.5, rng.uniform(0.03, 0.06)
    leg_h = height - t
    if rng.random() < 0.7:
        length, width = rng.uniform(0.8, 1.6), rng.uniform(0.5, 0.9)
        top = Box(size=[length, width, t]).place([0, 0, height - t / 2])
        inset = rng.uniform(0.02, 0.08)
        xs = [-(length / 2 - inset - lw / 2), length / 2 - inset - lw / 2]
        if length > 1.3 and rng.random() < 0.5:
            xs.append(0.0)  # six legs on a long table
        spots = [(x, sy * (width / 2 - inset - lw / 2)) for x in xs for sy in (-1, 1)]
    else:
        radius = rng.uniform(0.35, 0.6)
        top = Cylinder(radius=radius, height=t).place([0, 0, height - t / 2])
        n_legs = int(rng.integers(3, 5))
        angles = np.arange(n_legs) * 2 * np.pi / n_legs + rng.uniform(0, np.pi)
        spots = [(0.7 * radius * np.cos(a), 0.7 * radius * np.sin(a)) for a in angles]
    pieces = [Piece("tabletop", [top], colours["tabletop"])]
    pieces += [Piece("leg", [_leg(round_leg, lw, leg_h, x, y)], jitter_colour(colours["leg"], rng)) for x, y in spots]
    return pieces


def _panel_with_handle(rng: np.random.Generator, kind: str, x_front: float, y: float, z: float, width: float,
                       height: float, handle_y: float, colours: dict[str, np.ndarray], knob: bool) -> list[Piece]:
    """A door or drawer front on the cabinet face (x = x_front) and its handle (a bar or a knob)."""
    tp = rng.uniform(0.015, 0.025)
    panel = Box(size=[tp, width, height], faces=(False,) + (True,) * 5).place([x_front + tp / 2, y, z])
    face = x_front + tp
    if knob:
        r, depth = rng.uniform(0.01, 0.018), rng.uniform(0.015, 0.03)
        handle = Cylinder(radius=r, height=depth, bottom=False).place([0, 0, 0], rot_y(np.pi / 2))
        handle.place([face + depth / 2, handle_y, z])
    else:
        length, thick, depth = rng.uniform(0.08, 0.16), rng.uniform(0.012, 0.02), rng.uniform(0.015, 0.03)
        size = [depth, length, thick] if kind == "drawer" else [depth, thick, length]
        handle = Box(size=size, faces=(False,) + (True,) * 5).place([face + depth / 2, handle_y, z])
    return [Piece(kind, [panel], jitter_colour(colours[kind], rng)),
            Piece("handle", [handle], jitter_colour(colours["handle"], rng))]


def build_cabinet(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["door", "drawer", "handle", "frame"], similar_prob=0.5)
    d, w, h = rng.uniform(0.35, 0.55), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.4)
    # The frame has no front face: door and drawer fronts cover it. It is unlabeled, as in PartNet-E.
    pieces = [Piece(None, [Box(size=[d, w, h], faces=(True, False) + (True,) * 4).place([0, 0, h / 2])],
                    colours["frame"])]
    n_drawers, n_doors, knob = int(rng.integers(1, 4)), int(rng.integers(1, 3)), rng.random() < 0.3
    drawer_h = min(rng.uniform(0.15, 0.22) * h, 0.55 * h / n_drawers)
    gap = 0.004
    for i in range(n_drawers):
        z = h - (i + 0.5) * drawer_h
        pieces += _panel_with_handle(rng, "drawer", d / 2, 0.0, z, w - gap, drawer_h - gap, 0.0, colours, knob)
    door_h = h - n_drawers * drawer_h
    door_w = w / n_doors
    for j in range(n_doors):
        y = -w / 2 + (j + 0.5) * door_w
        edge = (1 if j == 0 else -1) * (door_w / 2 - 0.05) if n_doors == 2 else door_w / 2 - 0.05
        pieces += _panel_with_handle(rng, "door", d / 2, y, door_h / 2, door_w - gap, door_h - gap,
                                     y + edge, colours, knob)
    return pieces


def build_workbench(rng: np.random.Generator) -> list[Piece]:
    """A table with a thick top (6-10 cm: its top and bottom faces lie further apart than the
    grouping's adjacency distance) on four legs."""
    colours = part_palette(rng, ["tabletop", "leg"])
    length, width = rng.uniform(1.0, 1.8), rng.uniform(0.5, 0.8)
    thick, height, lw = rng.uniform(0.06, 0.1), rng.uniform(0.75, 0.9), rng.uniform(0.05, 0.08)
    inset = rng.uniform(0.03, 0.1)
    pieces = [Piece("tabletop", [Box(size=[length, width, thick]).place([0, 0, height - thick / 2])], colours["tabletop"])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _leg(False, lw, height - thick, sx * (length / 2 - inset - lw / 2), sy * (width / 2 - inset - lw / 2))
            pieces.append(Piece("leg", [leg], jitter_colour(colours["leg"], rng)))
    return pieces
