"""Plotly figures for the Evaluation page: confusion matrix, ROC/PR, calibration, comparisons.

Plain functions from `tlcore` records to `plotly.graph_objects.Figure`; the page decides
where to show them (``st.plotly_chart(fig, config=CHART_CONFIG)``). The look follows
`ui.charts`: transparent background, light grid, titles left-aligned in bold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from tlcore.evaluation.metrics import Calibration, Curve, EvaluationMetrics
from ui.charts import GRID_COLOR, add_empty_note

PALETTE = (
    "#1C6DD0",
    "#F08C00",
    "#2F9E44",
    "#E03131",
    "#7048E8",
    "#0C8599",
    "#D6336C",
    "#5C940D",
    "#845EF7",
    "#868E96",
)
HEATMAP_SCALE = [[0.0, "#F4F7FB"], [0.5, "#74A7E3"], [1.0, "#0B3C8C"]]
INVISIBLE = "rgba(0,0,0,0)"  # the confusion matrix's clickable cell points
GOOD_COLOR = "#2F9E44"
TIED_COLOR = "#8CD19D"  # not clearly worse than the chosen strategy
BAD_COLOR = "#E03131"
NEUTRAL_COLOR = "#A5B4CB"
MAX_CURVE_CLASSES = 10  # more one-vs-rest curves than this are unreadable: the worst are kept


def _layout(fig: go.Figure, title: str, height: int, **extra) -> go.Figure:
    layout = {
        "title": {"text": f"<b>{title}</b>", "x": 0, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 8, "r": 8, "t": 44, "b": 8},
        "plot_bgcolor": "rgba(0,0,0,0)",
        "paper_bgcolor": "rgba(0,0,0,0)",
        "legend": {"bgcolor": "rgba(0,0,0,0)"},
    }
    fig.update_layout(**(layout | extra))
    return fig


def confusion_matrix_figure(
    metrics: EvaluationMetrics,
    *,
    normalized: bool = False,
    selected: tuple[str, str] | None = None,
    height: int | None = None,
) -> go.Figure:
    """The confusion matrix as a heatmap: ROWS = TRUE class (top to bottom), COLUMNS = PREDICTED.

    Colour is always the row share (so a small class's errors show as clearly as a big
    one's); the text is the count or the row percentage. An invisible marker sits on each
    cell so that clicking a cell selects it (``st.plotly_chart(on_select="rerun")`` reports
    ``x`` = predicted, ``y`` = true class name). Classes with no images (evaluating on a
    dataset with a subset of the classes) get no row, but keep their column.

    Args:
        metrics: the evaluation.
        normalized: default False, counts in the cells; True, row percentages.
        selected: ``(true class, predicted class)`` of the cell to outline, or None.
        height: in pixels; default grows with the number of classes.
    """
    names = list(metrics.class_names)
    n = len(names)
    rows = [i for i in range(n) if sum(metrics.confusion_matrix[i]) > 0] or list(range(n))
    row_names = [names[i] for i in rows]
    counts = [list(metrics.confusion_matrix[i]) for i in rows]
    shares = [list(metrics.confusion_matrix_normalized[i]) for i in rows]
    show_text = n <= 25
    text = [
        [
            (f"{shares[r][j]:.0%}" if normalized else f"{counts[r][j]:,}") if show_text else ""
            for j in range(n)
        ]
        for r in range(len(rows))
    ]
    hover = [
        [
            f"true <b>{row_names[r]}</b>, predicted <b>{names[j]}</b><br>"
            f"{counts[r][j]:,} images · {shares[r][j]:.1%} of {row_names[r]}"
            for j in range(n)
        ]
        for r in range(len(rows))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=names,
            y=row_names,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 13 if n <= 8 else 10},
            hoverinfo="skip",
            colorscale=HEATMAP_SCALE,
            zmin=0,
            zmax=1,
            xgap=2,
            ygap=2,
            showscale=False,
        )
    )
    # Clickable points on the cells, carrying the hover text: heatmap cells cannot be
    # selected. Plotly finds the point under the pointer by position, not by paint, so the
    # points draw nothing at all: no fill, no outline, whether selected or not (a faint
    # black square once showed as a dark square inside every cell).
    fig.add_trace(
        go.Scatter(
            x=[names[j] for _ in rows for j in range(n)],
            y=[name for name in row_names for _ in range(n)],
            customdata=[hover[r][j] for r in range(len(rows)) for j in range(n)],
            hovertemplate="%{customdata}<extra></extra>",
            mode="markers",
            marker={
                "size": max(8, min(60, 420 // max(n, 1))),
                "opacity": 0,
                "symbol": "square",
                "color": INVISIBLE,
                "line": {"width": 0, "color": INVISIBLE},
            },
            selected={"marker": {"opacity": 0}},
            unselected={"marker": {"opacity": 0}},
            showlegend=False,
            name="cells",
        )
    )
    if selected is not None and selected[0] in row_names and selected[1] in names:
        t, p = row_names.index(selected[0]), names.index(selected[1])
        fig.add_shape(
            type="rect",
            x0=p - 0.5,
            x1=p + 0.5,
            y0=t - 0.5,
            y1=t + 0.5,
            line={"color": "#F08C00", "width": 3},
        )
    size = height or min(max(300, 64 * len(rows) + 110), 900)
    _layout(fig, "", size, dragmode=False, clickmode="event+select")
    fig.update_layout(margin={"l": 8, "r": 8, "t": 8, "b": 8})
    fig.update_xaxes(
        title={"text": "Predicted class", "font": {"size": 12}},
        side="top",
        tickangle=-30 if n > 6 else 0,
        showgrid=False,
        fixedrange=True,
        type="category",
    )
    fig.update_yaxes(
        title={"text": "True class", "font": {"size": 12}},
        autorange="reversed",
        showgrid=False,
        fixedrange=True,
        type="category",
    )
    return fig


def _shown_curves(curves: Sequence[Curve]) -> list[Curve]:
    shown = [c for c in curves if c.auc is not None and c.x]
    if len(shown) > MAX_CURVE_CLASSES:
        shown = sorted(shown, key=lambda c: c.auc)[:MAX_CURVE_CLASSES]
    return shown


def curves_figure(curves: Sequence[Curve], *, kind: str, height: int = 340) -> go.Figure:
    """One-vs-rest ROC (``kind="roc"``) or precision-recall (``"pr"``) curves, one per class.

    With more than `MAX_CURVE_CLASSES` classes only the ones with the lowest area are drawn.
    """
    fig = go.Figure()
    shown = _shown_curves(curves)
    for i, curve in enumerate(shown):
        fig.add_trace(
            go.Scatter(
                x=list(curve.x),
                y=list(curve.y),
                name=f"{curve.class_name} ({curve.auc:.3f})",
                mode="lines",
                line={
                    "color": PALETTE[i % len(PALETTE)],
                    "width": 2,
                    "shape": "hv" if kind == "pr" else "linear",
                },
                hovertemplate=(
                    f"{curve.class_name}<br>"
                    + (
                        "FPR %{x:.2f}, TPR %{y:.2f}"
                        if kind == "roc"
                        else "recall %{x:.2f}, precision %{y:.2f}"
                    )
                    + "<extra></extra>"
                ),
            )
        )
    if kind == "roc":
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"color": "rgba(120,120,130,0.6)", "dash": "dash", "width": 1},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        title, x_title, y_title = (
            "ROC, one vs rest (AUC)",
            "False positive rate",
            "True positive rate",
        )
    else:
        title, x_title, y_title = "Precision–recall (average precision)", "Recall", "Precision"
    if not shown:
        add_empty_note(fig, "No class has both positive and negative images")
    _layout(fig, title, height, legend={"font": {"size": 11}, "bgcolor": "rgba(0,0,0,0)"})
    fig.update_xaxes(title=x_title, range=[-0.01, 1.01], gridcolor=GRID_COLOR, zeroline=False)
    fig.update_yaxes(title=y_title, range=[-0.01, 1.03], gridcolor=GRID_COLOR, zeroline=False)
    return fig


def reliability_figure(calibration: Calibration, *, height: int = 340) -> go.Figure:
    """The reliability diagram: accuracy per confidence bin against perfect calibration.

    Bars are the accuracy of each bin (hover: images, mean confidence); the orange ticks its
    mean confidence; a bar below its tick means the model was over-confident there.
    """
    bins = [b for b in calibration.bins if b.count]
    centers = [(b.lower + b.upper) / 2 for b in bins]
    width = [(b.upper - b.lower) * 0.86 for b in bins]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=centers,
            y=[b.accuracy for b in bins],
            width=width,
            name="Accuracy",
            marker={"color": "#1C6DD0", "opacity": 0.85},
            customdata=[[b.count, b.mean_confidence, b.lower, b.upper] for b in bins],
            hovertemplate=(
                "confidence %{customdata[2]:.1f}–%{customdata[3]:.1f}<br>%{customdata[0]} images"
                "<br>accuracy %{y:.1%}<br>mean confidence %{customdata[1]:.1%}<extra></extra>"
            ),
            text=[f"{b.count}" for b in bins],
            textposition="outside",
            textfont={"size": 10, "color": "rgba(90,100,120,1)"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=centers,
            y=[b.mean_confidence for b in bins],
            mode="markers",
            name="Mean confidence",
            marker={"symbol": "line-ew", "size": 22, "line": {"color": "#F08C00", "width": 3}},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="Perfect calibration",
            line={"color": "rgba(120,120,130,0.7)", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    _layout(
        fig,
        f"Reliability diagram · ECE {calibration.ece:.3f}",
        height,
        bargap=0,
        legend={"orientation": "h", "y": -0.25, "x": 0, "bgcolor": "rgba(0,0,0,0)"},
    )
    fig.update_xaxes(
        title="Confidence of the predicted class",
        range=[0, 1],
        dtick=0.1,
        gridcolor=GRID_COLOR,
        zeroline=False,
    )
    fig.update_yaxes(
        title="Accuracy", range=[0, 1.12], tickformat=".0%", gridcolor=GRID_COLOR, zeroline=False
    )
    return fig


def most_confused_figure(
    pairs: Sequence[tuple[str, str, int]], *, height: int | None = None
) -> go.Figure:
    """Horizontal bars of the most frequent (true → predicted) confusions."""
    labels = [f"{t} → {p}" for t, p, _ in pairs]
    top = max((n for _, _, n in pairs), default=1)
    fig = go.Figure(
        go.Bar(
            y=labels,
            x=[n for _, _, n in pairs],
            orientation="h",
            marker={"color": "#F0A0A0", "line": {"color": BAD_COLOR, "width": 1}},
            text=[str(n) for _, _, n in pairs],
            textposition="outside",
            hovertemplate="%{y}: %{x} images<extra></extra>",
            width=0.6,
        )
    )
    size = height or min(max(140, 30 * len(pairs) + 50), 480)
    _layout(fig, "", size)
    fig.update_layout(margin={"l": 8, "r": 24, "t": 8, "b": 8})
    fig.update_xaxes(
        title="Images",
        gridcolor=GRID_COLOR,
        zeroline=False,
        range=[0, top * 1.12],
        dtick=1 if top <= 10 else None,
        tickformat="d",
    )
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def overlaid_curves_figure(
    histories: Mapping[str, Sequence[Mapping]],
    *,
    metric: str = "val_accuracy",
    title: str = "Validation accuracy",
    height: int = 320,
) -> go.Figure:
    """One line per run of a per-epoch metric (``val_accuracy`` by default), overlaid."""
    fig = go.Figure()
    for i, (label, rows) in enumerate(histories.items()):
        points = [
            (row.get("epoch"), row.get(metric))
            for row in rows
            if isinstance(row.get(metric), (int, float))
        ]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[e for e, _ in points],
                y=[v for _, v in points],
                name=label,
                mode="lines+markers",
                line={"color": PALETTE[i % len(PALETTE)], "width": 2.5},
                marker={"size": 6},
                hovertemplate=f"{label}<br>epoch %{{x}}: %{{y:.1%}}<extra></extra>",
            )
        )
    if not fig.data:
        add_empty_note(fig, "No epochs recorded yet")
    _layout(
        fig,
        title,
        height,
        hovermode="closest",
        legend={"orientation": "h", "y": -0.2, "x": 0, "bgcolor": "rgba(0,0,0,0)"},
    )
    fig.update_xaxes(title="Epoch", tickformat="d", showgrid=False, zeroline=False)
    if "accuracy" in metric:
        fig.update_yaxes(range=[0, 1.04], tickformat=".0%", gridcolor=GRID_COLOR, zeroline=False)
    else:
        fig.update_yaxes(gridcolor=GRID_COLOR, zeroline=False)
    return fig


def sweep_figure(rows: Sequence[Mapping], labels: Mapping[str, str], *, height: int = 340):
    """Validation accuracy per strategy (what the sweep chooses on) with 95% intervals.

    The chosen strategy is green, those tied with it (not clearly worse) light green;
    each bar is labelled with its cost.
    """
    shown = [r for r in rows if r.get("val_accuracy") is not None]
    names = [
        f"<b>{labels.get(r['role'], r['role'])}</b><br>"
        f"<span style='font-size:11px;color:#667085'>{_cost_text(r, short=True)}</span>"
        for r in shown
    ]
    colors = [
        GOOD_COLOR if r.get("winner") else TIED_COLOR if r.get("tied") else NEUTRAL_COLOR
        for r in shown
    ]
    low = [
        r["val_accuracy"] - (r.get("val_accuracy_ci95") or [r["val_accuracy"]])[0] for r in shown
    ]
    high = [
        (r.get("val_accuracy_ci95") or [0, r["val_accuracy"]])[1] - r["val_accuracy"] for r in shown
    ]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[r["val_accuracy"] for r in shown],
            marker={"color": colors},
            error_y={"type": "data", "array": high, "arrayminus": low, "color": "#475467"},
            text=[f"{r['val_accuracy']:.1%}" for r in shown],
            textposition="inside",
            customdata=[f"n = {r.get('val_samples')} · {_cost_text(r)}" for r in shown],
            hovertemplate="validation accuracy %{y:.1%}<br>%{customdata}<extra></extra>",
            width=0.55,
        )
    )
    _layout(fig, "Validation accuracy by strategy (95% intervals), and what it cost", height)
    fig.update_yaxes(range=[0, 1.08], tickformat=".0%", gridcolor=GRID_COLOR, zeroline=False)
    fig.update_xaxes(showgrid=False, tickangle=0)
    return fig


def _cost_text(row: Mapping, *, short: bool = False) -> str:
    parts = []
    seconds = row.get("train_seconds")
    if isinstance(seconds, (int, float)):
        parts.append(f"{seconds:,.0f} s" if short else f"{seconds:,.0f} s of training")
    params = row.get("trainable_params")
    if isinstance(params, int):
        parts.append(f"{_compact(params)} params" if short else f"{params:,} trainable parameters")
    return " · ".join(parts) or "cost unknown"


def _compact(n: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)
