"""Debug outputs: the views mosaic (boxes/masks drawn where the detections are), superpoint colours,
the "why is everything unlabelled" explanation, and ``partslip segment --debug``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from partslip_core import PointCloud, config_from_dict, segment
from partslip_core.cli import main
from partslip_core.config import NormalizeConfig, RenderConfig, VoteConfig
from partslip_core.debug import (GAP, HEADER_HEIGHT, explain_unlabelled, kept_box_flags, mosaic_tile_origin,
                                 part_colors_u8, superpoint_colors, views_mosaic)
from partslip_core.detect import ProjectedGroundTruthDetector
from partslip_core.io import read_ply, write_ply
from partslip_core.normalize import normalize
from partslip_core.render import render_views
from partslip_core.synthetic import make_object
from partslip_core.types import RenderedViews, SemanticVotes, ViewDetections

SIZE = 200
PARTS = ["arm", "back", "leg", "seat"]
SMALL = {"render": {"image_size": SIZE}}  # reference preset otherwise (whole-object rule: fraction)


@pytest.fixture(scope="module")
def chair():
    return make_object("chair", num_points=2000, seed=0)


@pytest.fixture(scope="module")
def two_views(chair) -> RenderedViews:
    canonical = normalize(PointCloud.from_arrays(chair.xyz, chair.rgb), NormalizeConfig())
    return render_views(canonical.xyz, canonical.rgb, RenderConfig(views=[(10, 0), (10, 90)], image_size=SIZE,
                                                                   backend="torch"))


def _tile(mosaic, views, k, **kwargs):
    """View k's image area in the mosaic (below its header), at render scale when tile_size is unset."""
    row, col, scale = mosaic_tile_origin(k, views, **kwargs)
    height, width = (round(s * scale) for s in views.image_size)
    return mosaic[row:row + height, col:col + width]


def _is_color(pixels, color):
    return (pixels == np.asarray(color, np.uint8)).all(axis=-1)


def test_mosaic_shape_grid_and_tile_size(two_views):
    dets = [ViewDetections.empty(), ViewDetections.empty()]
    mosaic = views_mosaic(two_views, dets, PARTS)
    assert mosaic.dtype == np.uint8 and mosaic.shape == (SIZE + HEADER_HEIGHT, 2 * SIZE + GAP, 3)
    stacked = views_mosaic(two_views, dets, PARTS, columns=1)
    assert stacked.shape == (2 * (SIZE + HEADER_HEIGHT) + GAP, SIZE, 3)
    small = views_mosaic(two_views, None, PARTS, tile_size=100)
    assert small.shape == (100 + HEADER_HEIGHT, 2 * 100 + GAP, 3)
    # without detections the tiles are the rendered images themselves
    assert np.array_equal(_tile(mosaic, two_views, 1), two_views.images[1])
    with pytest.raises(ValueError, match="2 views"):
        views_mosaic(two_views, dets[:1], PARTS)


def test_box_drawn_in_its_part_colour_where_the_detection_is(two_views):
    back, leg = part_colors_u8(len(PARTS))[[1, 2]]
    x1, y1, x2, y2 = 40, 60, 160, 170
    dets = [ViewDetections([[x1, y1, x2, y2]], [1], [0.9]), ViewDetections([[20, 30, 90, 120]], [2], [0.7])]
    mosaic = views_mosaic(two_views, dets, PARTS, line_width=2)
    view0, view1 = _tile(mosaic, two_views, 0), _tile(mosaic, two_views, 1)
    # the border of view 0's box is "back"-coloured on all four sides
    for row, col in [((y1 + y2) // 2, x1), ((y1 + y2) // 2, x2), (y2, (x1 + x2) // 2), (y1, x2 - 5)]:
        assert _is_color(view0[row, col], back), (row, col, view0[row, col])
    assert not _is_color(view1[(y1 + y2) // 2, x2], back)  # same place, other view: no box there
    assert not _is_color(view0[(y1 + y2) // 2, (x1 + x2) // 2], back)  # the box is an outline
    # "back" pixels of view 0 sit on the box (or its name label just above it), nowhere else
    rows, cols = np.nonzero(_is_color(view0, back))
    assert len(rows) >= 2 * 2 * ((x2 - x1) + (y2 - y1)) - 16
    assert rows.min() >= y1 - 20 and rows.max() <= y2 and cols.min() >= x1 and cols.max() <= x2
    assert not _is_color(view1, back).any() and not _is_color(view0, leg).any()
    rows, cols = np.nonzero(_is_color(view1, leg))
    assert len(rows) > 0 and cols.min() >= 20 and cols.max() <= 90 and rows.max() <= 120
    # the name and score are written inside the label: it is not a solid block of the part colour
    label = view0[y1 - 12:y1 - 2, x1 + 2:x1 + 40]
    assert _is_color(label, back).mean() > 0.3 and not _is_color(label, back).all()


def test_masks_are_blended_in_the_part_colour_and_nowhere_else(two_views):
    seat = part_colors_u8(len(PARTS))[3].astype(np.float64)
    masks = np.zeros((1, SIZE, SIZE), bool)
    masks[0, 80:120, 70:130] = True
    box = [[10, 10, 190, 190]]
    plain = views_mosaic(two_views, [ViewDetections(box, [3], [0.8]), ViewDetections.empty()], PARTS)
    masked = views_mosaic(two_views, [ViewDetections(box, [3], [0.8], masks=masks), ViewDetections.empty()],
                          PARTS, mask_alpha=0.5)
    before, after = _tile(plain, two_views, 0).astype(np.float64), _tile(masked, two_views, 0).astype(np.float64)
    expected = 0.5 * two_views.images[0, 80:120, 70:130] + 0.5 * seat
    assert np.abs(after[80:120, 70:130] - expected).max() <= 1.0
    changed = np.abs(after - before).sum(axis=-1) > 0
    assert changed[80:120, 70:130].all() and not changed[~masks[0]].any()
    assert np.array_equal(_tile(plain, two_views, 1), _tile(masked, two_views, 1))


def test_superpoint_colours_deterministic_and_distinct():
    ids = np.arange(1000)
    colors = superpoint_colors(ids)
    assert colors.shape == (1000, 3) and colors.dtype == np.uint8
    assert len(np.unique(colors, axis=0)) == 1000  # measured: the first repeat is id 1573 (same colour as 353)
    assert np.array_equal(superpoint_colors(ids), colors)
    # a superpoint's colour depends on its id only, not on the other ids or the point order
    assert np.array_equal(superpoint_colors(np.array([7, 3, 7])), colors[[7, 3, 7]])
    assert (colors.max(axis=1).astype(int) - colors.min(axis=1) > 40).all()  # no greys (grey = unlabelled)
    neighbours = np.abs(colors[1:].astype(int) - colors[:-1]).sum(axis=1)
    assert neighbours.min() > 60  # consecutive ids are far apart
    with pytest.raises(ValueError):
        superpoint_colors(np.zeros((3, 2), np.int64))


class _EmptyDetector:
    """A detector that finds nothing (wrong part names, a detector threshold too high ...)."""

    name = "empty"

    def detect(self, views, part_names, point_fields=None):
        return [ViewDetections.empty() for _ in range(views.num_views)]


class _WholeObjectDetector:
    """One box per view, around everything: what detectors do with a part name they cannot localize."""

    name = "whole_object"

    def detect(self, views, part_names, point_fields=None):
        height, width = views.image_size
        return [ViewDetections([[0, 0, width, height]], [0], [0.6]) for _ in range(views.num_views)]


class _EvenViewsDetector(ProjectedGroundTruthDetector):
    """Exact ground-truth boxes in views 0, 2, 4 ... and none in the others: each superpoint is inside
    its part's boxes in about half of the views where it is visible, so its score is about 0.5."""

    def detect(self, views, part_names, point_fields=None):
        found = super().detect(views, part_names, point_fields)
        return [d if k % 2 == 0 else ViewDetections.empty() for k, d in enumerate(found)]


def _segment(chair, detector, values=None):
    config = config_from_dict({**SMALL, **(values or {})})
    return segment(PointCloud.from_arrays(chair.xyz, chair.rgb), chair.part_names, config, detector)


def test_no_boxes_is_explained(chair):
    result = _segment(chair, _EmptyDetector())
    d = result.diagnosis
    assert d.applies and d.reason == "no_boxes" and d.unlabelled_points == chair.num_points
    assert sum(d.boxes_detected.values()) == 0 and d.num_views == 10
    assert "no boxes from the detector in 10 views" in d.message and "arm, back, leg, seat" in d.message
    assert result.summary()["diagnosis"]["reason"] == "no_boxes"


def test_whole_object_boxes_are_explained(chair):
    d = _segment(chair, _WholeObjectDetector()).diagnosis
    assert d.applies and d.reason == "whole_object_boxes"
    assert d.boxes_detected["arm"] == 10 and sum(d.boxes_after_whole_object.values()) == 0
    assert "all 10 boxes filtered as whole-object boxes" in d.message and ">= 98%" in d.message


def test_scores_below_a_high_threshold_are_explained(chair):
    detector = _EvenViewsDetector(chair.point_label, chair.point_instance)
    low = _segment(chair, detector).diagnosis
    high = _segment(chair, detector, {"vote": {"score_threshold": 0.9}}).diagnosis
    # the boxes are the same in both runs; only the threshold differs
    assert high.boxes_kept == low.boxes_kept and sum(high.boxes_kept.values()) > 0
    assert high.applies and high.reason == "below_threshold"
    assert high.unlabelled_fraction > low.unlabelled_fraction
    assert 0.0 < high.max_unlabelled_score < 0.9 and high.score_threshold == 0.9
    assert f"{high.unlabelled_superpoints} of {high.num_superpoints} superpoints had best score below threshold 0.9" \
        in high.message
    assert f"max score {high.max_unlabelled_score:.3f}" in high.message


def test_exact_boxes_need_no_explanation(chair):
    d = _segment(chair, ProjectedGroundTruthDetector(chair.point_label, chair.point_instance)).diagnosis
    assert not d.applies and d.reason == "labelled" and d.unlabelled_fraction < 0.1
    assert d.boxes_detected == d.boxes_kept and sum(d.boxes_kept.values()) > 0


def test_re_estimation_removing_every_box_is_told_apart_from_the_whole_object_filter():
    votes = SemanticVotes(superpoint_scores=np.zeros((3, 2), np.float32), superpoint_label=np.full(3, -1),
                          point_label=np.full(6, -1), box_superpoint_fraction=np.zeros((3, 0), np.float32),
                          box_view=np.zeros(0, np.int64), box_label=np.zeros(0, np.int64),
                          boxes=np.zeros((0, 4), np.float32), box_score=np.zeros(0, np.float32),
                          collected_box_label=np.array([0, 1, 1]))
    dets = [ViewDetections([[0, 0, 5, 5], [1, 1, 4, 4]], [0, 1], [0.9, 0.8]),
            ViewDetections([[2, 2, 3, 3]], [1], [0.7])]
    d = explain_unlabelled(votes.point_label, dets, votes, ["door", "handle"], VoteConfig(min_box_agreement=0.6))
    assert d.reason == "boxes_disagree" and "all 3 boxes" in d.message and "0.6" in d.message
    assert d.boxes_after_whole_object == {"door": 1, "handle": 2} and d.boxes_kept == {"door": 0, "handle": 0}


def test_cli_debug_writes_views_and_superpoints(tmp_path, chair, capsys):
    ply = tmp_path / "chair.ply"
    write_ply(ply, chair.xyz, chair.rgb, extra={"label": chair.point_label.astype(np.int32),
                                                "instance": chair.point_instance.astype(np.int32)})
    out = tmp_path / "out"
    status = main(["segment", str(ply), "--parts", ",".join(chair.part_names), "--detector", "ground_truth",
                   "--image-size", str(SIZE), "--out", str(out), "--debug"])
    assert status == 0
    views = np.asarray(Image.open(out / "debug_views.png"))
    assert views.shape == (2 * (SIZE + HEADER_HEIGHT) + GAP, 5 * SIZE + 4 * GAP, 3)  # 10 views, 5 per row
    colors = part_colors_u8(len(chair.part_names))
    assert all(_is_color(views, color).sum() > 500 for color in colors)  # every part's boxes are drawn
    cloud, extras = read_ply(out / "debug_superpoints.ply")
    assert cloud.num_points == chair.num_points and "superpoint" in extras
    assert len(np.unique(extras["superpoint"])) > 10
    expected = superpoint_colors(extras["superpoint"].astype(np.int64)) / 255.0
    assert np.abs(cloud.rgb - expected).max() < 1e-6
    assert "why unlabelled" not in capsys.readouterr().err  # exact boxes label the chair


def test_cli_prints_why_everything_is_unlabelled(tmp_path, chair, capsys):
    ply = tmp_path / "chair.ply"
    write_ply(ply, chair.xyz, chair.rgb, extra={"label": chair.point_label.astype(np.int32),
                                                "instance": chair.point_instance.astype(np.int32)})
    config = tmp_path / "strict.yaml"
    config.write_text("vote:\n  whole_object_fraction: 0.01\n")  # every box counts as a whole-object box
    out = tmp_path / "out"
    assert main(["segment", str(ply), "--parts", ",".join(chair.part_names), "--detector", "ground_truth",
                 "--image-size", str(SIZE), "--out", str(out), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "why unlabelled (whole_object_boxes)" in err and "boxes filtered as whole-object boxes" in err
    assert json.loads((out / "summary.json").read_text())["diagnosis"]["reason"] == "whole_object_boxes"
    assert not (out / "debug_views.png").exists()  # only with --debug


def test_points_seen_in_no_view_are_explained():
    """A partial scan rendered from behind: boxes exist, but most unlabelled points are never visible."""
    votes = SemanticVotes(superpoint_scores=np.array([[0.9, 0.0], [0.0, 0.0]], np.float32),
                          superpoint_label=np.array([0, -1]), point_label=np.array([0, 0, -1, -1, -1, -1]),
                          box_superpoint_fraction=np.zeros((2, 1), np.float32), box_view=np.zeros(1, np.int64),
                          box_label=np.zeros(1, np.int64), boxes=np.zeros((1, 4), np.float32),
                          box_score=np.ones(1, np.float32), collected_box_label=np.zeros(1, np.int64))
    dets = [ViewDetections([[0, 0, 5, 5]], [0], [0.9]), ViewDetections.empty()]
    visible = np.zeros((2, 6), bool)
    visible[:, :2] = True
    d = explain_unlabelled(votes.point_label, dets, votes, ["door", "handle"], VoteConfig(), point_visible=visible)
    assert d.applies and d.reason == "not_visible" and d.points_never_visible == 4
    assert "4 of them are seen in none of the 2 views" in d.message and "parts with no kept box: handle" in d.message
    seen = explain_unlabelled(votes.point_label, dets, votes, ["door", "handle"], VoteConfig(),
                              point_visible=np.ones((2, 6), bool))
    assert seen.reason == "below_threshold" and seen.superpoints_in_no_box == 1


class _PartsAndWholeObjectDetector(ProjectedGroundTruthDetector):
    """Exact part boxes plus, last in each view, one whole-object box labelled as the first part."""

    def detect(self, views, part_names, point_fields=None):
        height, width = views.image_size
        return [ViewDetections(np.concatenate([d.boxes, [[0, 0, width, height]]]), np.append(d.labels, 0),
                               np.append(d.scores, 0.6)) for d in super().detect(views, part_names, point_fields)]


def test_boxes_dropped_by_voting_are_marked_in_the_mosaic(chair):
    detector = _PartsAndWholeObjectDetector(chair.point_label, chair.point_instance)
    config = config_from_dict({"render": {"image_size": SIZE, "views": [[10, 0], [10, 90]]}})
    result = segment(PointCloud.from_arrays(chair.xyz, chair.rgb), chair.part_names, config, detector, keep_views=True)
    assert [flags.tolist() for flags in result.kept_boxes] == [[True] * (d.num_boxes - 1) + [False]
                                                               for d in result.detections]
    assert result.diagnosis.boxes_detected["arm"] == result.diagnosis.boxes_kept["arm"] + 2
    # the whole-object box runs along the image border: washed-out "arm" colour there when marked, "arm" when not
    arm = part_colors_u8(len(chair.part_names))[0]
    washed = np.round((arm.astype(float) + 160) / 2).astype(np.uint8)
    marked = _tile(views_mosaic(result.views, result.detections, chair.part_names, kept=result.kept_boxes),
                   result.views, 1)
    unmarked = _tile(views_mosaic(result.views, result.detections, chair.part_names), result.views, 1)
    border = (slice(SIZE // 2, None), SIZE - 1)
    assert _is_color(marked[border], washed).all() and _is_color(unmarked[border], arm).all()
    with pytest.raises(ValueError, match="kept"):
        views_mosaic(result.views, result.detections, chair.part_names, kept=[np.ones(1, bool)] * 2)
    # without box_index (votes from elsewhere) every box counts as kept
    votes = SemanticVotes(np.zeros((1, 1)), np.zeros(1), np.zeros(1), np.zeros((1, 0)), np.zeros(0, np.int64),
                          np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    assert all(flags.all() for flags in kept_box_flags(votes, result.detections))
