"""Comparing models: run against run, and a run against its from-scratch twin.

Two models scored on the same images are compared image by image with the exact McNemar
test (`tlcore.evaluation.stats`): `paired_comparison` on two stored evaluations,
`compare_runs` for the Compare table (each run against the first), and
`baseline_comparison` for "did transfer help?", whose verdict is ``inconclusive`` —
never a number — when the twin did not learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tlcore.evaluation import evaluate, stats
from tlcore.evaluation.evaluate import (
    VALIDATION_DIR,
    EvaluationError,
    EvaluationResult,
    load_evaluation,
    read_predictions,
    run_classes,
)
from tlcore.evaluation.interpret import check_comparable
from tlcore.store import runs
from tlcore.store.workspace import Workspace


# ``config.extra`` key of a from-scratch twin: the id of the run it is the baseline of.
def compare_runs(ws: Workspace, run_ids: Sequence[str]) -> list[dict]:
    """One row per run for a comparison table, in the order given.

    Each row: ``run_id``, ``name``, ``state``, ``dataset``, ``backbone``, ``strategy``,
    ``weights``, ``epochs``, ``evaluated_on`` (e.g. "test split", or None when the run has
    no stored evaluation), ``accuracy``, ``top_3_accuracy`` (when there are more than 3
    classes), ``macro_f1``, ``log_loss``, ``ece``, ``best_val_accuracy``,
    ``train_seconds``, ``trainable_params``, ``total_params``.

    Raises:
        ValueError: two runs were trained on different classes (the message names them and
            the classes only one has); `tlcore.evaluation.interpret.check_comparable`.
        tlcore.store.runs.RunNotFoundError: a run does not exist.
    """
    records = [runs.read_run(ws, run_id) for run_id in run_ids]
    check_comparable({r.id: run_classes(ws, r) for r in records})
    rows, results = [], []
    for record in records:
        cfg = record.config
        training = (record.status.summary if record.status else {}) or {}
        try:
            result = load_evaluation(ws, record.id)
        except EvaluationError:
            result = None
        summary = result.summary() if result else {}
        rows.append(
            {
                "run_id": record.id,
                "name": cfg.name if cfg else "",
                "state": record.state,
                "dataset": cfg.dataset if cfg else "",
                "backbone": cfg.backbone if cfg else "",
                "strategy": cfg.strategy if cfg else "",
                "weights": cfg.weights if cfg else "",
                "epochs": training.get("epochs_completed"),
                "evaluated_on": result.split_label if result else None,
                "accuracy": summary.get("accuracy"),
                "accuracy_ci95": summary.get("accuracy_ci95"),
                "num_samples": summary.get("num_samples"),
                "collapsed": summary.get("collapsed"),
                "top_3_accuracy": summary.get("top_3_accuracy"),
                "macro_f1": summary.get("macro_f1"),
                "log_loss": summary.get("log_loss"),
                "ece": summary.get("ece"),
                "best_val_accuracy": training.get("best_val_accuracy"),
                "train_seconds": training.get("train_seconds"),
                "trainable_params": training.get("trainable_params"),
                "total_params": training.get("total_params"),
            }
        )
        results.append(result)
    _add_paired_tests(rows, results)
    return rows


def _add_paired_tests(rows: list[dict], results: list) -> None:
    """Each row after the first gets the exact McNemar test against the first run."""
    first = results[0] if results else None
    name = (rows[0]["name"] or rows[0]["run_id"]) if rows else ""
    for row, result in zip(rows, results, strict=True):
        row["vs_first"], row["vs_first_text"] = None, ""
        if row is rows[0] or first is None or result is None:
            continue
        try:
            comparison = paired_comparison(first, result)
        except EvaluationError:
            comparison = None
        if comparison is None:
            row["vs_first_text"] = "not scored on the same images"
            continue
        row["vs_first"] = comparison.to_dict() | {"p_value": comparison.p_value}
        row["vs_first_text"] = comparison.wording(name, row["name"] or row["run_id"])


def per_image_correct(result: EvaluationResult, *, validation: bool = False) -> dict[str, bool]:
    """``{image path: whether the model's top class was right}`` for a stored evaluation."""
    folder = result.folder / VALIDATION_DIR if validation else result.folder
    paths, y_true, probs = read_predictions(folder)
    return dict(zip(paths, (np.argmax(probs, axis=1) == y_true).tolist(), strict=True))


def paired_comparison(
    result_a: EvaluationResult, result_b: EvaluationResult, *, validation: bool = False
) -> stats.PairedComparison | None:
    """The exact McNemar test of two evaluations on the images both scored.

    Args:
        validation: compare on the validation split stored beside the test split.

    Returns:
        None when they were not scored on the same dataset and split, or share no image.

    Raises:
        EvaluationError: a predictions file is missing or damaged.
    """
    if (result_a.dataset_id, result_a.split) != (result_b.dataset_id, result_b.split):
        return None
    if validation and (result_a.validation is None or result_b.validation is None):
        return None
    a = per_image_correct(result_a, validation=validation)
    b = per_image_correct(result_b, validation=validation)
    shared = [path for path in a if path in b]
    if not shared:
        return None
    return stats.mcnemar([a[p] for p in shared], [b[p] for p in shared])


def comparable_runs(ws: Workspace, run_id: str) -> list[runs.RunRecord]:
    """Finished runs other than ``run_id`` trained on the same classes, newest first."""
    record = runs.read_run(ws, run_id)
    classes = set(run_classes(ws, record))
    out = []
    for other in runs.list_runs(ws):
        if other.id == run_id or other.state != runs.FINISHED or other.problem:
            continue
        try:
            if set(run_classes(ws, other)) == classes:
                out.append(other)
        except EvaluationError:
            continue
    return out


EXTRA_BASELINE_OF = "baseline_of"


VERDICTS = ("transfer_helped", "no_clear_difference", "transfer_hurt", "inconclusive")


@dataclass(frozen=True)
class TransferVerdict:
    """The pretrained run against its from-scratch twin, by a paired test on test images.

    Attributes:
        run_id, baseline_id: the two runs (``baseline_id`` is the twin).
        baseline_state: the twin's state.
        verdict: one of `VERDICTS`; ``inconclusive`` while the twin is not finished,
            when either run has no evaluation on the same images, or when a model
            collapsed to one class (a twin that did not learn proves nothing).
        accuracy, baseline_accuracy: accuracies on the compared images (None if unknown).
        num_samples: images compared.
        p_value: exact McNemar p-value (None when not compared).
        comparison: the `tlcore.evaluation.stats.PairedComparison` as a dict, or None.
        delta: ``accuracy - baseline_accuracy``, or None.
        metric: what was compared (e.g. "test split accuracy").
        train_seconds, baseline_train_seconds: training time of each.
        reason: one sentence for people, following the test.
    """

    run_id: str
    baseline_id: str
    baseline_state: str
    verdict: str
    accuracy: float | None
    baseline_accuracy: float | None
    num_samples: int | None
    p_value: float | None
    comparison: dict | None
    delta: float | None
    metric: str
    train_seconds: float | None
    baseline_train_seconds: float | None
    reason: str

    @property
    def ready(self) -> bool:
        """Whether the comparison is final (both finished and evaluated)."""
        return self.baseline_state == runs.FINISHED and self.p_value is not None

    @property
    def message(self) -> str:
        return self.reason

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "twin_run_id": self.baseline_id,
            "twin_state": self.baseline_state,
            "verdict": self.verdict,
            "p_value": self.p_value,
            "reason": self.reason,
            "accuracy": self.accuracy,
            "twin_accuracy": self.baseline_accuracy,
            "num_samples": self.num_samples,
            "comparison": self.comparison,
            "metric": self.metric,
            "train_seconds": self.train_seconds,
            "twin_train_seconds": self.baseline_train_seconds,
        }


def _evaluation(ws: Workspace, record: runs.RunRecord):
    if record.state != runs.FINISHED:
        return None
    try:
        return evaluate.load_evaluation(ws, record.id)
    except evaluate.EvaluationError:
        return None


def _did_not_learn(result) -> str | None:
    """Why an evaluated model shows nothing learned, or None."""
    metrics = result.metrics
    found = metrics.collapse
    if found:
        return stats.collapse_message(found, result.class_names, result.split_label)
    counts = np.asarray(metrics.confusion_matrix).sum(axis=1)
    majority = counts.max() / max(counts.sum(), 1)
    if metrics.accuracy <= majority:
        return (
            f"its accuracy ({metrics.accuracy:.1%}) is no better than always answering the "
            f"largest class ({majority:.1%})"
        )
    return None


def find_baseline(ws: Workspace, run_id: str) -> runs.RunRecord | None:
    """The newest baseline run of ``run_id`` that did not fail or get cancelled, or None."""
    candidates = [
        r
        for r in runs.list_runs(ws)
        if r.config is not None and r.config.extra.get(EXTRA_BASELINE_OF) == run_id
    ]
    alive = [r for r in candidates if r.state not in (runs.FAILED, runs.CANCELLED)]
    return (alive or candidates or [None])[0]


def baseline_comparison(ws: Workspace, run_id: str) -> TransferVerdict | None:
    """Did transfer help? The run against its twin; None when it has no twin.

    Both runs' stored evaluations are compared image by image (exact McNemar test).
    The verdict is ``inconclusive`` — never a number — when the twin has not finished,
    either run has not been evaluated on the same images, or a model did not learn.
    """
    baseline = find_baseline(ws, run_id)
    if baseline is None:
        return None
    record = runs.read_run(ws, run_id)
    seconds = _summary_value(record, "train_seconds"), _summary_value(baseline, "train_seconds")
    ours, theirs = _evaluation(ws, record), _evaluation(ws, baseline)

    def verdict(kind: str, reason: str, comparison=None, metric: str = "") -> TransferVerdict:
        return TransferVerdict(
            run_id=run_id,
            baseline_id=baseline.id,
            baseline_state=baseline.state,
            verdict=kind,
            accuracy=comparison.a_correct / comparison.n if comparison else None,
            baseline_accuracy=comparison.b_correct / comparison.n if comparison else None,
            num_samples=comparison.n if comparison else None,
            p_value=comparison.p_value if comparison else None,
            comparison=comparison.to_dict() if comparison else None,
            delta=(comparison.a_correct - comparison.b_correct) / comparison.n
            if comparison
            else None,
            metric=metric,
            train_seconds=seconds[0],
            baseline_train_seconds=seconds[1],
            reason=reason,
        )

    if baseline.state != runs.FINISHED:
        reason = f"The from-scratch twin is {baseline.state}; the answer comes when it finishes."
        if baseline.state == runs.FAILED:
            error = baseline.status.error if baseline.status else ""
            reason = f"Inconclusive: the from-scratch twin failed: {error}"
        return verdict("inconclusive", reason)
    if ours is None or theirs is None:
        return verdict(
            "inconclusive",
            "Inconclusive: both runs need an evaluation on the same images; evaluate them.",
        )
    comparison = paired_comparison(ours, theirs)
    if comparison is None:
        return verdict(
            "inconclusive",
            "Inconclusive: the two runs were evaluated on different images; evaluate both "
            "on the run's own dataset.",
        )
    metric = f"{ours.split_label} accuracy"
    twin_failed = _did_not_learn(theirs)
    if twin_failed:
        return verdict(
            "inconclusive",
            f"Inconclusive: the from-scratch twin did not learn — {twin_failed}",
            comparison,
            metric,
        )
    ours_failed = _did_not_learn(ours)
    if ours_failed:
        return verdict(
            "inconclusive",
            f"Inconclusive: the pretrained run did not learn — {ours_failed}",
            comparison,
            metric,
        )
    figures = (
        f"{comparison.a_correct} against {comparison.b_correct} of {comparison.n} "
        f"{ours.split_label} images right"
    )
    words = comparison.wording("pretrained", "from scratch")
    if comparison.winner == "a":
        kind, reason = "transfer_helped", f"Yes: {words} — {figures}."
    elif comparison.winner == "b":
        kind, reason = (
            "transfer_hurt",
            (
                f"No: {words} — {figures}. The pretrained features may not suit these images, "
                "or the run needs another strategy."
            ),
        )
    else:
        kind, reason = (
            "no_clear_difference",
            (f"Not clearly: {words} — {figures}. Transfer may still have saved training time."),
        )
    return verdict(kind, reason, comparison, metric)


def _summary_value(record: runs.RunRecord, key: str):
    summary = (record.status.summary if record.status else {}) or {}
    return summary.get(key)
