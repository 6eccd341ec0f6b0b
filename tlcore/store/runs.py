"""The run folder: the one record of a training run.

Each run is a folder ``<workspace>/runs/<run_id>/`` holding:

- ``config.json``     the frozen `RunConfig` (written once, at creation);
- ``status.json``     its state and timestamps (`RunStatus`), replaced atomically;
- ``progress.jsonl``  append-only events (phase, batch, epoch), flushed per record;
- ``cancel.request``  present once a user asked to stop the run;
- later: ``model.keras``, ``metrics.json``, ``history.json``, ``logs/`` (TensorBoard).

The folders are the source of truth; `tlcore.store.index` only makes listing fast.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tlcore.config import RunConfig
from tlcore.fileio import JsonlTail, append_jsonl, atomic_write_json, read_json
from tlcore.store import index
from tlcore.store.run_layout import (  # noqa: F401 - the run folder's names, used as runs.X
    CANCEL_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PROGRESS_FILE,
    STATUS_FILE,
)
from tlcore.store.workspace import Workspace, is_run_id

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = (
    "queued",
    "running",
    "finished",
    "failed",
    "cancelled",
    "interrupted",
)
UNREADABLE = "unreadable"  # not a state a run can be in: the listing's word for a broken folder
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (FINISHED, FAILED, CANCELLED, INTERRUPTED)

# Which state may follow which. Interrupted and cancelled runs may be queued again (resume).
TRANSITIONS = {
    QUEUED: {RUNNING, CANCELLED, FAILED},
    RUNNING: {FINISHED, FAILED, CANCELLED, INTERRUPTED},
    INTERRUPTED: {QUEUED},
    CANCELLED: {QUEUED},
    FAILED: set(),
    FINISHED: set(),
}


class RunNotFoundError(LookupError):
    """No run folder with that id."""


class InvalidTransitionError(ValueError):
    """A status change that the run's lifecycle does not allow."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunStatus:
    """The contents of ``status.json``."""

    state: str
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    pid: int | None = None
    pid_started: float | None = None  # the process' start time, to tell a reused pid apart
    resumes: int = 0
    summary: dict = field(default_factory=dict)  # final metrics for listings
    owner: str | None = None  # who started it (None: the command line, or before owners)

    @classmethod
    def from_dict(cls, data: dict) -> RunStatus:
        if not isinstance(data, dict) or data.get("state") not in STATES:
            state = data.get("state") if isinstance(data, dict) else None
            raise ValueError(f"status.json has no valid state. Received: state={state!r}")
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        for name, kinds in _STATUS_TYPES.items():
            if name not in values:
                continue  # a required one missing: the constructor says so
            value = values[name]
            if not (value is None and name in _STATUS_OPTIONAL) and (
                not isinstance(value, kinds) or isinstance(value, bool)
            ):
                raise ValueError(
                    f"status.json has a {name} of the wrong type. Received: {name}={value!r}"
                )
        for key, value in values.get("summary", {}).items():
            if key in _SUMMARY_NUMBERS and value is not None and not _is_number(value):
                raise ValueError(
                    f"status.json's summary has a {key} that is not a number. "
                    f"Received: {key}={value!r}"
                )
        return cls(**values)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What each field of ``status.json`` must hold (checked on every read: the file is data).
_STATUS_TYPES = {
    "created_at": str,
    "updated_at": str,
    "started_at": str,
    "finished_at": str,
    "error": str,
    "pid": int,
    "pid_started": int | float,
    "resumes": int,
    "summary": dict,
    "owner": str,
}
_STATUS_OPTIONAL = {"started_at", "finished_at", "error", "pid", "pid_started", "owner"}
# Summary entries that listings format as numbers.
_SUMMARY_NUMBERS = {
    "val_accuracy",
    "test_accuracy",
    "best_val_accuracy",
    "kept_epoch",
    "epochs_completed",
    "train_seconds",
    "trainable_params",
    "total_params",
}


@dataclass(frozen=True)
class RunRecord:
    """One run as read back from its folder. ``problem`` is set when the folder is broken."""

    id: str
    dir: Path
    config: RunConfig | None
    status: RunStatus | None
    problem: str | None = None

    @property
    def state(self) -> str:
        return self.status.state if self.status else UNREADABLE

    @property
    def owner(self) -> str | None:
        """Who started the run (a user name), or None when nobody is recorded."""
        return self.status.owner if self.status else None

    @property
    def title(self) -> str:
        """What people call the run: its name, else "<backbone> on <dataset>", else its id."""
        cfg = self.config
        if cfg is None:
            return self.id
        return cfg.name.strip() or f"{cfg.backbone} on {cfg.dataset}"

    @property
    def short_title(self) -> str:
        """`title` without the dataset in front ("sweep 2 · fine-tune top" for "flowers ·
        sweep 2 · fine-tune top"), for lists that show the dataset beside it."""
        title = self.title
        lead = f"{self.config.dataset} · " if self.config is not None else ""
        return title[len(lead) :] if lead and title.startswith(lead) else title


def new_run_id() -> str:
    """A sortable, unique id: creation time to the microsecond plus a random suffix.

    Runs created in the same second (a sweep) still sort, and so queue, in creation order.
    """
    now = datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond:05x}{secrets.token_hex(1)}"


def create_run(ws: Workspace, config: RunConfig, *, owner: str | None = None) -> RunRecord:
    """Creates a run folder in state ``queued`` with its config. Does not start it.

    ``owner`` (default None: nobody, as from the command line) is kept in ``status.json``.
    """
    run_id = new_run_id()
    run_dir = ws.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    config.save(run_dir / CONFIG_FILE)
    stamp = now_iso()
    status = RunStatus(state=QUEUED, created_at=stamp, updated_at=stamp, owner=owner)
    _write_status(ws, run_id, status, config)
    return RunRecord(run_id, run_dir, config, status)


def _write_status(ws: Workspace, run_id: str, status: RunStatus, config: RunConfig | None) -> None:
    atomic_write_json(ws.run_dir(run_id) / STATUS_FILE, asdict(status))
    _index_quietly(ws, run_id, asdict(status), config.to_dict() if config else None)


def _index_quietly(ws: Workspace, run_id: str, status: dict, config, **stamp) -> None:
    """Records a run in the index, which is only a cache: a full disk or a locked database
    must not fail a status change already written, nor a listing (the stamp no longer
    matching, the folder is read next time)."""
    try:
        index.record_run(ws, run_id, status, config, **stamp)
    except (OSError, sqlite3.Error):
        pass


def read_run(ws: Workspace, run_id: str) -> RunRecord:
    """Reads a run folder. A broken config or status gives a record with ``problem`` set.

    Raises:
        RunNotFoundError: there is no folder for ``run_id``.
    """
    run_dir = ws.run_dir(run_id) if is_run_id(run_id) else None
    if run_dir is None or not run_dir.is_dir():
        raise RunNotFoundError(
            f"No run with id {_shown(run_id)} in {ws.runs_dir}. "
            "`python -m tlcore runs list` shows the runs."
        )
    problems = []
    config = status = None
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
    except FileNotFoundError:
        problems.append("config.json is missing")
    except (OSError, ValueError) as exc:
        problems.append(f"config.json is unreadable: {exc}")
    try:
        status = RunStatus.from_dict(read_json(run_dir / STATUS_FILE))
    except FileNotFoundError:
        problems.append("status.json is missing")
    except (OSError, ValueError, TypeError) as exc:
        problems.append(f"status.json is unreadable: {exc}")
    return RunRecord(run_id, run_dir, config, status, "; ".join(problems) or None)


def _shown(run_id: object, limit: int = 80) -> str:
    """An id as quoted in a message, cut short when it is longer than any id can be."""
    text = repr(run_id)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def set_state(ws: Workspace, run_id: str, state: str, **changes) -> RunStatus:
    """Moves a run to ``state``, checking the transition, stamping times, writing atomically."""
    record = read_run(ws, run_id)
    if record.status is None:
        raise InvalidTransitionError(f"Run {run_id} cannot change state: {record.problem}")
    current = record.status.state
    if state not in TRANSITIONS[current]:
        raise InvalidTransitionError(f"Run {run_id} is {current}; it cannot become {state}.")
    stamp = now_iso()
    data = asdict(record.status) | changes | {"state": state, "updated_at": stamp}
    if state == RUNNING:
        data["started_at"] = data.get("started_at") or stamp
        data["finished_at"] = None
        data["error"] = None
    elif state in FINAL_STATES:
        data["finished_at"] = stamp
        data["pid"] = None
        data["pid_started"] = None
    elif state == QUEUED:
        data.update(finished_at=None, error=None, pid=None, pid_started=None)
        data["resumes"] = record.status.resumes + 1
    status = RunStatus.from_dict(data)
    _write_status(ws, run_id, status, record.config)
    return status


def list_run_ids(ws: Workspace) -> list[str]:
    """Ids of every run folder, newest first."""
    try:
        entries = [
            e.name for e in os.scandir(ws.runs_dir) if e.is_dir() and not e.name.startswith(".")
        ]
    except FileNotFoundError:
        return []
    return sorted(entries, reverse=True)


def list_runs(ws: Workspace) -> list[RunRecord]:
    """Every run, newest first; broken folders are included with their ``problem``.

    Rows of the index are used where the run's ``status.json`` has not changed since it
    was indexed; other folders are read and re-indexed.
    """
    try:
        cached = index.cached_runs(ws)
    except (OSError, sqlite3.Error):  # no room for the index, or it is damaged: read folders
        cached = {}
    records = []
    for run_id in list_run_ids(ws):
        hit = cached.get(run_id)
        stamp = index.run_files_stamp(ws, run_id)  # before reading: see `index.record_run`
        if hit is not None and hit[2] == stamp and hit[1] is not None:
            status, config, _ = hit
            records.append(
                RunRecord(
                    run_id,
                    ws.run_dir(run_id),
                    RunConfig.from_dict(config),
                    RunStatus.from_dict(status),
                )
            )
            continue
        record = read_run(ws, run_id)
        if record.status is not None and record.config is not None:
            _index_quietly(ws, run_id, asdict(record.status), record.config.to_dict(), stamp=stamp)
        records.append(record)
    return records


# -- progress log and cancel request ---------------------------------------------
def append_progress(run_dir: Path, event: str, **fields) -> None:
    append_jsonl(Path(run_dir) / PROGRESS_FILE, {"event": event, "time": now_iso(), **fields})


_progress_tail = JsonlTail()


def read_progress(run_dir: Path) -> list[dict]:
    """The run's progress events, oldest first (parsed incrementally across calls)."""
    return _progress_tail.read(Path(run_dir) / PROGRESS_FILE)


def request_cancel(run_dir: Path) -> None:
    """Leaves the cancel mark the worker checks between batches. Idempotent."""
    path = Path(run_dir) / CANCEL_FILE
    if not path.exists():
        atomic_write_json(path, {"requested_at": now_iso()})


def cancel_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / CANCEL_FILE).exists()


def clear_cancel(run_dir: Path) -> None:
    try:
        (Path(run_dir) / CANCEL_FILE).unlink()
    except FileNotFoundError:
        pass


def read_metrics(run_dir: Path) -> dict:
    try:
        return read_json(Path(run_dir) / METRICS_FILE)
    except (OSError, ValueError):
        return {}


def index_rows(ws: Workspace):
    """``(run id, status, config or None, stamp)`` of every readable run, for
    `index.rebuild`; the stamp is taken before the folder is read (see `index.record_run`)."""
    for run_id in list_run_ids(ws):
        stamp = index.run_files_stamp(ws, run_id)
        record = read_run(ws, run_id)
        if record.status is not None:
            yield (
                run_id,
                dict(record.status.__dict__),
                record.config.to_dict() if record.config else None,
                stamp,
            )


def epoch_history(run_dir: Path) -> list[dict]:
    """One row per completed epoch across phases and resumes (the last record wins)."""
    rows: dict[int, dict] = {}
    for event in read_progress(run_dir):
        if event.get("event") == "epoch_end":
            rows[event["epoch"]] = {
                "epoch": event["epoch"],
                "phase": event.get("phase", 1),
                "seconds": event.get("seconds"),
            } | event.get("logs", {})
    return [rows[k] for k in sorted(rows)]


def run_row(record: RunRecord) -> dict:
    """A run as a flat row for tables (the CLI's and the Home page's)."""
    cfg, st = record.config, record.status
    summary = st.summary if st else {}
    return {
        "id": record.id,
        "name": cfg.name if cfg else "",
        "state": UNREADABLE if record.problem else record.state,
        "dataset": cfg.dataset if cfg else "",
        "backbone": cfg.backbone if cfg else "",
        "strategy": cfg.strategy if cfg else "",
        "val_accuracy": summary.get("val_accuracy"),
        "test_accuracy": summary.get("test_accuracy"),
        "kept_epoch": summary.get("kept_epoch"),
        "epochs": summary.get("epochs_completed"),
        "created": st.created_at if st else "",
        "owner": record.owner or "",
        "problem": record.problem or (st.error if st else "") or "",
    }
