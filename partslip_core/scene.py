"""Object isolation in a scene cloud: remove the support surfaces (table, floor, walls), keep one object.

A camera or lidar sees an object on a table, the table's legs, the floor, maybe a wall. PartSLIP
segments one object, so the scene is reduced to it (the tabletop-perception recipe: planes, then the
prism above the support, then Euclidean clusters):

1. up to ``max_planes`` planes are found largest first (RANSAC: ``partslip_core.ransac``, open3d's
   ``segment_plane`` reproduced exactly); a plane counts only if it holds ``plane_min_fraction`` of
   all points;
2. horizontal planes (normal within ``max_tilt_deg`` of ``up``) are support candidates, tried from
   the highest down; the points above a support (not on a horizontal plane) are clustered (DBSCAN:
   points within ``cluster_eps`` chain together; open3d's, or ``partslip_core.dbscan`` without it);
3. a cluster qualifies if it rests on the support (lowest point within ``cluster_eps`` + 2
   ``plane_distance``) and at least 90% of its footprint lies inside the support's convex hull; one
   qualifying cluster is chosen by ``select``: ``largest`` (most points), ``nearest`` (the cluster with
   the point nearest ``target_point``) or ``crop`` (most points inside ``crop_min``/``crop_max``);
4. the chosen cluster is the object if its footprint centre lies inside the hull by at least half its
   footprint radius and 2 ``cluster_eps`` (the back of a chair on its own seat, a cart's handle on its
   platform are no objects on a table) and nothing higher within ``OVERHEAD_REACH`` surrounds its
   footprint (a lamp's pole under its own shade; also, by design, an object under a shelf).

If no support plane carries such an object, the cloud is treated as an object-only scan and kept
whole: isolation never removes a lone object's own flat parts. ``IsolationResult.summary`` says what
was removed, for diagnostics. All arrays: xyz (N, 3) float; masks (N,) bool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from partslip_core.dbscan import dbscan_labels
from partslip_core.ransac import segment_plane
from partslip_core.schema import check, param

try:
    import open3d as _o3d
except ImportError:  # pragma: no cover - depends on the install
    _o3d = None

SELECT_RULES = ("largest", "nearest", "crop")
RANSAC_SAMPLE = 5000  # points a plane is fitted on (inliers are then taken from the whole cloud)
OVERHEAD_REACH = 0.25  # m: points higher than the object this close around it count as "over it"


@dataclass(frozen=True)
class IsolationConfig:
    """Parameters of ``isolate_object`` (metres; see the module docstring for the rules). Each field's doc and
    range is its ``schema.param`` declaration; the node exposes them as ``fusion.*`` (``select`` as
    ``fusion.cluster_select``)."""

    max_planes: int = param(3, ge=0, doc="Isolation: most planes removed (largest first); 0 = isolation off.")
    plane_distance: float = param(0.01, gt=0.0, unit="m", doc="Isolation: points within this distance of a plane "
                                                              "belong to it.")
    plane_min_fraction: float = param(0.05, gt=0.0, le=1.0, doc="Isolation: a plane must hold this share of the "
                                                                "points to count.")
    max_tilt_deg: float = param(20.0, ge=0.0, le=90.0, unit="deg", doc="Isolation: planes whose normal is within "
                                                                       "this angle of up are support candidates.")
    ransac_iterations: int = param(1000, ge=1, doc="Isolation: RANSAC iterations per plane.")
    cluster_eps: float = param(0.02, gt=0.0, unit="m", doc="Isolation: points closer than this chain into one "
                                                           "cluster.")
    cluster_min_points: int = param(10, ge=1, doc="Isolation: smaller clusters are noise.")
    select: str = param("largest", choices=SELECT_RULES, name="cluster_select",
                        doc="Isolation: which cluster is the object: largest | nearest (to target_point) | crop "
                            "(most points inside crop_min/crop_max).")
    target_point: tuple[float, float, float] = param((0.0, 0.0, 0.0), unit="m", doc="Isolation, cluster_select "
                                                     "nearest: the point (fixed frame) the object is nearest to.")
    crop_min: tuple[float, float, float] = param((-1.0, -1.0, -1.0), unit="m", doc="Crop box lower corner [x, y, z] "
                                                 "(fixed frame): fusion.crop_enabled and cluster_select crop.")
    crop_max: tuple[float, float, float] = param((1.0, 1.0, 1.0), unit="m", doc="Crop box upper corner [x, y, z] "
                                                 "(fixed frame): fusion.crop_enabled and cluster_select crop.")
    seed: int = param(0, ge=0, doc="Seed of the random choices (plane RANSAC, max_points subsampling): runs are "
                                   "reproducible.")

    def __post_init__(self) -> None:
        check(self)  # types, ranges and choices from the field declarations (partslip_core.schema)


@dataclass
class Plane:
    """A removed plane: unit ``normal``, ``offset`` (normal . x + offset = 0), inlier count, orientation."""

    normal: np.ndarray
    offset: float
    num_points: int
    horizontal: bool
    height: float  # of its inliers' centre along ``up``


@dataclass
class IsolationResult:
    """``keep``: the object's points. ``support``: index into ``planes`` of the plane it stands on, or None
    when nothing was isolated (object-only scan: ``keep`` is all True)."""

    keep: np.ndarray
    planes: list[Plane] = field(default_factory=list)
    support: Optional[int] = None
    num_clusters: int = 0
    object_points: int = 0
    select: str = "largest"

    def summary(self) -> str:
        if self.support is None:
            return f"no object on a support plane among {len(self.planes)} plane(s): kept the whole cloud"
        planes = ", ".join(f"{'horizontal' if p.horizontal else 'tilted'} plane of {p.num_points} points at "
                           f"{p.height:+.2f} m{' (support)' if i == self.support else ''}"
                           for i, p in enumerate(self.planes))
        removed = int(self.keep.size - self.keep.sum())
        return (f"removed {removed} of {self.keep.size} points: {planes}; {self.num_clusters - 1} other "
                f"cluster(s) and points off the support; kept the object ({self.object_points} points, "
                f"rule {self.select})")


def fit_plane(xyz: np.ndarray, distance: float, iterations: int, seed: int) -> np.ndarray:
    """(4,) plane (unit normal, offset) with the most inliers within ``distance`` (RANSAC on at most
    ``RANSAC_SAMPLE`` points: a plane worth removing holds thousands, and the cost no longer grows with N).
    ``partslip_core.ransac``: open3d's ``segment_plane`` exactly as it runs on one thread, with or without
    open3d, ~10x faster (open3d on several threads can return another plane where its early stop triggers)."""
    if xyz.shape[0] > RANSAC_SAMPLE:
        xyz = xyz[np.random.default_rng(seed).choice(xyz.shape[0], RANSAC_SAMPLE, replace=False)]
    plane, _ = segment_plane(xyz.astype(np.float64), distance, iterations, seed)
    return plane / np.linalg.norm(plane[:3])


def cluster_labels(xyz: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """(N,) int64 DBSCAN cluster id per point (points within ``eps`` chain through core points, those with
    ``min_points`` neighbours), -1 for noise: open3d's ``cluster_dbscan`` when importable (its neighbour
    search uses every core), else ``partslip_core.dbscan`` (the same labels, tested against open3d)."""
    if xyz.shape[0] == 0:
        return np.zeros(0, np.int64)
    if _o3d is not None:
        cloud = _o3d.geometry.PointCloud(_o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        return np.asarray(cloud.cluster_dbscan(eps=eps, min_points=min_points), np.int64)
    return dbscan_labels(np.asarray(xyz, np.float64), eps, min_points)


def choose_cluster(xyz: np.ndarray, labels: np.ndarray, config: IsolationConfig) -> int:
    """The cluster id ``config.select`` picks (-1 when there is no cluster)."""
    valid = labels >= 0
    if not valid.any():
        return -1
    ids = labels[valid]
    if config.select == "nearest":
        distance = np.linalg.norm(xyz[valid] - np.asarray(config.target_point, np.float64), axis=1)
        return int(ids[np.argmin(distance)])
    if config.select == "crop":
        inside = np.all((xyz[valid] >= config.crop_min) & (xyz[valid] <= config.crop_max), axis=1)
        if not inside.any():
            return -1
        return int(np.argmax(np.bincount(ids, weights=inside.astype(np.float64))))
    return int(np.argmax(np.bincount(ids)))


def find_planes(xyz: np.ndarray, up: np.ndarray, config: IsolationConfig) -> tuple[list[Plane], np.ndarray]:
    """Planes largest first and the (N,) int index of the plane each point belongs to (-1 = none). A plane
    must hold ``plane_min_fraction`` of the whole cloud, so an object's own flat side never counts."""
    owner = np.full(xyz.shape[0], -1, np.int64)
    planes: list[Plane] = []
    cos_tilt = np.cos(np.deg2rad(config.max_tilt_deg))
    for k in range(config.max_planes):
        left = np.flatnonzero(owner < 0)
        if left.size < max(3 * config.cluster_min_points, 30):
            break
        sample = left  # fit_plane's own subsample, drawn here so that the whole cloud is never copied
        if left.size > RANSAC_SAMPLE:
            sample = left[np.random.default_rng(config.seed + k).choice(left.size, RANSAC_SAMPLE, replace=False)]
        plane = fit_plane(xyz[sample], config.plane_distance, config.ransac_iterations, config.seed + k)
        on_plane = np.abs(xyz @ plane[:3] + plane[3]) <= config.plane_distance
        inliers = np.flatnonzero(on_plane & (owner < 0))
        if inliers.size < config.plane_min_fraction * xyz.shape[0]:
            break
        normal, offset = plane[:3], float(plane[3])
        if normal @ up < 0:
            normal, offset = -normal, -offset
        owner[inliers] = len(planes)
        planes.append(Plane(normal, offset, int(inliers.size), bool(normal @ up >= cos_tilt),
                            float((xyz[inliers] @ up).mean())))
    return planes, owner


def _footprint_basis(up: np.ndarray) -> np.ndarray:
    """(3, 2): two unit axes spanning the plane orthogonal to ``up``."""
    helper = np.eye(3)[int(np.argmin(np.abs(up)))]
    first = np.cross(up, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(up, first)], axis=1)


def _hull_facets(points: np.ndarray) -> Optional[np.ndarray]:
    """(F, 3) facet equations (outward normal, offset) of the 2D convex hull of ``points``; None if degenerate."""
    try:
        return ConvexHull(points).equations
    except (QhullError, ValueError):
        return None


def _hull_depth(facets: Optional[np.ndarray], query: np.ndarray) -> np.ndarray:
    """(M,) distance of 2D ``query`` points inside the hull of ``facets`` (``_hull_facets``) to its boundary
    (negative outside); -inf for everything when the hull is degenerate (None)."""
    if facets is None:
        return np.full(query.shape[0], -np.inf)
    return -(query @ facets[:, :2].T + facets[:, 2]).max(axis=1)


def _object_on(xyz: np.ndarray, owner: np.ndarray, plane_index: int, plane: Plane, up: np.ndarray,
               basis: np.ndarray, config: IsolationConfig) -> tuple[np.ndarray, int]:
    """(keep mask, number of clusters above) of the object standing on ``plane``; all False when none does.

    A cluster qualifies when it rests on the plane and (nearly) all of its footprint lies inside the
    plane's hull: a lamp's shade overhanging its own base, or a cart's handle, is no object on a table."""
    none = np.zeros(xyz.shape[0], bool)
    height = xyz @ plane.normal + plane.offset
    support_2d = np.take(xyz, np.flatnonzero(owner == plane_index), axis=0) @ basis  # take: 4x bool indexing
    above = np.flatnonzero((owner < 0) & (height > config.plane_distance))
    if above.size < config.cluster_min_points:
        return none, 0
    labels = cluster_labels(xyz[above], config.cluster_eps, config.cluster_min_points)
    if (labels < 0).all():
        return none, 0
    count = int(labels.max() + 1)
    valid = labels >= 0
    support_hull = _hull_facets(support_2d)  # once per support: qhull on its ~40k points costs ms
    inside = _hull_depth(support_hull, xyz[above] @ basis) >= -config.cluster_eps
    share_inside = np.bincount(labels[valid], weights=inside[valid], minlength=count) / np.maximum(
        np.bincount(labels[valid], minlength=count), 1)
    lowest = np.full(count, np.inf)
    np.minimum.at(lowest, labels[valid], height[above][valid])
    qualifies = (share_inside >= 0.9) & (lowest <= config.cluster_eps + 2 * config.plane_distance)
    chosen = choose_cluster(xyz[above], np.where(valid & qualifies[np.maximum(labels, 0)], labels, -1), config)
    if chosen < 0:
        return none, count
    members = above[labels == chosen]
    footprint = xyz[members] @ basis
    centre = footprint.mean(axis=0)
    radius = float(np.sqrt(((footprint - centre) ** 2).sum(axis=1).mean()))
    if _hull_depth(support_hull, centre[None])[0] < max(0.5 * radius, 2 * config.cluster_eps):
        return none, count  # at the very edge: a post or wall of the object itself, not a thing put down
    others = above[(labels != chosen) & (height[above] > height[members].max())]
    near = xyz[others[np.linalg.norm(xyz[others] @ basis - centre, axis=1) <= max(3 * radius, OVERHEAD_REACH)]]
    if near.shape[0] >= config.cluster_min_points and _hull_depth(_hull_facets(near @ basis), centre[None])[0] >= 0:
        return none, count  # something hangs over it: a lamp's pole under its shade, not an object on a table
    keep = none.copy()
    keep[members] = True
    return keep, count


def isolate_object(xyz: np.ndarray, config: IsolationConfig = IsolationConfig(),
                   up: Sequence[float] = (0.0, 0.0, 1.0)) -> IsolationResult:
    """Keep-mask of the object in a scene cloud (module docstring); all True for an object-only scan."""
    xyz = np.asarray(xyz, np.float64)
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    result = IsolationResult(keep=np.ones(xyz.shape[0], bool), select=config.select)
    if xyz.shape[0] < max(3 * config.cluster_min_points, 30) or config.max_planes == 0:
        return result
    result.planes, owner = find_planes(xyz, up, config)
    tilted = np.flatnonzero([not p.horizontal for p in result.planes])
    owner[np.isin(owner, tilted)] = -1  # walls and the like: the hull test leaves them out anyway
    basis = _footprint_basis(up)
    supports = sorted((i for i, p in enumerate(result.planes) if p.horizontal), key=lambda i: -result.planes[i].height)
    for index in supports:
        keep, clusters = _object_on(xyz, owner, index, result.planes[index], up, basis, config)
        if keep.any():
            result.keep, result.support, result.num_clusters = keep, index, clusters
            result.object_points = int(keep.sum())
            break
    return result
