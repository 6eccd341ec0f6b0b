"""Intervals, paired tests and collapse detection (tlcore.evaluation.stats)."""

import pytest

from tlcore.evaluation import stats


def test_wilson_interval_matches_the_textbook_values():
    low, high = stats.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert stats.wilson_interval(0, 10)[0] == 0.0
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_format_accuracy_carries_its_interval_and_n():
    assert stats.format_accuracy(0.8, 10) == "80.0% (95% CI 49.0–94.3%, n = 10)"
    assert stats.format_accuracy(None, 10) == "—"


def test_mcnemar_uses_only_the_images_the_two_disagree_on():
    a = [True] * 30 + [False] * 7
    b = [True] * 29 + [False] + [False] * 6 + [True]  # 30 vs 30 right... one swap each
    result = stats.mcnemar(a, b)
    assert (result.only_a, result.only_b, result.differ) == (1, 1, 2)
    assert result.p_value == 1.0 and result.winner is None
    assert result.wording("A", "B") == "no clear difference (p = 1.00; 2 of 37 images differ)"


def test_mcnemar_names_the_better_model_when_the_difference_is_significant():
    a = [True] * 40
    b = [True] * 28 + [False] * 12
    result = stats.mcnemar(a, b)
    assert result.p_value == pytest.approx(2 / 2**12)
    assert result.winner == "a"
    assert result.wording("Pretrained", "Scratch").startswith("Pretrained is better (p < 0.001")
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar([True], [True, False])


def test_the_sweep_example_from_the_issue_is_no_clear_difference():
    # 30 against 29 of 37 test images.
    a = [True] * 29 + [True] + [False] * 7
    b = [True] * 29 + [False] + [False] * 7
    result = stats.mcnemar(a, b)
    assert not result.significant
    needed = stats.images_needed(result)
    assert needed is not None and needed > 37


def test_images_needed_grows_as_the_difference_shrinks():
    big = stats.mcnemar([True] * 10 + [False] * 90, [False] * 100)
    small = stats.mcnemar([True] * 3 + [False] * 97, [False] * 2 + [True] + [False] * 97)
    assert stats.images_needed(big) < stats.images_needed(small)
    assert stats.images_needed(stats.mcnemar([True, False], [True, False])) is None


def test_collapse_is_one_predicted_class_on_a_mixed_split():
    collapsed = [[10, 0], [10, 0]]  # everything predicted as class 0, half are class 1
    found = stats.collapse(collapsed)
    assert found.class_index == 0 and found.predicted_share == 1.0 and found.true_share == 0.5
    text = stats.collapse_message(found, ["cats", "dogs"], "test split")
    assert "'cats' for 100% of the test split" in text and "only 50%" in text
    assert stats.collapse([[9, 1], [2, 8]]) is None  # a model that learned
    assert stats.collapse([[19, 0], [1, 0]]) is None  # the split itself is one class
