"""Segmentation result -> ROS messages: labeled PointCloud2, MarkerArray, PartSegmentation, Detection3DArray.

All builders take the header of the run (frame = fixed frame, stamp = newest input cloud) and the
fused cloud the result indexes, so every output of one run carries the same header and the point
indices of ``PartSegmentation`` address the published labeled cloud.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from partslip_ros.pointcloud import build_cloud, xyz_rgb_columns
from partslip_ros.stamps import ns_to_stamp

try:  # present in a ROS 2 install, not on PyPI
    from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesisWithPose
except ImportError:  # pragma: no cover - depends on the install
    Detection3DArray = None

UNLABELED_COLOR = np.array([0.6, 0.6, 0.6], np.float32)
# Distinct colors for part labels (tab10 order); label i uses PALETTE[i % 10].
PALETTE = np.array([
    [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16], [0.58, 0.40, 0.74],
    [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.74, 0.74, 0.13], [0.09, 0.75, 0.81], [0.50, 0.50, 0.50],
], np.float32)
MARKER_NAMESPACES = ("part_boxes", "part_labels", "part_centroids", "grasp_axes")
MIN_ELONGATION = 1.5


def has_vision_msgs() -> bool:
    return Detection3DArray is not None


def label_colors(point_label: np.ndarray) -> np.ndarray:
    """(N,) label -> (N, 3) float32 palette colors, gray for -1."""
    colors = PALETTE[np.clip(point_label, 0, None) % len(PALETTE)]
    return np.where((point_label >= 0)[:, None], colors, UNLABELED_COLOR).astype(np.float32)


def labeled_cloud(header, xyz: np.ndarray, rgb: Optional[np.ndarray], result, color_by: str = "part") -> PointCloud2:
    """x, y, z, rgb (float32-packed), label (int32), instance (int32), score (float32) per fused point."""
    colors = label_colors(result.point_label) if color_by == "part" or rgb is None else rgb
    columns = xyz_rgb_columns(xyz, colors) + [
        ("label", result.point_label.astype(np.int32)),
        ("instance", result.point_instance.astype(np.int32)),
        ("score", result.point_score.astype(np.float32)),
    ]
    return build_cloud(header, columns)


def superpoint_cloud(header, xyz: np.ndarray, point_superpoint: np.ndarray) -> PointCloud2:
    """``~/debug/superpoints``: x, y, z, rgb (one distinct colour per superpoint), superpoint (int32)."""
    from partslip_core.debug import superpoint_colors
    colors = superpoint_colors(point_superpoint).astype(np.float32) / 255.0
    return build_cloud(header, xyz_rgb_columns(xyz, colors) + [("superpoint", point_superpoint.astype(np.int32))])


def rgb8_image(header, pixels: np.ndarray) -> Image:
    """sensor_msgs/Image, encoding rgb8, from an (H, W, 3) uint8 array (``~/debug/views``)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"rgb8_image needs (H, W, 3) uint8 pixels; got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    msg = Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = pixels.tobytes()
    return msg


@dataclass
class GraspHint:
    """Heuristic grasp cues of one instance: principal axis, approach direction (unit vectors), width (m)."""

    has_axis: bool
    axis: np.ndarray
    approach: np.ndarray
    width: float
    elongation: float


def grasp_hint(obb_rotation: np.ndarray, obb_extent: np.ndarray, centroid: np.ndarray,
               object_centroid: np.ndarray) -> GraspHint:
    """Axis = longest box axis (defined when longest/middle >= 1.5); approach = object centre -> part,
    orthogonal to the axis (the shortest box axis, pointing outwards, when the part sits at the centre)."""
    axis = np.asarray(obb_rotation, np.float64)[:, 0]
    extent = np.asarray(obb_extent, np.float64)
    elongation = float(extent[0] / max(extent[1], 1e-9))
    outward = np.asarray(centroid, np.float64) - np.asarray(object_centroid, np.float64)
    approach = outward - axis * (outward @ axis)
    if np.linalg.norm(approach) < 1e-6:
        approach = np.asarray(obb_rotation, np.float64)[:, 2]
        approach = approach if approach @ outward >= 0 else -approach
    approach = approach / max(np.linalg.norm(approach), 1e-12)
    return GraspHint(has_axis=bool(elongation >= MIN_ELONGATION), axis=axis, approach=-approach,
                     width=float(extent[1]), elongation=elongation)


def _point(v: Sequence[float]) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _vector(v: Sequence[float]) -> Vector3:
    return Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def obb_pose(center: np.ndarray, rotation: np.ndarray) -> Pose:
    from partslip_core.geometry import rotation_to_quaternion
    q = rotation_to_quaternion(np.asarray(rotation, np.float64))
    orientation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return Pose(position=_point(center), orientation=orientation)


def part_instance_msg(instance, object_centroid: np.ndarray):
    """partslip_ros/msg/PartInstance from a partslip_core PartInstance."""
    from partslip_ros.msg import PartInstance as PartInstanceMsg
    hint = grasp_hint(instance.obb_rotation, instance.obb_extent, instance.centroid, object_centroid)
    msg = PartInstanceMsg(
        instance_id=int(instance.instance_id), label=int(instance.label), label_name=instance.label_name,
        score=float(instance.score), num_points=int(instance.num_points),
        centroid=_point(instance.centroid), bbox_pose=obb_pose(instance.obb_center, instance.obb_rotation),
        bbox_size=_vector(instance.obb_extent), aabb_min=_point(instance.aabb_min), aabb_max=_point(instance.aabb_max),
        has_grasp_axis=hint.has_axis, grasp_axis=_vector(hint.axis), approach_direction=_vector(hint.approach),
        grasp_width=hint.width, elongation=hint.elongation,
    )
    msg.point_indices = instance.point_indices.astype(np.uint32).tolist()
    return msg


@dataclass
class RunInfo:
    """Provenance of one run for the PartSegmentation message."""

    detector: str
    num_input_clouds: int
    window_start_ns: int
    run_id: int
    timings_ms: dict[str, float]
    total_ms: float


def part_segmentation_msg(header, xyz: np.ndarray, result, info: RunInfo):
    """partslip_ros/msg/PartSegmentation for one run (xyz: the fused cloud the result indexes)."""
    from partslip_ros.msg import PartSegmentation
    centroid = xyz.astype(np.float64).mean(axis=0)
    labeled = result.point_label[result.point_label >= 0]
    counts = np.bincount(labeled, minlength=len(result.part_names))
    msg = PartSegmentation(
        header=header, part_names=list(result.part_names),
        instances=[part_instance_msg(inst, centroid) for inst in result.instances],
        num_points=int(xyz.shape[0]), num_labeled_points=int(labeled.shape[0]),
        object_centroid=_point(centroid), object_aabb_min=_point(xyz.min(axis=0)),
        object_aabb_max=_point(xyz.max(axis=0)),
        detector=info.detector, num_input_clouds=int(info.num_input_clouds),
        window_start=ns_to_stamp(info.window_start_ns), run_id=int(info.run_id),
        stage_names=list(info.timings_ms), stage_ms=[float(v) for v in info.timings_ms.values()],
        total_ms=float(info.total_ms),
    )
    msg.points_per_part = counts.astype(np.uint32).tolist()
    return msg


def _color(rgb: np.ndarray, alpha: float) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(alpha))


def _marker(header, ns: str, marker_id: int, kind: int, pose: Pose, scale: Vector3, color: ColorRGBA) -> Marker:
    return Marker(header=header, ns=ns, id=int(marker_id), type=kind, action=Marker.ADD, pose=pose,
                  scale=scale, color=color, lifetime=DurationMsg(sec=0, nanosec=0), frame_locked=False)


def _instance_markers(header, instance, object_centroid: np.ndarray) -> list[Marker]:
    color = PALETTE[instance.label % len(PALETTE)]
    iid = int(instance.instance_id)
    identity = Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)
    extent = np.maximum(np.asarray(instance.obb_extent, np.float64), 1e-3)
    box = _marker(header, "part_boxes", iid, Marker.CUBE, obb_pose(instance.obb_center, instance.obb_rotation),
                  _vector(extent), _color(color, 0.35))
    size = float(np.clip(extent.max() * 0.25, 0.01, 0.05))
    top = np.asarray(instance.aabb_max, np.float64)
    text_pose = Pose(position=_point([instance.centroid[0], instance.centroid[1], top[2] + size]), orientation=identity)
    text = _marker(header, "part_labels", iid, Marker.TEXT_VIEW_FACING, text_pose, Vector3(x=0.0, y=0.0, z=size),
                   _color(color, 1.0))
    text.text = f"{instance.label_name} #{iid} ({instance.score:.2f})"
    sphere = _marker(header, "part_centroids", iid, Marker.SPHERE, Pose(position=_point(instance.centroid),
                     orientation=identity), _vector([size * 0.5] * 3), _color(color, 1.0))
    markers = [box, text, sphere]
    hint = grasp_hint(instance.obb_rotation, instance.obb_extent, instance.centroid, object_centroid)
    if hint.has_axis:
        arrow = _marker(header, "grasp_axes", iid, Marker.ARROW, Pose(orientation=identity),
                        Vector3(x=0.005, y=0.01, z=0.0), _color(color, 1.0))
        half = hint.axis * extent[0] * 0.6
        arrow.points = [_point(instance.obb_center - half), _point(instance.obb_center + half)]
        markers.append(arrow)
    return markers


def marker_array(header, xyz: np.ndarray, result) -> MarkerArray:
    """DELETEALL, then per instance an oriented CUBE, a TEXT label, a centroid SPHERE and (elongated parts)
    a grasp-axis ARROW; namespace = kind, id = instance_id, so ids are stable within a result."""
    clear = Marker(header=header, action=Marker.DELETEALL)
    centroid = xyz.astype(np.float64).mean(axis=0)
    markers = [clear]
    for instance in result.instances:
        markers.extend(_instance_markers(header, instance, centroid))
    return MarkerArray(markers=markers)


def detection3d_array(header, result):
    """vision_msgs/Detection3DArray (one detection per instance), or None when vision_msgs is absent."""
    if Detection3DArray is None:
        return None
    detections = []
    for instance in result.instances:
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = instance.label_name
        hypothesis.hypothesis.score = float(instance.score)
        hypothesis.pose.pose = obb_pose(instance.obb_center, instance.obb_rotation)
        bbox = BoundingBox3D(center=obb_pose(instance.obb_center, instance.obb_rotation),
                             size=_vector(instance.obb_extent))
        detections.append(Detection3D(header=header, results=[hypothesis], bbox=bbox, id=str(instance.instance_id)))
    return Detection3DArray(header=header, detections=detections)
