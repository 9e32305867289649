"""The whole PartSLIP pipeline in one place.

    cloud --normalize--> canonical cloud --render--> K views --detect--> boxes per view
          [--masks--> a SAM mask per box (masks.backend: sam)]
          --superpoints--> over-segmentation --vote--> semantic labels --instances--> part instances
          --back to the input frame--> PartSegmentationResult

Every stage is a pure function in its own module; this file only wires them and times them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from partslip_core.config import MaskConfig, PipelineConfig
from partslip_core.debug import explain_unlabelled, kept_box_flags
from partslip_core.detect.base import Detector, run_detector
from partslip_core.detect.registry import build_detector, build_mask_refiner
from partslip_core.detect.sam import MaskRefiner
from partslip_core.geometry import oriented_box
from partslip_core.instances import InstanceGroups, group_instances
from partslip_core.normalize import normalize
from partslip_core.render import render_views
from partslip_core.superpoints import compute_superpoints, split_by_grid
from partslip_core.threads import torch_threads
from partslip_core.types import (InputError, NormalizedCloud, PartInstance, PartSegmentationResult, PointCloud,
                                 SemanticVotes, Superpoints, resolve_device)
from partslip_core.vote import vote
from partslip_core.vote_evidence import BoxEvidence, collect_box_evidence


def validate_part_names(part_names: Sequence[str]) -> list[str]:
    """Stripped, non-empty, unique part names (the detector prompt and label indices depend on them)."""
    if isinstance(part_names, str):
        raise InputError("part_names must be a list of names, not one string (split 'a,b' first)")
    names = [str(name).strip() for name in part_names]
    if not names:
        raise InputError("part_names is empty: name at least one part to segment")
    if any(not name for name in names):
        raise InputError(f"part_names contains an empty name: {list(part_names)!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"part_names has duplicates: {', '.join(duplicates)}")
    return names


class StageTimer:
    """Collects wall-clock milliseconds per stage (synchronizing CUDA so GPU time is attributed right)."""

    def __init__(self, device: torch.device, progress: Optional[Callable[[str], None]] = None) -> None:
        self.device = device
        self.progress = progress
        self.timings_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings_ms[name] = (time.perf_counter() - start) * 1000.0


def segment(cloud: PointCloud, part_names: Sequence[str], config: PipelineConfig | None = None,
            detector: Detector | None = None, keep_views: bool = False,
            progress: Optional[Callable[[str], None]] = None,
            mask_refiner: MaskRefiner | None = None) -> PartSegmentationResult:
    """Segment ``cloud`` into the named parts. Outputs are in the input's frame and point order.

    ``detector`` defaults to the backend named in ``config.detector``; ``mask_refiner`` (turns boxes
    into masks) to the one named in ``config.masks`` (none: box voting, the reference); ``progress``
    is called with each stage's name as it starts. Raises InputError for bad clouds or part lists,
    DetectorError when the detector or the mask backend cannot be built or run.
    """
    config = config or PipelineConfig()
    with torch_threads(config.cpu_threads):
        return _segment(cloud, part_names, config, detector, keep_views, progress, mask_refiner)


class _LastMaskRefiner:
    """The last mask refiner built from a config, kept so repeated segment() calls (the node, eval over a
    dataset) do not reload SAM's weights each time. One entry: a config change replaces (frees) it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._refiner: MaskRefiner | None = None

    def get(self, config: MaskConfig, device: torch.device, timer: "StageTimer") -> MaskRefiner | None:
        key = (repr(config), str(device))
        with self._lock:
            if self._key != key:
                self._key, self._refiner = None, None  # free the old model before loading the new one
                with timer.stage("load_masks"):
                    self._refiner = build_mask_refiner(config, str(device))
                self._key = key
            return self._refiner

    def clear(self) -> None:
        with self._lock:
            self._key, self._refiner = None, None


_MASK_REFINERS = _LastMaskRefiner()


def clear_model_cache() -> None:
    """Drop the cached mask refiner (frees its GPU memory)."""
    _MASK_REFINERS.clear()


def _segment(cloud: PointCloud, part_names: Sequence[str], config: PipelineConfig, detector: Detector | None,
             keep_views: bool, progress: Optional[Callable[[str], None]],
             mask_refiner: MaskRefiner | None = None) -> PartSegmentationResult:
    names = validate_part_names(part_names)
    if not isinstance(cloud, PointCloud):
        raise InputError(f"cloud must be a PointCloud; got {type(cloud).__name__}")
    cloud = PointCloud.from_arrays(cloud.xyz, cloud.rgb, cloud.normals, cloud.intensity, cloud.fields)
    device = resolve_device(config.device)
    timer = StageTimer(device, progress)
    started = time.perf_counter()
    with timer.stage("normalize"):
        canonical = normalize(cloud, config.normalize)
    if detector is None:
        with timer.stage("load_detector"):
            detector = build_detector(config.detector, str(device))
    if mask_refiner is None and config.masks.backend != "none":
        mask_refiner = _MASK_REFINERS.get(config.masks, device, timer)
    with timer.stage("render"):
        # no input colour: render_views shades by geometry (render.uncoloured) instead of the grey fill
        views = render_views(canonical.xyz, None if cloud.rgb is None else canonical.rgb, config.render, device,
                             normals=canonical.normals, intensity=cloud.intensity)  # same point order
    with timer.stage("detect"):
        # the cloud's per-point fields, in the point order the views index (normalize keeps the order)
        detections = run_detector(detector, views, names, cloud.fields)
    if len(detections) != views.num_views:
        raise RuntimeError(f"detector {detector.name!r} returned {len(detections)} views for {views.num_views}")
    if mask_refiner is not None:
        with timer.stage("masks"):
            detections = mask_refiner.refine(views, detections)
    with timer.stage("superpoints"):
        superpoints = compute_superpoints(canonical.xyz, canonical.rgb, canonical.normals, config.superpoints,
                                          threads=config.cpu_threads, device=device)
    with timer.stage("vote"):
        box_evidence = collect_box_evidence(views, detections, names, config.vote, device)  # shared with the re-vote
        votes = vote(superpoints, views, detections, names, config.vote, device, box_evidence)
    with timer.stage("instances"):
        pieces, piece_votes, piece_parent = superpoints, votes, None
        if config.instances.split_extent > 0:
            pieces, piece_votes, piece_parent = split_for_instances(canonical.xyz, superpoints, votes, views,
                                                                    detections, names, config, device, box_evidence)
        groups = (group_instances(canonical.xyz, pieces, piece_votes, views, config.instances, device, piece_parent)
                  if config.instances.enabled else _no_instances(cloud.num_points))
        instances = build_instances(cloud, canonical, groups, names)
    point_score = np.take_along_axis(votes.superpoint_scores, votes.superpoint_label.clip(0)[:, None], 1)[:, 0]
    point_score = np.where(votes.superpoint_label >= 0, point_score, 0.0)[superpoints.point_superpoint]
    # why points stay unlabelled (no boxes / whole-object boxes / low scores): sub-millisecond, always kept
    diagnosis = explain_unlabelled(votes.point_label, detections, votes, names, config.vote, views.point_visible)
    timer.timings_ms["total"] = (time.perf_counter() - started) * 1000.0
    return PartSegmentationResult(
        part_names=names, point_label=votes.point_label.astype(np.int64), point_instance=groups.point_instance,
        point_score=point_score.astype(np.float32), instances=instances, timings_ms=timer.timings_ms,
        num_superpoints=superpoints.num_superpoints, num_boxes=int(len(votes.box_label)),
        views=views if keep_views else None, detections=list(detections) if keep_views else None,
        kept_boxes=kept_box_flags(votes, detections) if keep_views else None,
        point_superpoint=superpoints.point_superpoint, diagnosis=diagnosis,
    )


def split_for_instances(xyz: np.ndarray, superpoints: Superpoints, votes: SemanticVotes, views, detections,
                        names: list[str], config: PipelineConfig, device: torch.device,
                        box_evidence: Optional[BoxEvidence] = None) -> tuple[Superpoints, SemanticVotes, np.ndarray]:
    """Split superpoints by a voxel grid before grouping, keeping each piece's semantic label.

    Returns the pieces, their votes (labels inherited) and each piece's parent superpoint (S',).

    Coplanar, same-coloured neighbours (two cabinet doors) share one superpoint, so no grouping can
    separate them; pieces of it can be told apart by the boxes they fall in. box_evidence: the first
    vote's (``vote_evidence.collect_box_evidence``), reused instead of collected again.
    """
    pieces = split_by_grid(xyz, superpoints.point_superpoint, config.instances.split_extent)
    refined = Superpoints(point_superpoint=pieces, num_superpoints=int(pieces.max()) + 1)
    parent = np.zeros(refined.num_superpoints, np.int64)
    parent[pieces] = superpoints.point_superpoint
    # point labels are inherited below, so the per-point refinement is skipped (same outputs, half the time); so are
    # the small-part margins, which only move labels, unless re-estimation lets labels decide which boxes stay
    piece_config = dataclasses.replace(config.vote, refine_points=False)
    if config.vote.reestimate_iterations == 0:
        piece_config = dataclasses.replace(piece_config, nested_part_margin=0.0, specific_margin_per_miss=0.0)
    refined_votes = vote(refined, views, detections, names, piece_config, device, box_evidence)
    refined_votes.superpoint_label = votes.superpoint_label[parent]
    refined_votes.point_label = votes.point_label
    return refined, refined_votes, parent


def _no_instances(num_points: int) -> InstanceGroups:
    return InstanceGroups(point_instance=np.full(num_points, -1, np.int64),
                          instance_label=np.zeros(0, np.int64), instance_score=np.zeros(0, np.float32))


def build_instances(cloud: PointCloud, canonical: NormalizedCloud, groups: InstanceGroups,
                    part_names: Sequence[str]) -> list[PartInstance]:
    """Per-instance records in the input frame (one loop iteration per instance, not per point)."""
    order = np.argsort(groups.point_instance, kind="stable")
    starts = np.searchsorted(groups.point_instance[order], np.arange(len(groups.instance_label) + 1))
    records = []
    for instance_id, label in enumerate(groups.instance_label):
        indices = order[starts[instance_id]:starts[instance_id + 1]]
        points = cloud.xyz[indices].astype(np.float64)
        box = oriented_box(points)
        records.append(PartInstance(
            instance_id=instance_id, label=int(label), label_name=part_names[int(label)],
            score=float(groups.instance_score[instance_id]), point_indices=indices.astype(np.int64),
            centroid=points.mean(axis=0), aabb_min=points.min(axis=0), aabb_max=points.max(axis=0),
            obb_center=box.center, obb_rotation=box.rotation, obb_extent=box.extent, principal_axis=box.rotation[:, 0],
        ))
    return records
