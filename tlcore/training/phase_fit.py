"""Fitting one training phase: the whole model over the image pipeline, or only the head
on cached backbone features.

`tlcore.training.train` builds a `PhaseContext` once per run and calls, for each phase, one
of `fit_full_model`, `fit_head_on_cached_features` (a frozen backbone, no augmentation
before it: features are computed once and cached by `tlcore.training.features`) or
`search_head_on_cached_features` (the recommended recipe's head search,
`tlcore.training.head_search`). Each compiles with `make_optimizer`, fits with the run
folder's callbacks (backup for resuming, progress, best-model checkpoint, cancel, NaN stop,
TensorBoard) and returns True if the run was cancelled; a NaN loss raises `TrainingError`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.store import runs
from tlcore.store.run_layout import BACKUP_DIR, TENSORBOARD_DIR
from tlcore.store.workspace import Workspace


class TrainingError(RuntimeError):
    """Training could not complete for a reason to show the user (e.g. NaN loss)."""


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


@dataclass
class PhaseContext:
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
    outputs: Path  # where the model and TensorBoard logs go: the run folder, or scratch
    multi_worker: bool = False
    validation: dict = field(default_factory=dict)  # how the kept model's val figure was got


def _fit_callbacks(ctx: PhaseContext, phase, steps: int) -> tuple[list, object, object]:
    import keras

    from tlcore.training import callbacks as cb
    from tlcore.training.backup import ResumableBackup
    from tlcore.training.progress import BACKUP_DAMAGED_EVENT

    cancel = cb.CancelOnRequest(ctx.run_dir)
    nan = cb.StopOnNaN()
    has_val = bool(ctx.dataset.items("val"))
    callbacks = [
        ResumableBackup(
            str(ctx.run_dir / BACKUP_DIR / f"phase{phase.index}"),
            report=lambda message: runs.append_progress(
                ctx.run_dir, BACKUP_DAMAGED_EVENT, phase=phase.index, message=message
            ),
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
        keras.callbacks.TensorBoard(str(ctx.outputs / TENSORBOARD_DIR), update_freq="epoch"),
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


def _compile(ctx: PhaseContext, fit_model, phase, steps: int, steps_per_execution: int = 1):
    import keras

    with ctx.strategy.scope():
        fit_model.compile(
            optimizer=make_optimizer(ctx.config, phase.learning_rate, steps * phase.epochs),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=ctx.config.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )


def _check_outcome(ctx: PhaseContext, phase, nan, cancel) -> bool:
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


def _image_batches(
    ctx: PhaseContext, split: str, *, shuffle: bool, one_hot: bool, distributed: bool = True
):
    """The split's image batches; ``distributed``: for a `model.fit` over every replica
    (full batches only; each worker's share of them on several machines), else every
    image, in order (to compute features in this process)."""
    import tensorflow as tf

    from tlcore.data import pipeline
    from tlcore.training import distribution

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
    if distributed and ctx.strategy.num_replicas_in_sync > 1:
        # A short last batch can leave a replica with zero images, which batch-norm layers
        # reject; with several replicas every batch is full (at most batch_size-1 images
        # of a split sit out each epoch, a different few each epoch when shuffled).
        ds = ds.rebatch(ctx.config.batch_size, drop_remainder=True)
    if distributed and ctx.multi_worker:
        ds = distribution.shard_by_data(ds)
    if one_hot:
        num_classes = ctx.num_classes
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
    return ds


def fit_full_model(ctx: PhaseContext, phase) -> bool:
    """One phase of `model.fit` over the image pipeline. Returns True if cancelled."""
    steps = math.ceil(len(ctx.dataset.items("train")) / ctx.config.batch_size)
    _compile(ctx, ctx.model, phase, steps)
    callbacks, cancel, nan = _fit_callbacks(ctx, phase, steps)
    ctx.model.fit(
        _image_batches(ctx, "train", shuffle=True, one_hot=True),
        validation_data=_image_batches(ctx, "val", shuffle=False, one_hot=True),
        epochs=phase.epochs,
        shuffle=False,  # the pipeline shuffles itself (Keras cannot shuffle a tf.data input)
        callbacks=callbacks,
        class_weight=ctx.class_weight,
        verbose=0,
    )
    return _check_outcome(ctx, phase, nan, cancel)


def _mirrored(batches):
    """The same image batches flipped left to right (NHWC: the width axis is 2)."""
    import tensorflow as tf

    return batches.map(lambda images, labels: (tf.reverse(images, axis=[2]), labels))


def _cached_split(ctx: PhaseContext, split: str, extractor, *, mirrored: bool = False):
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

    batches = _image_batches(ctx, split, shuffle=False, one_hot=False, distributed=False)
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


def fit_head_on_cached_features(ctx: PhaseContext, phase) -> bool:
    """Trains only the head on cached backbone features. Returns True if cancelled."""
    from tlcore.model import models

    extractor = models.feature_extractor(ctx.model)
    x_train, y_train = _cached_split(ctx, "train", extractor)
    val = _cached_split(ctx, "val", extractor)
    head = models.head_model(ctx.model)
    steps = math.ceil(len(x_train) / ctx.config.batch_size)
    # A head's step takes microseconds; Keras' own cost per step and per epoch is what the
    # time goes on. Feature batches from tf.data and a whole epoch (up to 50 steps) per
    # call took 20 epochs on ~470 images from 1.8 s to 0.75 s on 2 cores.
    _compile(ctx, head, phase, steps, steps_per_execution=min(steps, HEAD_STEPS_PER_CALL))
    callbacks, cancel, nan = _fit_callbacks(ctx, phase, steps)
    head.fit(
        _feature_batches(x_train, y_train, ctx.config.batch_size, shuffle_seed=ctx.config.seed),
        validation_data=_feature_batches(*val, ctx.config.batch_size) if val else None,
        epochs=phase.epochs,
        shuffle=False,  # the batches shuffle themselves (Keras cannot shuffle a tf.data input)
        callbacks=callbacks,
        class_weight=ctx.class_weight,
        verbose=0,
    )
    return _check_outcome(ctx, phase, nan, cancel)


HEAD_STEPS_PER_CALL = 50  # the cancel and NaN checks run at least this often


def _feature_batches(x, y, batch_size: int, *, shuffle_seed: int | None = None):
    """Batches of cached features and one-hot labels; reshuffled every epoch when seeded."""
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        batches = batches.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return batches.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def search_head_on_cached_features(ctx: PhaseContext, phase) -> bool:
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
    model_store.save_model(ctx.model, ctx.outputs / runs.MODEL_FILE)
    runs.append_progress(
        ctx.run_dir,
        "epoch_end",
        phase=phase.index,
        epoch=1,
        logs={k: float(v) for k, v in logs.items() if v is not None},
        seconds=round(time.perf_counter() - started, 3),
    )
    return False


def cached_probabilities(ctx: PhaseContext, saved_model, split: str, items) -> np.ndarray | None:
    """``saved_model``'s probabilities for one split of the run's own dataset, from the
    backbone features cached for that split (computed and cached now if they are not yet).

    The same numbers as predicting the images, without running the backbone over them a
    second time: the end-of-run evaluation of a run whose backbone stayed frozen in every
    phase (the caller checks that) costs a head's prediction, and the test split's features
    are then cached for the next run on the same data.

    Returns:
        The probabilities in ``items`` order, or None when they cannot come from the cache
        (``items`` are not the run's own split, or ``saved_model``'s backbone weights are not
        the ones the features were computed with); the caller then predicts the images.
    """
    from tlcore.model import models

    own = ctx.dataset.items(split) if split in ("train", "val", "test") else []
    if not own or [(str(i.path), i.label) for i in items] != [(str(i.path), i.label) for i in own]:
        return None
    extractor = models.feature_extractor(ctx.model)
    reference = extractor.get_weights()
    saved = models.feature_extractor(saved_model).get_weights()
    if len(saved) != len(reference) or not all(
        np.array_equal(a, b) for a, b in zip(saved, reference, strict=True)
    ):
        return None
    features, _ = _cached_split(ctx, split, extractor)
    head = models.head_model(saved_model)
    return np.asarray(head.predict(features, batch_size=256, verbose=0), dtype=np.float32)
