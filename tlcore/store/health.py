"""How the studio's server is doing, in one look: the scheduler, the queue, the disk, and the
last error anything reported (Home shows it as one line)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime

from tlcore.store import runs, scheduler
from tlcore.store.workspace import Workspace


@dataclass(frozen=True)
class Health:
    """See `check`."""

    scheduler: scheduler.SchedulerStatus
    running: int
    queued: int
    disk_free: int | None
    disk_total: int | None
    last_error: str | None = None
    last_error_at: float | None = None
    last_error_source: str | None = None  # "the scheduler", or "run <id>"


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def check(ws: Workspace, records: list[runs.RunRecord] | None = None) -> Health:
    """The health of ``ws`` now. ``records``: the runs, when the caller has listed them."""
    records = runs.list_runs(ws) if records is None else records
    try:
        usage = shutil.disk_usage(ws.root)
        free, total = usage.free, usage.total
    except OSError:
        free = total = None
    state = scheduler.status(ws)
    errors = []
    if state.last_error:
        errors.append((state.last_error_at or 0.0, state.last_error, "the scheduler"))
    for record in records:
        if record.state == runs.FAILED and record.status and record.status.error:
            when = _timestamp(record.status.finished_at) or 0.0
            errors.append((when, record.status.error, f"run {record.id}"))
    when, error, source = max(errors, key=lambda e: e[0]) if errors else (None, None, None)
    return Health(
        scheduler=state,
        running=sum(1 for r in records if r.state == runs.RUNNING),
        queued=sum(1 for r in records if r.state == runs.QUEUED),
        disk_free=free,
        disk_total=total,
        last_error=error,
        last_error_at=when or None,
        last_error_source=source,
    )
