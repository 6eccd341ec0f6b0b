"""Training one run: from its folder's config to a saved model and history.

`train_run` is what the worker process executes. It reads ``config.json``, builds the
model and the input pipelines, runs each training phase (one, or two for the
two-phase strategy) through `model.fit` with the run folder's callbacks, and writes
the results back into the folder. A resumed run skips finished phases and continues
the interrupted one from its last completed epoch (Keras `BackupAndRestore`).

A phase whose backbone is frozen, with no augmentation before it, trains only the head
on features computed once and cached (`tlcore.training.features`); the saved model is still the
whole model, taking raw images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.fileio import atomic_write_bytes, atomic_write_json
from tlcore.store import runs
from tlcore.store.run_layout import (
    BACKUP_DIR,
    CLASSES_FILE,
    SOURCE_MODEL_FILE,
    TENSORBOARD_DIR,
)
from tlcore.store.workspace import Workspace
from tlcore.training import kept_model


class TrainingError(RuntimeError):
    """Training could not complete for a reason to show the user (e.g. NaN loss)."""


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


def make_optimizer(config: RunConfig, learning_rate: float, steps_total: int):
    """The optimizer of ``config`` at ``learning_rate`` (cosine-decayed over the phase)."""
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


@dataclass
class _Context:
    """What every phase of one run shares."""

    ws: Workspace
    run_dir: Path
    config: RunConfig
    dataset: object
    model: object
    strategy: object
    image_size: int
    num_classes: int
    checkpoint: object
    class_weight: dict | None
    run_model_path: Path | None
    validation: dict = field(default_factory=dict)  # how the kept model's val figure was got


def train_run(ws: Workspace, run_id: str) -> TrainResult:
    """Trains the run ``run_id`` in this process and records the outcome in its folder.

    Raises:
        TrainingError: the loss became NaN, or another condition the user must fix.
        Exception: anything else (out of memory, missing weights) propagates to the worker,
            which records it as the failure reason.
    """

    from tlcore.data import datasets
    from tlcore.model import model_store, models
    from tlcore.training import callbacks as cb
    from tlcore.training import distribution

    record = runs.read_run(ws, run_id)
    config, run_dir = record.config, record.dir
    runs.append_progress(run_dir, "run_start", resumes=record.status.resumes)

    dataset = datasets.load_dataset(ws, config.dataset)
    classes = list(dataset.classes)
    atomic_write_json(
        run_dir / CLASSES_FILE,
        {"classes": classes, "dataset_id": dataset.id, "dataset_hash": dataset.content_hash},
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
    ctx = _Context(
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
            run_dir / runs.MODEL_FILE,
            best=_best_so_far(run_dir),
            model_to_save=model,
        ),
        class_weight=(
            class_weights([i.label for i in train_items], len(classes))
            if config.class_weights == "balanced"
            else None
        ),
        run_model_path=run_model_path,
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
            cancelled = _search_head_on_cached_features(ctx, phase)
        elif models.uses_feature_cache(config, phase):
            cancelled = _fit_head_on_cached_features(ctx, phase)
        else:
            cancelled = _fit_full_model(ctx, phase)
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
    if cancelled:
        return TrainResult(runs.CANCELLED, summary)
    if not (run_dir / runs.MODEL_FILE).exists():
        # No epoch gave a finite monitored value; keep the last weights rather than nothing.
        model_store.save_model(model, run_dir / runs.MODEL_FILE)
    atomic_write_json(run_dir / runs.METRICS_FILE, summary)
    result = _evaluate_finished(ws, run_id)
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


def _evaluate_finished(ws: Workspace, run_id: str):
    """Evaluates the saved model once, as the run finishes; a failure never fails the run.

    Returns the `EvaluationResult`, or None when evaluating failed (recorded in progress).
    """
    from tlcore.evaluation import evaluate

    run_dir = ws.run_dir(run_id)
    runs.append_progress(run_dir, "evaluation_start")
    try:
        result = evaluate.evaluate_run(ws, run_id, allow_running=True)
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


def _fit_callbacks(ctx: _Context, phase, steps: int) -> tuple[list, object, object]:
    import keras

    from tlcore.training import callbacks as cb

    cancel = cb.CancelOnRequest(ctx.run_dir)
    nan = cb.StopOnNaN()
    has_val = bool(ctx.dataset.items("val"))
    callbacks = [
        keras.callbacks.BackupAndRestore(
            str(ctx.run_dir / BACKUP_DIR / f"phase{phase.index}"),
            double_checkpoint=True,
            delete_checkpoint=False,  # kept after a cancel, so the run can resume
        ),
        cb.ProgressLogger(
            ctx.run_dir,
            phase=phase.index,
            batch_size=ctx.config.batch_size,
            steps_per_epoch=steps,
            epoch_offset=phase.initial_epoch,
        ),
        ctx.checkpoint,
        cancel,
        nan,
        keras.callbacks.TensorBoard(str(ctx.run_dir / TENSORBOARD_DIR), update_freq="epoch"),
    ]
    if ctx.config.lr_schedule == "plateau" and has_val:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.3))
    if ctx.config.early_stopping_patience and has_val:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                patience=ctx.config.early_stopping_patience, restore_best_weights=True
            )
        )
    return callbacks, cancel, nan


def _compile(ctx: _Context, fit_model, phase, steps: int) -> None:
    import keras

    with ctx.strategy.scope():
        fit_model.compile(
            optimizer=make_optimizer(ctx.config, phase.learning_rate, steps * phase.epochs),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=ctx.config.label_smoothing),
            metrics=["accuracy"],
        )


def _check_outcome(ctx: _Context, phase, nan, cancel) -> bool:
    if nan.bad_loss_at is not None:
        epoch, batch = nan.bad_loss_at
        kept = (
            "The best model so far is kept."
            if ctx.checkpoint.best is not None
            else "No model was kept: no epoch finished with a finite loss."
        )
        raise TrainingError(
            f"The loss became NaN at epoch {epoch + phase.initial_epoch}, batch {batch}. "
            f"Lower the learning rate, or check the images. {kept}"
        )
    return cancel.cancelled


def _image_batches(ctx: _Context, split: str, *, shuffle: bool, one_hot: bool):
    import tensorflow as tf

    from tlcore.data import pipeline

    items = ctx.dataset.items(split)
    if not items:
        return None
    ds = pipeline.make_image_dataset(
        items,
        image_size=ctx.image_size,
        batch_size=ctx.config.batch_size,
        shuffle=shuffle,
        seed=ctx.config.seed,
    )
    if ctx.strategy.num_replicas_in_sync > 1:
        # A short last batch can leave a replica with zero images, which batch-norm layers
        # reject; with several replicas every batch is full (at most batch_size-1 images
        # of a split sit out each epoch, a different few each epoch when shuffled).
        ds = ds.rebatch(ctx.config.batch_size, drop_remainder=True)
    if one_hot:
        num_classes = ctx.num_classes
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
    return ds


def _fit_full_model(ctx: _Context, phase) -> bool:
    """One phase of `model.fit` over the image pipeline. Returns True if cancelled."""
    steps = math.ceil(len(ctx.dataset.items("train")) / ctx.config.batch_size)
    _compile(ctx, ctx.model, phase, steps)
    callbacks, cancel, nan = _fit_callbacks(ctx, phase, steps)
    ctx.model.fit(
        _image_batches(ctx, "train", shuffle=True, one_hot=True),
        validation_data=_image_batches(ctx, "val", shuffle=False, one_hot=True),
        epochs=phase.epochs,
        callbacks=callbacks,
        class_weight=ctx.class_weight,
        verbose=0,
    )
    return _check_outcome(ctx, phase, nan, cancel)


def _mirrored(batches):
    """The same image batches flipped left to right (NHWC: the width axis is 2)."""
    import tensorflow as tf

    return batches.map(lambda images, labels: (tf.reverse(images, axis=[2]), labels))


def _cached_split(ctx: _Context, split: str, extractor, *, mirrored: bool = False):
    from tlcore.training import features

    items = ctx.dataset.items(split)
    if not items:
        return None
    view = f"{split}-mirrored" if mirrored else split
    key = features.cache_key(
        ctx.dataset.content_hash,
        view,
        ctx.config,
        ctx.image_size,
        features.weights_identity(ctx.config, ctx.run_model_path),
    )
    total = math.ceil(len(items) / ctx.config.batch_size)

    def report(done: int, of: int) -> None:
        if done == of or done % 5 == 0:
            runs.append_progress(ctx.run_dir, "caching", split=view, batch=done, batches=of)

    batches = _image_batches(ctx, split, shuffle=False, one_hot=False)
    feats, reused = features.load_or_compute(
        ctx.ws,
        key,
        [i.label for i in items],
        lambda images: extractor(images, training=False),
        _mirrored(batches) if mirrored else batches,
        total,
        progress=report,
    )
    runs.append_progress(
        ctx.run_dir, "features_ready", split=view, reused=reused, shape=list(feats.shape)
    )
    labels = np.asarray([i.label for i in items])
    return np.asarray(feats), np.eye(ctx.num_classes, dtype=np.float32)[labels]


def _fit_head_on_cached_features(ctx: _Context, phase) -> bool:
    """Trains only the head on cached backbone features. Returns True if cancelled."""
    from tlcore.model import models

    extractor = models.feature_extractor(ctx.model)
    x_train, y_train = _cached_split(ctx, "train", extractor)
    val = _cached_split(ctx, "val", extractor)
    head = models.head_model(ctx.model)
    steps = math.ceil(len(x_train) / ctx.config.batch_size)
    _compile(ctx, head, phase, steps)
    callbacks, cancel, nan = _fit_callbacks(ctx, phase, steps)
    head.fit(
        x_train,
        y_train,
        validation_data=val,
        batch_size=ctx.config.batch_size,
        epochs=phase.epochs,
        shuffle=True,
        callbacks=callbacks,
        class_weight=ctx.class_weight,
        verbose=0,
    )
    return _check_outcome(ctx, phase, nan, cancel)


def _search_head_on_cached_features(ctx: _Context, phase) -> bool:
    """The recommended recipe's phase (`tlcore.training.head_search`). Returns True if cancelled.

    Cross-validates on the training images; when the dataset has a test split to check
    the result on, also on the validation images, and the chosen head is refitted on
    both (a small dataset's images all teach). The kept model's validation figure is
    then the cross-validated one, with n = the images cross-validated.
    """
    from tlcore.model import model_store, models
    from tlcore.training import head_search

    extractor = models.feature_extractor(ctx.model)
    splits = ["train"]
    if ctx.dataset.items("val") and ctx.dataset.items("test"):
        splits.append("val")
    plain = [_cached_split(ctx, split, extractor) for split in splits]
    mirrored = [_cached_split(ctx, split, extractor, mirrored=True) for split in splits]
    x = np.concatenate([np.asarray(f) for f, _ in plain])
    x_mirrored = np.concatenate([np.asarray(f) for f, _ in mirrored])
    y = np.concatenate([np.argmax(labels, axis=1) for _, labels in plain])
    started = time.perf_counter()

    def report(done: int, of: int) -> None:
        runs.append_progress(
            ctx.run_dir, "batch", phase=phase.index, epoch=1, batch=done, batches=of, logs={}
        )

    result = head_search.search(
        x,
        x_mirrored,
        y,
        ctx.num_classes,
        seed=ctx.config.seed,
        balanced=ctx.config.class_weights == "balanced",
        progress=report,
        should_stop=lambda: runs.cancel_requested(ctx.run_dir),
    )
    if result is None:
        return True
    models.head_model(ctx.model).get_layer("logits").set_weights([result.kernel, result.bias])
    held_out = None
    if "val" not in splits:
        held_out = _cached_split(ctx, "val", extractor)
    logs = {"accuracy": result.train_accuracy, "loss": result.train_loss}
    if held_out is not None:
        probs = np.asarray(models.head_model(ctx.model).predict(held_out[0], verbose=0))
        logs["val_accuracy"], logs["val_loss"] = head_search.score(
            probs, np.argmax(held_out[1], axis=1)
        )
        ctx.validation = {"validation_method": "validation split"}
    elif result.cv_accuracy is not None:
        logs["val_accuracy"] = result.cv_accuracy
        logs["val_loss"] = result.cv_log_loss
        ctx.validation = {
            "validation_method": (
                f"{result.folds}-fold cross-validation on the {result.n} train + validation images"
                if "val" in splits
                else f"{result.folds}-fold cross-validation on the {result.n} training images"
            ),
            "val_samples": result.n,
            "trained_on_validation": "val" in splits,
        }
    ctx.validation["head_search"] = {
        "chosen_c": result.c,
        "folds": result.folds,
        "candidates": result.candidates,
        "description": result.describe(),
    }
    model_store.save_model(ctx.model, ctx.run_dir / runs.MODEL_FILE)
    runs.append_progress(
        ctx.run_dir,
        "epoch_end",
        phase=phase.index,
        epoch=1,
        logs={k: float(v) for k, v in logs.items() if v is not None},
        seconds=round(time.perf_counter() - started, 3),
    )
    return False


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
