"""The Model page's architecture preview: parameter tiles, parameters per block, the layer table.

Everything here draws the preview that `tlcore.model.preview` built (layers, shapes and
parameter counts of the run's network with random weights, per training phase); nothing
builds a model or imports Keras. `blocks_figure` is a plain function from the preview's
rows to a Plotly figure, like `ui.charts`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tlcore.config import RunConfig
from tlcore.model import strategies
from ui.charts import CHART_CONFIG, GRID_COLOR, TRAIN_COLOR, VAL_COLOR
from ui.common import fact_tile
from ui.model_state import FINE_TUNE_STRATEGIES, count_text

PHASE_VIEW_KEY = "model_phase_view"
FROZEN_COLOR = "rgba(128, 138, 155, 0.45)"
ROW_COLORS = {
    "trains": "background-color: rgba(28, 109, 208, 0.13)",
    "partly": "background-color: rgba(240, 140, 0, 0.16)",
    "frozen": "background-color: rgba(128, 128, 128, 0.10)",
    "no weights": "",
}
STATUS_MARK = {"trains": "●", "partly": "◐", "frozen": "○", "no weights": ""}
# Layer table columns: label, width in pixels, tooltip.
LAYER_COLUMNS = {
    "status": ("", 28, "● trains · ◐ only its biases train · ○ frozen"),
    "block": ("Block", 90, "The backbone block, or the part of the model"),
    "layer": ("Layer", 124, None),
    "type": ("Type", 88, None),
    "output": ("Output", 74, "Output shape, without the batch dimension"),
    "params": ("Params", 58, "Parameters (weights) of the layer"),
}


def render_parameters(arch: dict, config: RunConfig) -> None:
    """Total, head and trainable parameters (per phase for two-phase), as metrics."""
    phases = strategies.training_phases(config)
    data = arch["phases"]
    total = data[0]["total"]
    head = data[0]["by_part"].get(strategies.HEAD_NAME, {}).get("params", 0)
    with st.container(border=True):
        st.markdown("**:material/stacked_bar_chart: Parameters**")
        tiles = [
            (
                "Total",
                count_text(total),
                None,
                f"{total:,} weights in the backbone and the new head.",
            ),
            (
                "New head",
                count_text(head),
                None,
                f"{head:,} weights in the layers added on top of the backbone; they always train.",
            ),
        ]
        for i, info in enumerate(data):
            share = info["trainable"] / total if total else 0.0
            tiles.append(
                (
                    "Trainable" + (f" · phase {i + 1}" if len(data) > 1 else ""),
                    count_text(info["trainable"]),
                    f"{share:.1%} of total",
                    f"{info['trainable']:,} weights the optimizer updates — "
                    f"{phases[i].description}.",
                )
            )
        if len(data) == 1:
            frozen = total - data[0]["trainable"]
            tiles.append(
                (
                    "Frozen",
                    count_text(frozen),
                    f"{frozen / total:.1%} of total" if total else None,
                    f"{frozen:,} weights that keep their starting values (batch-norm moving "
                    "statistics count here: they are never trained by the optimizer).",
                )
            )
        for row in range(0, len(tiles), 2):
            for column, (label, value, delta, text) in zip(
                st.columns(2), tiles[row : row + 2], strict=False
            ):
                fact_tile(column, label, value, delta, text)
        if config.strategy in FINE_TUNE_STRATEGIES and config.unfreeze:
            names = [b["block"] for b in arch["blocks"]]
            if config.unfreeze_unit == "blocks":
                chosen = names[-config.unfreeze :]
                st.caption(
                    f":material/lock_open: Unfrozen blocks: {', '.join(chosen)}"
                    + (f" (all {len(names)})" if len(chosen) == len(names) else "")
                )
        if config.train_batchnorm and config.strategy != "feature_extraction":
            st.caption(":material/info: Batch-norm statistics of unfrozen layers update too.")


def blocks_figure(rows: list[dict]) -> go.Figure:
    """Parameters per block, stacked: what trains, what stays frozen, and the new head."""
    order: list[str] = []
    trains: dict[str, int] = {}
    frozen: dict[str, int] = {}
    for row in rows:
        if not row["params"] or row["part"] not in (strategies.BACKBONE_NAME, strategies.HEAD_NAME):
            continue
        block = row["block"]
        if block not in trains:
            order.append(block)
            trains[block] = frozen[block] = 0
        trains[block] += row["trainable_params"]
        frozen[block] += row["params"] - row["trainable_params"]
    backbone = [b for b in order if b != strategies.HEAD_NAME]
    hover = "<b>%{x}</b><br>%{y:,} parameters<extra>%{fullData.name}</extra>"
    fig = go.Figure(
        [
            go.Bar(
                name="Trains",
                x=backbone,
                y=[trains[b] for b in backbone],
                marker_color=TRAIN_COLOR,
                hovertemplate=hover,
            ),
            go.Bar(
                name="Frozen",
                x=backbone,
                y=[frozen[b] for b in backbone],
                marker_color=FROZEN_COLOR,
                hovertemplate=hover,
            ),
            go.Bar(
                name="New head",
                x=["head"],
                y=[trains.get(strategies.HEAD_NAME, 0)],
                marker_color=VAL_COLOR,
                hovertemplate=hover,
            ),
        ]
    )
    fig.update_layout(
        barmode="stack",
        height=260,
        margin=dict(l=8, r=8, t=8, b=8),
        bargap=0.15,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, title=None, traceorder="normal"),
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        xaxis=dict(type="category", tickangle=-50, tickfont=dict(size=10), automargin=True),
        yaxis=dict(title="Parameters", gridcolor=GRID_COLOR, tickformat="~s", automargin=True),
        hoverlabel=dict(namelength=-1),
    )
    return fig


def render_architecture(arch: dict, spec_name: str, weights_text: str) -> None:
    """The layers of the chosen phase: parameters per block, then the layer table."""
    phases = arch["phases"]
    with st.container(border=True):
        st.markdown("**:material/schema: Architecture**")
        st.caption(
            ":material/visibility: Structure preview, built with random weights: layers, "
            "shapes and parameter counts are those of the run, which loads its starting "
            f"weights ({weights_text}) when it starts."
        )
        index = 0
        if len(phases) > 1:
            choice = st.segmented_control(
                "Show",
                [1, 2],
                key=PHASE_VIEW_KEY,
                default=1,
                required=True,
                format_func=lambda i: "Phase 1 · head only" if i == 1 else "Phase 2 · fine-tune",
                label_visibility="collapsed",
            )
            index = (choice or 1) - 1
        rows = phases[index]["rows"]
        st.plotly_chart(blocks_figure(rows), config=CHART_CONFIG, key="blocks_chart")
        only_weights = st.toggle(
            "Only layers with parameters",
            value=True,
            key="model_only_weights",
            help="Hide activations, padding, pooling and other layers without weights.",
        )
        shown = [r for r in rows if r["params"] > 0 or not only_weights]
        table = pd.DataFrame(shown, columns=list(LAYER_COLUMNS))
        table["status"] = table["status"].map(STATUS_MARK)
        colors = [ROW_COLORS[r["status"]] for r in shown]
        styled = (
            table[list(LAYER_COLUMNS)]
            .style.apply(lambda _column: colors, axis=0)
            .format({"params": "{:,}"})
        )
        st.dataframe(
            styled,
            hide_index=True,
            width="stretch",
            height=380,
            column_config={
                name: st.column_config.TextColumn(label, help=text, width=width)
                for name, (label, width, text) in LAYER_COLUMNS.items()
            },
        )
        with_weights = [r for r in rows if r["params"]]
        counts = pd.Series([r["status"] for r in with_weights], dtype=object).value_counts()
        parts = [
            f"{int(counts[s])} {word}"
            for s, word in (
                ("trains", "train"),
                ("partly", "train biases only"),
                ("frozen", "frozen"),
            )
            if counts.get(s)
        ]
        st.caption(
            f":blue[●] trains · :orange[◐] biases only · :gray[○] frozen — {spec_name}: "
            f"{len(rows)} layers, {len(with_weights)} with weights: {', '.join(parts)}."
        )
