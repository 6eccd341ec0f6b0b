"""Evaluating a run: its saved model on held-out images, stored so the page opens instantly.

`evaluate_run` loads a run's best model (``model.keras``, its hash checked by
`tlcore.model.model_store`, deserialized in safe mode), streams a split of a
dataset through the same tf.data pipeline training used (batch by batch, never the whole
set in memory), and stores what it found under ``<run>/evaluation/<dataset_id>/``::

    evaluation.json        what was evaluated (dataset, split, note, model file stamp) and
                           the headline numbers; written last, so it marks a complete folder
    metrics.json           `tlcore.evaluation.metrics.EvaluationMetrics`
                           (via `report.write_metrics_files`)
    per_class.csv          precision, recall, F1, support, AUCs per class
    confusion_matrix.csv   rows = true class, columns = predicted class
    predictions.npz        paths, true labels and every probability, for drill-down (the
                           worst errors and the most confused pairs are computed from it,
                           `EvaluationResult.interpretation`)
    validation/            the same files for the validation split (own dataset only)

The run folder's own ``metrics.json`` is the training summary and is never touched.

Which images: on the run's own dataset, its test split, or its validation split when the
dataset has no test split (saying so: those numbers are optimistic, since the validation
split chose the best epoch). On another imported dataset, every image of it, provided its
classes are the run's or a subset (`tlcore.evaluation.interpret.classes_compatible`).

`train.train_run` calls `evaluate_run` as a run finishes, so most runs are evaluated once,
in the training process. TensorFlow is imported only inside the functions that predict,
so pages that only read stored evaluations do not load it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlcore.evaluation import stats
from tlcore.evaluation.interpret import classes_compatible
from tlcore.evaluation.metrics import EvaluationMetrics, compute_metrics
from tlcore.evaluation.stored import (  # noqa: F401 - the stored results, also used as evaluate.X
    ALL_SPLITS,
    FORMAT_VERSION,
    MANIFEST_FILE,
    PREDICTIONS_FILE,
    SPLIT_LABELS,
    VALIDATION_DIR,
    EvaluationError,
    EvaluationResult,
    _result_from_manifest,
    _store,
    evaluation_folder,
    is_current,
    list_evaluations,
    load_evaluation,
    read_predictions,
)
from tlcore.fileio import read_json
from tlcore.store import run_layout, runs
from tlcore.store.workspace import Workspace

PREDICT_BATCH_SIZE = 64  # inference needs no gradients: larger batches than training are fine
REPORT_WORST_ERRORS = 12
Progress = Callable[[float, str], None]  # (fraction 0..1, message), as tlcore.data.datasets uses
SplitProbabilities = Callable[[Any, str, Sequence], "np.ndarray | None"]


# --------------------------------------------------------------------------- run facts


def run_classes(ws: Workspace, record: runs.RunRecord) -> list[str]:
    """The classes a run's model predicts, in output order.

    Read from the run's ``classes.json`` (written when training starts); a run that has not
    started yet falls back to its dataset's classes.

    Raises:
        EvaluationError: neither is available.
    """
    try:
        return list(run_layout.read_classes(record.dir)["classes"])
    except run_layout.ClassListError:
        pass
    if record.config is not None:
        from tlcore.data import datasets

        try:
            return list(datasets.load_dataset(ws, record.config.dataset).classes)
        except (OSError, ValueError):
            pass
    raise EvaluationError(
        f"Run {record.id} has no list of its classes (classes.json is missing and its dataset "
        "cannot be opened). Train the run again."
    )


def _trained_dataset_id(record: runs.RunRecord) -> str | None:
    return run_layout.trained_dataset_id(record.dir)


def no_model_message(record: runs.RunRecord) -> str:
    """Why a run has no model to evaluate, and what to do, in one or two sentences."""
    state = record.state
    head = f"Run {record.id} has no saved model"
    if state == runs.QUEUED:
        return f"{head}: it is still queued. Evaluate it once it has finished training."
    if state == runs.RUNNING:
        return f"{head} yet: it is still running. Evaluate it once it has finished."
    if state == runs.FAILED:
        reason = (record.status.error if record.status else None) or "no reason was recorded"
        return f"{head}: it failed ({reason}). Fix the cause and train a new run."
    if state in (runs.CANCELLED, runs.INTERRUPTED):
        return (
            f"{head}: it was {state} before its first epoch ended. Resume it on the Training "
            "page, then evaluate it."
        )
    if state == runs.UNREADABLE:
        return f"{head}: its folder cannot be read ({record.problem})."
    return f"{head}: {runs.MODEL_FILE} is missing from {record.dir}. Train the run again."


# --------------------------------------------------------------------------- evaluating


def evaluate_run(
    ws: Workspace,
    run_id: str,
    *,
    dataset: str | None = None,
    progress: Progress | None = None,
    allow_running: bool = False,
    batch_size: int = PREDICT_BATCH_SIZE,
    probabilities: SplitProbabilities | None = None,
) -> EvaluationResult:
    """Evaluates a run's saved model and stores the result (replacing an earlier one).

    Args:
        ws: the workspace.
        run_id: the run; it must have a saved model (``model.keras``).
        dataset: the name or id of the dataset to evaluate on; default None, the run's own
            dataset (its test split, else its validation split, saying so). Another
            dataset must have the run's classes or a subset of them; all its images are
            evaluated.
        progress: called with ``(fraction, message)`` after each batch; default none.
        allow_running: default False. True also evaluates the best checkpoint of a run
            that is still running (`train.train_run` does so as the run finishes).
        batch_size: images per prediction batch; default ``PREDICT_BATCH_SIZE`` (64).
        probabilities: ``probabilities(model, split, items)`` gives the loaded model's
            probabilities for a split another way, or None to predict its images; default
            none. Training passes one that applies the model's head to the backbone
            features it cached (`tlcore.training.phase_fit.cached_probabilities`).

    Returns:
        The stored `EvaluationResult`.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no such run.
        EvaluationError: the run has no model, is still running, the dataset's classes do
            not fit the model, or the dataset has no images to evaluate.
        tlcore.data.datasets.DatasetError: the dataset does not exist or is damaged.
    """
    from tlcore.data import datasets

    started = time.perf_counter()
    record = runs.read_run(ws, run_id)
    _check_evaluable(record, allow_running=allow_running)
    classes = run_classes(ws, record)
    target = datasets.load_dataset(ws, dataset or record.config.dataset)
    own = _is_own_dataset(record, target, dataset)
    try:
        mapping = classes_compatible(classes, list(target.classes))
    except ValueError as exc:
        raise EvaluationError(
            f"Run {run_id} cannot be evaluated on dataset {target.name!r}: {exc}"
        ) from None

    plan, note = _plan_splits(ws, record, target, own)
    report = _Reporter(progress, sum(len(items) for _, items in plan), batch_size)
    report.say("Loading the model", 0.0)
    model, model_sha256 = _load_model(record)
    image_size = int(model.input_shape[1])
    if int(model.output_shape[-1]) != len(classes):
        raise EvaluationError(
            f"Run {run_id}'s model predicts {int(model.output_shape[-1])} classes but its "
            f"class list has {len(classes)}. The run folder is inconsistent; train it again."
        )

    evaluated: dict[str, tuple[EvaluationMetrics, list[str], np.ndarray, np.ndarray]] = {}
    for split, items in plan:
        probs = probabilities(model, split, items) if probabilities is not None else None
        if probs is None:
            probs = _predict(model, items, image_size, batch_size, report, split)
        y_true = np.asarray([mapping[item.label] for item in items], dtype=np.int64)
        metrics = compute_metrics(y_true, probs, classes)
        evaluated[split] = (metrics, [str(item.path) for item in items], y_true, probs)

    report.say("Saving the evaluation")
    primary_split = plan[0][0]
    manifest = {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "dataset_id": target.id,
        "dataset_name": target.name,
        "dataset_hash": target.content_hash,
        "own_dataset": own,
        "split": primary_split,
        "note": note,
        "class_names": list(classes),
        "class_mapping": {str(k): v for k, v in mapping.items()},
        "created_at": runs.now_iso(),
        "seconds": round(time.perf_counter() - started, 2),
        "model_stamp": {"sha256": model_sha256},  # of the bytes evaluated
        "summary": evaluated[primary_split][0].summary(),
        "validation_summary": (
            evaluated["val"][0].summary() if "val" in evaluated and primary_split != "val" else None
        ),
        "images": {split: len(items) for split, items in plan},
        "class_counts": {
            split: _class_counts(items, list(target.classes)) for split, items in plan
        },
    }
    folder = _store(record.dir, target.id, evaluated, primary_split, manifest)
    report.say("Done", 1.0)
    return _result_from_manifest(folder, manifest)


def _check_evaluable(record: runs.RunRecord, *, allow_running: bool) -> None:
    if record.config is None or record.status is None:
        raise EvaluationError(
            f"Run {record.id} cannot be evaluated: its folder is damaged ({record.problem})."
        )
    if not (record.dir / runs.MODEL_FILE).exists():
        raise EvaluationError(no_model_message(record))
    if record.state in runs.ACTIVE_STATES and not allow_running:
        raise EvaluationError(
            f"Run {record.id} is still {record.state}; its model is not final yet. Evaluate "
            "it once it has finished."
        )


def _is_own_dataset(record: runs.RunRecord, target, requested: str | None) -> bool:
    trained_on = _trained_dataset_id(record)
    if trained_on:
        return trained_on == target.id
    return requested is None or requested in (record.config.dataset, target.id)


def _plan_splits(ws: Workspace, record: runs.RunRecord, target, own: bool) -> tuple[list, str]:
    """Which items to evaluate, as ``[(split, items), ...]`` (the first is the headline)."""
    if not own and _is_other_version(ws, record, target):
        # Another version of the dataset it trained on (e.g. with labels fixed): a change
        # keeps every image in its split, so its test split is still unseen by this run,
        # and both runs are compared on the same images.
        test = target.items("test")
        if test:
            note = (
                f"The test split of version {target.version} of dataset {target.name!r} "
                f"({len(test):,} images); the run trained on another version, whose images "
                "keep their splits in this one."
            )
            return [("test", test)], note
    if not own:
        items = target.items()
        if not items:
            raise EvaluationError(f"Dataset {target.name!r} has no images to evaluate.")
        note = (
            f"All {len(items):,} images of dataset {target.name!r}, a dataset this run was "
            "not trained on."
        )
        overlap = _overlap_with_training(ws, record, items)
        if overlap:
            note += (
                f" {overlap:,} of them are also among the run's training images, so these "
                "numbers are optimistic."
            )
        return [(ALL_SPLITS, items)], note
    test, val = target.items("test"), target.items("val")
    if test and runs.read_metrics(record.dir).get("trained_on_validation"):
        # The recommended recipe refits on train + val: its validation figure is the
        # cross-validated one in the run's summary, and val is no longer held out.
        return [("test", test)], ""
    if test:
        return [("test", test)] + ([("val", val)] if val else []), ""
    if val:
        note = (
            f"Dataset {target.name!r} has no test split, so this is its validation split "
            f"({len(val):,} images). Training used it to choose the best epoch, so these "
            "numbers are somewhat optimistic; import a dataset with a test split, or evaluate "
            "on another dataset, for an unbiased estimate."
        )
        return [("val", val)], note
    raise EvaluationError(
        f"Dataset {target.name!r} has no test or validation images, only training images, "
        "which say nothing about new images. Import it again with a test fraction above 0, "
        "or evaluate on another dataset."
    )


def _is_other_version(ws: Workspace, record: runs.RunRecord, target) -> bool:
    from tlcore.data import datasets

    trained_on = _trained_dataset_id(record)
    if not trained_on or trained_on == target.id:
        return False
    try:
        return datasets.load_dataset(ws, trained_on).lineage == target.lineage
    except (OSError, ValueError):
        return False


def _overlap_with_training(ws: Workspace, record: runs.RunRecord, items: Sequence) -> int:
    """How many of ``items`` are (byte-identical to) images the run trained on."""
    from tlcore.data import datasets

    try:
        own = datasets.load_dataset(ws, _trained_dataset_id(record) or record.config.dataset)
        trained = {item.sha256 for item in own.items("train")}
    except (OSError, ValueError):
        return 0
    return sum(1 for item in items if getattr(item, "sha256", None) in trained)


def _class_counts(items: Sequence, classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for item in items:
        counts[item.class_name] = counts.get(item.class_name, 0) + 1
    return counts


class _Reporter:
    """Turns batches done into ``progress(fraction, message)`` calls; silent without one."""

    def __init__(self, progress: Progress | None, total_images: int, batch_size: int):
        self.progress = progress
        self.total = max(math.ceil(total_images / max(batch_size, 1)), 1)
        self.done = 0

    def batch(self, message: str) -> None:
        self.done += 1
        self.say(message)

    def say(self, message: str, fraction: float | None = None) -> None:
        if self.progress is None:
            return
        if fraction is None:
            fraction = 0.97 * min(self.done / self.total, 1.0)  # saving takes the rest
        self.progress(fraction, message)


def _load_model(record: runs.RunRecord):
    """``(model, sha256)``: the run's model, after checking its file against the hash
    training recorded, and the hash of the bytes it was loaded from."""
    from tlcore.model import model_store

    try:
        data = model_store.verified_model_bytes(record.dir, record.id)
        return model_store.load_model_bytes(data), model_store.sha256_bytes(data)
    except model_store.ModelLoadError as exc:  # missing, changed after training, no hash
        raise EvaluationError(str(exc)) from None
    except Exception as exc:  # Keras raises many types for a file it cannot rebuild
        raise EvaluationError(
            f"Run {record.id}'s model file {record.dir / runs.MODEL_FILE} cannot be loaded "
            f"({type(exc).__name__}: {exc}). Train the run again."
        ) from exc


def _predict(model, items: Sequence, image_size: int, batch_size: int, report, split: str):
    """Probabilities for ``items`` in order, streaming batches from disk."""
    from tlcore.data import pipeline

    batches = pipeline.make_image_dataset(
        items, image_size=image_size, batch_size=batch_size, shuffle=False, seed=0
    )
    total = math.ceil(len(items) / batch_size)
    out = np.empty((len(items), int(model.output_shape[-1])), dtype=np.float32)
    position = 0
    for index, (images, _labels) in enumerate(batches, start=1):
        probs = np.asarray(model.predict_on_batch(images), dtype=np.float32)
        out[position : position + len(probs)] = probs
        position += len(probs)
        report.batch(f"Predicting the {SPLIT_LABELS.get(split, split)}: batch {index} of {total}")
    if position != len(items):  # pragma: no cover - the pipeline yields every item once
        raise EvaluationError(f"Expected {len(items)} predictions, got {position}.")
    return out


# --------------------------------------------------------------------------- storing


# --------------------------------------------------------------------------- reading back


def ensure_evaluation(
    ws: Workspace,
    run_id: str,
    *,
    dataset: str | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """The stored evaluation if it is of the present model, else a new one (`evaluate_run`)."""
    dataset_id = None
    if dataset is not None:
        from tlcore.data import datasets

        dataset_id = datasets.load_dataset(ws, dataset).id
    try:
        stored = load_evaluation(ws, run_id, dataset_id)
    except EvaluationError:
        stored = None
    if stored is not None and is_current(ws, stored):
        if progress is not None:
            progress(1.0, "Stored evaluation")
        return stored
    return evaluate_run(ws, run_id, dataset=dataset, progress=progress)


# --------------------------------------------------------------------------- history


def run_history(ws: Workspace, run_id: str) -> list[dict]:
    """One row per completed epoch (``epoch``, ``phase``, ``loss``, ``accuracy``, ``val_*``)."""
    run_dir = ws.run_dir(run_id)
    try:
        data = read_json(run_dir / runs.HISTORY_FILE)
        rows = data.get("epochs") if isinstance(data, dict) else None
        if isinstance(rows, list):
            return rows
    except (OSError, ValueError):
        pass
    return runs.epoch_history(run_dir)


# --------------------------------------------------------------------------- comparing


def compatible_datasets(ws: Workspace, run_id: str) -> list[tuple[Any, str | None]]:
    """Every dataset in the workspace with whether this run can be evaluated on it.

    Returns:
        ``[(dataset summary, None or the reason it is not compatible)]``, the run's own
        dataset first. A summary has ``id``, ``name``, ``classes`` and ``num_images``.
    """
    from tlcore.data import datasets

    record = runs.read_run(ws, run_id)
    classes = run_classes(ws, record)
    own_id = _trained_dataset_id(record)
    out = []
    for summary in datasets.list_datasets(ws):
        if getattr(summary, "is_broken", False):
            continue
        try:
            classes_compatible(classes, list(summary.classes))
            reason = None
        except ValueError as exc:
            reason = str(exc)
        out.append((summary, reason))
    # The version it trained on first (a name may since mean a newer version), then by name.
    out.sort(key=lambda pair: (pair[0].id != own_id, pair[0].name != record.config.dataset))
    return out


def summary_json(result: EvaluationResult, divergence: str | None = None) -> str:
    """The stored evaluation's headline as one JSON object (for the CLI).

    ``divergence``: the run's divergence warning (its training loss blew up), if any; it is
    reported beside the figures so a script reading them sees it too.
    """
    metrics = result.summary()
    found = result.metrics.collapse
    return json.dumps(
        {
            # The headline, flat: the evaluated split's accuracy with its interval and n.
            "accuracy": metrics["accuracy"],
            "accuracy_ci95": metrics["accuracy_ci95"],
            "num_samples": metrics["num_samples"],
            "macro_f1": metrics["macro_f1"],
            "collapsed": metrics["collapsed"],
            "collapse_message": (
                stats.collapse_message(found, result.class_names, result.split_label)
                if found
                else None
            ),
            "diverged": divergence is not None,
            "divergence_message": divergence,
            "run_id": result.run_id,
            "dataset": result.dataset_name,
            "dataset_id": result.dataset_id,
            "split": result.split,
            "note": result.note,
            "metrics": metrics,
            "validation": result.validation.summary() if result.validation else None,
            "folder": str(result.folder),
        },
        sort_keys=True,
        default=str,
    )
