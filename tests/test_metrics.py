"""Metrics checked against numbers worked out by hand on a small fixed prediction set."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tlcore.evaluation.metrics import (
    SKIP_NO_NEGATIVES,
    SKIP_NO_POSITIVES,
    EvaluationMetrics,
    compute_calibration,
    compute_metrics,
    validate_predictions,
)

CLASSES = ["cat", "dog", "fox"]
# 8 samples. Predicted = arg-max; "top-2" says whether the true class is among the two largest.
#         true  probs (cat, dog, fox)      predicted  confidence  right  top-2
Y = [0, 0, 0, 1, 1, 1, 2, 2]
P = [
    [0.78, 0.16, 0.06],  # cat      cat         0.78       yes    yes
    [0.55, 0.35, 0.10],  # cat      cat         0.55       yes    yes
    [0.25, 0.65, 0.10],  # cat      dog         0.65       no     yes
    [0.10, 0.85, 0.05],  # dog      dog         0.85       yes    yes
    [0.15, 0.75, 0.10],  # dog      dog         0.75       yes    yes
    [0.05, 0.33, 0.62],  # dog      fox         0.62       no     yes
    [0.35, 0.45, 0.20],  # fox      dog         0.45       no     no (fox is 3rd)
    [0.10, 0.18, 0.72],  # fox      fox         0.72       yes    yes
]
P_TRUE = [0.78, 0.55, 0.25, 0.85, 0.75, 0.33, 0.20, 0.72]


@pytest.fixture(scope="module")
def metrics() -> EvaluationMetrics:
    return compute_metrics(Y, P, CLASSES, top_k=(1, 2))


def test_headline_numbers_match_hand_computation(metrics):
    assert metrics.num_samples == 8
    assert metrics.accuracy == pytest.approx(5 / 8)
    assert metrics.top_k_accuracy == pytest.approx({1: 5 / 8, 2: 7 / 8})
    assert metrics.log_loss == pytest.approx(sum(-math.log(p) for p in P_TRUE) / 8)


def test_confusion_matrix_rows_are_true_classes(metrics):
    # cat: 2 right, 1 taken for dog; dog: 2 right, 1 taken for fox; fox: 1 taken for dog, 1 right.
    assert metrics.confusion_matrix == ((2, 1, 0), (0, 2, 1), (0, 1, 1))
    expected = [[2 / 3, 1 / 3, 0], [0, 2 / 3, 1 / 3], [0, 1 / 2, 1 / 2]]
    for row, want in zip(metrics.confusion_matrix_normalized, expected, strict=True):
        assert row == pytest.approx(want)


def test_per_class_precision_recall_f1_match_hand_computation(metrics):
    # Predicted cat: samples 0, 1 (both cats) -> precision 2/2; 2 of 3 cats found -> recall 2/3.
    # Predicted dog: 2, 3, 4, 6 (2 dogs) -> 2/4; recall 2/3. Predicted fox: 5, 7 (1 fox) -> 1/2.
    expected = {
        "cat": (1.0, 2 / 3, 0.8, 3),  # F1 = 2 * 1 * 2/3 / (1 + 2/3) = 4/5
        "dog": (0.5, 2 / 3, 4 / 7, 3),  # F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7
        "fox": (0.5, 0.5, 0.5, 2),
    }
    for c in metrics.per_class:
        precision, recall, f1, support = expected[c.name]
        assert (c.precision, c.recall, c.f1) == pytest.approx((precision, recall, f1)), c.name
        assert c.support == support
    assert [c.name for c in metrics.per_class] == CLASSES

    macro = metrics.macro_avg
    assert (macro.precision, macro.recall, macro.f1) == pytest.approx((2 / 3, 11 / 18, 131 / 210))
    weighted = metrics.weighted_avg  # weights 3, 3, 2 out of 8
    assert (weighted.precision, weighted.recall, weighted.f1) == pytest.approx(
        (11 / 16, 5 / 8, 179 / 280)
    )
    assert macro.support == weighted.support == 8


def test_roc_auc_and_average_precision_match_hand_computation(metrics):
    # ROC AUC = share of (positive, negative) pairs where the positive scores higher.
    # cat: positives .78 .55 .25 vs negatives .10 .15 .05 .35 .10 -> 14 of 15 pairs.
    # dog: .85 .75 .33 vs .16 .35 .65 .45 .18 -> 12 of 15. fox: .20 .72 vs .06 .10 .10 .05 .10 .62
    # -> 11 of 12.
    aucs = {c.class_name: c.auc for c in metrics.roc_curves}
    assert aucs == pytest.approx({"cat": 14 / 15, "dog": 12 / 15, "fox": 11 / 12})
    assert metrics.macro_roc_auc == pytest.approx((14 / 15 + 12 / 15 + 11 / 12) / 3)
    # fox ranked: .72 (fox) .62 (dog) .20 (fox): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    ap = {c.class_name: c.auc for c in metrics.pr_curves}
    assert ap["fox"] == pytest.approx(5 / 6)
    for curve in metrics.roc_curves:
        assert curve.kind == "roc" and curve.skipped_reason is None
        assert curve.x[0] == 0.0 and curve.x[-1] == 1.0 and curve.y[-1] == 1.0
    for curve in metrics.pr_curves:
        assert curve.kind == "pr" and len(curve.x) == len(curve.y) > 1


def test_macro_auc_agrees_with_sklearn_ovr_when_every_class_is_present(metrics):
    assert metrics.macro_roc_auc == pytest.approx(
        roc_auc_score(Y, P, multi_class="ovr", average="macro")
    )


def test_calibration_bins_and_ece_match_hand_computation(metrics):
    # Confidences by bin (lower, upper]: (.4,.5] .45 wrong; (.5,.6] .55 right;
    # (.6,.7] .65 .62 both wrong; (.7,.8] .78 .75 .72 all right; (.8,.9] .85 right.
    bins = metrics.calibration.bins
    assert len(bins) == 10
    assert [b.count for b in bins] == [0, 0, 0, 0, 1, 1, 2, 3, 1, 0]
    assert bins[0].mean_confidence is None and bins[0].accuracy is None
    assert (bins[6].mean_confidence, bins[6].accuracy) == pytest.approx((0.635, 0.0))
    assert (bins[7].mean_confidence, bins[7].accuracy) == pytest.approx((0.75, 1.0))
    assert (bins[7].lower, bins[7].upper) == pytest.approx((0.7, 0.8))
    # ECE = (1*.45 + 1*.45 + 2*.635 + 3*.25 + 1*.15) / 8 = 3.07 / 8
    assert metrics.calibration.ece == pytest.approx(0.38375)
    assert metrics.ece == metrics.calibration.ece


def test_calibration_bins_are_closed_on_the_right():
    probs = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    calibration = compute_calibration(probs, [0, 1, 1])
    counts = [b.count for b in calibration.bins]
    assert counts[9] == 2  # confidence exactly 1 falls in (0.9, 1]
    assert counts[4] == 1  # 0.5 falls in (0.4, 0.5], predicted class 0 (first on a tie): wrong
    assert calibration.ece == pytest.approx((0.5 * 1) / 3)
    with pytest.raises(ValueError, match="n_bins=0"):
        compute_calibration(probs, [0, 1, 1], n_bins=0)


def test_top_k_leaves_out_k_not_smaller_than_the_number_of_classes():
    assert compute_metrics(Y, P, CLASSES).top_k_accuracy == pytest.approx({1: 5 / 8})
    binary = compute_metrics([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], ["no", "yes"])
    assert binary.top_k_accuracy == pytest.approx({1: 2 / 3})


def test_asymmetric_errors_show_in_the_right_row():
    # Three "a" taken for "b", never the reverse: the errors are in row a, column b.
    m = compute_metrics([0, 0, 0, 1], [[0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]], ["a", "b"])
    assert m.confusion_matrix == ((0, 3), (0, 1))
    a, b = m.per_class
    assert (a.recall, b.recall) == (0.0, 1.0)
    assert b.precision == pytest.approx(1 / 4)
    assert a.precision == 0.0  # never predicted: 0, not NaN


def test_a_class_never_predicted_gets_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(
            [0, 1, 2, 2],
            [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
            CLASSES,
        )
    fox = m.per_class[2]
    assert (fox.precision, fox.recall, fox.f1, fox.support) == (0.0, 0.0, 0.0, 2)
    assert [row[2] for row in m.confusion_matrix] == [0, 0, 0]


def test_a_class_absent_from_y_true_has_a_zero_row_and_no_auc():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(
            [0, 0, 1, 1],
            [[0.8, 0.1, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]],
            CLASSES,
        )
    assert m.per_class[2].support == 0
    assert m.confusion_matrix[2] == (0, 0, 0)
    assert m.confusion_matrix_normalized[2] == (0.0, 0.0, 0.0)
    fox_roc, fox_pr = m.roc_curves[2], m.pr_curves[2]
    assert fox_roc.auc is None and fox_roc.skipped_reason == SKIP_NO_POSITIVES
    assert fox_pr.auc is None and fox_pr.x == ()
    assert m.roc_curves[0].auc == pytest.approx(1.0)
    # cat vs rest: cats .8 .5 vs .1 .2 -> 1; dog: dogs .8 .3 vs .1 .1 -> 1. Macro over cat, dog.
    assert m.macro_roc_auc == pytest.approx(1.0)
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))  # no NaN anywhere


def test_single_sample():
    m = compute_metrics([1], [[0.2, 0.7, 0.1]], CLASSES)
    assert m.accuracy == 1.0
    assert m.log_loss == pytest.approx(-math.log(0.7))
    assert m.confusion_matrix == ((0, 0, 0), (0, 1, 0), (0, 0, 0))
    assert m.roc_curves[1].skipped_reason == SKIP_NO_NEGATIVES
    assert m.roc_curves[0].skipped_reason == SKIP_NO_POSITIVES
    assert m.macro_roc_auc is None and m.macro_average_precision is None
    assert m.calibration.ece == pytest.approx(0.3)  # one right answer at confidence 0.7


def test_float32_softmax_rows_are_accepted_without_warnings():
    logits = np.array([[2.0, 1.0, 0.1], [0.3, 2.2, 0.5], [0.1, 0.2, 3.0]], dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(np.array([0, 1, 2], dtype=np.int32), probs, CLASSES)
    assert m.accuracy == 1.0


@pytest.mark.parametrize(
    ("y_true", "probs", "names", "message"),
    [
        ([0, 1], [0.5, 0.5], ["a", "b"], r"probs must be a 2-D array .* shape=\(2,\)"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"len\(y_true\)=3, probs.shape=\(2, 2\)"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"], r"2 columns but there are 3 class"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.4]], ["a", "b"], r"row 1 sums to 0.9"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"outside 0..1 .* y_true\[1\]=2"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"y_true\[1\]=-1"),
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], ["a", "b"], r"logits .* probs\[0, 0\]=2.0"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], ["a", "b"], r"probs\[0, 0\]=nan"),
        ([0, 1.5], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], r"integer class indices.*y_true\[1\]=1.5"),
        ([[0, 1]], [[0.5, 0.5]], ["a", "b"], r"1-D array .* shape=\(1, 2\)"),
        ([], np.zeros((0, 2)), ["a", "b"], r"no samples"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "a"], r"unique. Received: 'a' twice"),
        ([0], [[1.0]], ["a"], r"at least 2 classes"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], "ab", r"list of strings. Received: class_names='ab'"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", ""], r"class_names\[1\]=''"),
    ],
)
def test_bad_inputs_are_refused_with_the_bad_value(y_true, probs, names, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y_true, probs, names)


def test_bad_top_k_is_refused():
    with pytest.raises(ValueError, match=r"top_k=\(0, 2\)"):
        compute_metrics(Y, P, CLASSES, top_k=(0, 2))


def test_validate_predictions_rescales_rows_to_sum_to_one():
    labels, probs, names = validate_predictions([0, 1], [[0.6, 0.4004], [0.5, 0.5]], ["a", "b"])
    assert labels.dtype == np.int64 and names == ("a", "b")
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_round_trips_through_json(metrics):
    text = json.dumps(metrics.to_dict(), allow_nan=False)
    again = EvaluationMetrics.from_dict(json.loads(text))
    assert again == metrics
    assert again.top_k_accuracy == {1: 0.625, 2: 0.875}


def test_from_dict_refuses_an_unknown_format(metrics):
    data = metrics.to_dict()
    with pytest.raises(ValueError, match="format_version=99"):
        EvaluationMetrics.from_dict({**data, "format_version": 99})
    del data["calibration"]
    with pytest.raises(ValueError, match="missing the field 'calibration'"):
        EvaluationMetrics.from_dict(data)


def test_summary_has_the_headline_numbers(metrics):
    summary = metrics.summary()
    assert summary["accuracy"] == 0.625
    assert summary["top_2_accuracy"] == 0.875
    assert summary["macro_f1"] == pytest.approx(131 / 210)
    assert summary["ece"] == pytest.approx(0.38375)
    assert "top_1_accuracy" not in summary  # that is the accuracy
