"""Vectorized NMS against a plain greedy reference, and the per-view post-processing rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partslip_core.detect.postprocess import (PostprocessSettings, batched_nms, box_iou, cxcywh_to_xyxy, nms,
                                              postprocess_view)


def greedy_nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one box at a time (the definition the vectorized version must reproduce)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            union = ((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
                     + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - inter)
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_box_whose_only_suppressor_was_itself_suppressed():
    # A suppresses B; B would suppress C, but B is gone, so greedy keeps C (a one-shot "Fast NMS" would not).
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [3, 0, 13, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert box_iou(boxes[1:2], boxes[2:3]).item() > 0.6 and box_iou(boxes[0:1], boxes[2:3]).item() < 0.6
    assert nms(boxes, scores, 0.6).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(8))
def test_nms_matches_greedy_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    n = 60
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(5, 40, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    for thr in (0.3, 0.5, 0.7):
        got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert got == greedy_nms_reference(boxes, scores, thr)


def test_nms_threshold_one_keeps_everything_and_empty_input():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert sorted(nms(boxes, torch.tensor([0.1, 0.3, 0.2]), 1.0).tolist()) == [0, 1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_batched_nms_is_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_cxcywh_to_xyxy():
    assert cxcywh_to_xyxy(torch.tensor([[5.0, 6, 4, 2]])).tolist() == [[3.0, 5.0, 7.0, 7.0]]


def _settings(thr=0.5, iou=0.6, k=100):
    return PostprocessSettings(score_threshold=thr, nms_iou=iou, max_detections=k)


def test_postprocess_view_threshold_clamp_and_invalid_rows():
    boxes = torch.tensor([[-5.0, -5, 20, 20],      # clamped to the image
                          [10, 10, 30, 30],        # score == threshold: dropped (strict >)
                          [50, 50, 60, 60],        # entirely outside a 40x40 image: no area after clamping
                          [0, 0, float("nan"), 5],  # non-finite
                          [5, 5, 15, 15],          # label out of range
                          [20, 0, 40, 10]])        # kept
    scores = torch.tensor([0.9, 0.5, 0.9, 0.9, 0.9, 0.7])
    labels = torch.tensor([0, 1, 1, 1, 2, 1])
    out = postprocess_view(boxes, scores, labels, (40, 40), _settings(), num_parts=2)
    assert out.boxes.dtype == np.float32 and out.labels.dtype == np.int64 and out.scores.dtype == np.float32
    assert out.boxes.tolist() == [[0.0, 0.0, 20.0, 20.0], [20.0, 0.0, 40.0, 10.0]]
    assert out.labels.tolist() == [0, 1] and out.scores.tolist() == pytest.approx([0.9, 0.7])


def test_postprocess_view_nms_per_class_and_top_k_sorted():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.95, 0.7])
    labels = torch.tensor([0, 0, 1, 1, 0])
    out = postprocess_view(boxes, scores, labels, (64, 64), _settings(thr=0.1, iou=0.5, k=3), num_parts=2)
    assert out.scores.tolist() == pytest.approx([0.95, 0.9, 0.8]) and out.labels.tolist() == [1, 0, 1]
    everything = postprocess_view(boxes, scores, labels, (64, 64), _settings(thr=0.0, iou=1.0, k=100), num_parts=2)
    assert everything.num_boxes == 5


def test_postprocess_view_empty():
    out = postprocess_view(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), (8, 8), _settings(), 3)
    assert out.boxes.shape == (0, 4) and out.labels.shape == (0,) and out.scores.shape == (0,)
