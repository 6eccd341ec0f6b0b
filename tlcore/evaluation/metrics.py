"""Evaluation metrics of a classifier from its predicted probabilities.

`compute_metrics` turns true labels and softmax outputs into one `EvaluationMetrics`
record: accuracy, mean log loss, top-k accuracy, per-class precision/recall/F1 with
macro and weighted averages, the confusion matrix, one-vs-rest ROC and precision-recall
curves with their areas, and a reliability diagram with the expected calibration error.

The arithmetic is scikit-learn's wherever scikit-learn has it; only the calibration
bins and the expected calibration error (which scikit-learn has no multiclass function
for) are written here. The record is frozen and round-trips through JSON
(`EvaluationMetrics.to_dict` / `EvaluationMetrics.from_dict`), so an evaluation page can
read back exactly what was computed. Nothing here knows about Keras: inputs are arrays.

Conventions used throughout:

* The predicted class is the arg-max of a row of ``probs`` (the first one on a tie).
* In the confusion matrix, ROWS are TRUE classes and COLUMNS are PREDICTED classes, so
  ``confusion_matrix[i][j]`` counts samples of class ``i`` predicted as class ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from tlcore.evaluation import stats

FORMAT_VERSION = 1
DEFAULT_TOP_K = (1, 3, 5)
CALIBRATION_BINS = 10
ROW_SUM_TOLERANCE = 1e-3  # softmax in float16/float32 sums to 1 within far less than this
SKIP_NO_POSITIVES = "no samples of this class in the evaluation set"
SKIP_NO_NEGATIVES = "every sample in the evaluation set is of this class"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class, and how many true samples it has.

    A class that is never predicted has precision 0; a class with no true samples has
    recall 0 (scikit-learn's ``zero_division=0``).
    """

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class AverageMetrics:
    """A macro (unweighted mean over classes) or weighted (by support) average."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Curve:
    """A one-vs-rest ROC or precision-recall curve of one class.

    Attributes:
        class_name: the class taken as positive.
        kind: ``"roc"`` or ``"pr"``.
        x: ROC: false-positive rate; PR: recall. Empty when skipped.
        y: ROC: true-positive rate; PR: precision. Empty when skipped.
        auc: ROC: area under the curve (``roc_auc_score``); PR: average precision
            (``average_precision_score``, the step-wise area scikit-learn recommends over
            trapezoidal interpolation). ``None`` when skipped.
        skipped_reason: why the curve is undefined for this class (no positives or no
            negatives among the samples), else ``None``.
    """

    class_name: str
    kind: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    auc: float | None
    skipped_reason: str | None = None


@dataclass(frozen=True)
class CalibrationBin:
    """One bar of the reliability diagram: samples whose top-class confidence is in
    ``(lower, upper]`` (the first bin also takes a confidence of exactly 0).

    ``mean_confidence`` and ``accuracy`` are ``None`` for an empty bin.
    """

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    """Reliability diagram bins and the expected calibration error (ECE).

    ``ece`` = sum over bins of ``|accuracy - mean_confidence| * count / N``: 0 for a
    model whose confidence matches how often it is right; at most 1.
    """

    bins: tuple[CalibrationBin, ...]
    ece: float


@dataclass(frozen=True)
class EvaluationMetrics:
    """Everything `compute_metrics` measures about one set of predictions.

    Attributes:
        class_names: the classes, in the model's output order.
        num_samples: N, the number of evaluated samples.
        accuracy: fraction of samples whose arg-max class is the true class.
        log_loss: mean cross-entropy of the true class (natural log).
        top_k_accuracy: ``{k: fraction of samples whose true class is among the k most
            probable}`` for each requested ``k`` smaller than the number of classes.
        per_class: one `ClassMetrics` per class, in ``class_names`` order.
        macro_avg: unweighted mean of ``per_class`` (support: N).
        weighted_avg: support-weighted mean of ``per_class`` (support: N).
        confusion_matrix: counts, ROWS = TRUE class, COLUMNS = PREDICTED class.
        confusion_matrix_normalized: each row divided by its total (the recall of each
            prediction); a class with no samples has a row of zeros.
        roc_curves: one-vs-rest ROC `Curve` per class.
        pr_curves: one-vs-rest precision-recall `Curve` per class.
        macro_roc_auc: mean ROC AUC over the classes whose curve is defined; ``None``
            when none is.
        macro_average_precision: mean average precision over the same classes.
        calibration: reliability diagram bins and ECE of the top-class confidence.
    """

    class_names: tuple[str, ...]
    num_samples: int
    accuracy: float
    log_loss: float
    top_k_accuracy: dict[int, float]
    per_class: tuple[ClassMetrics, ...]
    macro_avg: AverageMetrics
    weighted_avg: AverageMetrics
    confusion_matrix: tuple[tuple[int, ...], ...]
    confusion_matrix_normalized: tuple[tuple[float, ...], ...]
    roc_curves: tuple[Curve, ...]
    pr_curves: tuple[Curve, ...]
    macro_roc_auc: float | None
    macro_average_precision: float | None
    calibration: Calibration

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ece(self) -> float:
        """The expected calibration error (``calibration.ece``)."""
        return self.calibration.ece

    @property
    def collapse(self) -> stats.Collapse | None:
        """Set when the model predicts (almost) one class on this mixed set."""
        return stats.collapse(self.confusion_matrix)

    @property
    def correct(self) -> int:
        return round(self.accuracy * self.num_samples)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, flat, for run listings and comparison tables."""
        out: dict[str, Any] = {
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "accuracy_ci95": list(stats.accuracy_interval(self.accuracy, self.num_samples)),
            "collapsed": self.collapse is not None,
            "log_loss": self.log_loss,
        }
        for k, value in sorted(self.top_k_accuracy.items()):
            if k != 1:
                out[f"top_{k}_accuracy"] = value
        out.update(
            macro_precision=self.macro_avg.precision,
            macro_recall=self.macro_avg.recall,
            macro_f1=self.macro_avg.f1,
            weighted_f1=self.weighted_avg.f1,
            macro_roc_auc=self.macro_roc_auc,
            macro_average_precision=self.macro_average_precision,
            ece=self.calibration.ece,
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain lists, str keys); see `from_dict`."""
        return {
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "top_k_accuracy": {str(k): v for k, v in sorted(self.top_k_accuracy.items())},
            "per_class": [_record_dict(c) for c in self.per_class],
            "macro_avg": _record_dict(self.macro_avg),
            "weighted_avg": _record_dict(self.weighted_avg),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "confusion_matrix_normalized": [list(r) for r in self.confusion_matrix_normalized],
            "roc_curves": [_record_dict(c) for c in self.roc_curves],
            "pr_curves": [_record_dict(c) for c in self.pr_curves],
            "macro_roc_auc": self.macro_roc_auc,
            "macro_average_precision": self.macro_average_precision,
            "calibration": {
                "bins": [_record_dict(b) for b in self.calibration.bins],
                "ece": self.calibration.ece,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationMetrics:
        """Rebuilds the record written by `to_dict`.

        Raises:
            ValueError: ``data`` is not a metrics dict of a known format version, or a
                field is missing (the message names it).
        """
        if not isinstance(data, dict):
            raise ValueError(
                f"Metrics must be a dict as written by to_dict(). Received: {type(data).__name__}"
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"Unknown metrics format; this version reads format_version={FORMAT_VERSION}. "
                f"Received: format_version={version!r}"
            )
        try:
            calibration = data["calibration"]
            return cls(
                class_names=tuple(str(n) for n in data["class_names"]),
                num_samples=int(data["num_samples"]),
                accuracy=float(data["accuracy"]),
                log_loss=float(data["log_loss"]),
                top_k_accuracy={int(k): float(v) for k, v in data["top_k_accuracy"].items()},
                per_class=tuple(ClassMetrics(**c) for c in data["per_class"]),
                macro_avg=AverageMetrics(**data["macro_avg"]),
                weighted_avg=AverageMetrics(**data["weighted_avg"]),
                confusion_matrix=tuple(tuple(int(v) for v in r) for r in data["confusion_matrix"]),
                confusion_matrix_normalized=tuple(
                    tuple(float(v) for v in r) for r in data["confusion_matrix_normalized"]
                ),
                roc_curves=tuple(_curve_from_dict(c) for c in data["roc_curves"]),
                pr_curves=tuple(_curve_from_dict(c) for c in data["pr_curves"]),
                macro_roc_auc=_optional_float(data["macro_roc_auc"]),
                macro_average_precision=_optional_float(data["macro_average_precision"]),
                calibration=Calibration(
                    bins=tuple(CalibrationBin(**b) for b in calibration["bins"]),
                    ece=float(calibration["ece"]),
                ),
            )
        except KeyError as exc:
            raise ValueError(f"Metrics dict is missing the field {exc.args[0]!r}.") from exc


def _record_dict(record: Any) -> dict[str, Any]:
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _curve_from_dict(data: dict[str, Any]) -> Curve:
    return Curve(
        class_name=str(data["class_name"]),
        kind=str(data["kind"]),
        x=tuple(float(v) for v in data["x"]),
        y=tuple(float(v) for v in data["y"]),
        auc=_optional_float(data["auc"]),
        skipped_reason=data.get("skipped_reason"),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------- validation


def validate_predictions(
    y_true: Any, probs: Any, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Checks a set of predictions and returns them as clean arrays.

    Args:
        y_true: true class indices, shape ``(N,)``, integers in ``[0, C)``.
        probs: predicted probabilities, shape ``(N, C)``, each row summing to 1 (within
            ``ROW_SUM_TOLERANCE``), e.g. a softmax output.
        class_names: the ``C`` class names in the model's output order, unique.

    Returns:
        ``(y_true, probs, class_names)``: ``int64`` labels, ``float64`` probabilities with
        each row rescaled to sum to exactly 1, and the names as a tuple of str.

    Raises:
        ValueError: a shape, label, probability or name is wrong; the message quotes it.
    """
    names = _check_class_names(class_names)
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(
            f"y_true must be a 1-D array of class indices. Received: shape={labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("There are no samples to evaluate. Received: y_true of length 0")
    if labels.dtype == bool or not (
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    ):
        raise ValueError(
            f"y_true must hold integer class indices. Received: dtype={labels.dtype}, "
            f"y_true[0]={labels[0].item()!r}"
        )
    if np.issubdtype(labels.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                "y_true must hold integer class indices. "
                f"Received: y_true[{i}]={labels[i].item()!r}"
            )
    labels = labels.astype(np.int64)

    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D array (N, C). Received: shape={p.shape}")
    if p.shape[0] != labels.shape[0]:
        raise ValueError(
            "y_true and probs must have one entry per sample. Received: "
            f"len(y_true)={labels.shape[0]}, probs.shape={p.shape}"
        )
    if p.shape[1] != len(names):
        raise ValueError(
            f"probs has {p.shape[1]} columns but there are {len(names)} class names; they "
            f"must match. Received: probs.shape={p.shape}, class_names={list(names)!r}"
        )
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"probs must be numbers. Received: dtype={p.dtype}")
    p = p.astype(np.float64)
    bad_cells = np.argwhere(~np.isfinite(p) | (p < 0.0) | (p > 1.0 + ROW_SUM_TOLERANCE))
    if bad_cells.size:
        i, j = (int(v) for v in bad_cells[0])
        raise ValueError(
            "probs must be probabilities in [0, 1]; did the model output logits instead of "
            f"softmax? Received: probs[{i}, {j}]={p[i, j].item()!r}"
        )
    sums = p.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad_rows.size:
        i = int(bad_rows[0])
        raise ValueError(
            "Each row of probs must sum to 1 (a softmax output); "
            f"{bad_rows.size} of {len(sums)} rows do not. Received: row {i} sums to "
            f"{sums[i]:.6g}: {p[i].tolist()!r}"
        )
    bad_labels = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if bad_labels.size:
        i = int(bad_labels[0])
        raise ValueError(
            f"y_true holds a class index outside 0..{len(names) - 1} ({len(names)} classes). "
            f"Received: y_true[{i}]={int(labels[i])}"
        )
    return labels, p / sums[:, None], names


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise ValueError(
            f"class_names must be a list of strings. Received: class_names={class_names!r}"
        )
    names = tuple(class_names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Each class name must be a non-empty string. Received: class_names[{i}]={name!r}"
            )
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes. Received: class_names={list(names)!r}"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"Class names must be unique. Received: {name!r} twice")
        seen.add(name)
    return names


def _check_top_k(top_k: Any) -> tuple[int, ...]:
    values = (top_k,) if isinstance(top_k, (int, np.integer)) else tuple(top_k)
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"top_k must be positive integers. Received: top_k={top_k!r}")
    return tuple(sorted({int(k) for k in values}))


# --------------------------------------------------------------------------- computing


def compute_metrics(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    *,
    top_k: int | Sequence[int] = DEFAULT_TOP_K,
) -> EvaluationMetrics:
    """Measures a classifier's predictions.

    Args:
        y_true: true class indices, shape ``(N,)``.
        probs: predicted probabilities, shape ``(N, C)``, rows summing to 1.
        class_names: the ``C`` class names, in the order of the columns of ``probs``.
        top_k: which top-k accuracies to report; default ``(1, 3, 5)``. Values of ``k``
            that are not smaller than ``C`` are left out (they are always 1).

    Returns:
        An `EvaluationMetrics` record.

    Raises:
        ValueError: the inputs are inconsistent (see `validate_predictions`) or ``top_k``
            is not a positive integer or list of them.
    """
    labels, p, names = validate_predictions(y_true, probs, class_names)
    ks = _check_top_k(top_k)
    n, c = p.shape
    class_ids = list(range(c))
    predicted = p.argmax(axis=1)

    counts = confusion_matrix(labels, predicted, labels=class_ids)
    row_totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(
        counts, row_totals, out=np.zeros(counts.shape, dtype=np.float64), where=row_totals > 0
    )

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    per_class = tuple(
        ClassMetrics(names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in range(c)
    )

    roc_curves, pr_curves = _one_vs_rest_curves(labels, p, names)
    roc_aucs = [cv.auc for cv in roc_curves if cv.auc is not None]
    aps = [cv.auc for cv in pr_curves if cv.auc is not None]

    return EvaluationMetrics(
        class_names=names,
        num_samples=n,
        accuracy=float(np.mean(predicted == labels)),
        log_loss=float(log_loss(labels, p, labels=class_ids)),
        top_k_accuracy={k: _top_k_accuracy(labels, p, k) for k in ks if k < c},
        per_class=per_class,
        macro_avg=_average(labels, predicted, class_ids, "macro"),
        weighted_avg=_average(labels, predicted, class_ids, "weighted"),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in counts),
        confusion_matrix_normalized=tuple(tuple(float(v) for v in row) for row in normalized),
        roc_curves=roc_curves,
        pr_curves=pr_curves,
        # The mean of per-class one-vs-rest AUCs is what roc_auc_score(multi_class="ovr",
        # average="macro") returns; computed here so a class absent from y_true is left
        # out instead of making the whole score fail.
        macro_roc_auc=float(np.mean(roc_aucs)) if roc_aucs else None,
        macro_average_precision=float(np.mean(aps)) if aps else None,
        calibration=compute_calibration(p, labels),
    )


def _average(labels: np.ndarray, predicted: np.ndarray, class_ids: list[int], how: str):
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, average=how, zero_division=0
    )
    return AverageMetrics(float(precision), float(recall), float(f1), int(labels.shape[0]))


def _top_k_accuracy(labels: np.ndarray, p: np.ndarray, k: int) -> float:
    if p.shape[1] == 2:
        # scikit-learn takes binary problems as a 1-D score of the positive class.
        return float(top_k_accuracy_score(labels, p[:, 1], k=k, labels=[0, 1]))
    return float(top_k_accuracy_score(labels, p, k=k, labels=list(range(p.shape[1]))))


def _one_vs_rest_curves(
    labels: np.ndarray, p: np.ndarray, names: tuple[str, ...]
) -> tuple[tuple[Curve, ...], tuple[Curve, ...]]:
    roc: list[Curve] = []
    pr: list[Curve] = []
    for i, name in enumerate(names):
        positive = labels == i
        reason = None
        if not positive.any():
            reason = SKIP_NO_POSITIVES
        elif positive.all():
            reason = SKIP_NO_NEGATIVES
        if reason is not None:
            roc.append(Curve(name, "roc", (), (), None, reason))
            pr.append(Curve(name, "pr", (), (), None, reason))
            continue
        scores = p[:, i]
        fpr, tpr, _ = roc_curve(positive, scores)
        auc = float(roc_auc_score(positive, scores))
        roc.append(Curve(name, "roc", _floats(fpr), _floats(tpr), auc))
        precision, recall, _ = precision_recall_curve(positive, scores, drop_intermediate=True)
        pr.append(
            Curve(
                name,
                "pr",
                _floats(recall),
                _floats(precision),
                float(average_precision_score(positive, scores)),
            )
        )
    return tuple(roc), tuple(pr)


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def compute_calibration(probs: Any, y_true: Any, *, n_bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability diagram of the top-class confidence, and the expected calibration error.

    Each sample's confidence is its largest probability; it is right when that class is
    the true one. Confidences are put into ``n_bins`` equal-width bins over [0, 1], each
    closed on the right, ``(lower, upper]`` (so 0.5 falls in (0.4, 0.5] with 10 bins),
    as `sklearn.calibration.calibration_curve` does. Then::

        ECE = sum over non-empty bins b of |accuracy(b) - mean_confidence(b)| * n_b / N

    (Guo et al., "On Calibration of Modern Neural Networks", 2017).

    Args:
        probs: predicted probabilities, shape ``(N, C)`` (not re-validated here; use
            `compute_metrics` or `validate_predictions` for user input).
        y_true: true class indices, shape ``(N,)``.
        n_bins: how many equal-width bins; default ``CALIBRATION_BINS`` (10).

    Returns:
        A `Calibration` with ``n_bins`` bins (empty ones included) and the ECE.

    Raises:
        ValueError: ``n_bins`` is not a positive integer.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer. Received: n_bins={n_bins!r}")
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y_true)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    n = confidence.shape[0]

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" on the inner edges makes each bin (lower, upper]; 0 joins the first bin.
    which = np.searchsorted(edges[1:-1], confidence, side="left")

    bins: list[CalibrationBin] = []
    ece = 0.0
    for b in range(n_bins):
        in_bin = which == b
        count = int(in_bin.sum())
        if count == 0:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
            continue
        mean_confidence = float(confidence[in_bin].mean())
        accuracy = float(correct[in_bin].mean())
        ece += abs(accuracy - mean_confidence) * count / n
        bins.append(
            CalibrationBin(float(edges[b]), float(edges[b + 1]), count, mean_confidence, accuracy)
        )
    return Calibration(bins=tuple(bins), ece=float(ece))
