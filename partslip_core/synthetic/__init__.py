"""Procedural, part-labeled object point clouds: test fixtures and evaluation data without a dataset.

Every object is an assembly of primitive surfaces (boxes, cylinders, frusta, annuli, torus arcs,
spheres) sampled with area-weighted densities, so the point density is even across parts like a
real surface scan. Shapes, part counts, proportions and colours vary with the seed; the same seed
always gives the same object. Frame: metres, Z up (REP 103), the object stands on z = 0, its
bounding box is centred in x/y, and its "front" (drawers, chair seat edge) faces +x.

``partial_scan`` turns a complete object into what a single depth sensor sees (hidden-point
removal + range noise); ``sensor_sequence`` produces a sequence of such scans along an arc in
front of the object; ``write_dataset`` writes PartNet-Ensembled style shape folders.

Modules: ``primitives`` (surfaces), ``assembly`` (object model, part lists, colours, sampling),
``furniture`` / ``household`` / ``robots`` (per-category builders), ``catalog`` (``make_object``),
``scans`` (visibility, partial and fused scans), ``dataset`` (writing shape folders). Import the
public names from here: ``from partslip_core.synthetic import make_object``.
"""

from partslip_core.synthetic.assembly import (CATEGORY_PARTS, OPTIONAL_PARTS, Piece, SyntheticObject, assemble,
                                              part_palette)
from partslip_core.synthetic.catalog import make_object
from partslip_core.synthetic.dataset import write_dataset, write_shape
from partslip_core.synthetic.primitives import (Annulus, Box, Cylinder, Frustum, Sphere, Surface, TorusArc, rot_x,
                                                rot_y, rot_z)
from partslip_core.synthetic.scans import (SCAN_KINDS, fused_scan, make_scan, partial_scan, sensor_positions,
                                           sensor_sequence, visibility_mask, visible_zbuffer)

__all__ = [
    "CATEGORY_PARTS", "OPTIONAL_PARTS", "SCAN_KINDS", "Annulus", "Box", "Cylinder", "Frustum", "Piece", "Sphere",
    "Surface", "SyntheticObject", "TorusArc", "assemble", "fused_scan", "make_object", "make_scan", "part_palette",
    "partial_scan", "rot_x", "rot_y", "rot_z", "sensor_positions", "sensor_sequence", "visibility_mask",
    "visible_zbuffer", "write_dataset", "write_shape",
]
