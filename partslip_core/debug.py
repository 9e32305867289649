"""Debug outputs: what the detector saw, how the cloud was cut, and why points ended unlabelled.

Users of PartSLIP-style pipelines most often report "the output is all unlabelled" with nothing to
look at. This module turns what ``segment`` already computed into

- ``views_mosaic``: the K rendered views in a grid with each detection's box (and mask, translucent)
  in its part's colour and ``name score`` written on it (the node publishes it as ``~/debug/views``);
- ``superpoint_colors``: one distinct colour per superpoint (``~/debug/superpoints``);
- ``explain_unlabelled``: a structured reason and one sentence when most points end unlabelled
  (no boxes / every box dropped as a whole-object box / scores below the threshold), with counts.

Pure numpy + PIL: no ROS, no torch. Part colours are ``visualize.palette``, the same as labeled.png.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from partslip_core.config import VoteConfig
from partslip_core.types import RenderedViews, SemanticVotes, ViewDetections
from partslip_core.visualize import palette

if TYPE_CHECKING:  # the CLI helper only; keeps this module free of the pipeline import
    from partslip_core.types import PartSegmentationResult, PointCloud

HEADER_HEIGHT = 16  # pixels of the "view k" strip above each tile
GAP = 4  # pixels between tiles
GAP_COLOR = (48, 48, 48)
UNKNOWN_PART_COLOR = (128, 128, 128)  # a box whose label indexes no part name (a detector bug)


def part_colors_u8(num_parts: int) -> np.ndarray:
    """(P, 3) uint8 part colours, identical to the labeled PNG's legend (visualize.palette)."""
    return (palette(max(num_parts, 1))[:num_parts] * 255.0).round().astype(np.uint8)


def overlay_masks(image: np.ndarray, masks: np.ndarray, labels: np.ndarray, colors: np.ndarray,
                  alpha: float) -> np.ndarray:
    """Blend each (H, W) bool mask into the (H, W, 3) uint8 image with its part colour (one pass per mask)."""
    out = image.astype(np.float32)
    for mask, label in zip(masks, labels):  # M masks; each blend is one vectorized where()
        color = np.asarray(colors[label] if 0 <= label < len(colors) else UNKNOWN_PART_COLOR, np.float32)
        out = np.where(mask[..., None], (1.0 - alpha) * out + alpha * color, out)
    return out.round().clip(0, 255).astype(np.uint8)


def kept_box_flags(votes: SemanticVotes, detections: Sequence[ViewDetections]) -> list[np.ndarray]:
    """Per view, (M,) bool: which of the detector's boxes voting kept (not a whole-object box, a known
    label, not removed by re-estimation). Needs ``votes.box_index``; without it every box counts as kept."""
    flags = [np.zeros(d.num_boxes, bool) for d in detections]
    if votes.box_index is None:
        return [np.ones(d.num_boxes, bool) for d in detections]
    for view, index in zip(np.asarray(votes.box_view, np.int64), np.asarray(votes.box_index, np.int64)):  # B boxes
        flags[view][index] = True
    return flags


def _dropped_color(color: Sequence[int]) -> tuple[int, int, int]:
    """The part colour washed out halfway to grey: a box voting did not use."""
    return tuple(int(round((c + 160) / 2)) for c in color)


def _text_color(fill: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_tile(image: np.ndarray, dets: Optional[ViewDetections], kept: Optional[np.ndarray], view_index: int,
               view_angle: Sequence[float], part_names: Sequence[str], colors: np.ndarray, tile_size: int,
               mask_alpha: float, line_width: int, font) -> np.ndarray:
    """One view: masks blended at render resolution, resized to tile_size, boxes and text drawn on top."""
    from PIL import Image, ImageDraw

    height, width = image.shape[:2]
    if dets is not None and dets.masks is not None and dets.num_boxes:
        image = overlay_masks(image, dets.masks, dets.labels, colors, mask_alpha)
    scale = tile_size / max(height, width)
    tile_w, tile_h = max(1, round(width * scale)), max(1, round(height * scale))
    picture = Image.fromarray(np.ascontiguousarray(image))
    if (tile_w, tile_h) != (width, height):
        picture = picture.resize((tile_w, tile_h), Image.BILINEAR)
    canvas = Image.new("RGB", (tile_w, tile_h + HEADER_HEIGHT), GAP_COLOR)
    canvas.paste(picture, (0, HEADER_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    count = 0 if dets is None else dets.num_boxes
    dropped = 0 if kept is None or dets is None else int((~np.asarray(kept, bool)).sum())
    draw.text((3, 2), f"view {view_index} ({view_angle[0]:g}, {view_angle[1]:g})  {count} box"
              f"{'' if count == 1 else 'es'}{f', {dropped} dropped' if dropped else ''}", fill=(255, 255, 255),
              font=font)
    if dets is None:
        return np.asarray(canvas)
    kept = np.ones(dets.num_boxes, bool) if kept is None else np.asarray(kept, bool)
    order = np.argsort(kept, kind="stable")  # dropped boxes first, so the kept ones are drawn on top
    for box, label, score, used in zip(dets.boxes[order], dets.labels[order], dets.scores[order], kept[order]):
        known = 0 <= label < len(part_names)
        color = tuple(int(c) for c in colors[label]) if known else UNKNOWN_PART_COLOR
        color = color if used else _dropped_color(color)
        x1, y1, x2, y2 = (np.asarray(box, np.float64) * scale).round().astype(int).tolist()
        x1, x2 = sorted((min(max(x1, 0), tile_w - 1), min(max(x2, 0), tile_w - 1)))
        y1, y2 = sorted((min(max(y1, 0), tile_h - 1), min(max(y2, 0), tile_h - 1)))
        draw.rectangle([x1, y1 + HEADER_HEIGHT, x2, y2 + HEADER_HEIGHT], outline=color,
                       width=line_width if used else max(1, line_width // 2))
        text = f"{part_names[label] if known else f'?{label}'} {float(score):.2f}{'' if used else ' (dropped)'}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left + 4, bottom - top + 3
        tx = min(x1, max(0, tile_w - text_w))
        ty = y1 + HEADER_HEIGHT - text_h if y1 - text_h >= 0 else y1 + HEADER_HEIGHT + line_width
        draw.rectangle([tx, ty, tx + text_w - 1, ty + text_h - 1], fill=color)
        draw.text((tx + 2 - left, ty + 1 - top), text, fill=_text_color(color), font=font)
    return np.asarray(canvas)


def views_mosaic(views: RenderedViews, detections: Optional[Sequence[ViewDetections]], part_names: Sequence[str],
                 columns: Optional[int] = None, tile_size: Optional[int] = None, mask_alpha: float = 0.45,
                 line_width: int = 2, kept: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """(H, W, 3) uint8 grid of the K rendered views with the detector's boxes, masks and part names.

    Each tile is one view resized to ``tile_size`` pixels (default: the render size) under a
    ``view k (elev, azim)  M boxes`` header. Boxes are drawn in their part's colour (the labeled
    PNG's palette) with ``name score`` in a label of that colour; masks, when the detections carry
    them, are blended in at ``mask_alpha``. ``kept`` (per view (M,) bool, ``kept_box_flags`` /
    ``result.kept_boxes``) marks the boxes voting dropped: thinner, washed-out, "(dropped)".
    ``columns`` defaults to up to 5 per row.
    Raises ValueError when ``detections`` does not have one entry per view.
    """
    num_views = views.num_views
    if detections is not None and len(detections) != num_views:
        raise ValueError(f"views_mosaic: {len(detections)} detection lists for {num_views} views")
    if num_views == 0:
        raise ValueError("views_mosaic: no views to draw")
    if not 0.0 <= mask_alpha <= 1.0:
        raise ValueError(f"views_mosaic: mask_alpha must be in [0, 1]; got {mask_alpha}")
    from PIL import ImageFont

    height, width = views.image_size
    tile_size = int(tile_size or max(height, width))
    if tile_size < 16:
        raise ValueError(f"views_mosaic: tile_size must be >= 16 pixels; got {tile_size}")
    columns = max(1, min(int(columns or 5), num_views))
    rows = -(-num_views // columns)
    font = ImageFont.load_default(size=11) if tile_size >= 160 else ImageFont.load_default(size=8)
    colors = part_colors_u8(len(part_names))
    if kept is not None and detections is not None and [len(f) for f in kept] != [d.num_boxes for d in detections]:
        raise ValueError("views_mosaic: kept must hold one (M,) flag array per view, M = that view's boxes")
    tiles = [_draw_tile(views.images[k], None if detections is None else detections[k],
                        None if kept is None else kept[k], k, views.view_angles[k], part_names, colors, tile_size,
                        mask_alpha, line_width, font) for k in range(num_views)]
    tile_h, tile_w = tiles[0].shape[:2]
    mosaic = np.empty((rows * tile_h + (rows - 1) * GAP, columns * tile_w + (columns - 1) * GAP, 3), np.uint8)
    mosaic[:] = GAP_COLOR
    for k, tile in enumerate(tiles):  # K tiles, each one slice assignment
        top, left = (k // columns) * (tile_h + GAP), (k % columns) * (tile_w + GAP)
        mosaic[top:top + tile_h, left:left + tile_w] = tile
    return mosaic


def mosaic_tile_origin(k: int, views: RenderedViews, columns: Optional[int] = None,
                       tile_size: Optional[int] = None) -> tuple[int, int, float]:
    """(row, col) mosaic pixel of view k's image corner (below its header) and the image -> tile scale."""
    height, width = views.image_size
    tile_size = int(tile_size or max(height, width))
    scale = tile_size / max(height, width)
    tile_w, tile_h = max(1, round(width * scale)), max(1, round(height * scale)) + HEADER_HEIGHT
    columns = max(1, min(int(columns or 5), views.num_views))
    return (k // columns) * (tile_h + GAP) + HEADER_HEIGHT, (k % columns) * (tile_w + GAP), scale


def superpoint_colors(point_superpoint: np.ndarray) -> np.ndarray:
    """(N,) superpoint ids -> (N, 3) uint8 colours: the same id always gets the same colour, and ids
    get distinct colours (golden-ratio hue steps, 4 saturation/value levels, no greys; ids 0..1572 are
    pairwise distinct as uint8, measured)."""
    ids = np.asarray(point_superpoint)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"point_superpoint must be a (N,) integer array; got shape {ids.shape}, dtype {ids.dtype}")
    unique, inverse = np.unique(ids, return_inverse=True)  # colour each id once
    hue = (unique.astype(np.float64) * 0.6180339887498949) % 1.0
    saturation = np.where(unique % 2 == 0, 0.85, 0.6)
    value = np.where((unique // 2) % 2 == 0, 0.95, 0.75)
    sector = hue * 6.0
    channel = (np.array([5.0, 3.0, 1.0])[None, :] + sector[:, None]) % 6.0  # HSV -> RGB, vectorized
    rgb = value[:, None] - value[:, None] * saturation[:, None] * np.clip(np.minimum(channel, 4.0 - channel), 0.0, 1.0)
    return (rgb * 255.0).round().astype(np.uint8)[inverse.reshape(-1)]


@dataclass
class UnlabelledDiagnosis:
    """Why points ended unlabelled, from what the pipeline computed.

    reason: ``labelled`` (most points got a part; ``applies`` False), ``no_boxes`` (the detector
    returned none), ``whole_object_boxes`` (every box was dropped as covering the whole object),
    ``boxes_disagree`` (re-estimation removed every box), ``not_visible`` (most unlabelled points
    are seen in no rendered view), ``below_threshold`` (boxes exist but superpoint scores stay under
    vote.score_threshold). Per-part dicts map part name -> box count at each filtering step.
    """

    reason: str
    message: str
    applies: bool
    num_points: int
    unlabelled_points: int
    unlabelled_fraction: float
    num_views: int
    boxes_detected: dict[str, int] = field(default_factory=dict)
    boxes_after_whole_object: dict[str, int] = field(default_factory=dict)
    boxes_kept: dict[str, int] = field(default_factory=dict)
    boxes_unknown_label: int = 0
    num_superpoints: int = 0
    unlabelled_superpoints: int = 0
    superpoints_in_no_box: int = 0
    max_unlabelled_score: float = 0.0
    score_threshold: float = 0.5
    points_never_visible: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _count_per_part(labels: np.ndarray, part_names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, np.int64).reshape(-1), minlength=len(part_names))
    return {name: int(count) for name, count in zip(part_names, counts)}


def explain_unlabelled(point_label: np.ndarray, detections: Sequence[ViewDetections], votes: SemanticVotes,
                       part_names: Sequence[str], vote_config: VoteConfig,
                       point_visible: Optional[np.ndarray] = None,
                       min_unlabelled_fraction: float = 0.5) -> UnlabelledDiagnosis:
    """Explain the unlabelled points of one run (``applies`` when their share >= min_unlabelled_fraction).

    point_label: (N,) final labels; detections: the K views' boxes as voting got them; votes: vote()'s
    output (its ``collected_box_label`` tells the whole-object filter from re-estimation);
    point_visible: optional (K, N) bool from the rendered views.
    """
    point_label = np.asarray(point_label)
    num_parts, num_points = len(part_names), int(point_label.shape[0])
    unlabelled = int((point_label < 0).sum())
    fraction = unlabelled / max(num_points, 1)
    all_labels = np.concatenate([np.asarray(d.labels, np.int64) for d in detections] or [np.zeros(0, np.int64)])
    valid = (all_labels >= 0) & (all_labels < num_parts)
    detected = _count_per_part(all_labels[valid], part_names)
    kept = _count_per_part(votes.box_label, part_names)
    collected_labels = votes.collected_box_label if votes.collected_box_label is not None else votes.box_label
    after_whole = _count_per_part(collected_labels, part_names)
    scores = np.asarray(votes.superpoint_scores, np.float32)
    sp_unlabelled = np.asarray(votes.superpoint_label) < 0
    best = scores.max(axis=1) if scores.shape[1] else np.zeros(scores.shape[0], np.float32)
    in_no_box = int((sp_unlabelled & (best <= 0)).sum())
    max_score = float(best[sp_unlabelled].max()) if sp_unlabelled.any() else 0.0
    never_visible = (np.zeros(num_points, bool) if point_visible is None
                     else ~np.asarray(point_visible, bool).any(axis=0))
    diagnosis = UnlabelledDiagnosis(
        reason="labelled", message="", applies=bool(num_points and fraction >= min_unlabelled_fraction),
        num_points=num_points, unlabelled_points=unlabelled, unlabelled_fraction=round(fraction, 4),
        num_views=len(detections), boxes_detected=detected, boxes_after_whole_object=after_whole, boxes_kept=kept,
        boxes_unknown_label=int((~valid).sum()), num_superpoints=int(scores.shape[0]),
        unlabelled_superpoints=int(sp_unlabelled.sum()), superpoints_in_no_box=in_no_box,
        max_unlabelled_score=round(max_score, 4), score_threshold=float(vote_config.score_threshold),
        points_never_visible=int(never_visible.sum()))
    diagnosis.reason, diagnosis.message = _reason(diagnosis, point_label, never_visible, vote_config)
    return diagnosis


def _reason(d: UnlabelledDiagnosis, point_label: np.ndarray, never_visible: np.ndarray,
            vote_config: VoteConfig) -> tuple[str, str]:
    share = f"{d.unlabelled_points} of {d.num_points} points ({100 * d.unlabelled_fraction:.0f}%) are unlabelled"
    if not d.applies:
        return "labelled", f"{d.num_points - d.unlabelled_points} of {d.num_points} points labelled"
    total_detected, total_after, total_kept = (sum(c.values()) for c in
                                               (d.boxes_detected, d.boxes_after_whole_object, d.boxes_kept))
    missing = [name for name, count in d.boxes_kept.items() if count == 0]
    no_box_parts = f"; parts with no kept box: {', '.join(missing)}" if missing and total_kept else ""
    if total_detected == 0:
        unknown = (f" ({d.boxes_unknown_label} box(es) had labels outside the {len(d.boxes_detected)} part names)"
                   if d.boxes_unknown_label else "")
        return "no_boxes", (f"{share}: no boxes from the detector in {d.num_views} views for "
                            f"[{', '.join(d.boxes_detected)}]{unknown}; try other part names, a lower detector "
                            f"threshold, or check the rendered views (--debug)")
    if total_after == 0:
        return "whole_object_boxes", (
            f"{share}: all {total_detected} boxes filtered as whole-object boxes (each covers >= "
            f"{100 * vote_config.whole_object_fraction:.0f}% of its view's visible points): the detector boxed the "
            f"whole object, not its parts; try more specific part names or vote.whole_object_rule: explained")
    if total_kept == 0:
        return "boxes_disagree", (f"{share}: all {total_after} boxes left after the whole-object filter were removed "
                                  f"by re-estimation (agreement < vote.min_box_agreement "
                                  f"{vote_config.min_box_agreement:g})")
    unseen = int((never_visible & (point_label < 0)).sum())
    if unseen > 0.5 * d.unlabelled_points:
        return "not_visible", (f"{share}; {unseen} of them are seen in none of the {d.num_views} views (a partial "
                               f"scan seen from behind, or the wrong up axis?){no_box_parts}")
    return "below_threshold", (
        f"{share}: {d.unlabelled_superpoints} of {d.num_superpoints} superpoints had best score below threshold "
        f"{d.score_threshold:g} (max score {d.max_unlabelled_score:.3f}; {d.superpoints_in_no_box} of them in no "
        f"box at all); {total_kept} of {total_detected} boxes kept{no_box_parts}")


def write_debug_files(out_dir: str | Path, cloud: "PointCloud", result: "PartSegmentationResult",
                      tile_size: Optional[int] = None) -> list[Path]:
    """Write debug_views.png (needs segment(..., keep_views=True)) and debug_superpoints.ply into out_dir."""
    from PIL import Image

    from partslip_core.io import write_ply

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if result.views is not None:
        png = out_dir / "debug_views.png"
        Image.fromarray(views_mosaic(result.views, result.detections, result.part_names, tile_size=tile_size,
                                     kept=result.kept_boxes)).save(png)
        written.append(png)
    if result.point_superpoint is not None:
        ply = out_dir / "debug_superpoints.ply"
        write_ply(ply, cloud.xyz, superpoint_colors(result.point_superpoint),
                  extra={"superpoint": result.point_superpoint.astype(np.int32),
                         "label": result.point_label.astype(np.int32)})
        written.append(ply)
    return written
