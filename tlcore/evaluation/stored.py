"""Stored evaluations: the files under ``<run>/evaluation/<dataset id>/``, written once
and read back by any tab, the CLI or Python (see `tlcore.evaluation.evaluate` for the
folder's layout). Nothing here predicts: evaluating is `tlcore.evaluation.evaluate`.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.evaluation.interpret import Interpretation
from tlcore.evaluation.metrics import EvaluationMetrics
from tlcore.evaluation.report import (
    CONFUSION_CSV,
    METRICS_JSON,
    PER_CLASS_CSV,
    read_metrics_file,
    write_metrics_files,
)
from tlcore.fileio import atomic_write_bytes, atomic_write_json, read_json
from tlcore.store import run_layout, runs
from tlcore.store.run_layout import EVALUATION_DIR
from tlcore.store.workspace import Workspace, is_dataset_id

MANIFEST_FILE = "evaluation.json"

PREDICTIONS_FILE = "predictions.npz"

VALIDATION_DIR = "validation"

FORMAT_VERSION = 1

ALL_SPLITS = "all"


class EvaluationError(ValueError):
    """An evaluation that cannot be done, with what to do about it."""


@dataclass(frozen=True)
class EvaluationResult:
    """One stored evaluation of a run on one dataset.

    Attributes:
        run_id: the evaluated run.
        dataset_id: the dataset evaluated on (its folder name).
        dataset_name: its display name.
        own_dataset: True when it is the dataset the run trained on.
        split: ``"test"``, ``"val"`` or ``"all"`` (every image of another dataset).
        note: a sentence to show with the numbers (e.g. why the validation split was used),
            or ``""``.
        metrics: the `EvaluationMetrics` of ``split``.
        validation: the metrics of the validation split when ``split`` is the test split of
            the run's own dataset, else None.
        folder: ``<run>/evaluation/<dataset_id>``.
        created_at: when it was computed (ISO, UTC).
        seconds: how long predicting and measuring took.
        class_names: the model's classes, in its output order.
        model_stamp: ``{"sha256": ...}``, the hash of the model bytes evaluated; the
            result is served only while the run's model file still has it.
    """

    run_id: str
    dataset_id: str
    dataset_name: str
    own_dataset: bool
    split: str
    note: str
    metrics: EvaluationMetrics
    validation: EvaluationMetrics | None
    folder: Path
    created_at: str
    seconds: float
    class_names: tuple[str, ...]
    model_stamp: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def split_label(self) -> str:
        """``"test split"``, ``"validation split"`` or ``"all images"``, for captions."""
        return SPLIT_LABELS.get(self.split, self.split)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, flat (`EvaluationMetrics.summary`)."""
        return self.metrics.summary()

    @property
    def absent_classes(self) -> list[str]:
        """The model's classes with no image in the evaluated set (another dataset's subset)."""
        return [c.name for c in self.metrics.per_class if c.support == 0]

    @property
    def present_macro_f1(self) -> float:
        """Macro F1 over the classes that have images here.

        Equals ``metrics.macro_avg.f1`` when every class has images; on a dataset with a
        subset of the classes, the absent ones (whose recall and F1 are 0 by convention) are
        left out rather than dragging the average down.
        """
        present = [c.f1 for c in self.metrics.per_class if c.support > 0]
        return float(np.mean(present)) if present else 0.0

    def interpretation(self, *, validation: bool = False) -> Interpretation:
        """The per-item view (top losses, confusion-matrix cells) from ``predictions.npz``.

        Args:
            validation: default False, the evaluated split; True for the validation split.

        Raises:
            EvaluationError: the predictions file is missing or damaged.
        """
        folder = self.folder / VALIDATION_DIR if validation else self.folder
        paths, y_true, probs = read_predictions(folder)
        return Interpretation(y_true, probs, self.class_names, paths)

    def files(self) -> dict[str, Path]:
        """The machine-readable files of the evaluated split."""
        return {
            "metrics": self.folder / METRICS_JSON,
            "per_class": self.folder / PER_CLASS_CSV,
            "confusion_matrix": self.folder / CONFUSION_CSV,
            "predictions": self.folder / PREDICTIONS_FILE,
        }


SPLIT_LABELS = {"test": "test split", "val": "validation split", ALL_SPLITS: "all images"}


def _store(run_dir: Path, dataset_id: str, evaluated: dict, primary: str, manifest: dict) -> Path:
    """Writes the evaluation into a staging folder, then swaps it into place."""
    root = run_dir / EVALUATION_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{dataset_id}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for split, (metrics, paths, y_true, probs) in evaluated.items():
            folder = staging if split == primary else staging / VALIDATION_DIR
            _write_split(folder, metrics, paths, y_true, probs)
        atomic_write_json(staging / MANIFEST_FILE, manifest)
        target = root / dataset_id
        old = None
        if target.exists():
            old = root / f".{dataset_id}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_split(folder: Path, metrics, paths, y_true, probs) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_metrics_files(metrics, folder)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        paths=np.asarray(paths, dtype=str),
        y_true=np.asarray(y_true, dtype=np.int64),
        probs=np.asarray(probs, dtype=np.float32),
        class_names=np.asarray(metrics.class_names, dtype=str),
    )
    atomic_write_bytes(folder / PREDICTIONS_FILE, buffer.getvalue())


def read_predictions(folder: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, y_true, probs)`` from a stored ``predictions.npz``.

    Raises:
        EvaluationError: the file is missing or damaged.
    """
    path = Path(folder) / PREDICTIONS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return [str(p) for p in data["paths"]], data["y_true"], data["probs"]
    except (OSError, ValueError, KeyError) as exc:
        raise EvaluationError(
            f"The stored predictions {path} cannot be read ({exc}). Evaluate the run again."
        ) from None


def evaluation_folder(ws: Workspace, run_id: str, dataset_id: str) -> Path:
    """``<run>/evaluation/<dataset_id>``.

    Raises:
        EvaluationError: ``dataset_id`` is not a dataset id (a path, ``..``).
    """
    if not is_dataset_id(dataset_id):
        raise EvaluationError(f"There is no dataset with id {str(dataset_id)[:80]!r}.")
    return ws.run_dir(run_id) / EVALUATION_DIR / dataset_id


def list_evaluations(ws: Workspace, run_id: str) -> list[dict]:
    """The manifests of a run's stored evaluations, its own dataset first, then newest first."""
    root = ws.run_dir(run_id) / EVALUATION_DIR
    manifests = []
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    for folder in folders:
        try:
            manifest = read_json(folder / MANIFEST_FILE)
        except (OSError, ValueError):
            continue
        if (
            isinstance(manifest, dict)
            and manifest.get("format_version") == FORMAT_VERSION
            and manifest.get("dataset_id") == folder.name
            and is_dataset_id(folder.name)
        ):
            manifests.append(manifest)
    manifests.sort(key=lambda m: m.get("created_at", ""), reverse=True)
    manifests.sort(key=lambda m: not m.get("own_dataset"))
    return manifests


def load_evaluation(
    ws: Workspace, run_id: str, dataset_id: str | None = None
) -> EvaluationResult | None:
    """The stored evaluation of a run on a dataset, or None if there is none.

    Args:
        ws: the workspace.
        run_id: the run.
        dataset_id: the dataset's id; default None, the run's own dataset.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no such run.
        EvaluationError: the stored files are damaged (evaluate again to replace them).
    """
    record = runs.read_run(ws, run_id)
    if dataset_id is None:
        dataset_id = run_layout.trained_dataset_id(record.dir)
        if dataset_id is None:
            own = [m for m in list_evaluations(ws, run_id) if m.get("own_dataset")]
            if not own:
                return None
            dataset_id = own[0]["dataset_id"]
    folder = evaluation_folder(ws, run_id, dataset_id)
    try:
        manifest = read_json(folder / MANIFEST_FILE)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EvaluationError(
            f"The stored evaluation in {folder} cannot be read ({exc}). Evaluate the run again."
        ) from None
    result = _result_from_manifest(folder, manifest)
    _check_model(record, result)
    return result


def _check_model(record: runs.RunRecord, result: EvaluationResult) -> None:
    """Serves ``result`` only while the run's model file is, by its own hash, the one
    evaluated: a file changed since is refused as predicting refuses it.

    Raises:
        EvaluationError: the model file is missing, changed after training, or newer than
            the evaluation.
    """
    from tlcore.model import model_store

    try:
        digest = model_store.verified_model_hash(record.dir, record.id)
    except model_store.ModelLoadError as exc:
        raise EvaluationError(str(exc)) from None
    if result.model_stamp.get("sha256") != digest:  # or none: stored before model.json
        raise EvaluationError(
            f"The stored evaluation of run {record.id} is of an earlier model than its "
            "present one. Evaluate the run again."
        )


def _result_from_manifest(folder: Path, manifest: dict) -> EvaluationResult:
    try:
        metrics = read_metrics_file(folder)
        validation = (
            read_metrics_file(folder / VALIDATION_DIR)
            if (folder / VALIDATION_DIR / METRICS_JSON).exists()
            else None
        )
        return EvaluationResult(
            run_id=manifest["run_id"],
            dataset_id=manifest["dataset_id"],
            dataset_name=manifest.get("dataset_name", manifest["dataset_id"]),
            own_dataset=bool(manifest.get("own_dataset")),
            split=manifest["split"],
            note=manifest.get("note", ""),
            metrics=metrics,
            validation=validation,
            folder=folder,
            created_at=manifest.get("created_at", ""),
            seconds=float(manifest.get("seconds") or 0.0),
            class_names=tuple(manifest.get("class_names") or metrics.class_names),
            model_stamp=manifest.get("model_stamp") or {},
            extra={
                k: manifest.get(k)
                for k in ("images", "class_counts", "dataset_hash", "class_mapping")
            },
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(
            f"The stored evaluation in {folder} is incomplete or damaged ({exc}). Evaluate "
            "the run again."
        ) from None


def is_current(ws: Workspace, result: EvaluationResult) -> bool:
    """Whether ``result`` evaluated the run's present model file (not an older one)."""
    try:
        _check_model(runs.read_run(ws, result.run_id), result)
    except EvaluationError:
        return False
    return True
