"""Chrome and helpers shared by every page."""

from __future__ import annotations

import time

import streamlit as st

from tlcore.fileio import StorageError
from tlcore.store import jobs, scheduler
from tlcore.store.workspace import Workspace, open_workspace, resolve_workspace_path

# The page scripts live in views/, not pages/: with a pages/ folder beside app.py,
# Streamlit runs its legacy folder navigation for the first deep link after a server start
# (e.g. reloading /training), bypassing app.py's st.navigation and page config.
PAGES = {
    "home": "views/home.py",
    "dataset": "views/dataset.py",
    "model": "views/model.py",
    "training": "views/training.py",
    "evaluation": "views/evaluation.py",
    "predict": "views/predict.py",
}

STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "finished": "green",
    "failed": "red",
    "cancelled": "orange",
    "interrupted": "violet",
    "unreadable": "red",
}


SCHEDULER_CHECK_S = 10.0  # how often a page looks whether the scheduler is still alive
_scheduler_checked_at: dict[str, float] = {}


@st.cache_resource(show_spinner=False)
def _open_workspace_once(path: str) -> Workspace:
    ws = open_workspace(path)
    # A server (re)start is when runs orphaned by a dead worker are found and queued runs
    # are picked up again; from then on the scheduler process keeps the queue moving.
    jobs.schedule(ws)
    return ws


def _keep_scheduler_alive(ws: Workspace) -> None:
    """Starts a scheduler when none is alive (one died, or the server was started without
    ``run-app.sh``); looked at once every few seconds, whichever page runs."""
    key = str(ws.root)
    now = time.monotonic()
    if now - _scheduler_checked_at.get(key, -SCHEDULER_CHECK_S) < SCHEDULER_CHECK_S:
        return
    _scheduler_checked_at[key] = now
    if scheduler.autostart_enabled():
        scheduler.ensure_running(ws)


def workspace() -> Workspace:
    """The workspace, opened once per server. Stops the page with guidance if unusable."""
    try:
        ws = _open_workspace_once(str(resolve_workspace_path()))
        _keep_scheduler_alive(ws)
        return ws
    except StorageError as exc:
        st.error(f"**The workspace cannot be used.** {exc.strerror}")
        st.stop()


def page_header(title: str, subtitle: str) -> None:
    st.title(title)
    st.caption(subtitle)


def empty_state(
    message: str,
    *,
    action: str | None = None,
    page: str | None = None,
    icon: str = ":material/info:",
) -> None:
    """A friendly 'nothing here yet' box with a link to the step that fills it."""
    with st.container(border=True):
        st.markdown(f"{icon} {message}")
        if action and page:
            st.page_link(PAGES[page], label=action, icon=":material/arrow_forward:")


def state_badge(state: str) -> str:
    """Markdown for a coloured run-state badge."""
    return f":{STATE_COLORS.get(state, 'gray')}-badge[{state}]"


def fact_tile(column, label: str, value: str, note: str | None, help_text: str) -> None:
    """A bordered metric tile whose small grey line under the value is a fact, not a change."""
    column.metric(
        label,
        value,
        delta=note,
        delta_color="off",
        delta_arrow="off",
        help=help_text,
        border=True,
    )


def fact(column, label: str, value: str, icon: str) -> None:
    """A small captioned fact in a page header: icon and label above, the value in bold."""
    column.caption(f"{icon} {label}")
    column.markdown(f"**{value}**")


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal; an en dash when there is none."""
    return "–" if value is None else f"{value:.1%}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def remember_selection(state_key: str, query_param: str, value: str) -> None:
    """Keeps a page's selection in the session and the URL, so a reload or a shared link
    opens the same thing."""
    st.session_state[state_key] = value
    st.query_params[query_param] = value


def flash(key: str, kind: str, message: str) -> None:
    """Leaves a message for the next run of a page (shown once by `show_flash`)."""
    st.session_state[key] = (kind, message)


def show_flash(key: str) -> None:
    kind, message = st.session_state.pop(key, (None, None))
    if kind == "success":
        st.success(message, icon=":material/check_circle:")
    elif kind == "info":
        st.info(message, icon=":material/info:")


def section(title: str, icon: str, caption: str | None = None):
    """A bordered container with a heading; use as ``with section(...):``."""
    box = st.container(border=True)
    box.markdown(f"**{icon} {title}**")
    if caption:
        box.caption(caption)
    return box
