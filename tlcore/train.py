"""Training one run: from its folder's config to a saved model and history.

`train_run` is what the worker process executes. It reads ``config.json``, builds the
model and the input pipelines, runs each training phase (one, or two for the
two-phase strategy) through `model.fit` with the run folder's callbacks, and writes
the results back into the folder. A resumed run skips finished phases and continues
the interrupted one from its last completed epoch (Keras `BackupAndRestore`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore import runs
from tlcore.fileio import atomic_write_json
from tlcore.workspace import Workspace

BACKUP_DIR = "backup"
TENSORBOARD_DIR = "logs"
CLASSES_FILE = "classes.json"


class TrainingError(RuntimeError):
    """Training could not complete for a reason to show the user (e.g. NaN loss)."""


@dataclass
class TrainResult:
    """How a run ended: ``finished`` or ``cancelled`` (failures raise)."""

    state: str
    summary: dict = field(default_factory=dict)


def _completed_phases(run_dir: Path) -> set[int]:
    return {e["phase"] for e in runs.read_progress(run_dir) if e.get("event") == "phase_end"}


def epoch_history(run_dir: Path) -> list[dict]:
    """One row per completed epoch across phases and resumes (the last record wins)."""
    rows: dict[int, dict] = {}
    for event in runs.read_progress(run_dir):
        if event.get("event") == "epoch_end":
            rows[event["epoch"]] = {
                "epoch": event["epoch"],
                "phase": event.get("phase", 1),
            } | event.get("logs", {})
    return [rows[k] for k in sorted(rows)]


def _best_so_far(run_dir: Path, monitor: str) -> float | None:
    values = [row[monitor] for row in epoch_history(run_dir) if monitor in row]
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else None


def _class_weights(labels: list[int], num_classes: int) -> dict[int, float]:
    """sklearn's 'balanced' rule: n_samples / (n_classes * count_c)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    total = counts.sum()
    return {c: float(total / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def _make_optimizer(config, learning_rate, steps_total: int):
    import keras

    lr = learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps_total, 1))
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=True)
    return keras.optimizers.RMSprop(lr, momentum=config.momentum)


def train_run(ws: Workspace, run_id: str) -> TrainResult:
    """Trains the run ``run_id`` in this process and records the outcome in its folder.

    Raises:
        TrainingError: the loss became NaN, or another condition the user must fix.
        Exception: anything else (out of memory, missing weights) propagates to the worker,
            which records it as the failure reason.
    """
    import keras
    import tensorflow as tf

    from tlcore import callbacks as cb
    from tlcore import datasets, models, pipeline

    record = runs.read_run(ws, run_id)
    config, run_dir = record.config, record.dir
    runs.append_progress(run_dir, "run_start", resumes=record.status.resumes)

    dataset = datasets.load_dataset(ws, config.dataset)
    classes = list(dataset.classes)
    atomic_write_json(run_dir / CLASSES_FILE, {"classes": classes, "dataset_id": dataset.id})
    keras.utils.set_random_seed(config.seed)

    model = models.build_model(config, len(classes))
    image_size = int(model.input_shape[1])
    train_items = dataset.items("train")
    val_items = dataset.items("val")
    if not train_items:
        raise TrainingError(f"Dataset {dataset.name!r} has no training images.")
    train_ds = pipeline.make_image_dataset(
        train_items,
        image_size=image_size,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
    )
    val_ds = (
        pipeline.make_image_dataset(
            val_items,
            image_size=image_size,
            batch_size=config.batch_size,
            shuffle=False,
            seed=config.seed,
        )
        if val_items
        else None
    )
    num_classes = len(classes)
    to_one_hot = lambda x, y: (x, tf.one_hot(y, num_classes))
    train_ds = train_ds.map(to_one_hot)
    val_ds = val_ds.map(to_one_hot) if val_ds is not None else None
    steps = math.ceil(len(train_items) / config.batch_size)
    class_weight = (
        _class_weights([i.label for i in train_items], num_classes)
        if config.class_weights == "balanced"
        else None
    )

    monitor = "val_loss" if val_ds is not None else "loss"
    checkpoint = cb.BestModelCheckpoint(
        run_dir / runs.MODEL_FILE, monitor=monitor, best=_best_so_far(run_dir, monitor)
    )
    phases = models.training_phases(config)
    done = _completed_phases(run_dir)
    epoch_offset = 0
    started = time.perf_counter()
    cancelled = False
    for phase in phases:
        phase_weights = run_dir / f"phase{phase.index}.weights.h5"
        models.apply_phase(model, config, phase)
        if phase.index in done and phase_weights.exists():
            model.load_weights(phase_weights)
            epoch_offset += phase.epochs
            continue
        runs.append_progress(
            run_dir,
            "phase_start",
            phase=phase.index,
            phases=len(phases),
            description=phase.description,
            epochs=phase.epochs,
        )
        model.compile(
            optimizer=_make_optimizer(config, phase.learning_rate, steps * phase.epochs),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
        )
        cancel = cb.CancelOnRequest(run_dir)
        nan = cb.StopOnNaN()
        fit_callbacks = [
            keras.callbacks.BackupAndRestore(
                str(run_dir / BACKUP_DIR / f"phase{phase.index}"),
                double_checkpoint=True,
                delete_checkpoint=False,  # kept after a cancel, so the run can resume
            ),
            cb.ProgressLogger(
                run_dir,
                phase=phase.index,
                batch_size=config.batch_size,
                steps_per_epoch=steps,
                epoch_offset=epoch_offset,
            ),
            checkpoint,
            cancel,
            nan,
            keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD_DIR), update_freq="epoch"),
        ]
        if config.lr_schedule == "plateau" and val_ds is not None:
            fit_callbacks.append(keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.3))
        if config.early_stopping_patience and val_ds is not None:
            fit_callbacks.append(
                keras.callbacks.EarlyStopping(
                    patience=config.early_stopping_patience, restore_best_weights=True
                )
            )
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=phase.epochs,
            callbacks=fit_callbacks,
            class_weight=class_weight,
            verbose=0,
        )
        if nan.bad_loss_at is not None:
            epoch, batch = nan.bad_loss_at
            raise TrainingError(
                f"The loss became NaN at epoch {epoch + epoch_offset}, batch {batch}. "
                "Lower the learning rate, or check the images. The best model so far is kept."
            )
        if cancel.cancelled:
            cancelled = True
            break
        model.save_weights(phase_weights)
        runs.append_progress(run_dir, "phase_end", phase=phase.index)
        epoch_offset += phase.epochs

    history = epoch_history(run_dir)
    atomic_write_json(run_dir / runs.HISTORY_FILE, {"epochs": history})
    summary = _summary(history, time.perf_counter() - started, model)
    if cancelled:
        return TrainResult(runs.CANCELLED, summary)
    if not (run_dir / runs.MODEL_FILE).exists():
        # No epoch produced a finite monitored value; keep the last weights rather than nothing.
        model.save(run_dir / runs.MODEL_FILE)
    atomic_write_json(run_dir / runs.METRICS_FILE, summary)
    return TrainResult(runs.FINISHED, summary)


def _summary(history: list[dict], seconds: float, model) -> dict:
    last = history[-1] if history else {}
    best_val = max((row.get("val_accuracy", float("nan")) for row in history), default=None)
    return {
        "epochs_completed": len(history),
        "accuracy": last.get("accuracy"),
        "loss": last.get("loss"),
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "best_val_accuracy": best_val if best_val is None or math.isfinite(best_val) else None,
        "train_seconds_this_session": round(seconds, 2),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "total_params": int(model.count_params()),
    }
