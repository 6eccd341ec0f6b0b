"""The job runner: starts, queues, cancels and reconciles training processes.

Training never runs inside the web server: each run is a separate OS process
(``python -m tlcore.training.worker``) in its own session, so it outlives a closed browser or a
restarted server. There is no daemon. `schedule` is called when a run is submitted,
when a worker ends and when the app or CLI starts; under a workspace-wide file lock it

1. marks ``running`` runs whose process is gone as ``interrupted``, and
2. starts the oldest ``queued`` runs while fewer than the concurrency limit are running.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil

from tlcore.config import RunConfig
from tlcore.store import runs
from tlcore.store.run_layout import WORKER_LOG
from tlcore.store.workspace import Workspace

MAX_CONCURRENT_ENV = "TLS_MAX_CONCURRENT_RUNS"
DEFAULT_MAX_CONCURRENT = 1
LOCK_FILE = ".scheduler.lock"
LOST_WORKER_MESSAGE = (
    "The training process stopped unexpectedly (killed, or the machine restarted). "
    "Resume continues from the last completed epoch."
)

# Workers this process started; polled so that ended ones are reaped, not left as zombies.
_children: list[subprocess.Popen] = []


def max_concurrent_runs() -> int:
    """How many trainings may run at once: ``$TLS_MAX_CONCURRENT_RUNS``, default 1."""
    raw = os.environ.get(MAX_CONCURRENT_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_MAX_CONCURRENT
    except ValueError:
        raise ValueError(
            f"{MAX_CONCURRENT_ENV} must be a whole number of runs. Received: {raw!r}"
        ) from None
    if value < 1:
        raise ValueError(f"{MAX_CONCURRENT_ENV} must be at least 1. Received: {raw!r}")
    return value


@contextmanager
def scheduler_lock(ws: Workspace):
    """Serialises state changes that must not interleave across processes."""
    with open(ws.root / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def process_alive(pid: int | None, pid_started: float | None) -> bool:
    """Whether process ``pid`` still exists, is not a zombie and, when ``pid_started`` is
    known, is the same process (a pid can be reused once its process has ended)."""
    if not pid:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return pid_started is None or abs(started - pid_started) < 1.0


def worker_alive(status: runs.RunStatus) -> bool:
    """Whether the process recorded for a running run still exists (and is the same one)."""
    return process_alive(status.pid, status.pid_started)


def child_environment() -> tuple[dict, str]:
    """``(environment, working folder)`` for a ``python -m tlcore…`` child process: it finds
    this package whatever folder the parent was started from."""
    project_root = str(Path(__file__).resolve().parents[2])  # tlcore/store/jobs.py → the repo
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    return env, project_root


def start_cli(ws: Workspace, *args: str, log: Path | None = None) -> None:
    """Starts ``python -m tlcore --workspace WS ARGS...`` detached.

    For jobs a page must not wait for (a speed calibration, an architecture preview, a
    run's evaluation or export); each writes its result into the workspace, where the page
    reads it back. Its output goes to ``log`` when given, else nowhere.
    """
    env, cwd = child_environment()
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        child = subprocess.Popen(  # our own module; the arguments come from validated values
            [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"},
            cwd=cwd,
        )
    _children.append(child)
    reap_children()


def submit(ws: Workspace, config: RunConfig) -> str:
    """Creates a run and starts it now, or queues it if the concurrency limit is reached.

    Returns at once with the run id; training happens in another process.
    """
    record = runs.create_run(ws, config)
    schedule(ws)
    return record.id


def resume(ws: Workspace, run_id: str) -> None:
    """Queues an interrupted or cancelled run again; it continues from its last epoch."""
    with scheduler_lock(ws):
        record = runs.read_run(ws, run_id)
        if record.state not in (runs.INTERRUPTED, runs.CANCELLED):
            raise runs.InvalidTransitionError(
                f"Run {run_id} is {record.state}; only interrupted or cancelled runs can resume."
            )
        runs.clear_cancel(record.dir)
        runs.set_state(ws, run_id, runs.QUEUED)
        runs.append_progress(record.dir, "resume_requested")
    schedule(ws)


def cancel(ws: Workspace, run_id: str) -> str:
    """Asks a run to stop. Idempotent: cancelling a cancelled or ended run changes nothing.

    A queued run becomes ``cancelled`` at once; a running one stops at its next batch,
    keeping its best checkpoint, and then becomes ``cancelled``. Returns the run's state
    after the request.
    """
    with scheduler_lock(ws):
        record = runs.read_run(ws, run_id)
        if record.state == runs.QUEUED:
            runs.request_cancel(record.dir)
            runs.set_state(ws, run_id, runs.CANCELLED)
            return runs.CANCELLED
        if record.state == runs.RUNNING:
            runs.request_cancel(record.dir)
        return record.state


def reconcile(ws: Workspace) -> list[str]:
    """Marks runs whose worker died as ``interrupted``. Returns their ids. Takes the lock."""
    with scheduler_lock(ws):
        return _reconcile_locked(ws)


def _reconcile_locked(ws: Workspace) -> list[str]:
    lost = []
    for record in runs.list_runs(ws):
        if record.state == runs.RUNNING and not worker_alive(record.status):
            runs.set_state(
                ws,
                record.id,
                runs.INTERRUPTED,
                error=LOST_WORKER_MESSAGE,
            )
            runs.append_progress(record.dir, "interrupted")
            lost.append(record.id)
    return lost


def reap_children() -> None:
    """Collects the exit status of ended children, so none lingers as a zombie."""
    _children[:] = [child for child in _children if child.poll() is None]


def schedule(ws: Workspace) -> list[str]:
    """Reconciles, then starts queued runs up to the concurrency limit. Returns started ids."""
    limit = max_concurrent_runs()
    started = []
    reap_children()
    with scheduler_lock(ws):
        _reconcile_locked(ws)
        records = runs.list_runs(ws)
        active = sum(1 for r in records if r.state == runs.RUNNING)
        queued = sorted((r for r in records if r.state == runs.QUEUED), key=lambda r: r.id)
        for record in queued[: max(0, limit - active)]:
            _spawn_worker(ws, record)
            started.append(record.id)
    return started


def _spawn_worker(ws: Workspace, record: runs.RunRecord) -> None:
    """Starts the worker process for a queued run and marks the run ``running``.

    Called with the scheduler lock held, so the worker cannot write its final status
    before this ``running`` status is on disk (it takes the same lock to do so).
    """
    log_path = record.dir / WORKER_LOG
    env, project_root = child_environment()
    env["TLS_WORKSPACE"] = str(ws.root)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlcore.training.worker", str(ws.root), record.id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=project_root,
            start_new_session=True,  # survives the server and the terminal that started it
            close_fds=True,
        )
    _children.append(proc)
    runs.set_state(
        ws, record.id, runs.RUNNING, pid=proc.pid, pid_started=process_start_time(proc.pid)
    )
    runs.append_progress(record.dir, "worker_started", pid=proc.pid)


def wait_for(ws: Workspace, run_id: str, *, timeout: float | None = None, poll: float = 0.5):
    """Blocks until a run reaches a final state; returns its record. For the CLI and tests."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = runs.read_run(ws, run_id)
        if record.state in runs.FINAL_STATES or record.status is None:
            return record
        if record.state == runs.RUNNING and not worker_alive(record.status):
            reconcile(ws)
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"Run {run_id} is still {record.state} after {timeout} s.")
        time.sleep(poll)
