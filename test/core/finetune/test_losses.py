"""The OWLv2 matching loss: box maths, Hungarian assignment and loss values on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partslip_core.finetune.losses import (LossWeights, cxcywh_to_xyxy, generalized_box_iou, hungarian_match,
                                          matched_detection_loss, xyxy_to_cxcywh)


def test_box_format_round_trip():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_generalized_iou_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.5, 1.0], [2.0, 0.0, 3.0, 1.0]])
    giou = generalized_box_iou(a, b)[0]
    # identical: 1; half overlap: IoU 1/3, hull = union; disjoint with a gap of 1: 0 - (3 - 2) / 3
    assert giou.tolist() == pytest.approx([1.0, 1 / 3, -1 / 3], abs=1e-6)


def test_hungarian_match_pairs_each_target_with_its_box():
    targets = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]])
    boxes = torch.tensor([[0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.1, 0.1]])
    logits = torch.zeros(3, 2)
    rows, cols = hungarian_match(logits, boxes, torch.tensor([0, 1]), targets, LossWeights())
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}


def test_matched_loss_is_low_for_a_perfect_prediction_and_ignores_padded_queries():
    target = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    good = torch.tensor([[[-12.0, 12.0, 50.0], [-12.0, -12.0, 50.0]]])  # query 2 is padding: ignored
    bad = torch.tensor([[[12.0, -12.0, 50.0], [-12.0, -12.0, 50.0]]])
    good_loss, parts = matched_detection_loss(good, boxes, target, [2])
    bad_loss, _ = matched_detection_loss(bad, boxes, target, [2])
    assert float(good_loss) < 1e-3 and parts["loss_bbox"] == pytest.approx(0.0, abs=1e-6)
    assert float(bad_loss) > 10.0


def test_matched_loss_has_gradients_and_handles_an_image_without_targets():
    logits = torch.zeros(2, 4, 3, requires_grad=True)
    boxes = torch.full((2, 4, 4), 0.3, requires_grad=True)
    targets = [{"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.3, 0.2]])},
               {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    loss, _ = matched_detection_loss(logits, boxes, targets, [3, 3])
    loss.backward()
    assert np.isfinite(float(loss.detach())) and logits.grad.abs().sum() > 0 and boxes.grad.abs().sum() > 0
