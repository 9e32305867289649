"""Household object builders (mug, bottle, lamp, kettle): each returns the pieces of one object, whose
front faces +x. They draw from ``rng`` in a fixed order: the same seed always gives the same object."""

from __future__ import annotations

import numpy as np

from partslip_core.synthetic.assembly import Piece, hsv_colour, part_palette
from partslip_core.synthetic.primitives import (Annulus, Cylinder, Frustum, Sphere, Surface, TorusArc, rot_x, rot_y,
                                                rot_z)


def _mug_handle(rng: np.random.Generator, radius: float, height: float) -> TorusArc:
    """A torus arc in the x-z plane whose two ends sink into the body wall at x = radius."""
    half = np.deg2rad(rng.uniform(100, 125))
    minor = rng.uniform(0.005, 0.009)
    major = min(rng.uniform(0.025, 0.04), 0.85 * (height / 2 - minor) / np.sin(half))
    x_c = radius - 0.3 * minor - major * np.cos(half)
    return TorusArc(major=major, minor=minor, u0=-half, u1=half).place([x_c, 0, height * rng.uniform(0.45, 0.55)],
                                                                       rot_x(np.pi / 2))


def _open_vessel(radius: float, height: float, wall: float) -> list[Surface]:
    """Outer wall, bottom, rim, inner wall and inner floor of an open cylindrical vessel."""
    base = min(2 * wall, 0.2 * height)
    inner = radius - wall
    return [Cylinder(radius=radius, height=height, bottom=True, top=False).place([0, 0, height / 2]),
            Annulus(r_out=radius, r_in=inner).place([0, 0, height]),
            Cylinder(radius=inner, height=height - base, bottom=False, top=False, inward=True)
            .place([0, 0, base + (height - base) / 2]),
            Annulus(r_out=inner).place([0, 0, base])]


def build_mug(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "handle"], similar_prob=0.6)
    radius, height, wall = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.12), rng.uniform(0.004, 0.008)
    handle = _mug_handle(rng, radius, height).place([0, 0, 0], rot_z(rng.uniform(0, 2 * np.pi)))
    return [Piece("body", _open_vessel(radius, height, wall), colours["body"]),
            Piece("handle", [handle], colours["handle"])]


def build_bottle(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "lid"], similar_prob=0.25)
    radius, body_h = rng.uniform(0.03, 0.05), rng.uniform(0.12, 0.25)
    shoulder_h, neck_r, neck_h = rng.uniform(0.02, 0.05), radius * rng.uniform(0.35, 0.55), rng.uniform(0.015, 0.04)
    lid_h, lid_r = rng.uniform(0.015, 0.03), neck_r * rng.uniform(1.05, 1.2)
    neck_top = body_h + shoulder_h + neck_h
    body = [Cylinder(radius=radius, height=body_h, top=False).place([0, 0, body_h / 2]),
            Frustum(r0=radius, r1=neck_r, height=shoulder_h).place([0, 0, body_h + shoulder_h / 2]),
            Cylinder(radius=neck_r, height=neck_h, bottom=False, top=False).place([0, 0, neck_top - neck_h / 2])]
    lid = [Cylinder(radius=lid_r, height=lid_h, bottom=False).place([0, 0, neck_top + lid_h / 2]),
           Annulus(r_out=lid_r, r_in=neck_r, down=True).place([0, 0, neck_top])]
    return [Piece("body", body, colours["body"]), Piece("lid", lid, colours["lid"])]


def build_lamp(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["base", "body", "shade"])
    colours["bulb"] = hsv_colour(rng.uniform(0.1, 0.17), rng.uniform(0.0, 0.3), rng.uniform(0.85, 1.0))
    base_r, base_h = rng.uniform(0.07, 0.12), rng.uniform(0.015, 0.035)
    pole_r, pole_top = rng.uniform(0.006, 0.012), rng.uniform(0.3, 0.5)
    rb, shade_h = rng.uniform(0.1, 0.16), rng.uniform(0.12, 0.2)
    rt = rb * rng.uniform(0.5, 0.8)
    shade_z = pole_top - 0.4 * shade_h + shade_h / 2
    pole_len = pole_top - base_h
    bulb_r = min(rng.uniform(0.025, 0.04), 0.8 * rt)
    return [Piece("base", [Cylinder(radius=base_r, height=base_h).place([0, 0, base_h / 2])], colours["base"]),
            Piece("body", [Cylinder(radius=pole_r, height=pole_len, bottom=False, top=False)
                           .place([0, 0, base_h + pole_len / 2])], colours["body"]),
            Piece("shade", [Frustum(r0=rb, r1=rt, height=shade_h).place([0, 0, shade_z]),
                            Frustum(r0=rb * 0.98, r1=rt * 0.98, height=shade_h, inward=True).place([0, 0, shade_z])],
                  colours["shade"]),
            Piece("bulb", [Sphere(radius=bulb_r).place([0, 0, pole_top + 0.6 * bulb_r])], colours["bulb"])]


def build_kettle(rng: np.random.Generator) -> list[Piece]:
    colours = part_palette(rng, ["body", "lid", "handle", "spout"], similar_prob=0.5)
    r0, height = rng.uniform(0.07, 0.1), rng.uniform(0.14, 0.22)
    r1 = r0 * rng.uniform(0.7, 0.95)
    lid_r, lid_h = r1 * rng.uniform(0.6, 0.85), rng.uniform(0.008, 0.015)
    body = [Annulus(r_out=r0, down=True), Frustum(r0=r0, r1=r1, height=height).place([0, 0, height / 2]),
            Annulus(r_out=r1, r_in=lid_r).place([0, 0, height])]
    lid = [Cylinder(radius=lid_r, height=lid_h, bottom=False).place([0, 0, height + lid_h / 2]),
           Cylinder(radius=0.012, height=0.015, bottom=False).place([0, 0, height + lid_h + 0.0075])]
    handle = _mug_handle(rng, r0, height).place([0, 0, 0], rot_z(np.pi))
    spout_len, tilt = rng.uniform(0.06, 0.1), np.deg2rad(rng.uniform(35, 55))
    spout = Frustum(r0=rng.uniform(0.012, 0.018), r1=rng.uniform(0.006, 0.01), height=spout_len)
    spout.place([0, 0, spout_len / 2], rot_y(tilt)).place([r0 * 0.85, 0, height * rng.uniform(0.3, 0.5)])
    return [Piece("body", body, colours["body"]), Piece("lid", lid, colours["lid"]),
            Piece("handle", [handle], colours["handle"]), Piece("spout", [spout], colours["spout"])]
