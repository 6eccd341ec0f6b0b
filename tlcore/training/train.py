"""Training one run: from its folder's config to a saved model and history.

`train_run` is what the worker process executes. It reads ``config.json``, builds the
model and the input pipelines, runs each training phase (one, or two for the
two-phase strategy) through `model.fit` with the run folder's callbacks, and writes
the results back into the folder. A resumed run skips finished phases and continues
the interrupted one from its last completed epoch (Keras `BackupAndRestore`).

A phase whose backbone is frozen, with no augmentation before it, trains only the head
on features computed once and cached (`tlcore.training.features`); the saved model is still the
whole model, taking raw images. How one phase fits is `tlcore.training.phase_fit` (its
`TrainingError` is importable from here too); this module holds the run around the phases:
setting up, skipping finished phases, and the history, summary and evaluation at the end.

On several machines (``distribution`` ``multi_worker``, `tlcore.training.distribution`) every
worker trains its own run folder in lockstep. The chief's folder is the record. A non-chief
keeps its config, status, progress, history, class list, backups and phase weights (what
resuming needs: the weights are identical on every worker, so each resumes from its own
backup), and writes its model checkpoints and TensorBoard logs to ``worker-scratch/``, which
is deleted when it ends (TensorFlow's pattern for non-chief workers); it writes no
``metrics.json`` and is not evaluated.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.fileio import atomic_write_bytes, atomic_write_json
from tlcore.store import run_layout, runs
from tlcore.store.run_layout import CLASSES_FILE, SOURCE_MODEL_FILE, WORKER_SCRATCH_DIR
from tlcore.store.workspace import Workspace
from tlcore.training import kept_model
from tlcore.training.phase_fit import (
    PhaseContext,
    TrainingError,
    cached_probabilities,
    fit_full_model,
    fit_head_on_cached_features,
    search_head_on_cached_features,
)
from tlcore.training.progress import divergence_message


@dataclass
class TrainResult:
    """How a run ended: ``finished`` or ``cancelled`` (failures raise)."""

    state: str
    summary: dict = field(default_factory=dict)


def _completed_phases(run_dir: Path) -> set[int]:
    return {e["phase"] for e in runs.read_progress(run_dir) if e.get("event") == "phase_end"}


def _best_so_far(run_dir: Path) -> tuple | None:
    """The rank of the best epoch already done (a resumed run keeps competing with it)."""
    return kept_model.rank(kept_model.kept_epoch(runs.epoch_history(run_dir)))


def class_weights(labels, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' rule: n_samples / (n_classes * count_of_class).

    A class with no training image gets weight 0 (it has nothing to weigh).
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    # sklearn divides by the classes present; the studio's rule counts every class.
    scale = len(present) / num_classes
    found = {int(c): float(w) * scale for c, w in zip(present, weights, strict=True)}
    return {c: found.get(c, 0.0) for c in range(num_classes)}


def resolve_run_weights(ws: Workspace, config: RunConfig, run_dir: Path) -> Path | None:
    """For weights ``run:<id>``: a checked copy of that finished run's model file.

    The source model is checked against the hash recorded when it was saved and copied
    into this run's folder (``source_model.keras``), so the weights loaded are exactly the
    bytes checked, and the run keeps a record of where its starting point came from.

    Raises:
        TrainingError: the source run is not finished or has no model.
        tlcore.model.model_store.ModelIntegrityError: its model file was changed after training.
    """
    from tlcore.model import model_store

    if config.weights_kind != "run":
        return None
    source = runs.read_run(ws, config.weights_ref)
    if source.state != runs.FINISHED or not (source.dir / runs.MODEL_FILE).exists():
        raise TrainingError(
            f"Weights 'run:{source.id}' need a finished run with a saved model; that run is "
            f"{source.state}. Choose a finished run or other weights."
        )
    checked = model_store.verified_model_bytes(source.dir, source.id)
    return atomic_write_bytes(run_dir / SOURCE_MODEL_FILE, checked)


def train_run(ws: Workspace, run_id: str) -> TrainResult:
    """Trains the run ``run_id`` in this process and records the outcome in its folder.

    Raises:
        TrainingError: the loss became NaN, or another condition the user must fix.
        Exception: anything else (out of memory, missing weights) propagates to the worker,
            which records it as the failure reason.
    """

    from tlcore.data import datasets
    from tlcore.model import models
    from tlcore.training import distribution

    record = runs.read_run(ws, run_id)
    config, run_dir = record.config, record.dir
    runs.append_progress(run_dir, "run_start", resumes=record.status.resumes)

    # A name means the dataset's newest version when the run first starts; from then on the
    # run keeps that version (a resume after someone made a new one must not switch).
    pinned = run_layout.trained_dataset_id(run_dir)
    dataset = datasets.load_dataset(ws, pinned or config.dataset)
    classes = list(dataset.classes)
    atomic_write_json(
        run_dir / CLASSES_FILE,
        {
            "classes": classes,
            "dataset_id": dataset.id,
            "dataset_hash": dataset.content_hash,
            "dataset_version": dataset.version,
        },
    )
    train_items = dataset.items("train")
    if not train_items:
        raise TrainingError(f"Dataset {dataset.name!r} has no training images.")
    run_model_path = resolve_run_weights(ws, config, run_dir)

    distribution.split_cpu_for_testing()
    _record_devices(ws)
    placement = distribution.choose_placement(config.distribution, config.mixed_precision)
    runs.append_progress(run_dir, "placement", description=placement.description)
    with placement.strategy.scope():
        model = models.build_model(config, len(classes), run_model_path=run_model_path)
    if placement.kind == "multi_worker":
        distribution.synchronize_batch_norm(model)
    outputs = run_dir if placement.is_chief else run_dir / WORKER_SCRATCH_DIR
    outputs.mkdir(parents=True, exist_ok=True)
    try:
        return _train_phases(ws, record, placement, model, outputs, dataset, run_model_path)
    finally:
        if not placement.is_chief:
            shutil.rmtree(outputs, ignore_errors=True)  # TensorFlow's rule for non-chiefs


def _train_phases(
    ws: Workspace, record, placement, model, outputs: Path, dataset, run_model_path
) -> TrainResult:
    """`train_run` once the model is built: every phase, then the run's results.

    ``outputs`` is where the model and TensorBoard logs go: the run folder on the chief
    (or off a cluster), a scratch folder on a non-chief.
    """
    from tlcore.model import model_store, models
    from tlcore.training import callbacks as cb

    run_id, config, run_dir = record.id, record.config, record.dir
    classes = list(dataset.classes)
    train_items = dataset.items("train")
    ctx = PhaseContext(
        ws=ws,
        run_dir=run_dir,
        config=config,
        dataset=dataset,
        model=model,
        strategy=placement.strategy,
        image_size=int(model.input_shape[1]),
        num_classes=len(classes),
        # Saves the whole model, also in phases that fit only the head on cached features.
        checkpoint=cb.BestModelCheckpoint(
            outputs / runs.MODEL_FILE,
            best=_best_so_far(run_dir),
            model_to_save=model,
        ),
        class_weight=(
            class_weights([i.label for i in train_items], len(classes))
            if config.class_weights == "balanced"
            else None
        ),
        run_model_path=run_model_path,
        outputs=outputs,
        multi_worker=placement.kind == "multi_worker",
    )

    phases = models.training_phases(config)
    done = _completed_phases(run_dir)
    started = time.perf_counter()
    cancelled = False
    for phase in phases:
        phase_weights = run_dir / f"phase{phase.index}.weights.h5"
        models.apply_phase(model, config, phase)
        if phase.index in done and phase_weights.exists():
            model.load_weights(phase_weights)
            continue
        runs.append_progress(
            run_dir,
            "phase_start",
            phase=phase.index,
            phases=len(phases),
            description=phase.description,
            what=phase.what,
            epochs=phase.epochs,
            feature_cache=models.uses_feature_cache(config, phase),
        )
        if phase.head_search:
            cancelled = search_head_on_cached_features(ctx, phase)
        elif models.uses_feature_cache(config, phase):
            cancelled = fit_head_on_cached_features(ctx, phase)
        else:
            cancelled = fit_full_model(ctx, phase)
        if cancelled:
            break
        model.save_weights(phase_weights)
        runs.append_progress(run_dir, "phase_end", phase=phase.index)

    history = runs.epoch_history(run_dir)
    atomic_write_json(run_dir / runs.HISTORY_FILE, {"epochs": history})
    summary = _summary(
        history,
        time.perf_counter() - started,
        model,
        val_samples=ctx.validation.get("val_samples", len(dataset.items("val"))),
    )
    summary |= ctx.validation
    summary["divergence"] = divergence_message(history, ctx.num_classes, config.learning_rate)
    if ctx.multi_worker:
        summary["multi_worker"] = {
            "worker": placement.worker,
            "workers": placement.workers,
            "chief": placement.is_chief,
        }
    if cancelled:
        return TrainResult(runs.CANCELLED, summary)
    if not (outputs / runs.MODEL_FILE).exists():
        # No epoch gave a finite monitored value; keep the last weights rather than nothing.
        model_store.save_model(model, outputs / runs.MODEL_FILE)
    if not placement.is_chief:
        return TrainResult(runs.FINISHED, summary)  # the chief's run holds the results
    atomic_write_json(run_dir / runs.METRICS_FILE, summary)
    frozen_throughout = all(
        p.backbone_frozen and (p.head_search or models.uses_feature_cache(config, p))
        for p in phases
    )
    # A backbone that never changed: its cached features give the held-out predictions.
    from_features = functools.partial(cached_probabilities, ctx) if frozen_throughout else None
    result = _evaluate_finished(ws, run_id, probabilities=from_features)
    if result is not None:
        summary |= evaluated_figures(result)
        atomic_write_json(run_dir / runs.METRICS_FILE, summary)
    return TrainResult(runs.FINISHED, summary)


def evaluated_figures(result) -> dict:
    """The kept model's held-out figures from its evaluation, for the run's summary.

    ``test_*`` are the evaluated split's (the test split, or the validation split when
    the dataset has none: ``evaluated_split`` says which); ``collapse`` is a sentence
    when the model predicts (almost) one class on either split, else None.
    """
    from tlcore.evaluation import stats

    metrics = result.metrics
    figures = {
        "evaluated_split": result.split,
        "test_accuracy": metrics.accuracy,
        "test_accuracy_ci95": list(stats.accuracy_interval(metrics.accuracy, metrics.num_samples)),
        "test_samples": metrics.num_samples,
        "collapse": None,
    }
    for split_metrics, label in ((result.validation, "validation split"), (metrics, None)):
        found = split_metrics.collapse if split_metrics is not None else None
        if found:
            figures["collapse"] = stats.collapse_message(
                found, result.class_names, label or result.split_label
            )
    return figures


def _record_devices(ws: Workspace) -> None:
    """Tells the Home page which devices TensorFlow sees (it never imports TensorFlow)."""
    import tensorflow as tf

    from tlcore.store import system

    try:
        devices = tf.config.list_physical_devices()
        system.record_devices(ws, [{"name": d.name, "type": d.device_type} for d in devices])
    except OSError:
        pass  # a missing panel line is no reason to fail a run


def _evaluate_finished(ws: Workspace, run_id: str, *, probabilities=None):
    """Evaluates the saved model once, as the run finishes; a failure never fails the run.

    ``probabilities``: see `tlcore.evaluation.evaluate.evaluate_run`.
    Returns the `EvaluationResult`, or None when evaluating failed (recorded in progress).
    """
    from tlcore.evaluation import evaluate

    run_dir = ws.run_dir(run_id)
    runs.append_progress(run_dir, "evaluation_start")
    try:
        result = evaluate.evaluate_run(ws, run_id, allow_running=True, probabilities=probabilities)
    except Exception as exc:  # the training itself succeeded: keep it finished
        runs.append_progress(run_dir, "evaluation_failed", message=str(exc)[:2000])
        return None
    runs.append_progress(
        run_dir,
        "evaluation_end",
        dataset_id=result.dataset_id,
        split=result.split,
        accuracy=result.metrics.accuracy,
        seconds=result.seconds,
    )
    return result


def _summary(history: list[dict], seconds: float, model, *, val_samples: int) -> dict:
    """The kept model's figures (`tlcore.training.kept_model`), labelled with its epoch.

    ``val_accuracy`` and ``best_val_accuracy`` are both the kept epoch's validation
    accuracy (the rule keeps the best one), so no listing can show another epoch's.
    """
    kept = kept_model.kept_epoch(history) or (history[-1] if history else {})
    return {
        "epochs_completed": len(history),
        "kept_epoch": kept.get("epoch"),
        "keep_rule": kept_model.rule_text(val_samples > 0),
        "accuracy": kept.get("accuracy"),
        "loss": kept.get("loss"),
        "val_accuracy": kept.get("val_accuracy"),
        "val_loss": kept.get("val_loss"),
        "val_samples": val_samples,
        "best_val_accuracy": kept.get("val_accuracy"),
        "train_seconds": round(sum(row.get("seconds") or 0 for row in history), 2),
        "wall_seconds_this_session": round(seconds, 2),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "total_params": int(model.count_params()),
    }
