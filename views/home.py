"""Home: the runs of this workspace, where to start, and what this machine offers."""

import pandas as pd
import streamlit as st

from tlcore.model.strategies import STRATEGY_SHORT_LABELS
from tlcore.store import runs
from tlcore.store.system import system_info
from tlcore.training.progress import format_ago
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


# Pixel widths of the runs table's columns: together (with the row checkbox, about 35 px)
# they fit the page's content at a 1400 px wide window with the sidebar open (about 940 px),
# so no column hides off to the right. Owner, when some run has one, takes its room from Run.
RUNS_TABLE_WIDTHS = {
    "Run": 230,
    "State": 72,
    "Dataset": 85,
    "Backbone": 92,
    "Strategy": 122,
    "Val. acc.": 68,
    "Test acc.": 68,
    "Epochs": 78,
    "Created": 90,
}
OWNER_WIDTH = 75


def _percents(values: list[float | None]) -> pd.Series:
    """Shares as percentages, a float column (a run without one shows none)."""
    return pd.Series([float("nan") if v is None else 100.0 * v for v in values], dtype=float)


def _epochs_text(row: dict) -> str:
    """Epochs trained, and which one's model was kept when it is not the last: "5 (kept 3)"."""
    done, kept = row["epochs"], row["kept_epoch"]
    if done is None:
        return ""
    return f"{done}" if kept in (None, done) else f"{done} (kept {kept})"


def runs_table_frame(records: list[runs.RunRecord]) -> pd.DataFrame:
    """The Home page's runs table: short columns that all fit the page (`RUNS_TABLE_WIDTHS`);
    accuracies in percent. A run's problem is shown below the table when it is selected."""
    rows = [runs.run_row(r) for r in records]
    table = pd.DataFrame(
        {
            "Run": [r.short_title for r in records],  # the Dataset column names the dataset
            "State": [row["state"] for row in rows],
            "Dataset": [row["dataset"] for row in rows],
            "Backbone": [row["backbone"] for row in rows],
            "Strategy": [
                (STRATEGY_SHORT_LABELS.get(row["strategy"]) or row["strategy"]).capitalize()
                for row in rows
            ],
            "Val. acc.": _percents([row["val_accuracy"] for row in rows]),
            "Test acc.": _percents([row["test_accuracy"] for row in rows]),
            "Epochs": [_epochs_text(row) for row in rows],
            "Created": [format_ago(row["created"]) if row["created"] else "" for row in rows],
            "Owner": [row["owner"] for row in rows],
        }
    )
    if not table["Owner"].astype(bool).any():  # shown only when some run has one
        table = table.drop(columns="Owner")
    return table


def runs_table_columns(columns) -> dict:
    """The column settings of `runs_table_frame`'s columns: every one a fixed width."""
    widths = dict(RUNS_TABLE_WIDTHS)
    if "Owner" in columns:
        widths["Owner"] = OWNER_WIDTH
        widths["Run"] -= OWNER_WIDTH
    accuracy = "%.1f %%"
    return {
        "Run": st.column_config.TextColumn(width=widths["Run"], help="The run's name"),
        "State": st.column_config.TextColumn(width=widths["State"]),
        "Dataset": st.column_config.TextColumn(width=widths["Dataset"]),
        "Backbone": st.column_config.TextColumn(width=widths["Backbone"]),
        "Strategy": st.column_config.TextColumn(
            width=widths["Strategy"], help="The freezing strategy: what trained"
        ),
        "Val. acc.": st.column_config.NumberColumn(
            width=widths["Val. acc."],
            format=accuracy,
            help="Validation accuracy of the kept model (cross-validated for the recommended "
            "recipe).",
        ),
        "Test acc.": st.column_config.NumberColumn(
            width=widths["Test acc."],
            format=accuracy,
            help="Accuracy of the kept model on the held-out test split.",
        ),
        "Epochs": st.column_config.TextColumn(
            width=widths["Epochs"],
            help="Epochs trained; (kept N): the epoch whose model was kept, the best "
            "validation accuracy (ties: the lower validation loss), when it is not the last.",
        ),
        "Created": st.column_config.TextColumn(width=widths["Created"]),
        "Owner": st.column_config.TextColumn(width=widths.get("Owner", OWNER_WIDTH)),
    }


def _runs_table(records: list[runs.RunRecord]) -> None:
    """The runs, newest first; choosing a row offers to open it on the page that fits it."""
    table = runs_table_frame(records)
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="home_runs",
        column_config=runs_table_columns(table.columns),
    )
    chosen = event.selection.rows if event is not None else []
    if not chosen:
        st.caption("Select a run to open it, or to see what went wrong with a failed one.")
        return
    record = records[chosen[0]]
    problem = runs.run_row(record)["problem"]
    if problem:
        st.error(f"**{record.title}** · {problem}", icon=":material/error:")
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
