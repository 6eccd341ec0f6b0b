"""Background tasks of a run: evaluating it and exporting it, each in its own process.

Evaluating a run or exporting its model loads Keras and takes seconds to minutes, which the
web server must neither hold in memory nor block a session for. A page calls `start`, which
records the task under ``<run>/tasks/<id>.json`` and starts ``python -m tlcore evaluate|export
RUN --task ID`` detached; that process reports through a `TaskReporter` (progress, then the
result or the error) into the same file. Any tab, or the CLI, reads it back with `latest`.

The file is written by the parent once (``starting``) and from then on only by the task's own
process, so the two never overwrite each other's news. A task whose process is gone while the
file still says it is working is read as failed, with a message saying so.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tlcore.fileio import atomic_write_json, read_json
from tlcore.store import jobs
from tlcore.store.run_layout import TASKS_DIR
from tlcore.store.workspace import Workspace, is_dataset_id

KINDS = ("evaluate", "export", "suspects")
# A task belongs to a run (its id) or to a dataset ("dataset:<id>", see `dataset_subject`).
DATASET_SUBJECT = "dataset:"
STARTING, RUNNING, FINISHED, FAILED = "starting", "running", "finished", "failed"
ACTIVE = (STARTING, RUNNING)
START_TIMEOUT_S = 120.0  # a task that has not reported its process by then never started
REPORT_EVERY_S = 0.3  # progress is written at most this often (the end always is)
KEEP_PER_RUN = 20  # older finished task files of a run are removed when a new one starts
LOST_MESSAGE = (
    "The {kind} process stopped before it finished (killed, out of memory, or the server "
    "restarted). Start it again."
)
NOT_STARTED_MESSAGE = (
    "The {kind} process did not start. Start it again; if it keeps failing, see {log}."
)


@dataclass(frozen=True)
class Task:
    """One background task of a run, as last reported.

    Attributes:
        id: unique within the run, sortable by start time.
        kind: one of `KINDS`.
        key: what the task works on within its kind (e.g. the dataset evaluated on); a second
            `start` with the same kind and key while one is active returns that one.
        state: ``starting``, ``running``, ``finished`` or ``failed``.
        fraction: progress, 0 to 1.
        message: what it is doing now (or the error, once failed).
        result: what it made (JSON), once finished.
    """

    id: str
    run_id: str
    kind: str
    key: str
    state: str
    created_at: float
    updated_at: float
    fraction: float = 0.0
    message: str = ""
    result: dict = field(default_factory=dict)
    pid: int | None = None
    pid_started: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def failed(self) -> bool:
        return self.state == FAILED


def dataset_subject(dataset_id: str) -> str:
    """What a dataset's tasks are filed under, where a run's are under its id."""
    return f"{DATASET_SUBJECT}{dataset_id}"


def _folder(ws: Workspace, run_id: str) -> Path:
    if run_id.startswith(DATASET_SUBJECT):
        dataset_id = run_id.removeprefix(DATASET_SUBJECT)
        if not is_dataset_id(dataset_id):
            raise ValueError(f"Not a dataset id: {dataset_id!r}.")
        return ws.cache_dir / "dataset-tasks" / dataset_id
    return ws.run_dir(run_id) / TASKS_DIR


def _subject_exists(ws: Workspace, run_id: str) -> bool:
    if run_id.startswith(DATASET_SUBJECT):
        return ws.dataset_dir(run_id.removeprefix(DATASET_SUBJECT)).is_dir()
    return ws.run_dir(run_id).is_dir()


def _path(ws: Workspace, run_id: str, task_id: str) -> Path:
    if not task_id or "/" in task_id or task_id.startswith("."):
        raise ValueError(f"Not a task id: {task_id!r}.")
    return _folder(ws, run_id) / f"{task_id}.json"


def log_path(ws: Workspace, run_id: str, task_id: str) -> Path:
    """Where the task process's own output goes (for a maintainer, when it fails oddly)."""
    return _path(ws, run_id, task_id).with_suffix(".log")


def _from_file(data: dict) -> Task:
    return Task(
        id=str(data["id"]),
        run_id=str(data["run_id"]),
        kind=str(data["kind"]),
        key=str(data.get("key", "")),
        state=str(data["state"]),
        created_at=float(data["created_at"]),
        updated_at=float(data.get("updated_at", data["created_at"])),
        fraction=float(data.get("fraction") or 0.0),
        message=str(data.get("message") or ""),
        result=data.get("result") if isinstance(data.get("result"), dict) else {},
        pid=int(data["pid"]) if data.get("pid") else None,
        pid_started=float(data["pid_started"]) if data.get("pid_started") else None,
    )


def _as_seen_now(ws: Workspace, task: Task) -> Task:
    """The task, read as failed when the file says it works but its process is gone."""
    if not task.active:
        return task
    kind = task.kind
    if task.pid is None:
        if time.time() - task.created_at < START_TIMEOUT_S:
            return task
        message = NOT_STARTED_MESSAGE.format(kind=kind, log=log_path(ws, task.run_id, task.id))
    elif jobs.process_alive(task.pid, task.pid_started):
        return task
    else:
        message = LOST_MESSAGE.format(kind=kind)
    return Task(**{**task.__dict__, "state": FAILED, "message": message})


def read_task(ws: Workspace, run_id: str, task_id: str) -> Task:
    """One task as it stands now. Raises LookupError when there is no such task."""
    try:
        data = read_json(_path(ws, run_id, task_id))
        return _as_seen_now(ws, _from_file(data))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LookupError(f"No readable task {task_id!r} for run {run_id}: {exc}") from None


def list_tasks(ws: Workspace, run_id: str, kind: str | None = None) -> list[Task]:
    """The run's tasks, newest first; unreadable files are skipped."""
    found = []
    for path in sorted(_folder(ws, run_id).glob("*.json"), reverse=True):
        try:
            task = _from_file(read_json(path))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if kind is None or task.kind == kind:
            found.append(_as_seen_now(ws, task))
    return found


def latest(ws: Workspace, run_id: str, kind: str, key: str | None = None) -> Task | None:
    """The newest task of ``kind`` (and ``key``, when given) for a run, or None."""
    for task in list_tasks(ws, run_id, kind):
        if key is None or task.key == key:
            return task
    return None


def start(ws: Workspace, run_id: str, kind: str, cli_args: list[str], *, key: str = "") -> Task:
    """Starts ``python -m tlcore CLI_ARGS --task ID`` for a run, unless one is already at it.

    Args:
        ws: the workspace.
        run_id: the run the task belongs to (its folder must exist).
        kind: one of `KINDS`; also the CLI command (``cli_args[0]``).
        cli_args: the command line after ``python -m tlcore --workspace WS``.
        key: see `Task.key`.

    Returns:
        The new task (``starting``), or the active one with the same kind and key.
    """
    if kind not in KINDS or kind not in cli_args[:2]:
        raise ValueError(f"A task runs one of {', '.join(KINDS)}; received {cli_args!r}.")
    if not _subject_exists(ws, run_id):
        raise LookupError(f"No run or dataset {run_id!r} in this workspace.")
    with jobs.scheduler_lock(ws):
        running = latest(ws, run_id, kind, key)
        if running is not None and running.active:
            return running
        _forget_old(ws, run_id)
        now = time.time()
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        task_id = f"{stamp}-{kind}-{secrets.token_hex(3)}"
        record = {
            "id": task_id,
            "run_id": run_id,
            "kind": kind,
            "key": key,
            "state": STARTING,
            "created_at": now,
            "updated_at": now,
            "message": "Starting",
        }
        path = _path(ws, run_id, task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    jobs.start_cli(ws, *cli_args, "--task", task_id, log=log_path(ws, run_id, task_id))
    return _from_file(record)


def _forget_old(ws: Workspace, run_id: str) -> None:
    done = [t for t in list_tasks(ws, run_id) if not t.active]
    for task in done[KEEP_PER_RUN:]:
        _path(ws, run_id, task.id).unlink(missing_ok=True)
        log_path(ws, run_id, task.id).unlink(missing_ok=True)


class TaskReporter:
    """Used by the task's own process: reports progress, then the result or the error.

    ``with TaskReporter(ws, run_id, task_id) as report: ... report.finish(result)``; an
    exception leaving the block marks the task failed with the exception's message (and is
    re-raised, so the CLI prints it as it always does).
    """

    def __init__(self, ws: Workspace, run_id: str, task_id: str):
        self._path = _path(ws, run_id, task_id)
        self._data = read_json(self._path)
        self._last_write = 0.0

    def __enter__(self) -> TaskReporter:
        pid = os.getpid()
        self._write(state=RUNNING, pid=pid, pid_started=jobs.process_start_time(pid))
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and self._data["state"] in ACTIVE:
            self.fail(failure_message(exc))
        elif self._data["state"] in ACTIVE:
            self.finish({})
        return False

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_write < REPORT_EVERY_S and fraction < 1.0:
            return
        self._write(fraction=min(max(float(fraction), 0.0), 1.0), message=str(message))

    def finish(self, result: dict) -> None:
        self._write(state=FINISHED, fraction=1.0, message="Done", result=result)

    def fail(self, message: str) -> None:
        self._write(state=FAILED, message=message)

    def _write(self, **changes) -> None:
        self._data.update(changes, updated_at=time.time())
        atomic_write_json(self._path, self._data)
        self._last_write = time.monotonic()


def failure_message(exc: BaseException) -> str:
    """What a person reads when a task ended with ``exc``: its own message when it has one
    (the studio's errors say what happened and what to do), else its type."""
    strerror = getattr(exc, "strerror", None)
    text = strerror if isinstance(strerror, str) and strerror else str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return text or f"{type(exc).__name__} (no message)"
