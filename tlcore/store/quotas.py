"""Fair use of a shared server: room on the disk, and limits per run, set by the administrator.

Every limit is an environment variable of the server (unset: no limit), read when it is
checked, so a restart is not needed to change one:

    TLS_MIN_FREE_MB        free disk below which no import or run starts (default 500)
    TLS_WORKSPACE_MAX_GB   the most the workspace folder may hold
    TLS_MAX_EPOCHS         the most epochs one run may train
    TLS_MAX_RUN_MINUTES    a run still training after this long is stopped (by the scheduler),
                           keeping its best model so far
    TLS_MAX_RUNNING_PER_USER  runs one person may have training at once (the rest wait)
    TLS_MAX_QUEUED_PER_USER   runs one person may have waiting in the queue

Each refusal is a `QuotaError` whose message says what the limit is and what to do.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tlcore.store.workspace import Workspace

MIN_FREE_ENV = "TLS_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 500
WORKSPACE_MAX_ENV = "TLS_WORKSPACE_MAX_GB"
MAX_EPOCHS_ENV = "TLS_MAX_EPOCHS"
MAX_RUN_MINUTES_ENV = "TLS_MAX_RUN_MINUTES"
MAX_RUNNING_PER_USER_ENV = "TLS_MAX_RUNNING_PER_USER"
MAX_QUEUED_PER_USER_ENV = "TLS_MAX_QUEUED_PER_USER"
USAGE_CACHE_S = 60.0  # measuring a big workspace takes a while: reuse it for a minute


class QuotaError(ValueError):
    """A limit of this server stops the action; the message says which and what to do."""


@dataclass(frozen=True)
class Limits:
    min_free_bytes: int
    workspace_max_bytes: int | None
    max_epochs: int | None
    max_run_seconds: float | None
    max_running_per_user: int | None = None
    max_queued_per_user: int | None = None


def _number(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise QuotaError(f"{name} must be a number. Received: {raw!r}.") from None
    if value < 0:
        raise QuotaError(f"{name} cannot be negative. Received: {raw!r}.")
    return value


def limits() -> Limits:
    """The limits set now (see the module docstring)."""
    min_free = _number(MIN_FREE_ENV, DEFAULT_MIN_FREE_MB)
    workspace_max = _number(WORKSPACE_MAX_ENV, None)
    max_epochs = _number(MAX_EPOCHS_ENV, None)
    minutes = _number(MAX_RUN_MINUTES_ENV, None)
    running = _number(MAX_RUNNING_PER_USER_ENV, None)
    queued = _number(MAX_QUEUED_PER_USER_ENV, None)
    return Limits(
        min_free_bytes=int(min_free * 1024**2),
        workspace_max_bytes=None if workspace_max is None else int(workspace_max * 1024**3),
        max_epochs=None if max_epochs is None else int(max_epochs),
        max_run_seconds=None if minutes is None else minutes * 60,
        max_running_per_user=None if running is None else max(1, int(running)),
        max_queued_per_user=None if queued is None else int(queued),
    )


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


_usage_cache: dict[str, tuple[float, int]] = {}


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def workspace_usage(ws: Workspace, *, fresh: bool = False) -> int:
    """Bytes the workspace holds (measured at most once a minute unless ``fresh``)."""
    key = str(ws.root)
    cached = _usage_cache.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < USAGE_CACHE_S:
        return cached[1]
    size = folder_size(ws.root)
    _usage_cache[key] = (time.monotonic(), size)
    return size


def check_room(ws: Workspace, action: str) -> None:
    """Refuses ``action`` ("import", "run") when the disk or the workspace is too full.

    Raises:
        QuotaError: saying how much is free or used, the limit, and what to do.
    """
    current = limits()
    try:
        free = shutil.disk_usage(ws.root).free
    except OSError:
        free = None  # cannot tell: the write itself will report a full disk
    what = "No import can start" if action == "import" else "No run can start"
    if free is not None and free < current.min_free_bytes:
        raise QuotaError(
            f"{what}: only {human_size(free)} is free on the disk that holds the workspace "
            f"(at least {human_size(current.min_free_bytes)} must stay free). Remove cached "
            "features, old checkpoints or datasets you no longer need (Home → Storage), or "
            "ask the administrator for more space."
        )
    if current.workspace_max_bytes is not None:
        used = workspace_usage(ws)
        if used >= current.workspace_max_bytes:
            raise QuotaError(
                f"{what}: the workspace holds {human_size(used)}, its limit on this server is "
                f"{human_size(current.workspace_max_bytes)} ({WORKSPACE_MAX_ENV}). Remove "
                "cached features, old checkpoints or datasets you no longer need (Home → "
                "Storage), or ask the administrator to raise the limit."
            )


def check_epochs(epochs: int) -> None:
    """Refuses a run that would train more epochs than this server allows."""
    most = limits().max_epochs
    if most is not None and epochs > most:
        raise QuotaError(
            f"This server allows at most {most} epochs per run ({MAX_EPOCHS_ENV}); the run "
            f"asks for {epochs}. Lower the epochs, or ask the administrator."
        )


def check_queued(waiting: int) -> None:
    """Refuses one more queued run for a person who has ``waiting`` in the queue already."""
    most = limits().max_queued_per_user
    if most is not None and waiting >= most:
        raise QuotaError(
            f"You have {waiting} run{'s' if waiting != 1 else ''} waiting in the queue; this "
            f"server allows {most} per person ({MAX_QUEUED_PER_USER_ENV}). Wait for one to "
            "start, or cancel one on the Training page."
        )


def over_time(started_at: float | None, now: float | None = None) -> bool:
    """Whether a run that started at ``started_at`` has trained past the time limit."""
    most = limits().max_run_seconds
    if most is None or started_at is None:
        return False
    return (now or time.time()) - started_at > most
