"""GLIP pieces that do not need maskrcnn_benchmark: caption, checkpoints, few-shot prompt checks, and the
conversion of GLIP's documented output (a BoxList) into part-indexed detections.

FakeBoxList mimics only what GLIP's predictor returns and we read: .bbox (M, 4), .mode ("xyxy" or
"xywh"), .size (width, height of the image the model saw), get_field("scores"/"labels"), labels being
1-based entity indices into the caption.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect import DetectorError, build_detector
from partslip_core.detect.glip import (GLIP_MISSING_HELP, check_fewshot_prompt, convert_glip_prediction,
                                       glip_available, glip_caption, load_glip_checkpoint, missing_model_keys,
                                       resolve_glip_paths)
from partslip_core.detect.postprocess import PostprocessSettings, postprocess_view


class FakeBoxList:
    def __init__(self, bbox, scores, labels, size, mode="xyxy"):
        self.bbox = torch.as_tensor(bbox, dtype=torch.float32)
        self.mode, self.size = mode, size
        self._fields = {"scores": torch.as_tensor(scores), "labels": torch.as_tensor(labels)}

    def get_field(self, name):
        return self._fields[name]


def test_caption_matches_glip_demo_list_format():
    caption, tokens_positive = glip_caption(["Arm", "back", "leg rest"])
    assert caption == "arm . back . leg rest . "
    assert tokens_positive == [[[0, 3]], [[6, 10]], [[13, 21]]]
    assert [caption[a:b] for [[a, b]] in tokens_positive] == ["arm", "back", "leg rest"]


def test_convert_scales_to_view_and_makes_labels_zero_based():
    pred = FakeBoxList([[10, 20, 110, 220], [0, 0, 50, 50]], [0.9, 0.6], [2, 1], size=(400, 400))
    boxes, scores, labels = convert_glip_prediction(pred, (200, 100))  # view is 200 rows x 100 cols
    assert boxes.tolist() == [[2.5, 10.0, 27.5, 110.0], [0.0, 0.0, 12.5, 25.0]]
    assert labels.tolist() == [1, 0] and scores.tolist() == pytest.approx([0.9, 0.6])


def test_convert_xywh_mode_uses_maskrcnn_convention():
    pred = FakeBoxList([[10, 20, 11, 21]], [0.9], [1], size=(100, 100), mode="xywh")
    boxes, _, _ = convert_glip_prediction(pred, (100, 100))
    assert boxes.tolist() == [[10.0, 20.0, 20.0, 40.0]]  # x2 = x + w - 1


def test_convert_then_postprocess_drops_labels_outside_the_caption():
    pred = FakeBoxList([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.8, 0.7], [0, 1, 3],
                       size=(64, 64))
    boxes, scores, labels = convert_glip_prediction(pred, (64, 64))
    out = postprocess_view(boxes, scores, labels, (64, 64), PostprocessSettings(0.5, 0.6, 100), num_parts=2)
    assert out.labels.tolist() == [0] and out.boxes.tolist() == [[20.0, 20.0, 30.0, 30.0]]


def test_convert_rejects_inconsistent_outputs():
    with pytest.raises(DetectorError, match="mode"):
        convert_glip_prediction(FakeBoxList([[0, 0, 1, 1]], [0.5], [1], (8, 8), mode="cxcywh"), (8, 8))
    with pytest.raises(DetectorError, match="labels"):
        convert_glip_prediction(FakeBoxList([[0, 0, 1, 1]], [0.5], [1, 2], (8, 8)), (8, 8))


def fake_glip_state(offset_value: float = 0.0) -> dict:
    return {"module.language_backbone.body.model.embeddings.word_embeddings.weight": torch.randn(30, 8),
            "module.backbone.body.layers.0.weight": torch.randn(4, 4),
            "module.rpn.head.tunable_linear.weight": torch.full((1000, 8), offset_value),
            "module.rpn.head.cls_logits.bias": torch.zeros(1)}


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_zero_shot_checkpoint_has_no_prompt_offset(tmp_path):
    ckpt = load_glip_checkpoint(save(tmp_path / "glip_large_model.pth", {"model": fake_glip_state(0.0), "iteration": 5}))
    assert not ckpt.is_few_shot and len(ckpt.state_dict) == 4
    check_fewshot_prompt(ckpt, ["anything", "goes"])  # zero-shot: no prompt constraint


def test_few_shot_prompt_from_sidecar_must_match(tmp_path):
    path = save(tmp_path / "MyChair.pth", {"model": fake_glip_state(0.01)})
    (tmp_path / "MyChair.json").write_text(json.dumps({"part_names": ["arm", "back", "leg", "seat"]}))
    ckpt = load_glip_checkpoint(path)
    assert ckpt.is_few_shot and ckpt.prompt_authoritative and ckpt.prompt_source == "sidecar MyChair.json"
    check_fewshot_prompt(ckpt, ["Arm", "back", "leg", "seat"])
    with pytest.raises(DetectorError, match="prompt-tuned on the parts"):
        check_fewshot_prompt(ckpt, ["back", "arm", "leg", "seat"])  # order matters: offsets are per token


def test_few_shot_prompt_inside_checkpoint(tmp_path):
    ckpt = load_glip_checkpoint(save(tmp_path / "x.pth", {"model": fake_glip_state(1.0), "part_names": ["lid"]}))
    assert ckpt.part_names == ("lid",) and ckpt.prompt_source == "checkpoint metadata"
    with pytest.raises(DetectorError):
        check_fewshot_prompt(ckpt, ["handle"])


def test_known_partslip_checkpoint_mismatch_only_warns(tmp_path, caplog):
    ckpt = load_glip_checkpoint(save(tmp_path / "Chair.pth", {"model": fake_glip_state(1.0)}))
    assert ckpt.part_names == ("arm", "back", "leg", "seat", "wheel") and not ckpt.prompt_authoritative
    with caplog.at_level(logging.WARNING):
        check_fewshot_prompt(ckpt, ["seat"])
    assert "prompt-tuned on the parts" in caplog.text


def test_unrecorded_few_shot_prompt_warns(tmp_path, caplog):
    ckpt = load_glip_checkpoint(save(tmp_path / "custom.pth", fake_glip_state(1.0)))  # bare state dict
    assert ckpt.part_names is None
    with caplog.at_level(logging.WARNING):
        check_fewshot_prompt(ckpt, ["seat"])
    assert "records no prompt" in caplog.text


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b"\x00" * 100), "cannot be read"),
    (lambda p: save(p, {"model": {"module.head.weight": torch.zeros(2)}}), "does not look like a GLIP"),
    (lambda p: save(p, {"model": fake_glip_state(), "args": argparse.Namespace(lr=0.1)}), "weights_only"),
    (lambda p: save(p, [torch.zeros(1)]), "not a GLIP checkpoint"),
])
def test_bad_checkpoints_are_detector_errors(tmp_path, make, reason):
    path = tmp_path / "glip.pth"
    make(path)
    with pytest.raises(DetectorError, match=reason):
        load_glip_checkpoint(path)


def test_truncated_checkpoint_is_a_detector_error(tmp_path):
    path = save(tmp_path / "glip.pth", {"model": fake_glip_state()})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DetectorError, match="truncated, corrupt"):
        load_glip_checkpoint(path)


def test_missing_model_keys_strips_module_prefix():
    assert missing_model_keys(["a.w", "b.w", "c.w"], ["module.a.w", "b.w"]) == ["c.w"]


def test_glip_config_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("PARTSLIP_GLIP_CONFIG", raising=False)
    with pytest.raises(DetectorError, match="config_file"):
        resolve_glip_paths(DetectorConfig(backend="glip"))
    with pytest.raises(DetectorError, match="not found"):
        resolve_glip_paths(DetectorConfig(backend="glip", config_file=str(tmp_path / "none.yaml")))
    (tmp_path / "glip.yaml").write_text("MODEL: {}\n")
    monkeypatch.setenv("PARTSLIP_GLIP_CONFIG", str(tmp_path / "glip.yaml"))
    weights, config_file = resolve_glip_paths(DetectorConfig(backend="glip", weights="w.pth"))
    assert weights == Path("w.pth") and config_file == tmp_path / "glip.yaml"


@pytest.mark.skipif(glip_available(), reason="GLIP is installed here")
def test_build_without_maskrcnn_benchmark_explains_options():
    with pytest.raises(DetectorError) as error:
        build_detector(DetectorConfig(backend="glip"), "cpu")
    assert str(error.value) == GLIP_MISSING_HELP
    assert "Docker" in GLIP_MISSING_HELP and "grounding_dino" in GLIP_MISSING_HELP
