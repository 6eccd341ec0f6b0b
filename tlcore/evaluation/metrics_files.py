"""An evaluation's numbers as files: ``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv``.

The JSON is for programs (read back with `read_metrics_file`, exactly); the two CSVs are
for people and spreadsheets. Each file is written atomically, so a crash while saving
never leaves one that the evaluation page or the CLI cannot read. The HTML report beside
them is `tlcore.evaluation.report`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from tlcore.evaluation.metrics import EvaluationMetrics
from tlcore.fileio import atomic_write_json, atomic_write_text, read_json

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"


def write_metrics_files(metrics: EvaluationMetrics, folder: str | os.PathLike) -> dict[str, Path]:
    """Writes an evaluation's numbers into ``folder``, each file atomically.

    * ``metrics.json``: `EvaluationMetrics.to_dict` (read back with `read_metrics_file`);
    * ``per_class.csv``: class, precision, recall, f1, support, roc_auc, average_precision
      (an empty AUC means it is undefined for that class);
    * ``confusion_matrix.csv``: counts, one row per TRUE class, one column per PREDICTED
      class, the first column naming the true class.

    A run folder already has a ``metrics.json`` (the training summary); write an
    evaluation into a subfolder such as ``<run>/evaluation``.

    Args:
        metrics: what `tlcore.evaluation.metrics.compute_metrics` returned.
        folder: where to write; created if missing.

    Returns:
        ``{"metrics": path, "per_class": path, "confusion_matrix": path}``.

    Raises:
        TypeError: ``metrics`` is not an `EvaluationMetrics`.
        tlcore.fileio.StorageError: the disk is full or the folder is not writable.
    """
    check_metrics(metrics)
    folder = Path(folder)
    roc = {c.class_name: c.auc for c in metrics.roc_curves}
    ap = {c.class_name: c.auc for c in metrics.pr_curves}

    per_class = io.StringIO()
    writer = csv.writer(per_class, lineterminator="\n")
    writer.writerow(
        ["class", "precision", "recall", "f1", "support", "roc_auc", "average_precision"]
    )
    for c in metrics.per_class:
        writer.writerow(
            [
                c.name,
                c.precision,
                c.recall,
                c.f1,
                c.support,
                _blank(roc.get(c.name)),
                _blank(ap.get(c.name)),
            ]
        )

    confusion = io.StringIO()
    writer = csv.writer(confusion, lineterminator="\n")
    writer.writerow(["true \\ predicted", *metrics.class_names])
    for name, row in zip(metrics.class_names, metrics.confusion_matrix, strict=True):
        writer.writerow([name, *row])

    return {
        "metrics": atomic_write_json(folder / METRICS_JSON, metrics.to_dict()),
        "per_class": atomic_write_text(folder / PER_CLASS_CSV, per_class.getvalue()),
        "confusion_matrix": atomic_write_text(folder / CONFUSION_CSV, confusion.getvalue()),
    }


def read_metrics_file(folder: str | os.PathLike) -> EvaluationMetrics:
    """Reads the ``metrics.json`` that `write_metrics_files` wrote into ``folder``.

    Raises:
        OSError: the file is missing or unreadable.
        ValueError: it is not valid JSON or not an evaluation of a known format.
    """
    return EvaluationMetrics.from_dict(read_json(Path(folder) / METRICS_JSON))


def check_metrics(metrics: Any) -> None:
    """Refuses anything but an `EvaluationMetrics` (the files and the report need one).

    Raises:
        TypeError: naming the type received, e.g. a plain dict of numbers.
    """
    if not isinstance(metrics, EvaluationMetrics):
        raise TypeError(
            "metrics must be the EvaluationMetrics that compute_metrics returns. "
            f"Received: {type(metrics).__name__}"
        )


def _blank(value: float | None) -> float | str:
    return "" if value is None else value
