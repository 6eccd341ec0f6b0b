"""Plotly figures for the pages: training curves per epoch, train against validation.

The builders are plain functions from data to a `plotly.graph_objects.Figure`; the page
decides where to show them (``st.plotly_chart(fig, config=CHART_CONFIG)``). Colours stay the
same on every chart: training is blue and solid, validation orange.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from tlcore.training.progress import EpochRow

TRAIN_COLOR = "#1C6DD0"
VAL_COLOR = "#F08C00"
BOUNDARY_COLOR = "rgba(100, 110, 130, 0.55)"
BAND_COLOR = "rgba(120, 130, 150, 0.07)"
GRID_COLOR = "rgba(128, 128, 128, 0.16)"
CHART_HEIGHT = 300
# Passed to st.plotly_chart: no mode bar cluttering a small chart, no plotly logo.
CHART_CONFIG = {"displayModeBar": False, "displaylogo": False, "responsive": True}

CURVES = {
    "loss": ("Loss", "loss", "val_loss"),
    "accuracy": ("Accuracy", "accuracy", "val_accuracy"),
}


def training_curve_figure(
    history: Sequence[EpochRow],
    metric: str,
    *,
    total_epochs: int = 0,
    phase_starts: Mapping[int, int] | None = None,
    phase_names: Mapping[int, str] | None = None,
    phase_descriptions: Mapping[int, str] | None = None,
    height: int = CHART_HEIGHT,
) -> go.Figure:
    """Training and validation curves of one metric, per epoch, with phases marked.

    Args:
        history: completed epochs in order (`tlcore.training.progress.RunProgress.history`).
        metric: ``"loss"`` or ``"accuracy"``.
        total_epochs: the run's planned epochs; the x axis spans them so that a run in
            progress shows how far it still has to go. 0 fits the axis to the data.
        phase_starts: first epoch of each phase; with two or more phases, each is
            labelled and the later ones shaded, their start marked with a dashed line.
        phase_names: short label per phase, shown at its start (default ``Phase N``).
        phase_descriptions: what each phase trains, shown when hovering its label.
        height: in pixels, default 300.

    Raises:
        ValueError: ``metric`` is not one of ``loss``, ``accuracy``.
    """
    if metric not in CURVES:
        raise ValueError(f"metric must be one of {', '.join(CURVES)}. Received: {metric=!r}")
    title, train_key, val_key = CURVES[metric]
    is_accuracy = metric == "accuracy"
    value_format = ".1%" if is_accuracy else ".4f"
    epochs = [row.epoch for row in history]
    last_epoch = max([total_epochs, *epochs, 1])

    fig = go.Figure()
    for key, name, color in (
        (train_key, "Training", TRAIN_COLOR),
        (val_key, "Validation", VAL_COLOR),
    ):
        values = [row.metric(key) for row in history]
        if not any(v is not None for v in values):
            continue
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=values,
                name=name,
                mode="lines+markers",
                line={"color": color, "width": 2.5, "shape": "spline", "smoothing": 0.4},
                marker={"size": 7 if len(epochs) <= 30 else 4, "color": color},
                hovertemplate=f"%{{y:{value_format}}}<extra>{name}</extra>",
                connectgaps=True,
            )
        )

    best_key, best_color = (
        (val_key, VAL_COLOR) if _has(history, val_key) else (train_key, TRAIN_COLOR)
    )
    best = _best(history, best_key, lower=not is_accuracy)
    if best is not None and len(history) > 1:
        epoch, value = best
        fig.add_trace(
            go.Scatter(
                x=[epoch],
                y=[value],
                name="Best",
                mode="markers",
                marker={
                    "symbol": "star",
                    "size": 15,
                    "color": best_color,
                    "line": {"color": "white", "width": 1},
                },
                hovertemplate=f"best: %{{y:{value_format}}}<extra></extra>",
                showlegend=False,
            )
        )

    starts = dict(phase_starts or {})
    if len(starts) > 1:
        for index, start in sorted(starts.items()):
            if index > 1:
                end = _next_start(starts, index, last_epoch)
                fig.add_vrect(
                    x0=start - 0.5, x1=end + 0.5, fillcolor=BAND_COLOR, line_width=0, layer="below"
                )
                fig.add_vline(
                    x=start - 0.5, line={"color": BOUNDARY_COLOR, "width": 1.5, "dash": "dash"}
                )
            fig.add_annotation(
                x=max(start - 0.5, 0.5),
                y=1,
                yref="paper",
                text=(phase_names or {}).get(index) or f"Phase {index}",
                hovertext=(phase_descriptions or {}).get(index),
                showarrow=False,
                xanchor="left",
                yanchor="top",
                xshift=4,
                font={"size": 11, "color": "rgba(90, 100, 120, 1)"},
            )

    if not history:
        add_empty_note(fig, "Curves appear after the first epoch")

    fig.update_layout(
        title={
            "text": f"<b>{title}</b>",
            "x": 0,
            "xanchor": "left",
            "y": 0.97,
            "font": {"size": 15},
        },
        height=height,
        margin={"l": 8, "r": 8, "t": 44, "b": 8},
        hovermode="x unified",
        legend={
            "orientation": "h",
            "x": 1,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
            "bgcolor": "rgba(0,0,0,0)",
        },
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(
        title={"text": "Epoch", "font": {"size": 12}},
        range=[0.5, last_epoch + 0.5],
        dtick=1 if last_epoch <= 20 else None,
        tickformat="d",
        showgrid=False,
        zeroline=False,
        showline=True,
        linecolor=GRID_COLOR,
    )
    fig.update_yaxes(gridcolor=GRID_COLOR, zeroline=False, showline=False)
    # Headroom above the curves keeps the phase labels clear of them.
    headroom = 1.14 if len(starts) > 1 else 1.04
    if is_accuracy:
        fig.update_yaxes(
            tickformat=".0%", range=[0, headroom], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0]
        )
    else:
        values = [
            v for row in history for v in (row.metric(train_key), row.metric(val_key)) if _ok(v)
        ]
        top = max(values, default=1.0) * headroom
        fig.update_yaxes(range=[0, top], tickformat=".2~f")
    return fig


@functools.lru_cache(maxsize=64)
def shared_training_curve_figure(
    history: tuple[EpochRow, ...],
    metric: str,
    total_epochs: int,
    phase_starts: tuple[tuple[int, int], ...],
    phase_descriptions: tuple[tuple[int, str], ...],
) -> go.Figure:
    """`training_curve_figure`, built once per distinct input and shared by every session.

    The Training page redraws a running run's curves at every poll (1.5 s) in every tab that
    follows it, but they change only when an epoch ends; building two figures took most of
    a poll's time (bench/bench_server.py). The arguments are hashable versions of
    `training_curve_figure`'s (mappings as sorted item tuples). The figure is shared: pass
    it to ``st.plotly_chart`` as it is, never change it.
    """
    return training_curve_figure(
        history,
        metric,
        total_epochs=total_epochs,
        phase_starts=dict(phase_starts),
        phase_descriptions=dict(phase_descriptions),
    )


def _has(history: Sequence[EpochRow], key: str) -> bool:
    return any(row.metric(key) is not None for row in history)


def _ok(value) -> bool:
    return value is not None and value == value and abs(value) != float("inf")


def _best(history: Sequence[EpochRow], key: str, *, lower: bool) -> tuple[int, float] | None:
    points = [(row.epoch, row.metric(key)) for row in history]
    points = [(e, v) for e, v in points if _ok(v)]
    if not points:
        return None
    return (min if lower else max)(points, key=lambda p: p[1])


def _next_start(phase_starts: Mapping[int, int], index: int, last_epoch: int) -> int:
    later = [start for i, start in phase_starts.items() if i > index]
    return min(later) - 1 if later else last_epoch


def add_empty_note(fig: go.Figure, text: str) -> None:
    """Writes ``text`` in the middle of a chart that has nothing to plot yet."""
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 13, "color": "rgba(120, 120, 130, 1)"},
    )
