"""Keras callbacks that connect a training process to its run folder.

Progress, cancellation and checkpoints are ordinary callbacks (as in Keras and
fastai), so the same `model.fit` serves the CLI, the UI and tests.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from tlcore.fileio import StorageError
from tlcore.model import model_store
from tlcore.store import runs
from tlcore.training import kept_model

BATCH_EVENT_INTERVAL_S = 1.0  # the UI polls every second or two; more often is wasted I/O


def _plain(logs: dict | None) -> dict:
    return {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class ProgressLogger(keras.callbacks.Callback):
    """Appends progress events to the run's ``progress.jsonl``.

    Events (each a JSON line with ``event`` and ``time``):
    ``phase_start`` (phase, phases, description, epochs), ``batch`` (phase, epoch,
    batch, batches, images_per_sec, eta_s, logs) at most once a second, and
    ``epoch_end`` (phase, epoch, epochs, logs, seconds) flushed every epoch.

    Args:
        run_dir: the run folder.
        phase: 1-based index of the training phase this fit belongs to.
        batch_size: images per batch, to report images/s.
        steps_per_epoch: batches per epoch, for the in-epoch bar and ETA.
        epoch_offset: epochs of earlier phases, so epochs count across phases.
    """

    # Keras may run the batch hooks of async-safe callbacks on a helper thread, so the
    # training loop does not wait for Python work (and a device sync) after every batch.
    async_safe = True

    def __init__(
        self, run_dir, *, phase: int, batch_size: int, steps_per_epoch: int, epoch_offset: int = 0
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.phase = phase
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.epoch_offset = epoch_offset
        self._epoch = 0
        self._epoch_start = 0.0
        self._last_event = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        self._last_event = self._epoch_start

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self._last_event < BATCH_EVENT_INTERVAL_S:
            return
        self._last_event = now
        done = batch + 1
        elapsed = max(now - self._epoch_start, 1e-9)
        runs.append_progress(
            self.run_dir,
            "batch",
            phase=self.phase,
            epoch=self.epoch_offset + self._epoch + 1,
            batch=done,
            batches=self.steps_per_epoch,
            images_per_sec=round(done * self.batch_size / elapsed, 2),
            eta_s=round(elapsed / done * max(self.steps_per_epoch - done, 0), 1),
            logs=_plain(logs),
        )

    def on_epoch_end(self, epoch, logs=None):
        runs.append_progress(
            self.run_dir,
            "epoch_end",
            phase=self.phase,
            epoch=self.epoch_offset + epoch + 1,
            logs=_plain(logs),
            seconds=round(time.perf_counter() - self._epoch_start, 3),
        )


class CancelOnRequest(keras.callbacks.Callback):
    """Stops training at the next batch once the run's cancel mark appears."""

    CHECK_INTERVAL_S = 0.25  # a stat() per batch is cheap, but tiny batches can be very fast
    async_safe = True  # setting model.stop_training from Keras' callback thread is fine

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.cancelled = False
        self._last_check = 0.0

    def _check(self):
        now = time.perf_counter()
        if now - self._last_check < self.CHECK_INTERVAL_S:
            return
        self._last_check = now
        if runs.cancel_requested(self.run_dir):
            self.cancelled = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_epoch_begin(self, epoch, logs=None):
        self._last_check = 0.0
        self._check()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite and remembers where."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.bad_loss_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_loss_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keeps the best model so far (by `tlcore.training.kept_model`'s rule) in one ``.keras`` file.

    Writing a whole model takes about half a second, far longer than an epoch of a head
    trained on cached features. So an improvement is written at once only when the last
    write is ``min_interval_s`` old; otherwise its weights are held in memory and written
    when the interval has passed or training ends (cancel and NaN stops included). A
    crash loses at most ``min_interval_s`` of improvements, never the file.

    Writes are atomic through `tlcore.model.model_store.save_model`, which also records the
    file's SHA-256 (``model.json``) so the app can check the file before loading it; a
    failed write (disk full) leaves the previous best model intact and raises.

    Args:
        path: the ``.keras`` file to keep the best model in.
        best: the rank (`tlcore.training.kept_model.rank`) of the best epoch seen before (when
            resuming), or None.
        model_to_save: the model written to ``path``; default the model being fitted.
            Training passes the whole model while only its head is fitted.
        save_fn: ``save_fn(model, target)`` writes the file; default ``model.save``.
        min_interval_s: the least time between two writes; default 15 s.
    """

    MIN_INTERVAL_S = 15.0

    def __init__(
        self,
        path,
        *,
        best: tuple | None = None,
        model_to_save=None,
        save_fn=None,
        min_interval_s: float = MIN_INTERVAL_S,
    ):
        super().__init__()
        self.path = Path(path)
        self.best = best
        self.best_epoch: int | None = None  # 0-based epoch of this fit, None until one
        self.improvements = 0
        self.min_interval_s = min_interval_s
        self._model_to_save = model_to_save
        self._save = save_fn
        self._pending_weights = None  # a best epoch's weights not yet on disk
        self._last_write = -math.inf

    @property
    def _target(self):
        return self._model_to_save if self._model_to_save is not None else self.model

    def on_epoch_end(self, epoch, logs=None):
        # An epoch whose training loss is NaN (the NaN stop ends it early) left NaN weights:
        # a finite validation accuracy of such a model (one class for all) is no reason to keep it.
        loss = (logs or {}).get("loss")
        finite_loss = loss is None or not _is_number(loss) or math.isfinite(float(loss))
        key = kept_model.rank(logs) if finite_loss else None
        improved = kept_model.is_better(key, self.best)
        due = time.monotonic() - self._last_write >= self.min_interval_s
        if improved:
            self.best = key
            self.best_epoch = epoch
            self.improvements += 1
            if due:
                self._write(None)
            else:
                self._pending_weights = self._target.get_weights()
        elif due and self._pending_weights is not None:
            self._write(self._pending_weights)

    def on_train_end(self, logs=None):
        if self._pending_weights is not None:
            self._write(self._pending_weights)

    def _write(self, weights) -> None:
        """Saves the target model, with ``weights`` swapped in for the write if given."""
        model = self._target
        current = None
        if weights is not None:
            current = model.get_weights()
            model.set_weights(weights)
        try:
            model_store.save_model(model, self.path, save_fn=self._save)
        except OSError as exc:
            raise StorageError(
                exc.errno,
                f"Could not save the best model to {self.path}: {exc.strerror or exc}. "
                "The previous checkpoint is kept. Free disk space and resume the run.",
            ) from exc
        finally:
            if current is not None:
                model.set_weights(current)
        self._pending_weights = None
        self._last_write = time.monotonic()
