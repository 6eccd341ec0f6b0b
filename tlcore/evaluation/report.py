"""The HTML evaluation report: one self-contained page that opens anywhere, offline and forever.

`render_html_report` shows the run's configuration and dataset, its training curves, the
headline numbers, the per-class table, the confusion matrix, ROC/PR curves, the
reliability diagram and a gallery of the worst errors with their images embedded. It
gathers all of it into one context (`report_context`) and renders
``templates/report.html.j2`` with it (`render_report_template`); the template inlines
``templates/report.css``, so a report is still one file that needs no network.

Why a Jinja2 template with autoescape on rather than HTML in f-strings: every string that
comes from the user (run id, title, class names, config values, dataset summary, item
paths) is escaped by the template, with no call to escape that a new line of code could
forget. The only markup the context carries is the SVG charts, which
`tlcore.evaluation.svg_charts` builds from escaped pieces and marks as `markupsafe.Markup`.
StrictUndefined makes a field missing from the context an error, not an empty cell.

A thumbnail given as a ``data:`` URI is embedded only if it is a well-formed base64 image
(`_DATA_URI`): never a ``javascript:`` link, nor a value that closes the attribute.

The metrics files (``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv``) are
written by `tlcore.evaluation.metrics_files`; their names are re-exported here, where
callers have always imported them from.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from PIL import Image

from tlcore.data.images import ImageError, load_image
from tlcore.evaluation import stats, svg_charts
from tlcore.evaluation.metrics import AverageMetrics, ClassMetrics, EvaluationMetrics
from tlcore.evaluation.metrics_files import (  # noqa: F401 - also imported as report.X
    CONFUSION_CSV,
    METRICS_JSON,
    PER_CLASS_CSV,
    check_metrics,
    read_metrics_file,
    write_metrics_files,
)
from tlcore.evaluation.svg_charts import is_finite, is_number

REPORT_HTML = "report.html"
REPORT_TEMPLATE = "report.html.j2"
TEMPLATES_DIR = "templates"  # inside this package, beside this module
THUMBNAIL_SIZE = 160  # pixels, longest side
JPEG_QUALITY = 80
MAX_CONFUSED_PAIRS = 8
VERTICAL_HEADERS_ABOVE = 8  # confusion-matrix column headers turn vertical past this many classes
_DATA_URI = re.compile(r"^data:image/(?:jpeg|png|gif|webp);base64,[A-Za-z0-9+/]+={0,2}$")

Row = (
    Mapping[str, Any] | Any
)  # a tlcore.evaluation.interpret.PredictionRow or a dict with its fields
ThumbnailSource = str | os.PathLike | bytes | Image.Image
Thumbnails = Callable[[Row], ThumbnailSource | None] | Sequence[ThumbnailSource | None]


# --------------------------------------------------------------------------- thumbnails


def thumbnail_data_uri(
    source: ThumbnailSource, *, size: int = THUMBNAIL_SIZE, quality: int = JPEG_QUALITY
) -> str:
    """A small JPEG of an image, as a ``data:`` URI to embed in HTML.

    Args:
        source: a path, the file's bytes, or a Pillow image. Files go through
            `tlcore.data.images.load_image` (EXIF orientation, any mode to RGB).
        size: the longest side in pixels; default ``THUMBNAIL_SIZE`` (160).
        quality: JPEG quality; default ``JPEG_QUALITY`` (80).

    Returns:
        ``"data:image/jpeg;base64,..."``.

    Raises:
        tlcore.data.images.ImageError: the file is not a usable image.
    """
    if isinstance(source, Image.Image):
        image = source.convert("RGB") if source.mode != "RGB" else source.copy()
    else:
        image = load_image(source)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail_for(row: Row, i: int, thumbnails: Thumbnails | None) -> str | None:
    if thumbnails is None:
        source = _field(row, "thumbnail")
    elif callable(thumbnails):
        source = thumbnails(row)
    else:
        source = thumbnails[i]
    if source is None:
        return None
    if isinstance(source, str) and source.startswith("data:"):
        return source if _DATA_URI.match(source) else None
    try:
        return thumbnail_data_uri(source)
    except (ImageError, OSError, ValueError):
        return None  # one unreadable image must not cost the whole report


# --------------------------------------------------------------------------- report


def render_html_report(
    *,
    run_id: str,
    config: Mapping[str, Any],
    dataset_summary: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    metrics: EvaluationMetrics,
    worst_errors: Sequence[Row] = (),
    thumbnails: Thumbnails | None = None,
    title: str | None = None,
    generated_at: str | None = None,
) -> str:
    """Renders a self-contained HTML evaluation report (no network access needed).

    Args:
        run_id: the run's id, shown in the header.
        config: the run's settings (e.g. ``RunConfig.to_dict()``), shown as a table.
        dataset_summary: facts about the evaluated data (name, split, counts); a value
            that maps names to numbers (e.g. images per class) is drawn as bars.
        history: one row per epoch with ``epoch``, ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy`` (any may be missing) and optionally ``phase``.
        metrics: what `tlcore.evaluation.metrics.compute_metrics` returned.
        worst_errors: rows such as `tlcore.evaluation.interpret.Interpretation.top_losses` returns
            (or dicts with ``path``, ``true``, ``predicted``, ``confidence``, ``loss`` and
            optionally ``thumbnail``, a ``data:image/...;base64`` URI); default none.
        thumbnails: where each error's image comes from: a callable taking the row, or a
            list of sources (path, bytes or Pillow image) in the order of
            ``worst_errors``; each becomes a small embedded JPEG. Default None: use the
            rows' ``thumbnail`` field if any. An image that cannot be read shows as
            "image unavailable".
        title: the page title; default ``"Evaluation report: <run_id>"``.
        generated_at: the time shown as generated; default now (UTC).

    Returns:
        The HTML document as a string (write it with `tlcore.fileio.atomic_write_text`).

    Raises:
        TypeError: ``metrics`` is not an `EvaluationMetrics`.
        ValueError: ``thumbnails`` is a list whose length differs from ``worst_errors``.
    """
    return render_report_template(
        report_context(
            run_id=run_id,
            config=config,
            dataset_summary=dataset_summary,
            history=history,
            metrics=metrics,
            worst_errors=worst_errors,
            thumbnails=thumbnails,
            title=title,
            generated_at=generated_at,
        )
    )


def report_context(
    *,
    run_id: str,
    config: Mapping[str, Any],
    dataset_summary: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    metrics: EvaluationMetrics,
    worst_errors: Sequence[Row] = (),
    thumbnails: Thumbnails | None = None,
    title: str | None = None,
    generated_at: str | None = None,
) -> dict[str, Any]:
    """Everything the report template shows, as plain values (arguments as for
    `render_html_report`, which is this followed by `render_report_template`).

    The values are raw: strings as the user gave them (the template escapes them) and
    numbers unformatted (the template's filters format them); the charts are SVG markup.

    Raises:
        TypeError: ``metrics`` is not an `EvaluationMetrics`.
        ValueError: ``thumbnails`` is a list whose length differs from ``worst_errors``.
    """
    check_metrics(metrics)
    if thumbnails is not None and not callable(thumbnails) and len(thumbnails) != len(worst_errors):
        raise ValueError(
            "thumbnails must give one image (or None) per worst error. Received: "
            f"{len(thumbnails)} thumbnails for {len(worst_errors)} errors"
        )
    per_class, averages = _metric_rows(metrics)
    return {
        "title": title or f"Evaluation report: {run_id}",
        "run_id": run_id,
        "generated_at": generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "num_classes": metrics.num_classes,
        "num_samples": metrics.num_samples,
        "kpis": _kpis(metrics),
        "dataset": _kv_items(dataset_summary),
        "config": _kv_items(config),
        "training_curves": svg_charts.training_charts(history),
        "per_class": per_class,
        "averages": averages,
        "confusion": _confusion(metrics),
        "curves": _curves(metrics),
        "calibration": {
            "chart": svg_charts.reliability_chart(metrics.calibration.bins),
            "ece": metrics.calibration.ece,
            "bins": metrics.calibration.bins,
        },
        "worst_errors": _gallery(worst_errors, thumbnails),
    }


def render_report_template(context: Mapping[str, Any]) -> str:
    """Renders ``templates/report.html.j2`` with what `report_context` returned.

    Raises:
        jinja2.UndefinedError: the context lacks a field the template shows.
    """
    return _environment().get_template(REPORT_TEMPLATE).render(context)


@functools.cache
def _environment() -> jinja2.Environment:
    """The one Jinja2 environment of the report, built on first use (templates cached)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tlcore.evaluation", TEMPLATES_DIR),
        # On for every template: they are all HTML. The included CSS is template source,
        # not a value, so autoescape leaves it as it is.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(num=_num, pct=_pct, thousands=_thousands)
    return environment


def _field(row: Row, name: str, default: Any = None) -> Any:
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


# The template's filters. `num` and `pct` show "—" for a missing or non-finite number.


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _thousands(value: int) -> str:
    return f"{value:,}"


def _kpis(metrics: EvaluationMetrics) -> list[dict[str, str]]:
    low, high = stats.accuracy_interval(metrics.accuracy, metrics.num_samples)
    tiles = [
        (
            "Accuracy",
            _pct(metrics.accuracy),
            f"95% CI {low:.1%}–{high:.1%}, n = {metrics.num_samples}",
        )
    ]
    for k, value in sorted(metrics.top_k_accuracy.items()):
        if k != 1:
            tiles.append((f"Top-{k} accuracy", _pct(value), f"true class in top {k}"))
    tiles += [
        ("Macro F1", _num(metrics.macro_avg.f1), "mean over classes"),
        ("Macro ROC AUC", _num(metrics.macro_roc_auc), "one-vs-rest"),
        ("Log loss", _num(metrics.log_loss), "mean cross-entropy"),
        ("ECE", _num(metrics.calibration.ece), "calibration error"),
    ]
    return [{"label": label, "value": value, "hint": hint} for label, value, hint in tiles]


# ---- setup


def _kv_items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One item per key: counts (a mapping of numbers) become bars, other mappings JSON."""
    items = []
    for key, value in data.items():
        item = {"key": str(key), "bars": [], "mono": False, "text": ""}
        if _is_counts(value):
            top = max(float(v) for v in value.values()) or 1.0
            item["bars"] = [
                {"name": str(k), "width": max(float(v) / top, 0) * 100, "text": _fmt_scalar(v)}
                for k, v in value.items()
            ]
        elif isinstance(value, Mapping):
            item["mono"] = True
            item["text"] = json.dumps(value, default=str, sort_keys=True)
        elif isinstance(value, (list, tuple)):
            item["text"] = ", ".join(_fmt_scalar(v) for v in value) if value else "—"
        else:
            item["text"] = _fmt_scalar(value)
        items.append(item)
    return items


def _is_counts(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(is_number(v) for v in value.values())


def _fmt_scalar(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---- curves


def _curves(metrics: EvaluationMetrics) -> dict[str, Any]:
    """The ROC and PR charts (both None when no class has a curve) and the notes under them."""
    roc = svg_charts.roc_chart(metrics.roc_curves)
    notes = [
        f"Macro ROC AUC {_num(metrics.macro_roc_auc)}, macro average precision "
        f"{_num(metrics.macro_average_precision)}."
    ]
    defined = sum(c.auc is not None for c in metrics.roc_curves)
    shown = len(roc.series) if roc else 0
    if shown < defined:
        notes.append(f"Showing the {shown} classes of {defined} with the lowest AUC.")
    for c in metrics.roc_curves:
        if c.skipped_reason:
            notes.append(f"No curve for {c.class_name}: {c.skipped_reason}.")
    pr = svg_charts.pr_chart(metrics.pr_curves) if roc else None
    return {"roc": roc, "pr": pr, "notes": notes}


# ---- tables


def _metric_rows(metrics: EvaluationMetrics) -> tuple[list[dict], list[dict]]:
    """The per-class table's rows (each F1 drawn as a bar too), then its two average rows
    (no weighted AUC is computed)."""
    roc = {c.class_name: c.auc for c in metrics.roc_curves}
    ap = {c.class_name: c.auc for c in metrics.pr_curves}

    def row(
        name: str,
        m: ClassMetrics | AverageMetrics,
        bar: float | None,
        auc: float | None,
        avg_ap: float | None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "precision": m.precision,
            "recall": m.recall,
            "f1": m.f1,
            "bar": bar,
            "support": m.support,
            "roc_auc": auc,
            "average_precision": avg_ap,
        }

    macro_auc, macro_ap = metrics.macro_roc_auc, metrics.macro_average_precision
    return (
        [row(c.name, c, c.f1, roc.get(c.name), ap.get(c.name)) for c in metrics.per_class],
        [
            row("macro avg", metrics.macro_avg, None, macro_auc, macro_ap),
            row("weighted avg", metrics.weighted_avg, None, None, None),
        ],
    )


def _cell_colour(fraction: float) -> tuple[str, str]:
    """White to the accent blue; white text on dark cells."""
    f = min(max(fraction, 0.0), 1.0)
    low, high = (247, 249, 252), (31, 78, 156)
    rgb = tuple(round(a + (b - a) * f) for a, b in zip(low, high, strict=True))
    return f"rgb{rgb}", "#fff" if f > 0.5 else "#1d2433"


def _confusion(metrics: EvaluationMetrics) -> dict[str, Any]:
    """The confusion matrix as a heatmap table (each cell's share of its row sets the
    colour) and the most confused pairs of classes."""
    names = metrics.class_names
    rows = []
    for i, name in enumerate(names):
        counts = metrics.confusion_matrix[i]
        fractions = metrics.confusion_matrix_normalized[i]
        cells = []
        for j, (count, fraction) in enumerate(zip(counts, fractions, strict=True)):
            background, color = _cell_colour(fraction)
            cells.append(
                {
                    "count": count,
                    "fraction": fraction,
                    "diagonal": i == j,
                    "background": background,
                    "color": color,
                    "tip": (
                        f"{name} predicted as {names[j]}: {count} ({fraction * 100:.1f}% of {name})"
                    ),
                }
            )
        rows.append({"name": name, "cells": cells, "total": sum(counts)})
    return {
        "names": names,
        "vertical": len(names) > VERTICAL_HEADERS_ABOVE,
        "rows": rows,
        "most_confused": _most_confused(metrics),
    }


def _most_confused(metrics: EvaluationMetrics) -> list[dict[str, Any]]:
    names = metrics.class_names
    pairs = [
        {"true": names[i], "predicted": names[j], "count": n}
        for i, row in enumerate(metrics.confusion_matrix)
        for j, n in enumerate(row)
        if i != j and n > 0
    ]
    pairs.sort(key=lambda p: -p["count"])  # stable: ties stay in class order
    return pairs[:MAX_CONFUSED_PAIRS]


def _gallery(worst_errors: Sequence[Row], thumbnails: Thumbnails | None) -> list[dict[str, Any]]:
    """One tile per error, worst first; a value that is not a finite number shows as "—"."""
    tiles = []
    for i, row in enumerate(worst_errors):
        confidence = _field(row, "confidence")
        loss = _field(row, "loss")
        tiles.append(
            {
                "thumbnail": _thumbnail_for(row, i, thumbnails),
                "path": str(_field(row, "path", "")),
                "true": str(_field(row, "true", "?")),
                "predicted": str(_field(row, "predicted", "?")),
                "confidence": confidence if is_finite(confidence) else None,
                "loss": loss if is_finite(loss) else None,
            }
        )
    return tiles
