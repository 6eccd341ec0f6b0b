"""The Model page's weights choice: ImageNet (with what is cached), a weights file on the
server or uploaded, an earlier run's backbone, or none.
"""

from __future__ import annotations

import streamlit as st

from tlcore.model.registry import BackboneSpec
from tlcore.model.weights import imagenet_weights_status
from tlcore.store.workspace import Workspace
from tlcore.training import kept_model
from ui import shared_folders
from ui.common import section
from ui.model_state import (
    PERSIST,
    UPLOAD_ERROR_KEY,
    UPLOAD_NAMES_KEY,
    WEIGHTS_LABELS,
    WEIGHTS_PATH,
    WEIGHTS_RUN,
    WEIGHTS_SOURCE,
    WEIGHTS_UPLOAD,
    _on_upload,
    key,
    weights_overview,
    weights_sources,
)

# The overview's columns, in pixels: they fit the Model page's narrow column (about 340 px
# inside the expander at a 1400 px wide window) beside the row checkbox; what else is known
# about a backbone is shown below the table when its row is selected.
OVERVIEW_WIDTHS = {"backbone": 120, "imagenet": 110, "params": 55}
OVERVIEW_KEY = "weights_overview"


def overview_details(row: dict) -> str:
    """What the overview table leaves out, for one of `weights_overview`'s rows."""
    details = [
        f"**{row['backbone']}**",
        f"{row['size']} px by default",
        f"{row['speed']} on a CPU at 224 px" if row.get("speed") else "",
        f"widths with weights: {row['alphas']}" if row["alphas"] != "–" else "",
    ]
    text = " · ".join(d for d in details if d)
    if row["file"]:
        text += f"  \nKeras looks for `{row['file']}`"
    return text


@st.fragment  # choosing a row reruns the table only, not the whole Model page
def weights_overview_table() -> None:
    import pandas as pd

    from tlcore.model.weights import keras_home

    rows = weights_overview()
    table = pd.DataFrame(rows)[list(OVERVIEW_WIDTHS)]
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=OVERVIEW_KEY,
        column_config={
            "backbone": st.column_config.TextColumn("Backbone", width=OVERVIEW_WIDTHS["backbone"]),
            "imagenet": st.column_config.TextColumn(
                "ImageNet",
                width=OVERVIEW_WIDTHS["imagenet"],
                help="✓ in the Keras cache of this machine · ✗ missing (downloaded when a run "
                "starts, if there is internet) · – Keras has none for this backbone",
            ),
            "params": st.column_config.NumberColumn(
                "Params", format="compact", width=OVERVIEW_WIDTHS["params"]
            ),
        },
    )
    chosen = event.selection.rows if event is not None else []
    if chosen:
        st.markdown(f":small[{overview_details(rows[chosen[0]])}]")
    else:
        st.caption(
            "Select a backbone for its input size, speed, widths and the file Keras looks for."
        )
    st.caption(
        f"Keras looks for these files in `{keras_home() / 'models'}` and downloads missing ones "
        "when a run starts (if this machine can reach the internet). To use a backbone "
        "offline, copy its file there."
    )


def weights_section(ws: Workspace, spec: BackboneSpec, finished_runs: list) -> None:
    """Where the backbone's starting weights come from, and whether they are there."""
    state = st.session_state
    scratch = state.get(key("strategy")) == "from_scratch"
    with section("Starting weights", ":material/download:"):
        source = st.radio(
            "Starting weights",
            weights_sources(spec),
            key=WEIGHTS_SOURCE,
            format_func=WEIGHTS_LABELS.get,
            horizontal=True,
            disabled=scratch,
            label_visibility="collapsed",
            help="ImageNet: Keras' pretrained weights. File: a .h5 / .weights.h5 file for the "
            "same architecture. Earlier run: the backbone a finished run trained here. "
            "None: random weights.",
            persist_state=PERSIST,
        )
        if scratch:
            st.caption(
                ":material/info: **From scratch** trains from random weights, so the weights "
                "source is *None*. Pick another strategy to use pretrained weights."
            )
        elif source == "imagenet":
            _imagenet_status(spec)
        elif source == "file":
            _weights_file(ws)
        elif source == "run":
            _weights_run(spec, finished_runs)
        else:
            if state.get(key("strategy")) == "feature_extraction":
                st.warning(
                    "**A frozen random backbone.** Feature extraction with random weights trains "
                    "the head on random features; expect poor accuracy. Use pretrained weights, "
                    "or the *From scratch* strategy for a baseline.",
                    icon=":material/warning:",
                )
            else:
                st.caption(
                    ":material/casino: Random initial weights: the backbone starts knowing "
                    "nothing, so expect much lower accuracy than pretrained weights on a small "
                    "dataset."
                )


def _imagenet_status(spec: BackboneSpec) -> None:
    state = st.session_state
    alpha = float(state[key("alpha")]) if spec.has_alpha else 1.0
    size = int(state[key("image_size")])
    label = f"{spec.display_name}" + (f" (alpha {alpha:g})" if spec.has_alpha else "")
    try:
        status = imagenet_weights_status(spec.name, alpha, size)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if status.available:
        st.markdown(
            f":green-badge[:material/check_circle: {label} ImageNet weights on this machine]"
        )
        st.caption(f":material/folder: `{status.path}`")
    else:
        st.warning(
            f"**ImageNet weights for {label} are not on this machine** (`{status.filename}`). "
            "When the run starts Keras tries to download them; without internet the run "
            "**fails** rather than silently training from random weights.",
            icon=":material/cloud_off:",
        )
        st.caption(
            f":material/download: Offline? [Download the file]({status.url}) elsewhere and copy "
            f"it to `{status.path.parent}/`."
        )
    if status.note:
        st.caption(f":material/info: {status.note}")


def _weights_file(ws: Workspace) -> None:
    state = st.session_state
    st.file_uploader(
        "Upload a weights file",
        type=["h5", "hdf5"],
        key=WEIGHTS_UPLOAD,
        on_change=_on_upload,
        args=(ws,),
        help="Keras weights (.weights.h5 or .h5) saved from the same architecture without its "
        "classifier top. The file is stored in the workspace; nothing in it is executed.",
    )
    if state.get(UPLOAD_ERROR_KEY):
        st.error(state[UPLOAD_ERROR_KEY], icon=":material/error:")
    roots = shared_folders.shared_roots(ws)
    st.text_input(
        "Weights file on the server",
        key=WEIGHTS_PATH,
        placeholder=str(ws.incoming_dir / "my_backbone.weights.h5"),
        help=shared_folders.help_text(roots, "a weights file") + " An upload fills this in.",
        persist_state=PERSIST,
    )
    path = str(state.get(WEIGHTS_PATH) or "")
    original = state.get(UPLOAD_NAMES_KEY, {}).get(path)
    if original:
        st.caption(f":material/upload_file: Uploaded `{original}`, stored in the workspace.")
    else:
        shared_folders.caption(roots, "the weights file")


def _weights_run(spec: BackboneSpec, finished_runs: list) -> None:
    alpha = float(st.session_state[key("alpha")]) if spec.has_alpha else 1.0
    matching = [
        r
        for r in finished_runs
        if r.config.backbone == spec.name and float(r.config.alpha) == alpha
    ]
    label = spec.display_name + (f" (alpha {alpha:g})" if spec.has_alpha else "")
    if not matching:
        st.info(
            f"No finished run uses {label} yet. Train one first, or pick other weights.",
            icon=":material/history:",
        )
        st.session_state[WEIGHTS_RUN] = None
        return
    by_id = {r.id: r for r in matching}
    if st.session_state.get(WEIGHTS_RUN) not in by_id:
        st.session_state[WEIGHTS_RUN] = matching[0].id

    def describe(run_id: str) -> str:
        record = by_id[run_id]
        cfg = record.config
        headline = kept_model.headline(record.status.summary if record.status else {})
        title = cfg.name.strip() or f"{cfg.backbone} on {cfg.dataset}"
        extra = f" · {headline}" if headline else ""
        return f"{title} · {cfg.dataset}{extra} · {run_id}"

    st.selectbox(
        "Run",
        list(by_id),
        key=WEIGHTS_RUN,
        format_func=describe,
        help=f"Finished runs with {label}: the new run starts from the backbone they trained "
        "(the head is new).",
    )
