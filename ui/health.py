"""Home's server health line and its Storage panel (space that can be given back)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from tlcore.store import health, runs, storage
from tlcore.store.workspace import Workspace
from tlcore.training.progress import format_ago
from ui.common import human_bytes

LOW_DISK_FRACTION = 0.1  # under this share free, the disk figure turns orange


def health_line(ws: Workspace, records: list[runs.RunRecord]) -> None:
    """One line: scheduler, workers, queue, disk and the last error, each with its colour."""
    now = health.check(ws, records)
    parts = []
    if now.scheduler.alive:
        warm = " · a warm worker ready" if now.scheduler.warm_worker_pid else ""
        parts.append(f":green[:material/check_circle: Scheduler running]{warm}")
    else:
        parts.append(
            ":orange[:material/warning: No scheduler] — queued runs start when a page opens "
            "or a run ends; start one with `python -m tlcore scheduler`"
        )
    parts.append(f"{now.running} training · {now.queued} queued")
    if now.disk_free is not None and now.disk_total:
        free = f"{human_bytes(now.disk_free)} free"
        low = now.disk_free < LOW_DISK_FRACTION * now.disk_total
        parts.append(f":orange[:material/hard_drive: {free}]" if low else free)
    if now.last_error:
        when = _ago(now.last_error_at)
        parts.append(f":red[Last error{when} ({now.last_error_source})]")
    st.caption(" · ".join(parts), help=now.last_error or None)


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return " " + format_ago(datetime.fromtimestamp(timestamp, UTC).isoformat())


@st.cache_data(ttl=60, show_spinner="Measuring what can be removed…")
def _cleanable(_ws_root: str, _generation: int) -> list[storage.Cleanable]:
    from ui.common import workspace

    return storage.cleanable(workspace())


def storage_panel(ws: Workspace) -> None:
    """The space each removable kind takes, with a button to give it back."""
    generation = st.session_state.setdefault("storage_generation", 0)
    with st.expander("Storage", icon=":material/hard_drive:"):
        st.caption("Space that can be given back without losing a model, a dataset or a result.")
        for item in _cleanable(str(ws.root), generation):
            text, button = st.columns([5, 1], vertical_alignment="center")
            count = f"{item.count} item{'s' if item.count != 1 else ''}"
            text.markdown(
                f"**{item.label}** · {human_bytes(item.size_bytes)} · {count}  \n:gray[{item.note}]"
            )
            if button.button(
                "Remove",
                key=f"storage_remove_{item.kind}",
                disabled=item.count == 0,
                icon=":material/delete_sweep:",
                width="stretch",
            ):
                try:
                    freed = storage.remove(ws, item.kind)
                except (ValueError, OSError) as exc:
                    st.error(str(exc), icon=":material/error:")
                else:
                    st.session_state["storage_generation"] = generation + 1
                    st.toast(f"Gave back {human_bytes(freed)}.", icon=":material/check:")
                    st.rerun()
