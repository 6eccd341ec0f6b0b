"""A run's background task (an evaluation or an export) followed on a page.

The task runs in its own process (`tlcore.store.tasks`); the page shows its progress bar in
a fragment that re-reads the task file every second and reruns the whole page once the task
has ended, so the page then shows what it made, or why it failed.
"""

from __future__ import annotations

import streamlit as st

from tlcore.store import tasks
from ui.common import workspace

POLL_S = 1.0


def follow(task: tasks.Task) -> None:
    """Shows ``task``'s progress until it ends, then reruns the page."""

    @st.fragment(run_every=POLL_S)
    def progress() -> None:
        try:
            now = tasks.read_task(workspace(), task.run_id, task.id)
        except LookupError:
            now = None
        if now is None or not now.active:
            st.rerun()
        st.progress(now.fraction, text=now.message or "Working…")

    progress()
