"""Builders for a serial robot arm and a push cart (issue 8: one dominant part with a small end part,
small wheels under a large body). Same conventions as the furniture builders."""

from __future__ import annotations

import numpy as np

from partslip_core.synthetic.assembly import Piece, jitter_colour, part_palette
from partslip_core.synthetic.primitives import Box, Cylinder, Sphere, Surface, rot_x, rot_y, rot_z


def _link(start: np.ndarray, end: np.ndarray, radius: float) -> Surface:
    """A capless cylinder from ``start`` to ``end`` (both in the x-z plane, y = 0)."""
    delta = np.asarray(end, float) - np.asarray(start, float)
    length = float(np.linalg.norm(delta))
    tilt = float(np.arctan2(delta[0], delta[2]))  # rot_y(tilt) maps +z onto the link direction
    return Cylinder(radius=radius, height=length, bottom=False, top=False).place((start + end) / 2, rot_y(tilt))


def build_robot_arm(rng: np.random.Generator) -> list[Piece]:
    """A serial arm (base, shoulder column, upper arm, forearm; one 'arm' instance) holding a small
    two-finger gripper: the arm's 2D box covers nearly the whole object in every view."""
    colours = part_palette(rng, ["arm", "gripper"], similar_prob=0.3)
    base_r, base_h = rng.uniform(0.08, 0.12), rng.uniform(0.04, 0.08)
    column_r, column_h = rng.uniform(0.04, 0.06), rng.uniform(0.2, 0.35)
    shoulder = np.array([0.0, 0.0, base_h + column_h])
    up_len, up_angle = rng.uniform(0.3, 0.45), np.deg2rad(rng.uniform(20, 60))
    elbow = shoulder + up_len * np.array([np.sin(up_angle), 0, np.cos(up_angle)])
    fore_len, fore_angle = rng.uniform(0.25, 0.4), np.deg2rad(rng.uniform(-35, 15))  # from the horizontal
    direction = np.array([np.cos(fore_angle), 0, np.sin(fore_angle)])
    wrist = elbow + fore_len * direction
    link_r = column_r * rng.uniform(0.6, 0.85)
    arm = [Cylinder(radius=base_r, height=base_h).place([0, 0, base_h / 2]),
           Cylinder(radius=column_r, height=column_h, bottom=False).place([0, 0, base_h + column_h / 2]),
           Sphere(radius=column_r * 1.1).place(shoulder), _link(shoulder, elbow, link_r),
           Sphere(radius=link_r * 1.15).place(elbow), _link(elbow, wrist, link_r * 0.85)]
    # Gripper: a palm across the forearm's end and two fingers along its direction.
    palm_t, palm_w, finger_len = rng.uniform(0.015, 0.025), rng.uniform(0.06, 0.09), rng.uniform(0.04, 0.06)
    finger_t = rng.uniform(0.008, 0.014)
    heading = rot_y(np.pi / 2 - fore_angle)  # local +z -> forearm direction, local x -> the arm's "down"
    palm = Box(size=[palm_w * 0.5, palm_w, palm_t]).place([0, 0, palm_t / 2], heading).place(wrist)
    fingers = []
    for side in (-1, 1):
        finger = Box(size=[finger_t, finger_t, finger_len], faces=(True,) * 4 + (False, True))
        finger.place([0, side * (palm_w / 2 - finger_t), palm_t + finger_len / 2], heading).place(wrist)
        fingers.append(finger)
    swing = rot_z(rng.uniform(-np.pi / 3, np.pi / 3))
    pieces = [Piece("arm", arm, colours["arm"]), Piece("gripper", [palm] + fingers, colours["gripper"])]
    for piece in pieces:
        for surface in piece.surfaces:
            surface.place([0, 0, 0], swing)
    return pieces


def build_cart(rng: np.random.Generator) -> list[Piece]:
    """A box-bodied cart on four small wheels with a push handle at the back (-x)."""
    colours = part_palette(rng, ["body", "handle", "wheel"], similar_prob=0.3)
    length, width, height = rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.6), rng.uniform(0.15, 0.35)
    wheel_r, wheel_w = rng.uniform(0.04, 0.06), rng.uniform(0.025, 0.04)
    bottom = 2 * wheel_r + rng.uniform(0.0, 0.01)
    pieces = [Piece("body", [Box(size=[length, width, height]).place([0, 0, bottom + height / 2])], colours["body"])]
    inset = rng.uniform(0.03, 0.08)
    for sx in (-1, 1):
        for sy in (-1, 1):
            wheel = Cylinder(radius=wheel_r, height=wheel_w).place([0, 0, 0], rot_x(np.pi / 2))
            wheel.place([sx * (length / 2 - inset - wheel_r), sy * (width / 2 - inset - wheel_w / 2), wheel_r])
            pieces.append(Piece("wheel", [wheel], jitter_colour(colours["wheel"], rng)))
    rise, bar_r = rng.uniform(0.3, 0.45), rng.uniform(0.01, 0.016)
    x_handle, top = -length / 2 + bar_r, bottom + height
    uprights = [Cylinder(radius=bar_r, height=rise, bottom=False, top=False).place([x_handle, sy * width * 0.4, top + rise / 2])
                for sy in (-1, 1)]
    bar = Cylinder(radius=bar_r, height=width * 0.8 + 2 * bar_r).place([0, 0, 0], rot_x(np.pi / 2))
    pieces.append(Piece("handle", uprights + [bar.place([x_handle, 0, top + rise])], colours["handle"]))
    return pieces
