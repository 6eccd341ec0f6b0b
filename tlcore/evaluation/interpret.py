"""What a classifier got wrong, item by item: the object behind the evaluation page.

Modelled on fastai's ``ClassificationInterpretation``: built once from the true labels,
the predicted probabilities and the items (file paths or ids), it answers the questions
a person asks after reading the metrics:

* `Interpretation.top_losses`: which items was the model most confidently wrong about?
* `Interpretation.most_confused`: which (true, predicted) pairs of classes are mixed up most?
* `Interpretation.cell`: which items are in this cell of the confusion matrix?

Two helpers guard comparisons between models and datasets: `classes_compatible` (can a
model trained on these classes be evaluated on that dataset?) and `check_comparable`
(were these runs trained on the same classes?).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tlcore.evaluation.metrics import validate_predictions

DEFAULT_TOP_LOSSES = 9
_LOSS_FLOOR = np.finfo(np.float64).eps  # p(true) is clipped here, as sklearn's log_loss does


@dataclass(frozen=True)
class PredictionRow:
    """One evaluated item.

    Attributes:
        index: position of the item in the evaluated set.
        path: the item's file path or id, as given to `Interpretation`.
        true: the true class name.
        predicted: the predicted (arg-max) class name.
        confidence: probability of the predicted class.
        loss: cross-entropy of the true class, ``-ln p(true)``.
        true_probability: probability the model gave the true class.
        probabilities: ``{class name: probability}`` for every class, in class order.
    """

    index: int
    path: str
    true: str
    predicted: str
    confidence: float
    loss: float
    true_probability: float
    probabilities: dict[str, float]

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Interpretation:
    """Per-item view of one set of predictions.

    Args:
        y_true: true class indices, shape ``(N,)``.
        probs: predicted probabilities, shape ``(N, C)``, rows summing to 1.
        class_names: the ``C`` class names, in the order of the columns of ``probs``.
        items: the ``N`` file paths or ids of the items, in the same order; default: the
            item's index as a string.

    Raises:
        ValueError: the predictions are inconsistent (see
            `tlcore.evaluation.metrics.validate_predictions`) or ``items`` has the wrong length.
    """

    def __init__(
        self,
        y_true: Any,
        probs: Any,
        class_names: Sequence[str],
        items: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        self.y_true, self.probs, self.class_names = validate_predictions(y_true, probs, class_names)
        n = self.y_true.shape[0]
        if items is None:
            self.items: tuple[str, ...] = tuple(str(i) for i in range(n))
        else:
            if isinstance(items, (str, bytes)):
                raise ValueError(f"items must be a list of paths or ids. Received: {items!r}")
            self.items = tuple(os.fspath(item) for item in items)
            if len(self.items) != n:
                raise ValueError(
                    f"items must name each of the {n} samples. Received: {len(self.items)} items"
                )
        self.predicted: np.ndarray = self.probs.argmax(axis=1)
        self.confidence: np.ndarray = self.probs.max(axis=1)
        self.true_probability: np.ndarray = self.probs[np.arange(n), self.y_true]
        self.losses: np.ndarray = -np.log(np.clip(self.true_probability, _LOSS_FLOOR, 1.0))
        self._index = {name: i for i, name in enumerate(self.class_names)}

    def __len__(self) -> int:
        return int(self.y_true.shape[0])

    def row(self, index: int) -> PredictionRow:
        """The `PredictionRow` of the item at ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"No item {index}; there are {len(self)}. Received: index={index}")
        names = self.class_names
        return PredictionRow(
            index=int(index),
            path=self.items[index],
            true=names[int(self.y_true[index])],
            predicted=names[int(self.predicted[index])],
            confidence=float(self.confidence[index]),
            loss=float(self.losses[index]),
            true_probability=float(self.true_probability[index]),
            probabilities={
                name: float(v) for name, v in zip(names, self.probs[index], strict=True)
            },
        )

    def _worst_first(self, indices: np.ndarray) -> list[PredictionRow]:
        # Highest loss first; ties broken by higher confidence, then by position.
        order = sorted(
            (int(i) for i in indices),
            key=lambda i: (-self.losses[i], -self.confidence[i], i),
        )
        return [self.row(i) for i in order]

    def top_losses(
        self, k: int = DEFAULT_TOP_LOSSES, *, errors_only: bool = True
    ) -> list[PredictionRow]:
        """The items the model was most confidently wrong about, worst first.

        "Worst" is the highest loss, ``-ln p(true)``: the less probability the model gave
        the true class, the worse (ties: the more confident prediction first).

        Args:
            k: how many rows at most; default ``DEFAULT_TOP_LOSSES`` (9, a 3x3 gallery).
            errors_only: default True, only misclassified items; False also includes
                correct but unsure predictions (fastai's behaviour).

        Returns:
            Up to ``k`` `PredictionRow`, highest loss first.

        Raises:
            ValueError: ``k`` is not a positive integer.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k!r}")
        candidates = (
            np.flatnonzero(self.predicted != self.y_true) if errors_only else np.arange(len(self))
        )
        return self._worst_first(candidates)[: int(k)]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """The off-diagonal cells of the confusion matrix, most frequent first.

        Args:
            min_count: leave out pairs confused fewer times than this; default 1.

        Returns:
            ``(true class, predicted class, count)`` tuples, by count descending, ties in
            class order of the true, then the predicted class.

        Raises:
            ValueError: ``min_count`` is not a positive integer.
        """
        if (
            isinstance(min_count, bool)
            or not isinstance(min_count, (int, np.integer))
            or min_count < 1
        ):
            raise ValueError(
                f"min_count must be a positive integer. Received: min_count={min_count!r}"
            )
        c = len(self.class_names)
        counts = np.zeros((c, c), dtype=np.int64)
        np.add.at(counts, (self.y_true, self.predicted), 1)
        pairs = [
            (int(counts[t, p]), t, p)
            for t in range(c)
            for p in range(c)
            if t != p and counts[t, p] >= min_count
        ]
        pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
        return [(self.class_names[t], self.class_names[p], n) for n, t, p in pairs]

    def cell(self, true_class: str | int, predicted_class: str | int) -> list[PredictionRow]:
        """The items in one cell of the confusion matrix, worst (highest loss) first.

        Off the diagonal that is the most confidently wrong first; on the diagonal, the
        least sure correct predictions first.

        Args:
            true_class: the row: a class name or index.
            predicted_class: the column: a class name or index.

        Returns:
            The `PredictionRow` of every item of ``true_class`` predicted as
            ``predicted_class``, each with all its class probabilities.

        Raises:
            ValueError: a class is not one of ``class_names``.
        """
        t = self._class_index(true_class, "true_class")
        p = self._class_index(predicted_class, "predicted_class")
        return self._worst_first(np.flatnonzero((self.y_true == t) & (self.predicted == p)))

    def _class_index(self, value: str | int, what: str) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if 0 <= value < len(self.class_names):
                return int(value)
        elif isinstance(value, str) and value in self._index:
            return self._index[value]
        raise ValueError(
            f"{what} must be one of the classes {list(self.class_names)!r} or an index "
            f"0..{len(self.class_names) - 1}. Received: {what}={value!r}"
        )


def classes_compatible(run_classes: Sequence[str], other_classes: Sequence[str]) -> dict[int, int]:
    """Checks that a model can be evaluated on a dataset, and maps its labels.

    A model trained on ``run_classes`` can be evaluated on a dataset whose classes are the
    same, or a subset, in any order. Class names must match exactly (case included).

    Args:
        run_classes: the classes the model was trained on, in its output order.
        other_classes: the classes of the dataset to evaluate on, in its label order.

    Returns:
        ``{dataset label index: model output index}``; e.g. ``run_classes=["cat", "dog",
        "fox"]``, ``other_classes=["fox", "cat"]`` gives ``{0: 2, 1: 0}``. Apply it to the
        dataset's labels before calling `tlcore.evaluation.metrics.compute_metrics` with
        ``run_classes``.

    Raises:
        ValueError: the dataset has classes the model does not know (named in the
            message, with near matches that differ only in case, spaces, "_" or "-"), no classes,
            or a class list holds a name twice.
    """
    run = _class_list(run_classes, "run_classes")
    other = _class_list(other_classes, "other_classes")
    if not other:
        raise ValueError("The dataset has no classes to evaluate. Received: other_classes=[]")
    position = {name: i for i, name in enumerate(run)}
    unknown = [name for name in other if name not in position]
    if unknown:
        folded = {_fold(name): name for name in run}
        hints = [
            f"{name!r} looks like {folded[_fold(name)]!r}"
            for name in unknown
            if _fold(name) in folded
        ]
        hint = f" ({'; '.join(hints)}: class names must match exactly)" if hints else ""
        raise ValueError(
            f"The dataset has {len(unknown)} class(es) the model was not trained on: "
            f"{', '.join(repr(n) for n in unknown)}{hint}. The model knows "
            f"{list(run)!r}. Evaluate on a dataset whose classes are these or a subset of them."
        )
    return {i: position[name] for i, name in enumerate(other)}


def check_comparable(runs_classes: Mapping[str, Sequence[str]]) -> list[str]:
    """Checks that runs to be compared were trained on the same classes.

    The order of the classes may differ (per-class results are matched by name).

    Args:
        runs_classes: ``{run id: its class names}``.

    Returns:
        The classes of the first run (the reference order); ``[]`` when no runs are given.

    Raises:
        ValueError: two runs have different sets of classes, e.g. "Runs A and B have
            different classes: A has ['cat', 'dog'], B has ['cat', 'dog', 'fox'] (only in
            B: 'fox'); compare runs trained on the same classes."
    """
    if not runs_classes:
        return []
    items = [
        (run_id, _class_list(classes, f"classes of run {run_id}"))
        for run_id, classes in runs_classes.items()
    ]
    ref_id, ref = items[0]
    for run_id, classes in items[1:]:
        if set(classes) == set(ref):
            continue
        only_ref = [n for n in ref if n not in set(classes)]
        only_other = [n for n in classes if n not in set(ref)]
        diff = []
        if only_ref:
            diff.append(f"only in {ref_id}: {', '.join(repr(n) for n in only_ref)}")
        if only_other:
            diff.append(f"only in {run_id}: {', '.join(repr(n) for n in only_other)}")
        raise ValueError(
            f"Runs {ref_id} and {run_id} have different classes: {ref_id} has {list(ref)!r}, "
            f"{run_id} has {list(classes)!r} ({'; '.join(diff)}); "
            "compare runs trained on the same classes."
        )
    return list(ref)


def _class_list(classes: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(f"{what} must be a list of class names. Received: {classes!r}")
    names = tuple(classes)
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{what} must hold class names (strings). Received: {name!r}")
        if name in seen:
            raise ValueError(f"{what} lists the class {name!r} twice. Received: {list(names)!r}")
        seen.add(name)
    return names


def _fold(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").split()).casefold()
