"""The backup a phase resumes from, which survives a backup damaged by a full disk.

Keras' `BackupAndRestore` with ``double_checkpoint=True`` keeps two pairs of files in the
phase's backup folder: the latest (``latest.weights.h5`` + ``training_metadata.json``, the
epoch it was saved after) and the one before (the same names + ``.bkp``). It falls back to
the previous pair only when the weights file fails to open. A ``training_metadata.json``
half-written when the disk filled up (empty, or JSON cut off) raised a JSON error instead,
and the run could never be resumed.

`ResumableBackup` checks each pair before anything is loaded — the metadata parses and
names an epoch, the weights file opens as HDF5 — and restores the first good one, the
latest else the previous. When neither loads, the model is put back as it was and the
phase starts again from its first epoch. Either way it says what it did through
``report`` (the run's progress log), so a person sees why epochs were run again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import keras

# What `restored` says after `on_train_begin`:
NOTHING = "nothing"  # no backup: a phase that starts for the first time
LATEST = "latest"
PREVIOUS = "previous"  # the latest backup was damaged
RESTARTED = "restarted"  # both were damaged: the phase started again from its first epoch


def _backup_epoch(weights: str, metadata: str) -> int | None:
    """The epoch a backup pair was saved after, or None when either file is damaged."""
    import h5py

    try:
        epoch = json.loads(Path(metadata).read_text())["epoch"]
        with h5py.File(weights, "r"):
            pass  # a truncated file fails to open (HDF5 checks its stored end of file)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return None
    return epoch


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` (double checkpoint, kept after training, so a
    cancelled run can resume) that resumes from the previous backup when the latest is
    damaged, and from the phase's start when both are.

    Args:
        backup_dir: the phase's backup folder.
        report: called with one sentence when a damaged backup was passed over.
    """

    def __init__(self, backup_dir, *, report: Callable[[str], None] | None = None):
        super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)
        self._report = report or (lambda message: None)
        self.restored = NOTHING

    def on_train_begin(self, logs=None):
        latest = (self._weights_path, self._training_metadata_path)
        previous = (self._prev_weights_path, self._prev_training_metadata_path)
        if not any(Path(p).exists() for p in (*latest, *previous)):
            self.restored = NOTHING
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        before = _snapshot(self.model)
        for which, (weights, metadata) in ((LATEST, latest), (PREVIOUS, previous)):
            epoch = _backup_epoch(weights, metadata)
            if epoch is None:
                continue
            if which == PREVIOUS:
                # Keras loads only files named *.weights.h5, and the next backup copies
                # "latest" over ".bkp": the good pair becomes "latest" again.
                shutil.copyfile(weights, self._weights_path)
                shutil.copyfile(metadata, self._training_metadata_path)
            try:
                self.model.load_weights(self._weights_path)
            except (OSError, ValueError, KeyError):
                _restore(before)  # a partial load must not leave mixed weights
                continue
            self.model._initial_epoch = epoch  # what Keras' own restore sets
            if which == PREVIOUS:
                self._report(
                    f"The last backup was damaged (the disk may have been full); training "
                    f"resumed from the one before, after epoch {epoch} of this phase."
                )
            self.restored = which
            return
        for path in (*latest, *previous):
            Path(path).unlink(missing_ok=True)
        self.restored = RESTARTED
        self._report(
            "Both backups of this phase were damaged (the disk may have been full), so the "
            "phase started again from its first epoch."
        )


def _snapshot(model) -> list:
    variables = list(model.variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return [(v, v.numpy()) for v in variables]


def _restore(snapshot: list) -> None:
    for variable, value in snapshot:
        variable.assign(value)
