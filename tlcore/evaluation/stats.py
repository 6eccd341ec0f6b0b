"""Honest uncertainty: intervals for accuracies, paired tests for comparisons.

Every accuracy the studio shows comes from a finite set of images, so it is shown with
its n and a 95% Wilson score interval (good also for small n and for accuracies near 0
or 1, where the normal approximation fails). Two models scored on the *same* images are
compared with the exact McNemar test: only the images on which exactly one of them is
right carry information, and under "no difference" each such image is a fair coin.

`collapse` spots a model that predicts (almost) one class for every image of a split
that is not itself (almost) one class — its accuracy then only restates the class mix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
SIGNIFICANCE = 0.05
POWER = 0.8
Z_POWER_80 = 0.8416212335729143
# A model is "collapsed" when at least this share of its predictions is one class...
COLLAPSE_PREDICTED_SHARE = 0.9
# ...while that class's true share is at most this (so the split itself is mixed).
COLLAPSE_MAX_TRUE_SHARE = 0.75
COLLAPSE_MIN_SAMPLES = 5


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for ``correct`` successes out of ``n`` (95% by default).

    Returns ``(0.0, 1.0)`` for ``n == 0``: with no images, nothing is known.
    """
    if n <= 0:
        return 0.0, 1.0
    correct = min(max(int(correct), 0), int(n))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """`wilson_interval` for an accuracy given as a fraction of ``n`` images."""
    return wilson_interval(round(float(accuracy) * n), n)


def format_accuracy(accuracy: float | None, n: int | None, *, digits: int = 1) -> str:
    """``"85.3% (95% CI 79.2–89.9%, n = 170)"``; ``"—"`` when unknown."""
    if accuracy is None or not n:
        return "—"
    low, high = accuracy_interval(accuracy, n)
    return (
        f"{accuracy:.{digits}%} (95% CI {low * 100:.{digits}f}–{high * 100:.{digits}f}%, n = {n})"
    )


@dataclass(frozen=True)
class PairedComparison:
    """The exact McNemar test of two models scored on the same images.

    Attributes:
        n: images both were scored on.
        a_correct, b_correct: how many each got right.
        only_a, only_b: images only A (only B) got right — the discordant pairs.
        p_value: two-sided exact binomial p-value on the discordant pairs (1.0 when
            there are none).
    """

    n: int
    a_correct: int
    b_correct: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def differ(self) -> int:
        """Images on which exactly one of the two is right."""
        return self.only_a + self.only_b

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    @property
    def winner(self) -> str | None:
        """``"a"`` or ``"b"`` when the difference is significant at 5%, else None."""
        if not self.significant:
            return None
        return "a" if self.only_a > self.only_b else "b"

    def wording(self, name_a: str = "A", name_b: str = "B") -> str:
        """The sentence to show: "A is better (p = 0.01)" or "no clear difference (…)"."""
        if self.winner == "a":
            return f"{name_a} is better ({format_p(self.p_value)}; {self._differ_text()})"
        if self.winner == "b":
            return f"{name_b} is better ({format_p(self.p_value)}; {self._differ_text()})"
        return f"no clear difference ({format_p(self.p_value)}; {self._differ_text()})"

    def _differ_text(self) -> str:
        return f"{self.differ} of {self.n} images differ"

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "a_correct": self.a_correct,
            "b_correct": self.b_correct,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "p_value": self.p_value,
        }


def format_p(p_value: float) -> str:
    """``"p < 0.001"``, ``"p = 0.012"``, ``"p = 0.48"``."""
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.2g}" if p_value < 0.1 else f"p = {p_value:.2f}"


def exact_binomial_two_sided(k: int, n: int) -> float:
    """Two-sided p-value of ``k`` heads in ``n`` fair coin flips (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedComparison:
    """Compares two models' per-image correctness on the same images (same order).

    Raises:
        ValueError: the two sequences have different lengths.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            "a paired comparison needs both models scored on the same images; received "
            f"{a.size} and {b.size} results"
        )
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    return PairedComparison(
        n=int(a.size),
        a_correct=int(a.sum()),
        b_correct=int(b.sum()),
        only_a=only_a,
        only_b=only_b,
        p_value=exact_binomial_two_sided(only_a, only_a + only_b),
    )


def images_needed(comparison: PairedComparison) -> int | None:
    """About how many images a paired test needs to tell these two models apart.

    Uses Connor's (1987) sample size for McNemar's test at 5% significance and 80%
    power, taking the observed rates of disagreement as the truth. None when the two
    agree on every image or are exactly level (no observed difference to detect).
    """
    if comparison.n == 0:
        return None
    p10 = comparison.only_a / comparison.n
    p01 = comparison.only_b / comparison.n
    disagree, diff = p10 + p01, abs(p10 - p01)
    if diff == 0:
        return None
    root = Z_95 * math.sqrt(disagree) + Z_POWER_80 * math.sqrt(max(disagree - diff * diff, 0))
    return max(comparison.n + 1, math.ceil((root / diff) ** 2))


@dataclass(frozen=True)
class Collapse:
    """A model that predicts (almost) one class on a split that is mixed."""

    class_index: int
    predicted_share: float
    true_share: float


def collapse(confusion: Sequence[Sequence[int]]) -> Collapse | None:
    """The collapse shown by a confusion matrix (rows true, columns predicted), or None."""
    matrix = np.asarray(confusion, dtype=np.int64)
    total = int(matrix.sum())
    if matrix.ndim != 2 or total < COLLAPSE_MIN_SAMPLES or matrix.shape[0] < 2:
        return None
    predicted = matrix.sum(axis=0)
    top = int(np.argmax(predicted))
    predicted_share = predicted[top] / total
    true_share = matrix.sum(axis=1)[top] / total
    if predicted_share >= COLLAPSE_PREDICTED_SHARE and true_share <= COLLAPSE_MAX_TRUE_SHARE:
        return Collapse(top, float(predicted_share), float(true_share))
    return None


def collapse_message(found: Collapse, class_names: Sequence[str], split: str) -> str:
    """What happened and what it means, for pages and the CLI."""
    name = class_names[found.class_index] if found.class_index < len(class_names) else "?"
    return (
        f"The model predicts {name!r} for {found.predicted_share:.0%} of the {split}, where "
        f"only {found.true_share:.0%} are {name!r}: it has collapsed to one class, so its "
        "accuracy only restates the class mix. Train longer, lower the learning rate, or "
        "check the labels."
    )
