"""Grounding DINO / OWLv2 backends on tiny random-weight models loaded through the real loading path.

Random weights give random boxes: these tests assert behaviour (shapes, batching, label mapping,
thresholds, devices, error handling), never accuracy. Label mapping is checked by overwriting the
model's raw outputs with hand-made logits, so the expected part is known.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect import DetectorError, build_detector
from partslip_core.detect.hf import GroundingDinoDetector, Owlv2Detector
from partslip_core.types import InputError

from .conftest import GD_NUM_QUERIES, OWL_IMAGE_SIZE, OWL_PATCH, random_views

OWL_PATCHES = (OWL_IMAGE_SIZE // OWL_PATCH) ** 2


def gd_config(weights: Path, **kwargs) -> DetectorConfig:
    return DetectorConfig(backend="grounding_dino", weights=str(weights), **kwargs)


def owl_config(weights: Path, **kwargs) -> DetectorConfig:
    return DetectorConfig(backend="owlv2", weights=str(weights), **kwargs)


def wrap_forward(detector, edit=None) -> list:
    """Count forward calls (and record batch sizes); optionally edit the raw outputs in place."""
    calls: list[int] = []
    original = detector.model.forward

    def forward(*args, **kwargs):
        calls.append(int(kwargs["pixel_values"].shape[0]))
        out = original(*args, **kwargs)
        if edit is not None:
            edit(out)
        return out

    detector.model.forward = forward
    return calls


def check_detections(detections, num_views: int, height: int, width: int, num_parts: int) -> None:
    assert len(detections) == num_views
    for det in detections:
        assert det.boxes.dtype == np.float32 and det.boxes.shape[1] == 4
        assert det.labels.dtype == np.int64 and det.scores.dtype == np.float32
        if det.num_boxes:
            assert (det.boxes[:, [0, 2]] >= 0).all() and (det.boxes[:, [0, 2]] <= width).all()
            assert (det.boxes[:, [1, 3]] >= 0).all() and (det.boxes[:, [1, 3]] <= height).all()
            assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
            assert det.labels.min() >= 0 and det.labels.max() < num_parts
            assert (np.diff(det.scores) <= 0).all()


# ------------------------------------------------------------------------------------------- Grounding DINO

def test_grounding_dino_batches_all_views_in_one_forward(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir, score_threshold=0.0, nms_iou=1.0, max_detections_per_view=7))
    assert isinstance(detector, GroundingDinoDetector) and detector.name == "grounding_dino"
    calls = wrap_forward(detector)
    detections = detector.detect(random_views(4), ["arm", "back", "leg rest"])
    assert calls == [4]
    check_detections(detections, 4, 80, 96, 3)
    assert [d.num_boxes for d in detections] == [7] * 4  # threshold 0 + no suppression -> top-k


def test_grounding_dino_batch_size_splits_views(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir, batch_size=2))
    calls = wrap_forward(detector)
    assert len(detector.detect(random_views(5), ["arm", "seat"])) == 5
    assert calls == [2, 2, 1]


def test_grounding_dino_threshold_one_gives_nothing(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir, score_threshold=1.0))
    assert all(d.num_boxes == 0 for d in detector.detect(random_views(2), ["arm", "seat"]))


def test_grounding_dino_scores_are_part_token_means_of_the_raw_logits(tiny_gd_dir):
    """Independent check on the real random model: score = max over parts of the mean sigmoid of its tokens."""
    detector = build_detector(gd_config(tiny_gd_dir, score_threshold=0.0, nms_iou=1.0,
                                        max_detections_per_view=GD_NUM_QUERIES))
    raw = []
    wrap_forward(detector, edit=lambda out: raw.append(out.logits.detach().clone()))
    detections = detector.detect(random_views(2), ["leg", "leg rest"])
    tokens = detector.processor.tokenizer.convert_ids_to_tokens(detector.processor.tokenizer("leg . leg rest .")["input_ids"])
    assert tokens == ["[CLS]", "leg", ".", "leg", "rest", ".", "[SEP]"]
    probs = raw[0].sigmoid()
    per_part = torch.stack([probs[..., 1], probs[..., 3:5].mean(-1)], dim=-1)  # (B, Q, 2)
    for view, det in enumerate(detections):
        assert det.num_boxes == GD_NUM_QUERIES
        expected = per_part[view].max(-1)
        order = torch.argsort(expected.values, descending=True, stable=True)
        assert np.allclose(det.scores, expected.values[order].numpy(), atol=1e-6)
        assert det.labels.tolist() == expected.indices[order].tolist()


def _craft_grounding_logits(out) -> None:
    # Caption "leg . leg rest . drawer front ." -> tokens: 1 leg | 3,4 leg rest | 6,7 drawer front.
    out.logits[..., :10] = -20.0
    out.logits[:, 0, 3:5] = 10.0   # query 0 -> "leg rest" (must not be confused with "leg")
    out.logits[:, 1, 1] = 10.0     # query 1 -> "leg"
    out.logits[:, 2, 6] = 10.0     # query 2 -> half of "drawer front"
    out.pred_boxes[:, :3] = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.7, 0.5, 0.2, 0.2], [0.5, 0.8, 0.3, 0.2]])


def test_grounding_dino_label_mapping_via_token_spans(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir, score_threshold=0.4))
    wrap_forward(detector, edit=_craft_grounding_logits)
    det = detector.detect(random_views(2), ["Leg", "leg rest", "drawer front"])[1]
    assert det.labels.tolist() == [1, 0, 2]
    assert det.scores.tolist() == pytest.approx([1.0, 1.0, 0.5], abs=1e-4)  # mean over "drawer", "front"
    assert det.boxes[0].tolist() == pytest.approx([0.15 * 96, 0.15 * 80, 0.35 * 96, 0.35 * 80], abs=1e-3)


def test_grounding_dino_phrase_fallback_maps_decoded_text(tiny_gd_dir):
    base = build_detector(gd_config(tiny_gd_dir, score_threshold=0.4))
    detector = GroundingDinoDetector(base.model, base.processor, base.settings, span_mapping=False)
    wrap_forward(detector, edit=_craft_grounding_logits)
    det = detector.detect(random_views(1), ["leg", "leg rest", "drawer front"])[0]
    assert sorted(zip(det.labels.tolist(), np.round(det.scores, 3).tolist())) == [(0, 1.0), (1, 1.0), (2, 1.0)]


def test_grounding_dino_rejects_prompt_longer_than_text_window(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir))
    names = [f"arm {'leg ' * 10}{i}" for i in range(30)]
    with pytest.raises(InputError, match="tokens"):
        detector.detect(random_views(1), names)


# ------------------------------------------------------------------------------------------- OWLv2

def _sane_boxes(out) -> None:
    """Random-init OWLv2 box heads saturate (zero-width boxes, dropped as degenerate): give every patch a
    valid box so the threshold / top-k behaviour is what the test sees. Scores stay the model's."""
    generator = torch.Generator().manual_seed(0)
    centers = 0.3 + 0.4 * torch.rand(out.pred_boxes.shape[:-1] + (2,), generator=generator)
    sizes = 0.1 + 0.2 * torch.rand(out.pred_boxes.shape[:-1] + (2,), generator=generator)
    out.pred_boxes[:] = torch.cat([centers, sizes], dim=-1)


def test_owlv2_batches_views_and_top_k(tiny_owl_dir):
    detector = build_detector(owl_config(tiny_owl_dir, score_threshold=0.0, nms_iou=1.0, max_detections_per_view=5))
    assert isinstance(detector, Owlv2Detector) and detector.name == "owlv2"
    calls = wrap_forward(detector, edit=_sane_boxes)
    detections = detector.detect(random_views(3), ["arm", "seat", "leg rest"])
    assert calls == [3]
    check_detections(detections, 3, 80, 96, 3)
    assert [d.num_boxes for d in detections] == [5] * 3
    everything = build_detector(owl_config(tiny_owl_dir, score_threshold=0.0, nms_iou=1.0))
    wrap_forward(everything, edit=_sane_boxes)
    assert everything.detect(random_views(1), ["arm"])[0].num_boxes == OWL_PATCHES


def test_owlv2_threshold_one_gives_nothing(tiny_owl_dir):
    detector = build_detector(owl_config(tiny_owl_dir, score_threshold=1.0))
    assert all(d.num_boxes == 0 for d in detector.detect(random_views(2), ["arm", "seat"]))


def test_owlv2_label_is_best_query_and_boxes_scale_to_padded_square(tiny_owl_dir):
    def craft(out):
        out.logits[:] = -20.0
        out.logits[:, 0, 1] = 10.0  # patch 0 -> query 1 ("leg rest")
        out.logits[:, 5, 0] = 10.0  # patch 5 -> query 0 ("leg")
        out.pred_boxes[:, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5])
        out.pred_boxes[:, 5] = torch.tensor([0.2, 0.2, 0.2, 0.2])

    detector = build_detector(owl_config(tiny_owl_dir, score_threshold=0.5))
    wrap_forward(detector, edit=craft)
    det = detector.detect(random_views(2, height=96, width=80), ["leg", "leg rest"])[0]
    assert det.labels.tolist() == [1, 0]
    # OWLv2 pads the 96 x 80 view to a 96 x 96 square: boxes scale by the longer side (not by the width).
    assert np.allclose(det.boxes, [[24.0, 24.0, 72.0, 72.0], [9.6, 9.6, 28.8, 28.8]], atol=1e-3)


def test_owlv2_uses_query_template(tiny_owl_dir):
    base = build_detector(owl_config(tiny_owl_dir))
    seen = []
    original = base.processor.__class__.__call__

    class Spy(base.processor.__class__):
        def __call__(self, *args, **kwargs):
            seen.append(kwargs["text"][0])
            return original(self, *args, **kwargs)

    base.processor.__class__ = Spy
    try:
        Owlv2Detector(base.model, base.processor, base.settings, query_template="{part} of a chair").detect(
            random_views(1), ["Arm", "leg"])
    finally:
        base.processor.__class__ = Spy.__mro__[1]
    assert seen == [["arm of a chair", "leg of a chair"]]


def test_owlv2_truncates_queries_longer_than_its_text_window(tiny_owl_dir):
    detector = build_detector(owl_config(tiny_owl_dir, score_threshold=0.0))
    long_name = "arm leg seat back rest drawer front wheel handle door lid body spout knob shade base bulb"
    assert len(detector.processor.tokenizer(f"a photo of a {long_name}")["input_ids"]) > 16
    check_detections(detector.detect(random_views(1), ["arm", long_name]), 1, 80, 96, 2)


# ------------------------------------------------------------------------------------------- devices, errors

def test_cuda_request_without_cuda_is_a_detector_error(tiny_gd_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DetectorError, match="CUDA"):
        build_detector(gd_config(tiny_gd_dir), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["grounding_dino", "owlv2"])
def test_cuda_fp16_runs_and_matches_layout(backend, tiny_gd_dir, tiny_owl_dir):
    weights = tiny_gd_dir if backend == "grounding_dino" else tiny_owl_dir
    detector = build_detector(DetectorConfig(backend=backend, weights=str(weights), score_threshold=0.0,
                                             half_precision=True), device="cuda")
    assert detector.half and next(detector.model.parameters()).is_cuda
    check_detections(detector.detect(random_views(3), ["arm", "seat"]), 3, 80, 96, 2)


def test_cpu_device_is_honoured(tiny_owl_dir):
    detector = build_detector(owl_config(tiny_owl_dir, half_precision=True), device="cpu")
    assert detector.device.type == "cpu" and not detector.half
    assert next(detector.model.parameters()).device.type == "cpu"


def test_missing_folder_is_a_detector_error(tmp_path):
    with pytest.raises(DetectorError, match="does not exist"):
        build_detector(gd_config(tmp_path / "nope" / "model"))


def test_incomplete_folder_names_what_is_missing(tiny_gd_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_gd_dir, tmp_path / "gd"))
    (copy / "model.safetensors").unlink()
    with pytest.raises(DetectorError, match="missing: weights"):
        build_detector(gd_config(copy))


def test_truncated_weights_are_a_detector_error(tiny_gd_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_gd_dir, tmp_path / "gd"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DetectorError, match="truncated or corrupt"):
        build_detector(gd_config(copy))


def test_weights_of_another_architecture_are_rejected(tiny_gd_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_gd_dir, tmp_path / "gd"))
    config = (copy / "config.json").read_text().replace('"encoder_ffn_dim": 32', '"encoder_ffn_dim": 48')
    assert '"encoder_ffn_dim": 48' in config
    (copy / "config.json").write_text(config)
    with pytest.raises(DetectorError, match="do not match the architecture|does not match"):
        build_detector(gd_config(copy))


def test_wrong_model_type_for_backend(tiny_owl_dir):
    with pytest.raises(DetectorError, match="holds a 'owlv2' model"):
        build_detector(gd_config(tiny_owl_dir))


def test_hub_id_offline_explains_how_to_get_it(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DetectorError, match="partslip models download") as error:
        build_detector(DetectorConfig(backend="grounding_dino", weights="someone/not-cached-model"))
    assert "HF_HUB_OFFLINE" in str(error.value)


def test_bad_images_are_input_errors(tiny_gd_dir):
    detector = build_detector(gd_config(tiny_gd_dir))
    views = random_views(1)
    views.images = views.images.astype(np.float32)
    with pytest.raises(InputError, match="uint8"):
        detector.detect(views, ["arm"])
