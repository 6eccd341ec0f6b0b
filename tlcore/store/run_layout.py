"""The run folder, named in one place: every file a run keeps, and the small readers of them.

A run folder is the record of a run (see the README's workspace map). Every module that
reads or writes one takes the names from here, so a file is never called two things, and
a reader that several modules need (the class list, for one) exists once.

    config.json        the frozen `RunConfig`              (tlcore.store.runs)
    status.json        state, times, summary               (tlcore.store.runs)
    progress.jsonl     append-only training events         (tlcore.training.callbacks)
    cancel.request     asks the worker to stop             (tlcore.store.runs)
    model.keras        the kept model                      (tlcore.model.model_store)
    model.json         its SHA-256 and size                (tlcore.model.model_store)
    classes.json       class names, dataset id and hash    (tlcore.training.train)
    history.json       one row per epoch                   (tlcore.training.train)
    metrics.json       the kept model's summary            (tlcore.training.train)
    source_model.keras weights "run:<id>": the checked start (tlcore.training.train)
    backup/            Keras BackupAndRestore, for resuming (tlcore.training.train)
    logs/              TensorBoard                         (tlcore.training.train)
    worker.log         the training process's own output   (tlcore.store.jobs)
    worker-scratch/    a non-chief's checkpoints; deleted   (tlcore.training.train)
    evaluation/        stored evaluations, per dataset     (tlcore.evaluation.evaluate)
    exports/           exported bundles                    (tlcore.serving.export)
    tasks/             background evaluations and exports  (tlcore.store.tasks)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tlcore.fileio import read_json
from tlcore.store.workspace import is_dataset_id

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.jsonl"
CANCEL_FILE = "cancel.request"
MODEL_FILE = "model.keras"
MODEL_RECORD_FILE = "model.json"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
SOURCE_MODEL_FILE = "source_model.keras"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "logs"
WORKER_LOG = "worker.log"
WORKER_SCRATCH_DIR = "worker-scratch"
EVALUATION_DIR = "evaluation"
EXPORTS_DIR = "exports"
TASKS_DIR = "tasks"


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder's files."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> RunPaths:
        return cls(Path(run_dir))

    config = property(lambda self: self.root / CONFIG_FILE)
    status = property(lambda self: self.root / STATUS_FILE)
    progress = property(lambda self: self.root / PROGRESS_FILE)
    cancel = property(lambda self: self.root / CANCEL_FILE)
    model = property(lambda self: self.root / MODEL_FILE)
    model_record = property(lambda self: self.root / MODEL_RECORD_FILE)
    classes = property(lambda self: self.root / CLASSES_FILE)
    history = property(lambda self: self.root / HISTORY_FILE)
    metrics = property(lambda self: self.root / METRICS_FILE)
    source_model = property(lambda self: self.root / SOURCE_MODEL_FILE)
    backup = property(lambda self: self.root / BACKUP_DIR)
    tensorboard = property(lambda self: self.root / TENSORBOARD_DIR)
    worker_log = property(lambda self: self.root / WORKER_LOG)
    worker_scratch = property(lambda self: self.root / WORKER_SCRATCH_DIR)
    evaluations = property(lambda self: self.root / EVALUATION_DIR)
    exports = property(lambda self: self.root / EXPORTS_DIR)
    tasks = property(lambda self: self.root / TASKS_DIR)


class ClassListError(ValueError):
    """A run's ``classes.json`` is missing or damaged."""


def read_classes(run_dir: str | os.PathLike) -> dict:
    """The run's ``classes.json``: ``{"classes": [...], "dataset_id", "dataset_hash"}``.

    Raises:
        ClassListError: the file is missing, unreadable, or lists fewer than two names.
    """
    path = RunPaths.of(run_dir).classes
    try:
        data = read_json(path)
        classes = data["classes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClassListError(
            f"Run {Path(run_dir).name} has no readable class list ({CLASSES_FILE}): {exc}."
        ) from None
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ClassListError(f"Run {Path(run_dir).name}'s {CLASSES_FILE} is damaged.")
    return data


def trained_dataset_id(run_dir: str | os.PathLike) -> str | None:
    """The id of the dataset the run trained on (from ``classes.json``), or None.

    None too when the file names no valid id (`is_dataset_id`): a path there, absolute
    or with ``..``, would lead readers out of the workspace.
    """
    try:
        value = read_classes(run_dir).get("dataset_id")
    except ClassListError:
        return None
    return value if is_dataset_id(value) else None
