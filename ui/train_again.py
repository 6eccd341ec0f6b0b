"""The "Train again with these settings" button of the Training and Evaluation pages.

It fills the Model page's form with a run's settings (`ui.model_state.prefill_from_run`) and
opens that page, where they can be changed before the new run starts.
"""

from __future__ import annotations

import streamlit as st

from tlcore.store import runs
from tlcore.store.workspace import Workspace
from ui import model_state
from ui.common import PAGES

LABEL = "Train again with these settings"


def train_again_button(ws: Workspace, record: runs.RunRecord, *, key: str) -> None:
    """Draws the button for ``record``; a click opens the Model page filled with its settings.

    Disabled, with the reason in its tooltip, when the run's ``config.json`` cannot be read.
    """
    readable = record.config is not None
    clicked = st.button(
        LABEL,
        key=key,
        icon=":material/replay:",
        disabled=not readable,
        help="Opens the Model page with this run's settings filled in (a new name, the same "
        "seed): change what you like, then start it as a new run."
        if readable
        else f"This run's settings cannot be read: {record.problem}.",
    )
    if not clicked:
        return
    try:
        model_state.prefill_from_run(ws, record.id)
    except (LookupError, ValueError, OSError) as exc:
        st.error(f"**This run's settings cannot be used again.** {exc}", icon=":material/error:")
        return
    st.switch_page(PAGES["model"])
