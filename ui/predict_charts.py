"""Plotly figures for the Predict page: the top classes of one image, and a batch's classes.

Plain functions from data to a figure, like `ui.charts`; the page shows them with
``st.plotly_chart(fig, config=CHART_CONFIG)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ui.charts import GRID_COLOR, TRAIN_COLOR

TOP_COLOR = TRAIN_COLOR
OTHER_COLOR = "rgba(28, 109, 208, 0.35)"
BAR_HEIGHT = 34
MIN_HEIGHT = 120


def top_k_figure(top: Sequence[tuple[str, float]], *, title: str = "") -> go.Figure:
    """Horizontal bars of the most probable classes, the best on top and highlighted.

    Args:
        top: ``(class, probability)`` pairs, most probable first.
        title: optional title above the bars.
    """
    names = [name for name, _ in top][::-1]
    values = [float(p) for _, p in top][::-1]
    colors = [OTHER_COLOR] * (len(values) - 1) + [TOP_COLOR] if values else []
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker={"color": colors},
            text=[f"{v:.1%}" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    height = max(MIN_HEIGHT, BAR_HEIGHT * len(values) + (70 if title else 40))
    fig.update_layout(
        title={"text": f"<b>{title}</b>", "x": 0, "font": {"size": 14}} if title else None,
        height=height,
        margin={"l": 8, "r": 48, "t": 40 if title else 8, "b": 8},
        bargap=0.35,
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        showlegend=False,
    )
    fig.update_xaxes(
        range=[0, 1.0],
        tickformat=".0%",
        gridcolor=GRID_COLOR,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_yaxes(automargin=True, fixedrange=True, tickfont={"size": 13})
    return fig


def class_counts_figure(by_class: Mapping[str, int]) -> go.Figure:
    """How many images of a batch were predicted as each class (most frequent on top)."""
    names = list(by_class)[::-1]
    counts = [int(by_class[n]) for n in names]
    fig = go.Figure(
        go.Bar(
            x=counts,
            y=names,
            orientation="h",
            marker={"color": TOP_COLOR},
            text=counts,
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x} images<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": "<b>Predicted classes</b>", "x": 0, "font": {"size": 14}},
        height=max(MIN_HEIGHT, BAR_HEIGHT * len(names) + 70),
        margin={"l": 8, "r": 40, "t": 40, "b": 8},
        bargap=0.35,
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(gridcolor=GRID_COLOR, zeroline=False, fixedrange=True, rangemode="tozero")
    fig.update_yaxes(automargin=True, fixedrange=True)
    return fig
