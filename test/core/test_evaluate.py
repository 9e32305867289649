"""Metrics: per-part IoU, category mIoU (PartSLIP protocol) and VOC-style AP50, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partslip_core.evaluate import (CategoryReport, EvaluationError, InstancePrediction, average_precision_50,
                                    category_miou, evaluate_category, instance_iou_matrix, semantic_iou,
                                    shape_miou, voc_average_precision)


def _perfect_instances(obj) -> list[InstancePrediction]:
    ids = np.unique(obj.point_instance[obj.point_instance >= 0])
    return [InstancePrediction(int(obj.point_label[obj.point_instance == i][0]), 0.9,
                               np.flatnonzero(obj.point_instance == i)) for i in ids]


def test_semantic_iou_hand_computed():
    gt = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    pred = np.array([0, 0, 1, 1, -1, 1, -1, 2])
    iou = semantic_iou(pred, gt, num_parts=4)
    # part 0: 2 / 3; part 1: inter 1, pred 3, gt 2 -> 1 / 4; part 2: 1 / 1; part 3: absent in both -> NaN
    np.testing.assert_allclose(iou[:3], [2 / 3, 1 / 4, 1.0])
    assert math.isnan(iou[3])
    assert shape_miou(pred, gt, 4) == pytest.approx((2 / 3 + 1 / 4 + 1) / 3)


def test_predicted_but_absent_part_counts_as_zero():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])
    iou = semantic_iou(pred, gt, 3)
    np.testing.assert_allclose(iou, [1.0, 0.5, 0.0])


def test_perfect_prediction_scores_one(synthetic_objects):
    for category, obj in synthetic_objects.items():
        num_parts = len(obj.part_names)
        assert shape_miou(obj.point_label, obj.point_label, num_parts) == 1.0
        ap = average_precision_50([_perfect_instances(obj)], [obj.point_instance], [obj.point_label], num_parts)
        present = np.unique(obj.point_label[obj.point_label >= 0])
        np.testing.assert_array_equal(ap[present], 1.0)
        assert np.isnan(np.delete(ap, present)).all(), category


def test_permuted_labels_score_low(synthetic_objects):
    obj = synthetic_objects["chair"]
    num_parts = len(obj.part_names)
    permuted = np.where(obj.point_label >= 0, (obj.point_label + 1) % num_parts, -1)
    assert shape_miou(permuted, obj.point_label, num_parts) < 0.1
    # a coarser error: legs predicted as seat lowers leg and seat IoU only
    leg, seat = obj.part_names.index("leg"), obj.part_names.index("seat")
    merged = np.where(obj.point_label == leg, seat, obj.point_label)
    iou = semantic_iou(merged, obj.point_label, num_parts)
    assert iou[leg] == 0.0 and 0.0 < iou[seat] < 1.0
    assert iou[obj.part_names.index("back")] == 1.0


def test_category_miou_skips_shapes_without_the_part():
    gt = [np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])]
    pred = [np.array([0, 0, 1, 0]), np.array([0, 0, 0, 0])]
    miou, per_part = category_miou(pred, gt, 3)
    # part 0: shape 1 IoU 2/3, shape 2 IoU 1 -> 5/6; part 1: only shape 1 counts -> 1/2; part 2: never -> NaN
    np.testing.assert_allclose(per_part[:2], [5 / 6, 0.5])
    assert math.isnan(per_part[2])
    assert miou == pytest.approx((5 / 6 + 0.5) / 2)


def test_instance_iou_matrix_matches_set_arithmetic():
    rng = np.random.default_rng(0)
    n, num_gt = 300, 5
    column = rng.integers(-1, num_gt, n)
    preds = [InstancePrediction(0, 0.5, rng.choice(n, size=int(rng.integers(1, 120)), replace=False)) for _ in range(7)]
    preds.append(InstancePrediction(0, 0.5, np.array([3, 3, 3, 4])))  # duplicates count once
    iou = instance_iou_matrix(preds, column, num_gt)
    for i, pred in enumerate(preds):
        p = set(pred.point_indices.tolist())
        for g in range(num_gt):
            gset = set(np.flatnonzero(column == g).tolist())
            assert iou[i, g] == pytest.approx(len(p & gset) / len(p | gset))
    with pytest.raises(EvaluationError, match="outside"):
        instance_iou_matrix([InstancePrediction(0, 1.0, np.array([n]))], column, num_gt)


def test_voc_ap_hand_computed():
    assert voc_average_precision(np.array([1, 1]), 2) == 1.0
    # TP, FP, TP with 2 gt: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 0.5 * 1 + 0.5 * 2/3
    assert voc_average_precision(np.array([1, 0, 1]), 2) == pytest.approx(0.5 + 1 / 3)
    # FP first: the interpolated precision at recall 1/2 and 1 is 2/3
    assert voc_average_precision(np.array([0, 1, 1]), 2) == pytest.approx(2 / 3)
    assert voc_average_precision(np.array([1]), 4) == pytest.approx(0.25)
    assert voc_average_precision(np.zeros(0), 3) == 0.0
    assert math.isnan(voc_average_precision(np.array([0, 0]), 0))


def _two_legs():
    """4 points per instance: legs are instances 0 and 1 (label 0), the seat is instance 2 (label 1)."""
    gt_instance = np.repeat([0, 1, 2], 4)
    gt_label = np.repeat([0, 0, 1], 4)
    return gt_instance, gt_label


def test_ap_greedy_matching_hand_computed():
    gt_instance, gt_label = _two_legs()
    preds = [InstancePrediction(0, 0.9, np.arange(0, 4)),          # leg A exactly
             InstancePrediction(0, 0.8, np.arange(0, 3)),          # leg A again: duplicate -> FP
             InstancePrediction(0, 0.7, np.array([4, 5, 6, 8])),   # leg B, IoU 3/5 -> TP
             InstancePrediction(1, 0.6, np.arange(8, 12))]         # seat exactly
    ap = average_precision_50([preds], [gt_instance], [gt_label], num_parts=3)
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)  # TP, FP, TP over 2 gt
    assert ap[1] == 1.0 and math.isnan(ap[2])
    low_overlap = [InstancePrediction(0, 0.9, np.array([4, 5, 8, 9, 10]))]  # IoU with leg B = 2/7 < 0.5
    assert average_precision_50([low_overlap], [gt_instance], [gt_label], 3)[0] == 0.0


def test_ap_drops_when_a_higher_scored_false_positive_is_added(synthetic_objects):
    obj = synthetic_objects["table"]
    preds = _perfect_instances(obj)
    num_parts = len(obj.part_names)
    base = average_precision_50([preds], [obj.point_instance], [obj.point_label], num_parts)
    leg = obj.part_names.index("leg")
    tabletop = np.flatnonzero(obj.point_label == obj.part_names.index("tabletop"))
    false_positive = InstancePrediction(leg, 0.99, tabletop[:50])
    worse = average_precision_50([preds + [false_positive]], [obj.point_instance], [obj.point_label], num_parts)
    assert base[leg] == 1.0 and worse[leg] < base[leg]
    assert worse[obj.part_names.index("tabletop")] == 1.0  # other parts unaffected
    lower = InstancePrediction(leg, 0.01, tabletop[:50])  # the same FP ranked last keeps AP at 1
    assert average_precision_50([preds + [lower]], [obj.point_instance], [obj.point_label], num_parts)[leg] == 1.0


def test_ap_pools_shapes_and_counts_missed_instances():
    gt_instance, gt_label = _two_legs()
    shape_a = [InstancePrediction(0, 0.9, np.arange(0, 4)), InstancePrediction(0, 0.8, np.arange(4, 8))]
    shape_b: list[InstancePrediction] = []  # nothing found in the second shape: recall stops at 1/2
    ap = average_precision_50([shape_a, shape_b], [gt_instance, gt_instance], [gt_label, gt_label], 3)
    assert ap[0] == pytest.approx(0.5)
    # a prediction matched in the wrong shape does not count
    crossed = [[], [InstancePrediction(1, 0.9, np.arange(8, 12))]]
    ap = average_precision_50(crossed, [gt_instance, np.full(12, -1)], [gt_label, np.full(12, -1)], 3)
    assert ap[1] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(EvaluationError, match="equal length"):
        semantic_iou(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(EvaluationError, match=r"\[-1, 2\)"):
        semantic_iou(np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(EvaluationError, match="integer"):
        semantic_iou(np.zeros(2), np.zeros(2), 2)
    with pytest.raises(EvaluationError, match="shape counts"):
        average_precision_50([[]], [], [], 2)
    gt_instance, gt_label = _two_legs()
    with pytest.raises(EvaluationError, match="instance labels"):
        average_precision_50([[InstancePrediction(7, 1.0, np.arange(3))]], [gt_instance], [gt_label], 3)


def test_evaluate_category_report(synthetic_objects):
    obj = synthetic_objects["mug"]
    wrong = np.where(obj.point_label == 1, 0, obj.point_label)  # handle predicted as body
    report = evaluate_category("mug", obj.part_names, [obj.point_label, wrong], [obj.point_label, obj.point_label],
                               [_perfect_instances(obj), []], [obj.point_instance, obj.point_instance])
    assert isinstance(report, CategoryReport) and report.num_shapes == 2
    body_iou = (obj.point_label == 0).sum() / obj.num_points
    assert report.per_part_iou == pytest.approx([(1 + body_iou) / 2, 0.5])
    assert report.miou == pytest.approx(((1 + body_iou) / 2 + 0.5) / 2)
    assert report.per_part_ap50 == pytest.approx([0.5, 0.5]) and report.map50 == pytest.approx(0.5)
    as_dict = report.to_dict()
    assert as_dict["per_part_iou"]["handle"] == pytest.approx(0.5) and as_dict["num_shapes"] == 2
    only_semantic = evaluate_category("mug", obj.part_names, [obj.point_label], [obj.point_label])
    assert only_semantic.miou == 1.0 and math.isnan(only_semantic.map50)
    assert only_semantic.to_dict()["map50"] is None


def test_instance_best_iou_scores_lost_and_merged_instances():
    """gt: two legs (points 0-3, 4-7) and a seat (8-9). A prediction merging both legs covers each at IoU 0.5;
    a lost leg scores 0; a prediction of the wrong part does not count."""
    from partslip_core.evaluate import instance_best_iou
    gt_instance = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    gt_label = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    merged = [InstancePrediction(0, 0.9, np.arange(8)), InstancePrediction(0, 0.8, np.array([8, 9]))]
    best, labels = instance_best_iou(merged, gt_instance, gt_label, 2)
    np.testing.assert_allclose(best, [0.5, 0.5, 0.0])
    assert labels.tolist() == [0, 0, 1]
    one_lost = [InstancePrediction(0, 0.9, np.arange(4)), InstancePrediction(1, 0.8, np.array([8, 9]))]
    np.testing.assert_allclose(instance_best_iou(one_lost, gt_instance, gt_label, 2)[0], [1.0, 0.0, 1.0])
    report = evaluate_category("c", ["leg", "seat"], [gt_label], [gt_label], [one_lost], [gt_instance])
    assert report.instance_best_iou == pytest.approx(2 / 3)
    assert report.per_part_best_iou[0] == pytest.approx(0.5) and report.to_dict()["instance_best_iou"] == pytest.approx(0.666667)


def test_eval_cli_box_noise_over_seeds(tmp_path):
    """`partslip eval --box-noise --seeds`: the issue's noise model, one run per seed, JSON per seed."""
    import json

    from partslip_core.cli import main
    from partslip_core.synthetic import write_dataset
    write_dataset(tmp_path / "ds", categories=["mug"], shapes_per_category=1, num_points=1500)
    out = tmp_path / "report.json"
    assert main(["eval", str(tmp_path / "ds"), "--detector", "ground_truth", "--image-size", "96", "--box-noise",
                 "--seeds", "0,1", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["seeds"] == [0, 1] and set(report["reports"]) == {"0", "1"}
    assert report["reports"]["0"][0]["instance_best_iou"] is not None
    assert main(["eval", str(tmp_path / "ds"), "--detector", "ground_truth", "--false-positives", "-1", "--quiet"]) == 2
    assert main(["eval", str(tmp_path / "ds"), "--box-noise", "--quiet"]) == 2  # noise needs the ground_truth detector
