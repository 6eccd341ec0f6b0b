"""Inline SVG charts for the HTML report: the training curves, the ROC and precision-recall
curves, and the reliability diagram, each a `Chart` (the SVG and its legend's entries).

Why hand-made inline SVG rather than Plotly: a report must open with no network, so
Plotly would have to be embedded with ``include_plotlyjs=True``, which adds ~3.5 MB of
JavaScript to every file. Line charts and bars are a few hundred lines of code here, keep
a report at tens of kilobytes plus its thumbnails (easy to attach to an e-mail or a
ticket), print cleanly, and run no script at all. Interactive exploration is what the
evaluation page is for.

Every chart comes back as `markupsafe.Markup`, so that the report's autoescaping template
puts it in as markup rather than as text. That is only safe because every string a chart
contains that is not one of its own numbers (axis titles, series labels such as class
names, colours) goes through `markupsafe.escape` here, before it is joined in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from markupsafe import Markup, escape

from tlcore.evaluation.metrics import Curve

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
WIDTH, HEIGHT = 500, 290  # the viewBox; the page scales a chart to its column
LEFT, RIGHT, TOP, BOTTOM = 50, 14, 12, 40  # margins for tick labels and axis titles
UNIT_AXIS = (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # rates, probabilities
MAX_CURVES = 10  # ROC/PR charts with more classes than this show the lowest-AUC ones
MAX_MARKERS = 40  # training curves with more epochs than this have no dot per epoch

AxisRange = tuple[float, float, list[float]]  # start, stop, ticks (what `axis` returns)


@dataclass(frozen=True)
class Series:
    """One line of a chart, and its entry in the legend under it.

    Attributes:
        label: shown in the legend and as the line's hover title (escaped here).
        color: a CSS colour.
        xs, ys: the points; a non-finite value breaks the line. Empty for a
            legend-only entry (the reliability diagram's bars and ticks).
        dash: a dashed line (validation curves, reference lines).
        step: a staircase (precision-recall), not straight segments.
        markers: a dot with a hover title at every point (short training histories).
    """

    label: str
    color: str
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    dash: bool = False
    step: bool = False
    markers: bool = False


@dataclass(frozen=True)
class Chart:
    """A chart as the report shows it: the ``<svg>``, then a legend of its series."""

    svg: Markup
    series: tuple[Series, ...]


class CalibrationBinLike(Protocol):
    """What `reliability_diagram` reads of a `tlcore.evaluation.metrics.CalibrationBin`."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


# The reliability diagram's legend: the same colours as the marks `reliability_diagram` draws.
RELIABILITY_LEGEND = (
    Series("accuracy (images in bin above)", "#4e79a7"),
    Series("mean confidence", "#d92d20"),
    Series("over-confidence", "#f6c3c0"),
    Series("perfect calibration", "#344054", dash=True),
)


def is_number(value: Any) -> bool:
    """A real number, not a bool (``True`` is an ``int`` to Python, not a value to plot)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A real number that can be plotted: not a bool, NaN or infinity."""
    return is_number(value) and math.isfinite(value)


def nice_step(span: float, target: int) -> float:
    """The round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``target`` ticks."""
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * magnitude >= raw:
            return m * magnitude
    return 10 * magnitude


def axis(lo: float, hi: float, target: int = 5) -> AxisRange:
    """A range covering [lo, hi] that starts and ends on round ticks, and those ticks.

    An empty or non-finite range (one epoch, a constant loss) becomes one unit around
    ``lo``, or [0, 1], so that a chart never divides by zero.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (lo - 0.5, lo + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    step = nice_step(hi - lo, target)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    ticks = [round(start + i * step, 10) for i in range(round((stop - start) / step) + 1)]
    return start, stop, ticks


def line_chart(
    series: Sequence[Series],
    *,
    x_range: AxisRange,
    y_range: AxisRange,
    x_label: str,
    y_label: str,
    vlines: Sequence[tuple[float, str]] = (),
    diagonal: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """A line chart as an ``<svg>`` element (the legend is the page's, under it).

    Args:
        series: the lines, drawn in order (a series with no finite point draws nothing).
        x_range, y_range: what `axis` returns (or `UNIT_AXIS`).
        x_label, y_label: the axis titles.
        vlines: ``(x, label)`` dashed vertical lines, e.g. where a training phase starts.
        diagonal: a dashed line from the bottom-left to the top-right corner (the ROC of
            a random guess). Default False.
        width, height: the viewBox; default 500 × 290.
    """
    x0, x1, x_ticks = x_range
    y0, y1, y_ticks = y_range
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(y_label)} by {escape(x_label)}">'
    ]
    for t in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            'stroke="#eef0f3"/>'
            f'<text x="{LEFT - 6}" y="{sy(t) + 3.5:.1f}" text-anchor="end">{t:g}</text>'
        )
    for t in x_ticks:
        parts.append(f'<text x="{sx(t):.1f}" y="{TOP + ph + 15}" text-anchor="middle">{t:g}</text>')
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#d0d5dd"/>'
    )
    if diagonal:
        parts.append(
            f'<line x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" y2="{sy(y1):.1f}" '
            'stroke="#98a2b3" stroke-dasharray="4 4"/>'
        )
    for x, label in vlines:
        parts.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + ph}" '
            'stroke="#98a2b3" stroke-dasharray="3 3"/>'
            f'<text x="{sx(x) + 4:.1f}" y="{TOP + 12}">{escape(label)}</text>'
        )
    for s in series:
        path = path_data(s.xs, s.ys, sx, sy, step=s.step)
        if not path:
            continue
        label, color = escape(s.label), escape(s.color)
        dash = ' stroke-dasharray="6 4"' if s.dash else ""
        parts.append(
            f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"'
            f' stroke-linejoin="round"{dash}><title>{label}</title></path>'
        )
        if s.markers:
            for x, y in zip(s.xs, s.ys, strict=True):
                if is_finite(x) and is_finite(y):
                    parts.append(
                        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{color}">'
                        f"<title>{label}: {x:g}, {y:.4g}</title></circle>"
                    )
    parts.append(
        f'<text class="axis-title" x="{LEFT + pw / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-title" transform="translate(12 {TOP + ph / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text></svg>'
    )
    return Markup("".join(parts))


def path_data(
    xs: Sequence[float],
    ys: Sequence[float],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    *,
    step: bool,
) -> str:
    """SVG path data; a non-finite value breaks the line instead of ending it.

    A validation loss that is NaN for one epoch leaves a gap there, and the line goes on
    after it. ``step`` draws a staircase: across at the previous height, then up or down.
    """
    out: list[str] = []
    previous: tuple[float, float] | None = None
    for x, y in zip(xs, ys, strict=True):
        if not (is_finite(x) and is_finite(y)):
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


def reliability_diagram(bins: Sequence[CalibrationBinLike]) -> Markup:
    """The reliability diagram as an ``<svg>`` element; its legend is `RELIABILITY_LEGEND`.

    One bar per non-empty confidence bin: its height is the bin's accuracy (blue), a red
    tick marks its mean confidence, and a pink box between them shows over-confidence
    (the model surer than it is right). The dashed diagonal is perfect calibration; the
    number above a bar is how many images it holds. Empty bins draw nothing.
    """
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + x * pw

    def sy(y: float) -> float:
        return TOP + (1 - y) * ph

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="reliability diagram">']
    for t in UNIT_AXIS[2]:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            f'stroke="#eef0f3"/><text x="{LEFT - 6}" y="{sy(t) + 3.5:.1f}" '
            f'text-anchor="end">{t:g}</text>'
            f'<text x="{sx(t):.1f}" y="{TOP + ph + 15}" text-anchor="middle">{t:g}</text>'
        )
    for b in bins:
        if not b.count:
            continue
        x, w = sx(b.lower) + 1.5, sx(b.upper) - sx(b.lower) - 3
        acc, conf = b.accuracy or 0.0, b.mean_confidence or 0.0
        tip = (
            f"confidence {b.lower:.1f}–{b.upper:.1f}: {b.count} images, "
            f"accuracy {acc:.3f}, mean confidence {conf:.3f}"
        )
        parts.append(
            f"<g><title>{escape(tip)}</title>"
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
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#d0d5dd"/>'
        f'<text class="axis-title" x="{LEFT + pw / 2:.1f}" y="{HEIGHT - 6}" '
        'text-anchor="middle">confidence of the predicted class</text>'
        f'<text class="axis-title" transform="translate(12 {TOP + ph / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">accuracy</text></svg>'
    )
    return Markup("".join(parts))


def training_charts(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, Chart | None]]:
    """``[("Loss", chart), ("Accuracy", chart)]``: train solid, validation dashed.

    A dashed vertical line marks where a training phase starts; a chart is None when the
    history has no value of its metric, and the list is empty without a history. An
    epoch without a number is placed by its position (1, 2, ...).
    """
    if not history:
        return []
    xs = [row["epoch"] if is_finite(row.get("epoch")) else i + 1 for i, row in enumerate(history)]
    vlines = []
    for i in range(1, len(history)):
        phase = history[i].get("phase")
        if phase is not None and phase != history[i - 1].get("phase"):
            vlines.append(((xs[i - 1] + xs[i]) / 2, f"phase {phase}"))
    x_range = axis(min(xs), max(xs), target=min(8, max(len(xs) - 1, 1)))
    markers = len(xs) <= MAX_MARKERS
    charts: list[tuple[str, Chart | None]] = []
    for metric, title, color in (("loss", "Loss", "#e15759"), ("accuracy", "Accuracy", "#4e79a7")):
        train = tuple(row.get(metric, math.nan) for row in history)
        val = tuple(row.get(f"val_{metric}", math.nan) for row in history)
        values = [y for y in (*train, *val) if is_finite(y)]
        if not values:
            charts.append((title, None))
            continue
        series = (
            Series(f"train {metric}", color, tuple(xs), train, markers=markers),
            Series(f"validation {metric}", color, tuple(xs), val, dash=True, markers=markers),
        )
        if metric == "accuracy":  # from 0.5 or lower, to 1: a good run is not a flat line
            y_range = axis(max(0.0, min(*values, 0.5)), max(*values, 1.0))
        else:
            y_range = axis(0.0, max(values))
        svg = line_chart(
            series, x_range=x_range, y_range=y_range, x_label="epoch", y_label=title, vlines=vlines
        )
        charts.append((title, Chart(svg, series)))
    return charts


def roc_chart(curves: Sequence[Curve]) -> Chart | None:
    """One-vs-rest ROC curves, labelled with their AUC, over the diagonal of a random guess.

    At most `MAX_CURVES` (the lowest AUCs: the classes worth a look); one series per curve
    shown. None when no class has a curve (each needs positive and negative samples).
    """
    series = _curve_series(curves, step=False)
    if not series:
        return None
    svg = line_chart(
        series,
        x_range=UNIT_AXIS,
        y_range=UNIT_AXIS,
        x_label="false positive rate",
        y_label="true positive rate",
        diagonal=True,
    )
    return Chart(svg, series)


def pr_chart(curves: Sequence[Curve]) -> Chart:
    """Precision-recall staircases, labelled with their average precision (as `roc_chart`)."""
    series = _curve_series(curves, step=True)
    svg = line_chart(
        series, x_range=UNIT_AXIS, y_range=UNIT_AXIS, x_label="recall", y_label="precision"
    )
    return Chart(svg, series)


def reliability_chart(bins: Sequence[CalibrationBinLike]) -> Chart:
    """`reliability_diagram` with its legend."""
    return Chart(reliability_diagram(bins), RELIABILITY_LEGEND)


def _curve_series(curves: Sequence[Curve], *, step: bool) -> tuple[Series, ...]:
    shown = [c for c in curves if c.auc is not None]
    if len(shown) > MAX_CURVES:
        shown = sorted(shown, key=lambda c: c.auc)[:MAX_CURVES]
    return tuple(
        Series(f"{c.class_name} ({c.auc:.3f})", PALETTE[i % len(PALETTE)], c.x, c.y, step=step)
        for i, c in enumerate(shown)
    )
