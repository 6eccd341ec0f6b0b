"""Home: the runs of this workspace, where to start, and what this machine offers."""

import pandas as pd
import streamlit as st

from tlcore.store import runs
from tlcore.store.system import system_info
from tlcore.training.progress import strategy_label
from tlcore.training.quickstart import quick_start
from ui.auth import audit_log_panel, current_actor, current_owner
from ui.common import PAGES, empty_state, human_bytes, page_header, workspace
from ui.health import health_line, storage_panel

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
                owner=current_owner(),
                progress=lambda f, msg: bar.progress(
                    min(max(f, 0.0), 1.0), text=msg or "Preparing the demo dataset…"
                ),
            )
            st.session_state["training_run"] = started.run_id
            st.session_state["training_flash"] = ("info", started.note)
            st.switch_page(PAGES["training"])


def _runs_table(records: list[runs.RunRecord]) -> None:
    """The runs, newest first; choosing a row offers to open it on the page that fits it."""
    rows = [runs.run_row(r) for r in records]
    table = pd.DataFrame(
        {
            "Run": [row["name"] or row["id"] for row in rows],
            "State": [row["state"] for row in rows],
            "Dataset": [row["dataset"] for row in rows],
            "Backbone": [row["backbone"] for row in rows],
            "Strategy": [
                strategy_label(row["strategy"]) if row["strategy"] else "" for row in rows
            ],
            "Val. accuracy": [row["val_accuracy"] for row in rows],
            "Test accuracy": [row["test_accuracy"] for row in rows],
            "Kept epoch": [row["kept_epoch"] for row in rows],
            "Epochs": [row["epochs"] for row in rows],
            "Created": [row["created"].replace("T", " ")[:16] for row in rows],
            "Owner": [row["owner"] for row in rows],
            "Problem": [row["problem"] for row in rows],
        }
    )
    for column in ("Problem", "Owner"):  # shown only when some run has one
        if not table[column].astype(bool).any():
            table = table.drop(columns=column)
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="home_runs",
        column_config={
            "Run": st.column_config.TextColumn(width="medium"),
            "Val. accuracy": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="percent",
                help="The kept model's validation accuracy (cross-validated for the "
                "recommended recipe).",
            ),
            "Test accuracy": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="percent",
                help="The kept model on the held-out test split.",
            ),
            "Kept epoch": st.column_config.NumberColumn(
                help="The epoch whose model was kept: best validation accuracy, ties by "
                "lower validation loss."
            ),
            "Problem": st.column_config.TextColumn(width="large"),
        },
    )
    chosen = event.selection.rows if event is not None else []
    if not chosen:
        st.caption("Select a run to open it.")
        return
    record = records[chosen[0]]
    go_train, go_eval, _ = st.columns([1, 1, 2])
    go_train.page_link(
        PAGES["training"],
        label="Open in Training",
        icon=":material/model_training:",
        query_params={"run": record.id},
    )
    if record.state == runs.FINISHED:
        go_eval.page_link(
            PAGES["evaluation"],
            label="Evaluate",
            icon=":material/insights:",
            query_params={"run": record.id},
        )


def _system_panel() -> None:
    info = _system(str(ws.root))
    devices = (
        ", ".join(d["name"].split("device:")[-1] for d in info["devices"])
        if info["devices"] is not None
        else "devices shown after the first training run"
    )
    compute = (
        f"{info['gpu_count']} GPU(s)"
        if info["gpu_count"]
        else f"CPU only, {info['cpu_count']} cores"
    )
    with st.container(border=True):
        st.markdown("**:material/memory: System**")
        framework, device, disk, paths = st.columns([1, 1, 1, 2])
        framework.markdown(f"TensorFlow **{info['tensorflow']}**  \nKeras **{info['keras']}**")
        device.markdown(f"**{compute}**  \n:gray[{devices}]")
        disk.markdown(f"Free disk **{human_bytes(info['free_disk_bytes'])}**")
        paths.markdown(f"Workspace `{info['workspace']}`  \nWeights cache `{info['keras_home']}`")


records = runs.list_runs(ws)
health_line(ws, records)
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
    for col, state in zip(st.columns(4), ("running", "queued", "finished", "failed"), strict=True):
        col.metric(state.capitalize(), int(counts.get(state, 0)), border=True)
    _runs_table(records)
_system_panel()
audit_log_panel(ws)
if current_actor().is_admin:  # what it removes belongs to everyone's runs
    storage_panel(ws)
