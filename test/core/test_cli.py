"""The offline CLI: outputs on disk, clear errors with exit codes, eval and generate."""

import json
from pathlib import Path

import numpy as np
import pytest

from partslip_core.cli import EXIT_DETECTOR, EXIT_INPUT, main
from partslip_core.io import read_ply, write_ply

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "samples" / "chair.ply"
FAST = ["--image-size", "160"]


def test_segment_writes_labeled_ply_summary_and_png(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["segment", str(SAMPLE), "--parts", "arm,back,leg,seat", "--detector", "ground_truth",
                   "--out", str(out), *FAST])
    assert status == 0
    cloud, extras = read_ply(out / "labeled.ply")
    _, truth = read_ply(SAMPLE)
    assert cloud.num_points == 20000 and {"label", "instance", "score"} <= set(extras)
    assert (extras["label"] == truth["label"]).mean() > 0.85
    summary = json.loads((out / "summary.json").read_text())
    assert summary["part_names"] == ["arm", "back", "leg", "seat"]
    assert sum(summary["points_per_part"].values()) + summary["unlabeled_points"] == 20000
    assert len(summary["instances"]) == len(np.unique(extras["instance"][extras["instance"] >= 0]))
    png = (out / "labeled.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["instances"] == len(summary["instances"])


def _write(tmp_path, xyz, extra=None):
    path = tmp_path / "cloud.ply"
    write_ply(path, np.asarray(xyz, np.float32), extra=extra)
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["segment", "/nonexistent/cloud.ply", "--parts", "a"], "cloud.ply"),
    (["segment", str(SAMPLE), "--parts", " , "], "--parts is empty"),
    (["segment", str(SAMPLE), "--parts", "a,a", "--detector", "ground_truth"], "duplicates"),
    (["segment", str(SAMPLE), "--parts", "a", "--config", "/nonexistent.yaml"], "config file not found"),
    (["segment", str(SAMPLE), "--parts", "a", "--image-size", "3"], "render.image_size"),
])
def test_bad_input_exits_2_with_one_clear_line(args, message, capsys):
    assert main(args) == EXIT_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_nan_points_fail_unless_dropped(tmp_path, capsys):
    rng = np.random.default_rng(0)
    xyz = rng.random((3000, 3))
    xyz[:10] = np.nan
    path = _write(tmp_path, xyz, {"label": np.zeros(3000, np.int32), "instance": np.zeros(3000, np.int32)})
    assert main(["segment", path, "--parts", "thing", "--detector", "ground_truth", *FAST]) == EXIT_INPUT
    assert "10 of 3000 points have NaN/Inf" in capsys.readouterr().err
    out = tmp_path / "o"
    assert main(["segment", path, "--parts", "thing", "--detector", "ground_truth", "--drop-nonfinite",
                 "--out", str(out), *FAST]) == 0
    assert read_ply(out / "labeled.ply")[0].num_points == 2990


def test_empty_cloud_and_missing_ground_truth(tmp_path, capsys):
    path = _write(tmp_path, np.random.default_rng(0).random((50, 3)))
    assert main(["segment", path, "--parts", "a", "--detector", "ground_truth", *FAST]) == EXIT_INPUT
    assert "lacks vertex properties gt_label/gt_instance or label/instance" in capsys.readouterr().err


def test_unknown_detector_exits_3(capsys):
    assert main(["segment", str(SAMPLE), "--parts", "seat", "--detector", "yolo", *FAST]) == EXIT_DETECTOR
    assert "unknown detector backend 'yolo'" in capsys.readouterr().err


def test_generate_then_eval(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["generate", str(data), "--categories", "table,bottle", "--shapes", "2", "--points", "3000"]) == 0
    report = tmp_path / "report.json"
    assert main(["eval", str(data), "--detector", "ground_truth", "--quiet", "--out", str(report), *FAST]) == 0
    rows = json.loads(report.read_text())
    assert [r["category"] for r in rows] == ["bottle", "table"]
    assert all(r["num_shapes"] == 2 and r["miou"] > 0.8 for r in rows)
    assert "mIoU=" in capsys.readouterr().out


def test_generate_rejects_unknown_category(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--categories", "spaceship"]) == EXIT_INPUT
    assert "unknown categories" in capsys.readouterr().err
