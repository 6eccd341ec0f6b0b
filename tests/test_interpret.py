"""Interpretation: worst errors, most confused pairs, confusion-matrix drill-down, class checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tlcore.evaluation.interpret import Interpretation, check_comparable, classes_compatible

CLASSES = ["cat", "dog", "fox"]
Y = [0, 0, 0, 1, 1, 1, 2, 2]
P = [
    [0.78, 0.16, 0.06],  # 0 cat -> cat
    [0.55, 0.35, 0.10],  # 1 cat -> cat (unsure)
    [0.25, 0.65, 0.10],  # 2 cat -> dog, p(true) .25
    [0.10, 0.85, 0.05],  # 3 dog -> dog
    [0.15, 0.75, 0.10],  # 4 dog -> dog
    [0.05, 0.33, 0.62],  # 5 dog -> fox, p(true) .33
    [0.35, 0.45, 0.20],  # 6 fox -> dog, p(true) .20: the worst
    [0.10, 0.18, 0.72],  # 7 fox -> fox
]
PATHS = [f"data/img_{i}.jpg" for i in range(8)]


@pytest.fixture(scope="module")
def interp() -> Interpretation:
    return Interpretation(Y, P, CLASSES, PATHS)


def test_top_losses_are_the_errors_worst_first(interp):
    rows = interp.top_losses(5)
    assert [r.index for r in rows] == [6, 2, 5]  # p(true) .20 < .25 < .33; only 3 errors
    worst = rows[0]
    assert (worst.path, worst.true, worst.predicted) == ("data/img_6.jpg", "fox", "dog")
    assert worst.confidence == pytest.approx(0.45)
    assert worst.loss == pytest.approx(-math.log(0.20))
    assert worst.true_probability == pytest.approx(0.20)
    assert not worst.correct
    assert interp.top_losses(1) == rows[:1]


def test_top_losses_can_include_unsure_correct_predictions(interp):
    rows = interp.top_losses(4, errors_only=False)
    assert [r.index for r in rows] == [6, 2, 5, 1]  # then the right but unsure cat (.55)
    assert rows[3].correct


def test_top_losses_refuses_a_bad_k(interp):
    with pytest.raises(ValueError, match="k=0"):
        interp.top_losses(0)


def test_most_confused_counts_off_diagonal_pairs():
    # cat->dog twice, dog->cat once, fox->dog once.
    y = [0, 0, 0, 1, 1, 2]
    p = [
        [0.2, 0.7, 0.1],
        [0.3, 0.6, 0.1],
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.5, 0.4],
    ]
    interp = Interpretation(y, p, CLASSES)
    assert interp.most_confused() == [("cat", "dog", 2), ("dog", "cat", 1), ("fox", "dog", 1)]
    assert interp.most_confused(min_count=2) == [("cat", "dog", 2)]
    with pytest.raises(ValueError, match="min_count=0"):
        interp.most_confused(0)


def test_most_confused_ties_follow_class_order(interp):
    assert interp.most_confused() == [("cat", "dog", 1), ("dog", "fox", 1), ("fox", "dog", 1)]


def test_cell_drills_down_into_one_confusion_matrix_cell(interp):
    (row,) = interp.cell("cat", "dog")
    assert row.index == 2 and row.path == "data/img_2.jpg"
    assert row.probabilities == pytest.approx({"cat": 0.25, "dog": 0.65, "fox": 0.10})
    assert interp.cell(0, 1) == [row]  # by index too
    assert interp.cell("dog", "cat") == []  # rows are true classes: no dog taken for a cat
    assert [r.index for r in interp.cell("cat", "cat")] == [1, 0]  # least sure first
    assert row.to_dict()["probabilities"]["dog"] == pytest.approx(0.65)


def test_cell_refuses_an_unknown_class(interp):
    with pytest.raises(ValueError, match=r"true_class='wolf'"):
        interp.cell("wolf", "dog")
    with pytest.raises(ValueError, match=r"predicted_class=3"):
        interp.cell("cat", 3)


def test_items_default_to_indices_and_accept_paths():
    assert Interpretation(Y, P, CLASSES).top_losses(1)[0].path == "6"
    interp = Interpretation(Y, P, CLASSES, [Path("x") / f"{i}.png" for i in range(8)])
    assert interp.row(0).path == str(Path("x") / "0.png")
    with pytest.raises(ValueError, match=r"each of the 8 samples\. Received: 2 items"):
        Interpretation(Y, P, CLASSES, ["a", "b"])
    with pytest.raises(IndexError, match="index=8"):
        interp.row(8)


def test_invalid_predictions_are_refused():
    with pytest.raises(ValueError, match=r"y_true\[0\]=5"):
        Interpretation([5], [[0.5, 0.3, 0.2]], CLASSES)


def test_classes_compatible_maps_a_subset_in_any_order():
    assert classes_compatible(CLASSES, ["fox", "cat"]) == {0: 2, 1: 0}
    assert classes_compatible(CLASSES, CLASSES) == {0: 0, 1: 1, 2: 2}


def test_classes_compatible_names_the_unknown_classes():
    with pytest.raises(ValueError) as excinfo:
        classes_compatible(CLASSES, ["cat", "wolf", "Fox"])
    message = str(excinfo.value)
    assert "2 class(es) the model was not trained on: 'wolf', 'Fox'" in message
    assert "'Fox' looks like 'fox'" in message
    assert "['cat', 'dog', 'fox']" in message


def test_classes_compatible_refuses_empty_and_duplicated_lists():
    with pytest.raises(ValueError, match="no classes"):
        classes_compatible(CLASSES, [])
    with pytest.raises(ValueError, match="'cat' twice"):
        classes_compatible(CLASSES, ["cat", "cat"])


def test_check_comparable_accepts_the_same_classes_in_any_order():
    assert check_comparable({"A": CLASSES, "B": ["fox", "dog", "cat"]}) == CLASSES
    assert check_comparable({}) == []


def test_check_comparable_refuses_runs_with_different_classes():
    with pytest.raises(ValueError) as excinfo:
        check_comparable({"A": ["cat", "dog"], "B": ["cat", "dog", "fox"]})
    assert str(excinfo.value) == (
        "Runs A and B have different classes: A has ['cat', 'dog'], "
        "B has ['cat', 'dog', 'fox'] (only in B: 'fox'); compare runs trained on the same "
        "classes."
    )
