"""One run's evaluation as files for people: the HTML report and the metrics beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlcore.evaluation import stats
from tlcore.evaluation.evaluate import (
    REPORT_WORST_ERRORS,
    EvaluationError,
    load_evaluation,
    run_history,
)
from tlcore.evaluation.report import (
    CONFUSION_CSV,
    METRICS_JSON,
    PER_CLASS_CSV,
    render_html_report,
)
from tlcore.fileio import atomic_write_bytes, atomic_write_text
from tlcore.store import runs
from tlcore.store.workspace import Workspace


def render_report(ws: Workspace, run_id: str, dataset_id: str | None = None) -> str:
    """The self-contained HTML report of a run's stored evaluation.

    Raises:
        EvaluationError: the run has not been evaluated on that dataset yet.
    """
    record = runs.read_run(ws, run_id)
    result = load_evaluation(ws, run_id, dataset_id)
    if result is None:
        raise EvaluationError(
            f"Run {run_id} has not been evaluated yet. Run `python -m tlcore evaluate {run_id}`."
        )
    interp = result.interpretation()
    worst = interp.top_losses(REPORT_WORST_ERRORS)
    summary: dict[str, Any] = {
        "name": result.dataset_name,
        "id": result.dataset_id,
        "evaluated": result.split_label,
        "images": result.metrics.num_samples,
    }
    counts = (result.extra.get("class_counts") or {}).get(result.split)
    if counts:
        summary["images per class"] = counts
    summary["accuracy"] = stats.format_accuracy(result.metrics.accuracy, result.metrics.num_samples)
    training = (record.status.summary if record.status else {}) or {}
    if result.validation is not None:
        summary["validation accuracy"] = stats.format_accuracy(
            result.validation.accuracy, result.validation.num_samples
        )
    elif training.get("validation_method"):
        summary[f"validation accuracy ({training['validation_method']})"] = stats.format_accuracy(
            training.get("val_accuracy"), training.get("val_samples")
        )
    if training.get("kept_epoch") and not training.get("head_search"):
        summary["kept model"] = f"epoch {training['kept_epoch']}: {training.get('keep_rule')}"
    if result.metrics.collapse:
        summary["warning"] = stats.collapse_message(
            result.metrics.collapse, result.class_names, result.split_label
        )
    verdict = _transfer_verdict(ws, run_id)
    if verdict is not None:
        summary["did transfer help? (paired test vs. the from-scratch twin)"] = verdict
    if result.note:
        summary["note"] = result.note
    config = record.config.to_dict() if record.config else {}
    for key in ("train_seconds", "trainable_params", "total_params", "epochs_completed"):
        if training.get(key) is not None:
            config[key] = training[key]
    title = f"Evaluation report: {record.config.name or record.config.backbone}"
    return render_html_report(
        run_id=run_id,
        config=config,
        dataset_summary=summary,
        history=run_history(ws, run_id),
        metrics=result.metrics,
        worst_errors=worst,
        thumbnails=lambda row: row.path,
        title=title,
    )


def _transfer_verdict(ws: Workspace, run_id: str) -> str | None:
    from tlcore.evaluation import compare

    try:
        verdict = compare.baseline_comparison(ws, run_id)
    except (OSError, ValueError, EvaluationError):
        return None
    return verdict.reason if verdict is not None else None


def export_report(
    ws: Workspace, run_id: str, path: str | os.PathLike, *, dataset_id: str | None = None
) -> dict[str, Path]:
    """Writes the HTML report and the metrics files of a run's stored evaluation.

    Args:
        ws: the workspace.
        run_id: the run.
        path: the HTML file to write (e.g. ``report.html``); the metrics go beside it as
            ``<stem>.metrics.json``, ``<stem>.per_class.csv`` and
            ``<stem>.confusion_matrix.csv``. A path to an existing folder writes
            ``report.html`` and the three files (``metrics.json``...) into it.
        dataset_id: which evaluation; default the run's own dataset.

    Returns:
        ``{"html", "metrics", "per_class", "confusion_matrix"}`` paths.

    Raises:
        EvaluationError: the run has not been evaluated on that dataset yet.
        tlcore.fileio.StorageError: the files cannot be written.
    """
    html = render_report(ws, run_id, dataset_id)
    result = load_evaluation(ws, run_id, dataset_id)
    target = Path(path)
    if target.is_dir():
        html_path = target / "report.html"
        names = {"metrics": METRICS_JSON, "per_class": PER_CLASS_CSV}
        names["confusion_matrix"] = CONFUSION_CSV
        companions = {k: target / v for k, v in names.items()}
    else:
        html_path = target
        stem = target.with_suffix("")
        companions = {
            "metrics": Path(f"{stem}.metrics.json"),
            "per_class": Path(f"{stem}.per_class.csv"),
            "confusion_matrix": Path(f"{stem}.confusion_matrix.csv"),
        }
    written = {"html": atomic_write_text(html_path, html)}
    sources = result.files()
    for key, destination in companions.items():
        written[key] = atomic_write_bytes(destination, sources[key].read_bytes())
    return written
