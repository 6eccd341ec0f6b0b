"""Home: the runs of this workspace, where to start, and what this machine offers."""

import pandas as pd
import streamlit as st

from tlcore import runs
from tlcore.cli import run_row
from tlcore.quickstart import quick_start
from tlcore.system import system_info
from ui.common import PAGES, empty_state, human_bytes, page_header, workspace

ws = workspace()
page_header(
    "Transfer Learning Studio",
    "Turn a pretrained network into a classifier for your own images: "
    "dataset → model → training → evaluation → predict.",
)


@st.cache_data(ttl=60, show_spinner="Reading the system…")
def _system(_ws_root: str) -> dict:
    return system_info(ws)


def _has_datasets() -> bool:
    return any(p.is_dir() and not p.name.startswith(".") for p in ws.datasets_dir.iterdir())


def _quick_start_card() -> None:
    with st.container(border=True):
        text, action = st.columns([3, 1], vertical_alignment="center")
        text.markdown(
            "**:material/rocket_launch: Quick start** — import the built-in demo dataset "
            "(5 shapes, 400 images, no download) and train a good default model on it. "
            "You land on the Training page with the run live."
        )
        if action.button(
            "Try it now", type="primary", icon=":material/play_arrow:", width="stretch"
        ):
            bar = st.progress(0.0, text="Preparing the demo dataset…")
            started = quick_start(
                ws,
                progress=lambda f, msg: bar.progress(
                    min(max(f, 0.0), 1.0), text=msg or "Preparing the demo dataset…"
                ),
            )
            st.session_state["training_run"] = started.run_id
            st.session_state["training_flash"] = ("info", started.note)
            st.switch_page(PAGES["training"])


records = runs.list_runs(ws)
left, right = st.columns([3, 1], gap="large")
with left:
    if not records:
        _quick_start_card()
    st.subheader("Runs")
    if not records:
        if _has_datasets():
            empty_state(
                "No training runs yet. Choose a backbone and a freezing strategy, then train.",
                action="Choose a model",
                page="model",
            )
        else:
            empty_state(
                "No runs yet. Start by importing images — a zip of class folders, a folder on "
                "this server, or the built-in demo dataset.",
                action="Import a dataset",
                page="dataset",
            )
    else:
        counts = pd.Series([r.state for r in records]).value_counts()
        cols = st.columns(4)
        for col, state in zip(cols, ("running", "queued", "finished", "failed"), strict=True):
            col.metric(state.capitalize(), int(counts.get(state, 0)))
        table = pd.DataFrame([run_row(r) for r in records])
        st.dataframe(
            table[
                [
                    "id",
                    "name",
                    "state",
                    "dataset",
                    "backbone",
                    "strategy",
                    "val_accuracy",
                    "epochs",
                    "created",
                    "problem",
                ]
            ],
            hide_index=True,
            width="stretch",
            column_config={
                "id": st.column_config.TextColumn("Run"),
                "val_accuracy": st.column_config.ProgressColumn(
                    "Val. accuracy", min_value=0.0, max_value=1.0, format="percent"
                ),
                "epochs": st.column_config.NumberColumn("Epochs"),
                "problem": st.column_config.TextColumn("Problem / error", width="large"),
            },
        )
with right:
    st.subheader("System")
    info = _system(str(ws.root))
    with st.container(border=True):
        st.markdown(f"**TensorFlow** {info['tensorflow']} · **Keras** {info['keras']}")
        if info["gpu_count"]:
            st.markdown(f":material/memory: **{info['gpu_count']} GPU(s)**")
        else:
            st.markdown(f":material/memory: CPU only ({info['cpu_count']} cores)")
        st.markdown(
            "**Devices:** " + ", ".join(d["name"].split("device:")[-1] for d in info["devices"])
        )
        st.markdown(f"**Workspace:** `{info['workspace']}`")
        st.markdown(f"**Free disk:** {human_bytes(info['free_disk_bytes'])}")
        st.markdown(f"**Weights cache:** `{info['keras_home']}`")
