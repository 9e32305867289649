"""SAM mask refinement (masks.backend: sam) on a tiny random-weight SAM loaded through the real loading path.

Random weights give arbitrary masks: these tests check behaviour (the processor's pre/post-processing
reproduced on the device, shapes, clipping, fallbacks, batching, loading errors, the pipeline stage),
never mask quality. What exact masks are worth is tested in test/core/test_pipeline.py and measured over
every synthetic category, scan kind and the box-noise model by bench/bench_mask_quality.py.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from partslip_core import PointCloud, config_from_dict, segment
from partslip_core.config import ConfigError, MaskConfig
from partslip_core.detect import ProjectedGroundTruthDetector
from partslip_core.detect.registry import build_mask_refiner
from partslip_core.detect.sam import MaskError, SamInputSpec, SamMaskRefiner, clip_masks_to_boxes, load_sam
from partslip_core.models import KNOWN_MODELS, models_main
from partslip_core.types import ViewDetections

SAM_SIZE = 64  # the tiny model's input side (real SAM: 1024)
IMAGE_SIZE = 96  # rendered views: not the model size, so resize / crop / resize are all exercised


def build_tiny_sam(out: Path) -> Path:
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SAM_SIZE, patch_size=8, window_size=4, global_attn_indexes=[1],
                           num_pos_feats=16, mlp_dim=64, initializer_range=0.02),  # default 1e-10: blind
        prompt_encoder_config=dict(hidden_size=32, image_size=SAM_SIZE, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=32))
    model = SamModel(config).eval()
    with torch.no_grad():  # random init gives |logits| ~ 1e-4; scale to O(0.1) so masks are not float noise
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(1000.0)
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": SAM_SIZE}, pad_size={"height": SAM_SIZE, "width": SAM_SIZE},
        mask_size={"longest_edge": SAM_SIZE // 4}, mask_pad_size={"height": SAM_SIZE // 4, "width": SAM_SIZE // 4}))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam(tmp_path_factory.mktemp("tiny_sam") / "model")


@pytest.fixture(scope="module")
def mug_run(tiny_sam_dir):
    """segment() on a small mug with ground-truth boxes refined by the tiny SAM (views kept)."""
    from partslip_core.synthetic import make_object
    obj = make_object("mug", num_points=3000, seed=0)
    config = config_from_dict({"render": {"image_size": IMAGE_SIZE},
                               "masks": {"backend": "sam", "weights": str(tiny_sam_dir), "batch_size": 4}})
    stages: list[str] = []
    result = segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, config,
                     ProjectedGroundTruthDetector(obj.point_label, obj.point_instance), keep_views=True,
                     progress=stages.append)
    return obj, result, stages


def box_rectangles(boxes: np.ndarray, height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """(M, H, W) bool: pixel centres strictly inside each box grown by ``margin`` of its size per side."""
    boxes = boxes + np.array([-1, -1, 1, 1]) * margin * np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
    inside_x = (cols[None, :] > boxes[:, 0, None]) & (cols[None, :] < boxes[:, 2, None])
    inside_y = (rows[None, :] > boxes[:, 1, None]) & (rows[None, :] < boxes[:, 3, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


def random_detections(num_views: int, seed: int = 0, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE):
    """Views with 0..5 random boxes each (one view always empty)."""
    rng = np.random.default_rng(seed)
    detections = []
    for view in range(num_views):
        count = 0 if view == 1 else int(rng.integers(1, 6))
        corners = rng.random((count, 2, 2)) * [width, height]
        boxes = np.concatenate([corners.min(1), corners.max(1) + 4], axis=1)
        detections.append(ViewDetections(boxes, rng.integers(0, 3, count), rng.random(count)))
    return detections


def random_images(num_views: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_views, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- pipeline

def test_segment_refines_ground_truth_boxes_into_masks(mug_run):
    obj, result, stages = mug_run
    assert stages == ["normalize", "load_masks", "render", "detect", "masks", "superpoints", "vote", "instances"]
    assert {"load_masks", "masks"} <= set(result.timings_ms)
    assert len(result.detections) == 10 and sum(d.num_boxes for d in result.detections) > 10
    for det in result.detections:
        assert det.masks is not None and det.masks.dtype == bool
        assert det.masks.shape == (det.num_boxes, IMAGE_SIZE, IMAGE_SIZE)
        grown = box_rectangles(det.boxes, IMAGE_SIZE, IMAGE_SIZE, MaskConfig().clip_margin)
        assert not (det.masks & ~grown).any()  # clip_to_box: a mask never leaves its box (+ margin)
        assert det.masks.reshape(det.num_boxes, -1).any(axis=1).all()  # empty masks fall back to the box
    assert result.point_label.shape == (obj.num_points,) and result.point_label.dtype == np.int64
    assert result.point_instance.shape == (obj.num_points,)


def test_masks_change_the_votes(mug_run, tiny_sam_dir):
    """Voting reads the masks: the same boxes without them give other labels (random SAM masks are not the boxes)."""
    obj, with_masks, _ = mug_run
    boxes_only = segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names,
                         config_from_dict({"render": {"image_size": IMAGE_SIZE}}),
                         ProjectedGroundTruthDetector(obj.point_label, obj.point_instance), keep_views=True)
    for a, b in zip(with_masks.detections, boxes_only.detections):
        np.testing.assert_array_equal(a.boxes, b.boxes)  # same detector output, masks added
        assert b.masks is None
    assert not np.array_equal(with_masks.point_label, boxes_only.point_label)


def test_refiner_is_built_once_for_repeated_runs(mug_run, tiny_sam_dir):
    obj = mug_run[0]
    config = config_from_dict({"render": {"image_size": IMAGE_SIZE},
                               "masks": {"backend": "sam", "weights": str(tiny_sam_dir), "batch_size": 4}})
    stages: list[str] = []
    segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, config,
            ProjectedGroundTruthDetector(obj.point_label, obj.point_instance), progress=stages.append)
    assert "load_masks" not in stages and "masks" in stages


def test_backend_none_is_the_reference_and_builds_nothing():
    assert MaskConfig().backend == "none" and build_mask_refiner(MaskConfig()) is None
    assert config_from_dict({}).masks == MaskConfig()
    with pytest.raises(ConfigError, match="masks.backend"):
        config_from_dict({"masks": {"backend": "sam2"}})
    with pytest.raises(ConfigError, match="masks.max_prompts"):
        config_from_dict({"masks": {"max_prompts": 0}})


def test_cli_masks_options_reach_the_config():
    from partslip_core.cli import build_config, build_parser
    args = build_parser().parse_args(["segment", "cloud.ply", "--parts", "a", "--masks", "sam",
                                      "--mask-weights", "sam_vit_huge"])
    assert build_config(args).masks == MaskConfig(backend="sam", weights="sam_vit_huge")
    assert build_config(build_parser().parse_args(["segment", "cloud.ply", "--parts", "a"])).masks == MaskConfig()


# ----------------------------------------------------------------------------------------------- refiner

def test_preprocessing_and_postprocessing_match_sam_processor(tiny_sam_dir):
    """Our on-device pre/post-processing reproduces SamProcessor (the numbers the weights were trained with)."""
    model, processor = load_sam(str(tiny_sam_dir))
    refiner = SamMaskRefiner(model, SamInputSpec.from_processor(processor), clip_to_box=False)
    images = np.random.default_rng(1).integers(0, 256, (2, 80, IMAGE_SIZE, 3), dtype=np.uint8)  # not square
    boxes = [[[10.0, 5.0, 60.0, 70.0]], [[0.0, 0.0, 96.0, 80.0]]]
    reference = processor(images=list(images), input_boxes=boxes, return_tensors="pt")
    ours = refiner.preprocess(images)
    assert ours.shape == reference["pixel_values"].shape == (2, 3, SAM_SIZE, SAM_SIZE)
    # PIL's fixed-point bilinear resize vs torch's antialiased one: rounding differs by one grey level at most
    # (measured: max 0.0171 = 1/255/0.229, mean 0.0023 on this random image)
    difference = (ours - reference["pixel_values"].float()).abs()
    assert difference.max() <= 1 / 255 / min(refiner.spec.std) + 1e-5 and difference.mean() < 5e-3
    resized = refiner.spec.resized_hw(80, IMAGE_SIZE)
    assert tuple(reference["reshaped_input_sizes"][0].tolist()) == resized
    scale = np.array([resized[1] / IMAGE_SIZE, resized[0] / 80] * 2)
    np.testing.assert_allclose(np.array(boxes)[:, 0] * scale, reference["input_boxes"][:, 0].numpy(), rtol=1e-6)
    logits = torch.randn(2, 1, SAM_SIZE // 4, SAM_SIZE // 4)
    expected = processor.post_process_masks(logits[:, :, None].clone(), reference["original_sizes"],
                                            reference["reshaped_input_sizes"])
    for view in range(2):
        ours = refiner._to_image_masks(logits[view], torch.ones(1), np.array(boxes[view], np.float32), resized,
                                       (80, IMAGE_SIZE))
        if expected[view][0, 0].any():  # an empty SAM mask would fall back to the box
            np.testing.assert_array_equal(ours[0], expected[view][0, 0].numpy())


def test_batched_views_equal_one_view_at_a_time(tiny_sam_dir):
    images, detections = random_images(5), random_detections(5)
    views = _views(images)
    batched = SamMaskRefiner.from_config(MaskConfig(backend="sam", weights=str(tiny_sam_dir), batch_size=5))
    single = SamMaskRefiner.from_config(MaskConfig(backend="sam", weights=str(tiny_sam_dir), batch_size=1,
                                                   max_prompts=1))
    calls = _count_encoder_passes(batched)
    a, b = batched.refine(views, detections), single.refine(views, detections)
    assert calls == [4]  # one encoder pass for the 4 views that have boxes; the empty view is skipped
    for da, db, det in zip(a, b, detections):
        assert da.masks.shape == db.masks.shape == (det.num_boxes, IMAGE_SIZE, IMAGE_SIZE)
        assert (da.masks != db.masks).sum() <= 1e-4 * da.masks.size  # float noise at the threshold only
        np.testing.assert_array_equal(da.boxes, det.boxes)
        np.testing.assert_array_equal(da.labels, det.labels)
    assert batched.stats.boxes == single.stats.boxes == sum(d.num_boxes for d in detections)


def test_multimask_output_and_score_fallback(tiny_sam_dir):
    images, detections = random_images(3, seed=2), random_detections(3, seed=2)
    views = _views(images)
    best_of_three = SamMaskRefiner.from_config(MaskConfig(backend="sam", weights=str(tiny_sam_dir),
                                                          multimask_output=True))
    masks = best_of_three.refine(views, detections)
    assert [m.masks.shape[0] for m in masks] == [d.num_boxes for d in detections]
    everything_falls_back = SamMaskRefiner.from_config(MaskConfig(backend="sam", weights=str(tiny_sam_dir),
                                                                  min_mask_score=1.0))
    for out, det in zip(everything_falls_back.refine(views, detections), detections):
        np.testing.assert_array_equal(out.masks, box_rectangles(det.boxes, IMAGE_SIZE, IMAGE_SIZE))
    assert everything_falls_back.stats.box_fallbacks == sum(d.num_boxes for d in detections) > 0


def test_clip_masks_to_boxes_cuts_at_the_grown_box_and_falls_back_to_the_rectangle():
    masks = torch.ones(3, 20, 30, dtype=torch.bool)
    masks[1] = False  # SAM found nothing
    boxes = torch.tensor([[10.0, 5.0, 20.0, 15.0]] * 3)
    out, replaced = clip_masks_to_boxes(masks.clone(), boxes, margin=0.1, weak=torch.tensor([False, False, True]))
    rectangle = torch.as_tensor(box_rectangles(boxes[:1].numpy(), 20, 30)[0])
    grown = torch.as_tensor(box_rectangles(boxes[:1].numpy(), 20, 30, 0.1)[0])
    assert torch.equal(out[0], grown) and grown.sum() > rectangle.sum()  # x 9..21, y 4..16: one more pixel a side
    assert torch.equal(out[1], rectangle) and torch.equal(out[2], rectangle)  # empty, weak -> the box
    assert replaced.tolist() == [False, True, True]
    unclipped, _ = clip_masks_to_boxes(masks.clone(), boxes, margin=None)
    assert bool(unclipped[0].all())


@pytest.mark.parametrize("clip_to_box, margin", [(False, 0.0), (True, 0.0), (True, 0.1)])
def test_clipping_keeps_masks_within_the_grown_box(tiny_sam_dir, clip_to_box, margin):
    images, detections = random_images(4, seed=3), random_detections(4, seed=3)
    refiner = SamMaskRefiner.from_config(MaskConfig(backend="sam", weights=str(tiny_sam_dir), clip_to_box=clip_to_box,
                                                    clip_margin=margin))
    refined = refiner.refine(_views(images), detections)
    outside_box = sum(int((d.masks & ~box_rectangles(d.boxes, IMAGE_SIZE, IMAGE_SIZE)).sum()) for d in refined)
    outside_grown = sum(int((d.masks & ~box_rectangles(d.boxes, IMAGE_SIZE, IMAGE_SIZE, margin)).sum())
                        for d in refined)
    if not clip_to_box:
        assert outside_box > 0  # random SAM leaks: the clipping assertions can fail
    elif margin == 0:
        assert outside_box == 0
    else:
        assert outside_grown == 0 and outside_box > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_runs_in_fp16(tiny_sam_dir):
    images, detections = random_images(4, seed=4), random_detections(4, seed=4)
    views = _views(images)
    config = MaskConfig(backend="sam", weights=str(tiny_sam_dir))
    cpu = SamMaskRefiner.from_config(config, "cpu").refine(views, detections)
    fp32 = SamMaskRefiner.from_config(dataclasses.replace(config, half_precision=False), "cuda")
    fp16 = SamMaskRefiner.from_config(dataclasses.replace(config, half_precision=True), "cuda")
    assert fp16.half and not fp32.half
    for a, b, c in zip(cpu, fp32.refine(views, detections), fp16.refine(views, detections)):
        assert a.masks.shape == b.masks.shape == c.masks.shape and c.masks.dtype == bool
        assert (a.masks != b.masks).sum() <= 1e-3 * a.masks.size  # same code, same numbers up to float noise
        # random weights: the logits are small differences of large activations, so fp16 flips many pixels
        # (bf16 on CPU flips 18% of the low-res logits); real SAM logits are O(10). Only sanity here.
        assert (a.masks == c.masks).mean() > 0.6


# ----------------------------------------------------------------------------------------------- loading

def test_missing_folder_fails_fast_with_the_download_command(tmp_path):
    with pytest.raises(MaskError, match="does not exist.*partslip models download sam_vit_base"):
        build_mask_refiner(MaskConfig(backend="sam", weights=str(tmp_path / "nowhere" / "sam")))


def test_incomplete_folder_names_what_is_missing(tmp_path, tiny_sam_dir):
    folder = tmp_path / "sam"
    shutil.copytree(tiny_sam_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(MaskError, match=r"incomplete, missing: weights.*partslip models download"):
        build_mask_refiner(MaskConfig(backend="sam", weights=str(folder)))


def test_corrupt_weights_fail_with_a_clear_message(tmp_path, tiny_sam_dir):
    folder = tmp_path / "sam"
    shutil.copytree(tiny_sam_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(MaskError, match="could not be read.*download it again"):
        build_mask_refiner(MaskConfig(backend="sam", weights=str(folder)))


def test_pickled_bin_checkpoint_is_checked_with_weights_only(tmp_path, tiny_sam_dir):
    folder = tmp_path / "sam"
    shutil.copytree(tiny_sam_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(MaskError, match="weights_only=True"):
        build_mask_refiner(MaskConfig(backend="sam", weights=str(folder)))


def test_uncached_hub_id_fails_at_once_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(tmp_path / "models"))  # no local copy of sam_vit_base
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(MaskError, match=r"sam-vit-base.*allow_download.*partslip models download sam_vit_base"):
        build_mask_refiner(MaskConfig(backend="sam"))


def test_the_fix_names_the_requested_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(tmp_path / "models"))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(MaskError, match="partslip models download sam_vit_huge"):
        build_mask_refiner(MaskConfig(backend="sam", weights="sam_vit_huge"))


def test_other_model_names_are_refused():
    with pytest.raises(MaskError, match="is a owlv2 model, not SAM"):
        build_mask_refiner(MaskConfig(backend="sam", weights="owlv2_base"))


def test_known_name_loads_the_models_dir_copy_and_verifies(tmp_path, tiny_sam_dir, monkeypatch, capsys):
    assert {"sam_vit_base", "sam_vit_large", "sam_vit_huge"} <= set(KNOWN_MODELS)
    models = tmp_path / "models"
    shutil.copytree(tiny_sam_dir, models / KNOWN_MODELS["sam_vit_base"].local_path)
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(models))
    refiner = build_mask_refiner(MaskConfig(backend="sam", weights="sam_vit_base"))
    assert isinstance(refiner, SamMaskRefiner) and refiner.spec.longest_edge == SAM_SIZE
    assert models_main(["verify", "sam_vit_base", "--models-dir", str(models)]) == 0
    assert "config ok (sam)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- helpers

def _views(images: np.ndarray):
    from partslip_core.types import RenderedViews
    k = len(images)
    return RenderedViews(images=images, pixel_point_index=np.full(images.shape[:3], -1, np.int64),
                         point_screen_xy=np.zeros((k, 1, 2), np.float32), point_visible=np.zeros((k, 1), bool),
                         view_angles=np.zeros((k, 2), np.float32))


def _count_encoder_passes(refiner: SamMaskRefiner) -> list[int]:
    calls: list[int] = []
    original = refiner.model.get_image_embeddings

    def wrapped(pixel_values, *args, **kwargs):
        calls.append(int(pixel_values.shape[0]))
        return original(pixel_values, *args, **kwargs)

    refiner.model.get_image_embeddings = wrapped
    return calls
