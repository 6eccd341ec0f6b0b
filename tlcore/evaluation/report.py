"""An evaluation, as files: a self-contained HTML report and machine-readable metrics.

`render_html_report` builds one HTML page that opens anywhere, offline and forever: the
run's configuration and dataset, its training curves, the headline numbers, the per-class
table, the confusion matrix, ROC/PR curves, the reliability diagram and a gallery of the
worst errors with their images embedded. `write_metrics_files` writes the same numbers
as ``metrics.json``, ``per_class.csv`` and ``confusion_matrix.csv``, atomically.

Why hand-made inline SVG and an HTML-table heatmap rather than Plotly: a report must
open with no network, so Plotly would have to be embedded with ``include_plotlyjs=True``,
which adds ~3.5 MB of JavaScript to every file. Line charts, bars and a coloured table
are a few hundred lines of code here, keep a report at tens of kilobytes plus its
thumbnails (easy to attach to an e-mail or a ticket), print cleanly, and run no script at
all. Interactive exploration is what the evaluation page is for.

Every string that comes from the user (run id, title, class names, config values,
dataset summary, item paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from tlcore.data.images import ImageError, load_image
from tlcore.evaluation import stats
from tlcore.evaluation.metrics import Curve, EvaluationMetrics
from tlcore.fileio import atomic_write_json, atomic_write_text, read_json

METRICS_JSON = "metrics.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
REPORT_HTML = "report.html"
THUMBNAIL_SIZE = 160  # pixels, longest side
JPEG_QUALITY = 80
MAX_CURVES = 10  # ROC/PR charts with more classes than this show the lowest-AUC ones
MAX_CONFUSED_PAIRS = 8
VERTICAL_HEADERS_ABOVE = 8  # confusion-matrix column headers turn vertical past this many classes
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_DATA_URI = re.compile(r"^data:image/(?:jpeg|png|gif|webp);base64,[A-Za-z0-9+/]+={0,2}$")

Row = (
    Mapping[str, Any] | Any
)  # a tlcore.evaluation.interpret.PredictionRow or a dict with its fields
ThumbnailSource = str | os.PathLike | bytes | Image.Image
Thumbnails = Callable[[Row], ThumbnailSource | None] | Sequence[ThumbnailSource | None]


# --------------------------------------------------------------------------- files


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
    _check_metrics(metrics)
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


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def _check_metrics(metrics: Any) -> None:
    if not isinstance(metrics, EvaluationMetrics):
        raise TypeError(
            "metrics must be the EvaluationMetrics that compute_metrics returns. "
            f"Received: {type(metrics).__name__}"
        )


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
    _check_metrics(metrics)
    if thumbnails is not None and not callable(thumbnails) and len(thumbnails) != len(worst_errors):
        raise ValueError(
            "thumbnails must give one image (or None) per worst error. Received: "
            f"{len(thumbnails)} thumbnails for {len(worst_errors)} errors"
        )
    title = title or f"Evaluation report: {run_id}"
    generated_at = generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _header(title, run_id, metrics, generated_at),
        _kpis(metrics),
        _section("Setup", _setup(config, dataset_summary)),
        _section("Training curves", _training_curves(history)),
        _section("Per-class metrics", _per_class_table(metrics)),
        _section("Confusion matrix", _confusion_matrix(metrics)),
        _section("ROC and precision-recall curves", _roc_pr(metrics)),
        _section("Calibration", _calibration(metrics)),
        _section("Worst errors", _gallery(worst_errors, thumbnails)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        '<main class="page">\n' + "\n".join(sections) + "\n"
        "<footer>Transfer Learning Studio · self-contained report, no network needed</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


_CSS = """
:root { --ink:#1d2433; --muted:#667085; --line:#e4e7ec; --bg:#f5f6f8; --card:#fff;
  --accent:#2f5fa7; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width:1080px; margin:0 auto; padding:28px 24px 40px; }
header.top { display:flex; justify-content:space-between; align-items:flex-end; gap:24px;
  border-bottom:3px solid var(--accent); padding-bottom:14px; margin-bottom:18px; }
header.top h1 { margin:0 0 4px; font-size:24px; font-weight:650; letter-spacing:-0.01em; }
header.top .sub { color:var(--muted); }
header.top .meta { text-align:right; color:var(--muted); font-size:12.5px; white-space:nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size:12.5px; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(132px, 1fr)); gap:10px;
  margin-bottom:18px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:12px 14px; }
.kpi .label { color:var(--muted); font-size:11.5px; text-transform:uppercase;
  letter-spacing:0.04em; }
.kpi .value { font-size:24px; font-weight:650; margin-top:2px; font-variant-numeric:tabular-nums; }
.kpi .hint { color:var(--muted); font-size:11.5px; }
section.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:16px 20px 18px; margin-bottom:16px; break-inside:avoid; }
section.card h2 { font-size:16px; margin:0 0 12px; font-weight:650; }
h3 { font-size:13px; margin:0 0 8px; color:var(--muted); font-weight:600;
  text-transform:uppercase; letter-spacing:0.04em; }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:24px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); text-align:left;
  vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; }
tr.avg td { background:#fafbfc; font-weight:600; }
.setup { display:grid; grid-template-columns:1fr 2fr; gap:28px; }
.kv { font-size:13px; }
.kv.grid { display:grid; grid-template-columns:1fr 1fr; column-gap:24px; }
.kv-item { display:flex; gap:12px; padding:4px 0; border-bottom:1px solid var(--line);
  min-width:0; }
.kv-item .k { color:var(--muted); flex:0 0 44%; min-width:0; overflow-wrap:anywhere; }
.kv-item .v { flex:1; min-width:0; overflow-wrap:anywhere; }
.kv.grid .kv-item .k { flex-basis:56%; }
.kv-item.stacked { flex-direction:column; gap:4px; }
table.bars td { border:none; padding:1px 8px 1px 0; font-size:12.5px; white-space:nowrap; }
table.bars td.barcell { width:60%; }
td.barcell { width:90px; vertical-align:middle; }
td.barcell .fill { display:block; height:8px; background:var(--accent); border-radius:2px;
  opacity:0.7; }
.note { color:var(--muted); font-size:12.5px; margin:8px 0 0; }
.empty { color:var(--muted); font-style:italic; }
figure { margin:0; }
figure svg { width:100%; height:auto; display:block; }
figcaption { font-size:12.5px; color:var(--muted); margin-top:4px; }
.legend { display:flex; flex-wrap:wrap; gap:4px 14px; font-size:12px; margin:4px 0 0 6px; }
.legend i { display:inline-block; width:16px; height:3px; vertical-align:middle;
  margin-right:5px; border-radius:1px; }
.legend i.dash { background-image:linear-gradient(90deg, #fff 50%, transparent 50%);
  background-size:6px 3px; }
svg text { font-family:inherit; font-size:11px; fill:#475467; }
svg .axis-title { font-size:11.5px; fill:#344054; }
.cm-wrap { overflow-x:auto; }
table.cm { width:auto; border-collapse:separate; border-spacing:2px; }
table.cm td.cell { width:64px; height:46px; text-align:center; vertical-align:middle;
  border:none; border-radius:4px; font-weight:600; }
table.cm td.cell small { display:block; font-weight:400; font-size:10.5px; opacity:0.85; }
table.cm td.diag { box-shadow: inset 0 0 0 2px rgba(29,36,51,0.35); }
table.cm th { border:none; font-size:12px; color:var(--ink); }
table.cm th.col { text-align:center; vertical-align:bottom; min-width:64px; }
table.cm th.col.vertical { writing-mode:vertical-rl; transform:rotate(180deg); min-width:0;
  text-align:left; padding:6px 0; }
table.cm th.row { text-align:right; white-space:nowrap; vertical-align:middle; }
.cm-layout { display:flex; flex-wrap:wrap; gap:12px 40px; align-items:flex-start; }
.cm-layout .confused { margin-top:0; min-width:240px; }
table.cm th.axis { color:var(--muted); font-weight:600; }
table.cm td.zero { background:#f7f9fc; color:#c3c9d2; font-weight:400; }
table.cm td.total { border:none; color:var(--muted); font-size:12px; text-align:left;
  vertical-align:middle; }
.confused { margin-top:12px; }
.confused li { margin:2px 0; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(180px, 1fr)); gap:12px; }
.tile { border:1px solid var(--line); border-radius:8px; overflow:hidden; background:#fff; }
.tile .img { height:160px; display:flex; align-items:center; justify-content:center;
  background:#f0f2f5; }
.tile img { max-width:100%; max-height:160px; display:block; }
.tile .noimg { color:var(--muted); font-size:12px; }
.tile .body { padding:8px 10px; font-size:12.5px; }
.tile .line { display:flex; gap:6px; align-items:baseline; }
.tile .lbl { color:var(--muted); flex:0 0 68px; font-size:11.5px; }
.tile .pred { font-weight:600; color:#b42318; overflow-wrap:anywhere; }
.tile .truth { color:#067647; font-weight:600; overflow-wrap:anywhere; }
.tile .path { color:var(--muted); font-size:11px; word-break:break-all; margin-top:3px; }
footer { text-align:center; color:var(--muted); font-size:12px; margin-top:24px; }
@media (max-width: 760px) { .cols, .setup, .kv.grid { grid-template-columns:1fr; } }
@media print { body { background:#fff; } .page { padding:0; } }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _field(row: Row, name: str, default: Any = None) -> Any:
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _section(heading: str, body: str) -> str:
    return f'<section class="card">\n<h2>{_e(heading)}</h2>\n{body}\n</section>'


def _header(title: str, run_id: str, metrics: EvaluationMetrics, generated_at: str) -> str:
    return (
        '<header class="top"><div>'
        f"<h1>{_e(title)}</h1>"
        f'<div class="sub">Run <code>{_e(run_id)}</code> · {metrics.num_classes} classes · '
        f"{metrics.num_samples:,} evaluated images</div></div>"
        f'<div class="meta">Generated {_e(generated_at)}</div></header>'
    )


def _kpis(metrics: EvaluationMetrics) -> str:
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
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div><div class="hint">{_e(hint)}</div></div>'
            for label, value, hint in tiles
        )
        + "</div>"
    )


# ---- setup


def _setup(config: Mapping[str, Any], dataset_summary: Mapping[str, Any]) -> str:
    return (
        '<div class="setup">'
        f"<div><h3>Dataset</h3>{_kv_list(dataset_summary)}</div>"
        f"<div><h3>Configuration</h3>{_kv_list(config, grid=True)}</div>"
        "</div>"
    )


def _kv_list(data: Mapping[str, Any], *, grid: bool = False) -> str:
    if not data:
        return '<p class="empty">Not recorded.</p>'
    items = "".join(
        f'<div class="kv-item{" stacked" if _is_counts(value) else ""}">'
        f'<span class="k">{_e(key)}</span><span class="v">{_value_html(value)}</span></div>'
        for key, value in data.items()
    )
    return f'<div class="kv{" grid" if grid else ""}">{items}</div>'


def _is_counts(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(_is_number(v) for v in value.values())


def _value_html(value: Any) -> str:
    if _is_counts(value):
        top = max(float(v) for v in value.values()) or 1.0
        rows = "".join(
            f'<tr><td>{_e(k)}</td><td class="barcell"><span class="fill" '
            f'style="width:{max(float(v) / top, 0) * 100:.1f}%"></span></td>'
            f'<td class="num">{_e(_fmt_scalar(v))}</td></tr>'
            for k, v in value.items()
        )
        return f'<table class="bars">{rows}</table>'
    if isinstance(value, Mapping):
        return f'<span class="mono">{_e(json.dumps(value, default=str, sort_keys=True))}</span>'
    if isinstance(value, (list, tuple)):
        return _e(", ".join(_fmt_scalar(v) for v in value)) if value else "—"
    return _e(_fmt_scalar(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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


# ---- charts (inline SVG)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * magnitude >= raw:
            return m * magnitude
    return 10 * magnitude


def _axis(lo: float, hi: float, target: int = 5) -> tuple[float, float, list[float]]:
    """A range covering [lo, hi] that starts and ends on round ticks, and those ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (lo - 0.5, lo + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    step = _nice_step(hi - lo, target)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    ticks = [round(start + i * step, 10) for i in range(round((stop - start) / step) + 1)]
    return start, stop, ticks


def _svg_chart(
    series: Sequence[dict[str, Any]],
    *,
    x_range: tuple[float, float, list[float]],
    y_range: tuple[float, float, list[float]],
    x_label: str,
    y_label: str,
    vlines: Sequence[tuple[float, str]] = (),
    diagonal: bool = False,
    width: int = 500,
    height: int = 290,
) -> str:
    """A line chart. Each series: label, xs, ys, color, optional dash, step, markers."""
    left, right, top, bottom = 50, 14, 12, 40
    x0, x1, x_ticks = x_range
    y0, y1, y_ticks = y_range
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(y_label)} by {_e(x_label)}">'
    ]
    for t in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            'stroke="#eef0f3"/>'
            f'<text x="{left - 6}" y="{sy(t) + 3.5:.1f}" text-anchor="end">{t:g}</text>'
        )
    for t in x_ticks:
        parts.append(f'<text x="{sx(t):.1f}" y="{top + ph + 15}" text-anchor="middle">{t:g}</text>')
    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#d0d5dd"/>'
    )
    if diagonal:
        parts.append(
            f'<line x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" y2="{sy(y1):.1f}" '
            'stroke="#98a2b3" stroke-dasharray="4 4"/>'
        )
    for x, label in vlines:
        parts.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" '
            'stroke="#98a2b3" stroke-dasharray="3 3"/>'
            f'<text x="{sx(x) + 4:.1f}" y="{top + 12}">{_e(label)}</text>'
        )
    for s in series:
        path = _path(s["xs"], s["ys"], sx, sy, step=s.get("step", False))
        if not path:
            continue
        dash = ' stroke-dasharray="6 4"' if s.get("dash") else ""
        parts.append(
            f'<path d="{path}" fill="none" stroke="{s["color"]}" stroke-width="2"'
            f' stroke-linejoin="round"{dash}><title>{_e(s["label"])}</title></path>'
        )
        if s.get("markers"):
            for x, y in zip(s["xs"], s["ys"], strict=True):
                if _finite(x) and _finite(y):
                    parts.append(
                        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{s["color"]}">'
                        f"<title>{_e(s['label'])}: {x:g}, {y:.4g}</title></circle>"
                    )
    parts.append(
        f'<text class="axis-title" x="{left + pw / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{_e(x_label)}</text>'
        f'<text class="axis-title" transform="translate(12 {top + ph / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text></svg>'
    )
    return "".join(parts)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


def _path(xs, ys, sx, sy, *, step: bool) -> str:
    """SVG path data; a non-finite value breaks the line instead of ending it."""
    out: list[str] = []
    previous: tuple[float, float] | None = None
    for x, y in zip(xs, ys, strict=True):
        if not (_finite(x) and _finite(y)):
            previous = None
            continue
        if previous is None:
            out.append(f"M{sx(x):.1f},{sy(y):.1f}")
        elif step:
            out.append(f"L{sx(x):.1f},{sy(previous[1]):.1f}L{sx(x):.1f},{sy(y):.1f}")
        else:
            out.append(f"L{sx(x):.1f},{sy(y):.1f}")
        previous = (x, y)
    return "".join(out)


def _legend(series: Sequence[dict[str, Any]]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i class="{"dash" if s.get("dash") else ""}" '
            f'style="background-color:{s["color"]}"></i>{_e(s["label"])}</span>'
            for s in series
        )
        + "</div>"
    )


def _figure(chart: str, series: Sequence[dict[str, Any]], caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure>{chart}{_legend(series)}{cap}</figure>"


def _training_curves(history: Sequence[Mapping[str, Any]]) -> str:
    if not history:
        return '<p class="empty">No training history was recorded for this run.</p>'
    xs = [row["epoch"] if _finite(row.get("epoch")) else i + 1 for i, row in enumerate(history)]
    vlines = []
    for i in range(1, len(history)):
        phase = history[i].get("phase")
        if phase is not None and phase != history[i - 1].get("phase"):
            vlines.append(((xs[i - 1] + xs[i]) / 2, f"phase {phase}"))
    x_range = _axis(min(xs), max(xs), target=min(8, max(len(xs) - 1, 1)))
    charts = []
    for metric, label, color in (("loss", "Loss", "#e15759"), ("accuracy", "Accuracy", "#4e79a7")):
        series = [
            {
                "label": f"train {metric}",
                "xs": xs,
                "ys": [row.get(metric, math.nan) for row in history],
                "color": color,
            },
            {
                "label": f"validation {metric}",
                "xs": xs,
                "ys": [row.get(f"val_{metric}", math.nan) for row in history],
                "color": color,
                "dash": True,
            },
        ]
        values = [y for s in series for y in s["ys"] if _finite(y)]
        if not values:
            charts.append(f'<div><h3>{label}</h3><p class="empty">Not recorded.</p></div>')
            continue
        for s in series:
            s["markers"] = len(xs) <= 40
        if metric == "accuracy":
            y_range = _axis(max(0.0, min(*values, 0.5)), max(*values, 1.0))
        else:
            y_range = _axis(0.0, max(values))
        chart = _svg_chart(
            series, x_range=x_range, y_range=y_range, x_label="epoch", y_label=label, vlines=vlines
        )
        charts.append(f"<div><h3>{label}</h3>{_figure(chart, series)}</div>")
    return '<div class="cols">' + "".join(charts) + "</div>"


def _curve_series(curves: Sequence[Curve], *, step: bool) -> tuple[list[dict], list[Curve]]:
    shown = [c for c in curves if c.auc is not None]
    if len(shown) > MAX_CURVES:
        shown = sorted(shown, key=lambda c: c.auc)[:MAX_CURVES]
    colors = {c.class_name: PALETTE[i % len(PALETTE)] for i, c in enumerate(shown)}
    series = [
        {
            "label": f"{c.class_name} ({c.auc:.3f})",
            "xs": list(c.x),
            "ys": list(c.y),
            "color": colors[c.class_name],
            "step": step,
        }
        for c in shown
    ]
    return series, shown


def _roc_pr(metrics: EvaluationMetrics) -> str:
    unit = (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    roc_series, roc_shown = _curve_series(metrics.roc_curves, step=False)
    pr_series, _ = _curve_series(metrics.pr_curves, step=True)
    if not roc_series:
        body = '<p class="empty">No class has both positive and negative samples.</p>'
    else:
        roc = _svg_chart(
            roc_series,
            x_range=unit,
            y_range=unit,
            x_label="false positive rate",
            y_label="true positive rate",
            diagonal=True,
        )
        pr = _svg_chart(
            pr_series, x_range=unit, y_range=unit, x_label="recall", y_label="precision"
        )
        body = (
            '<div class="cols">'
            f"<div><h3>ROC, one vs rest (AUC)</h3>{_figure(roc, roc_series)}</div>"
            f"<div><h3>Precision-recall (average precision)</h3>{_figure(pr, pr_series)}</div>"
            "</div>"
        )
    notes = [
        f"Macro ROC AUC {_num(metrics.macro_roc_auc)}, macro average precision "
        f"{_num(metrics.macro_average_precision)}."
    ]
    defined = sum(c.auc is not None for c in metrics.roc_curves)
    if len(roc_shown) < defined:
        notes.append(f"Showing the {len(roc_shown)} classes of {defined} with the lowest AUC.")
    for c in metrics.roc_curves:
        if c.skipped_reason:
            notes.append(f"No curve for {c.class_name}: {c.skipped_reason}.")
    return body + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)


def _calibration(metrics: EvaluationMetrics) -> str:
    width, height = 500, 290
    left, right, top, bottom = 50, 14, 12, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + x * pw

    def sy(y: float) -> float:
        return top + (1 - y) * ph

    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="reliability diagram">']
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            f'stroke="#eef0f3"/><text x="{left - 6}" y="{sy(t) + 3.5:.1f}" '
            f'text-anchor="end">{t:g}</text>'
            f'<text x="{sx(t):.1f}" y="{top + ph + 15}" text-anchor="middle">{t:g}</text>'
        )
    for b in metrics.calibration.bins:
        if not b.count:
            continue
        x, w = sx(b.lower) + 1.5, sx(b.upper) - sx(b.lower) - 3
        acc, conf = b.accuracy or 0.0, b.mean_confidence or 0.0
        tip = (
            f"confidence {b.lower:.1f}–{b.upper:.1f}: {b.count} images, "
            f"accuracy {acc:.3f}, mean confidence {conf:.3f}"
        )
        # Blue bar: accuracy. Red tick: mean confidence; the pink box above a bar is
        # over-confidence (the model is surer than it is right).
        parts.append(
            f"<g><title>{_e(tip)}</title>"
            f'<rect x="{x:.1f}" y="{sy(acc):.1f}" width="{w:.1f}" height="{sy(0) - sy(acc):.1f}" '
            'fill="#4e79a7" opacity="0.85"/>'
        )
        if conf > acc:
            parts.append(
                f'<rect x="{x:.1f}" y="{sy(conf):.1f}" width="{w:.1f}" '
                f'height="{sy(acc) - sy(conf):.1f}" fill="#e15759" opacity="0.22"/>'
            )
        parts.append(
            f'<line x1="{x:.1f}" x2="{x + w:.1f}" y1="{sy(conf):.1f}" y2="{sy(conf):.1f}" '
            'stroke="#d92d20" stroke-width="2"/>'
            f'<text x="{x + w / 2:.1f}" y="{sy(max(acc, conf)) - 5:.1f}" text-anchor="middle" '
            f'style="font-size:10px">{b.count}</text></g>'
        )
    parts.append(
        f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#344054" '
        'stroke-dasharray="4 4"/>'
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#d0d5dd"/>'
        f'<text class="axis-title" x="{left + pw / 2:.1f}" y="{height - 6}" '
        'text-anchor="middle">confidence of the predicted class</text>'
        f'<text class="axis-title" transform="translate(12 {top + ph / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">accuracy</text></svg>'
    )
    series = [
        {"label": "accuracy (images in bin above)", "color": "#4e79a7"},
        {"label": "mean confidence", "color": "#d92d20"},
        {"label": "over-confidence", "color": "#f6c3c0"},
        {"label": "perfect calibration", "color": "#344054", "dash": True},
    ]
    explanation = (
        f"Expected calibration error (ECE) {metrics.calibration.ece:.3f}: on average the "
        "model's confidence differs from its accuracy by this much (0 is perfect). A "
        "bar below its red tick means the model was over-confident for those images; above "
        "it, under-confident."
    )
    return (
        '<div class="cols">'
        f"<div><h3>Reliability diagram</h3>{_figure(''.join(parts), series)}</div>"
        f"<div><p>{_e(explanation)}</p>{_calibration_table(metrics)}</div></div>"
    )


def _calibration_table(metrics: EvaluationMetrics) -> str:
    rows = "".join(
        f"<tr><td>{b.lower:.1f}–{b.upper:.1f}</td><td class='num'>{b.count}</td>"
        f"<td class='num'>{_num(b.mean_confidence)}</td>"
        f"<td class='num'>{_num(b.accuracy)}</td></tr>"
        for b in metrics.calibration.bins
        if b.count
    )
    return (
        "<table><tr><th>confidence</th><th class='num'>images</th>"
        "<th class='num'>mean confidence</th><th class='num'>accuracy</th></tr>"
        f"{rows}</table>"
    )


# ---- tables


def _per_class_table(metrics: EvaluationMetrics) -> str:
    roc = {c.class_name: c.auc for c in metrics.roc_curves}
    ap = {c.class_name: c.auc for c in metrics.pr_curves}
    head = (
        "<tr><th>class</th><th class='num'>precision</th><th class='num'>recall</th>"
        "<th class='num'>F1</th><th></th><th class='num'>support</th><th class='num'>ROC AUC</th>"
        "<th class='num'>avg precision</th></tr>"
    )
    rows = []
    for c in metrics.per_class:
        rows.append(
            f"<tr><td>{_e(c.name)}</td><td class='num'>{_num(c.precision)}</td>"
            f"<td class='num'>{_num(c.recall)}</td>"
            f"<td class='num'>{_num(c.f1)}</td><td class='barcell'>"
            f"<span class='fill' style='width:{c.f1 * 100:.0f}%'></span></td>"
            f"<td class='num'>{c.support:,}</td><td class='num'>{_num(roc.get(c.name))}</td>"
            f"<td class='num'>{_num(ap.get(c.name))}</td></tr>"
        )
    for label, avg, auc, avg_ap in (
        ("macro avg", metrics.macro_avg, metrics.macro_roc_auc, metrics.macro_average_precision),
        ("weighted avg", metrics.weighted_avg, None, None),
    ):
        rows.append(
            f"<tr class='avg'><td>{label}</td><td class='num'>{_num(avg.precision)}</td>"
            f"<td class='num'>{_num(avg.recall)}</td><td class='num'>{_num(avg.f1)}</td><td></td>"
            f"<td class='num'>{avg.support:,}</td><td class='num'>{_num(auc)}</td>"
            f"<td class='num'>{_num(avg_ap)}</td></tr>"
        )
    note = (
        '<p class="note">Precision: of the images predicted as the class, the share that are. '
        "Recall: of the images of the class, the share found. A class never predicted has "
        "precision 0.</p>"
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _cell_colour(fraction: float) -> tuple[str, str]:
    """White to the accent blue; white text on dark cells."""
    f = min(max(fraction, 0.0), 1.0)
    low, high = (247, 249, 252), (31, 78, 156)
    rgb = tuple(round(a + (b - a) * f) for a, b in zip(low, high, strict=True))
    return f"rgb{rgb}", "#fff" if f > 0.5 else "#1d2433"


def _confusion_matrix(metrics: EvaluationMetrics) -> str:
    names = metrics.class_names
    vertical = " vertical" if len(names) > VERTICAL_HEADERS_ABOVE else ""
    head = (
        '<tr><th></th><th class="axis" colspan="'
        f'{len(names) + 1}" style="text-align:center">predicted class →</th></tr>'
        '<tr><th class="axis row">true class ↓</th>'
        + "".join(f'<th class="col{vertical}">{_e(n)}</th>' for n in names)
        + '<th class="col" style="color:#667085">total</th></tr>'
    )
    rows = []
    for i, name in enumerate(names):
        counts = metrics.confusion_matrix[i]
        fractions = metrics.confusion_matrix_normalized[i]
        cells = []
        for j, (count, fraction) in enumerate(zip(counts, fractions, strict=True)):
            bg, fg = _cell_colour(fraction)
            diag = " diag" if i == j else ""
            tip = f"{name} predicted as {names[j]}: {count} ({fraction * 100:.1f}% of {name})"
            if count == 0:  # faint, so that the errors stand out
                cells.append(f'<td class="cell zero{diag}" title="{_e(tip)}">0</td>')
                continue
            cells.append(
                f'<td class="cell{diag}" style="background:{bg};color:{fg}" title="{_e(tip)}">'
                f"{count}<small>{fraction * 100:.0f}%</small></td>"
            )
        rows.append(
            f'<tr><th class="row">{_e(name)}</th>{"".join(cells)}'
            f'<td class="total">{sum(counts):,}</td></tr>'
        )
    confused = _most_confused(metrics)
    confused_html = (
        '<div class="confused"><h3>Most confused</h3><ol>'
        + "".join(
            f"<li>{_e(t)} → {_e(p)}: {n} image{'s' if n != 1 else ''}</li>" for t, p, n in confused
        )
        + "</ol></div>"
        if confused
        else '<p class="note">No confusions: every image was classified correctly.</p>'
    )
    return (
        f'<div class="cm-layout"><div class="cm-wrap"><table class="cm">{head}{"".join(rows)}'
        f"</table></div>{confused_html}</div>"
        '<p class="note">Rows are the true class, columns the predicted class; each cell shows '
        "the count and its share of the row (the diagonal is each class's recall).</p>"
    )


def _most_confused(metrics: EvaluationMetrics) -> list[tuple[str, str, int]]:
    names = metrics.class_names
    pairs = [
        (names[i], names[j], n)
        for i, row in enumerate(metrics.confusion_matrix)
        for j, n in enumerate(row)
        if i != j and n > 0
    ]
    pairs.sort(key=lambda p: -p[2])  # stable: ties stay in class order
    return pairs[:MAX_CONFUSED_PAIRS]


def _gallery(worst_errors: Sequence[Row], thumbnails: Thumbnails | None) -> str:
    if not worst_errors:
        return '<p class="empty">No misclassified images to show.</p>'
    tiles = []
    for i, row in enumerate(worst_errors):
        uri = _thumbnail_for(row, i, thumbnails)
        image = (
            f'<img src="{uri}" alt="{_e(_field(row, "path", ""))}">'
            if uri
            else '<span class="noimg">image unavailable</span>'
        )
        confidence = _field(row, "confidence")
        loss = _field(row, "loss")
        tiles.append(
            f'<div class="tile"><div class="img">{image}</div><div class="body">'
            f'<div class="line"><span class="lbl">true</span>'
            f'<span class="truth">{_e(_field(row, "true", "?"))}</span></div>'
            f'<div class="line"><span class="lbl">predicted</span>'
            f'<span class="pred">{_e(_field(row, "predicted", "?"))}</span></div>'
            f'<div class="line"><span class="lbl">confidence</span>'
            f"<span>{_pct(confidence) if _finite(confidence) else '—'}</span></div>"
            f'<div class="line"><span class="lbl">loss</span>'
            f"<span>{_num(loss) if _finite(loss) else '—'}</span></div>"
            f'<div class="path">{_e(_field(row, "path", ""))}</div></div></div>'
        )
    return (
        f'<div class="gallery">{"".join(tiles)}</div>'
        '<p class="note">The images the model was most confidently wrong about, worst '
        "(highest loss) first. Look for mislabelled images and classes that are hard to tell "
        "apart.</p>"
    )
