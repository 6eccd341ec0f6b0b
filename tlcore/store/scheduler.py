"""The workspace's scheduler: one long-lived process that keeps the queue moving.

``python -m tlcore scheduler`` (started by the app when none is alive) runs `serve` until
SIGTERM. Every second it reconciles and schedules (`jobs.schedule`): a run whose worker died
is marked ``interrupted``, and queued runs start as soon as a slot is free — also after a
server restart or a reboot, since everything it needs is in the run folders. Without it the
queue still moves when a worker ends or a page is opened; with it, it never waits for that.

It also keeps one *warm worker* (`tlcore.training.worker --warm`): a process that has already
imported TensorFlow and waits to be handed a run, so a run starts in about a second instead of
paying the import again (`jobs` hands a queued run to it when one is ready).

Only one scheduler serves a workspace: it holds an exclusive lock on ``.scheduler.daemon.lock``
for its lifetime, and writes a heartbeat to ``cache/scheduler.json`` that `status` reads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tlcore.fileio import atomic_write_json, read_json
from tlcore.store import jobs, quotas, runs, studio_log
from tlcore.store.workspace import Workspace

DAEMON_LOCK = ".scheduler.daemon.lock"
STATE_FILE = "scheduler.json"  # in the workspace's cache folder
POLL_S = 1.0
HEARTBEAT_STALE_S = 15.0  # a heartbeat older than this: the scheduler is hung or gone
WARM_ENV = "TLS_WARM_WORKER"  # "0": no warm worker (saves its memory, ~0.5 GB)
AUTOSTART_ENV = "TLS_SCHEDULER"  # "off": the app does not start a scheduler (tests)
WARM_RESTART_PAUSE_S = 30.0  # a warm worker that died young is not restarted in a tight loop
TIME_LIMIT_EVENT = "time_limit"  # in a run's progress log: stopped at TLS_MAX_RUN_MINUTES

log = logging.getLogger("tlcore.scheduler")


@dataclass(frozen=True)
class SchedulerStatus:
    """What the scheduler last said about itself (see `status`)."""

    alive: bool
    pid: int | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    warm_worker_pid: int | None = None
    last_error: str | None = None
    last_error_at: float | None = None


def _state_path(ws: Workspace) -> Path:
    return ws.cache_dir / STATE_FILE


def status(ws: Workspace) -> SchedulerStatus:
    """Whether a scheduler serves ``ws`` now (its process exists and its heartbeat is fresh)."""
    try:
        data = read_json(_state_path(ws))
    except (OSError, ValueError):
        return SchedulerStatus(alive=False)
    if not isinstance(data, dict):
        return SchedulerStatus(alive=False)
    pid, beat = data.get("pid"), data.get("heartbeat_at")
    alive = (
        isinstance(pid, int)
        and jobs.process_alive(pid, data.get("pid_started"))
        and isinstance(beat, int | float)
        and time.time() - beat < HEARTBEAT_STALE_S
    )
    return SchedulerStatus(
        alive=bool(alive),
        pid=pid if isinstance(pid, int) else None,
        started_at=data.get("started_at"),
        heartbeat_at=beat,
        warm_worker_pid=data.get("warm_worker_pid") if alive else None,
        last_error=data.get("last_error"),
        last_error_at=data.get("last_error_at"),
    )


def autostart_enabled() -> bool:
    return os.environ.get(AUTOSTART_ENV, "").strip().lower() not in ("off", "0", "no")


def ensure_running(ws: Workspace) -> bool:
    """Starts a scheduler for ``ws`` in the background unless one is alive. True if started.

    Two callers racing here may both start one; the second finds the lock taken and exits.
    """
    if status(ws).alive or _lock_taken(ws):
        return False
    jobs.start_cli(ws, "scheduler", log=studio_log.log_dir(ws) / "scheduler.out")
    return True


def _lock_taken(ws: Workspace) -> bool:
    with open(ws.root / DAEMON_LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


class _Stop(Exception):
    pass


def serve(ws: Workspace, *, poll_s: float = POLL_S, warm: bool | None = None) -> int:
    """Runs the scheduler in this process until SIGTERM/SIGINT. Returns an exit code.

    Returns 0 at once (saying so) when another scheduler already serves the workspace.
    """
    studio_log.configure(ws)
    with open(ws.root / DAEMON_LOCK, "a+") as lock:  # locked for as long as this process serves
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = status(ws)
            print(f"A scheduler already serves {ws.root} (pid {other.pid}).", file=sys.stderr)
            return 0
        return _serve_locked(ws, poll_s, warm)


def _serve_locked(ws: Workspace, poll_s: float, warm: bool | None) -> int:
    warm = (os.environ.get(WARM_ENV, "1") != "0") if warm is None else warm
    stopping = {"now": False}

    def on_signal(signum, frame):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    me = os.getpid()
    state = {
        "pid": me,
        "pid_started": jobs.process_start_time(me),
        "started_at": time.time(),
        "warm_worker_pid": None,
        "last_error": None,
        "last_error_at": None,
    }
    warm_worker: subprocess.Popen | None = None
    warm_started_at = 0.0
    log.info("scheduler started for %s (pid %d, warm worker %s)", ws.root, me, warm)
    try:
        while not stopping["now"]:
            try:
                started = jobs.schedule(ws)
                if started:
                    log.info("started %s", ", ".join(started))
                _stop_runs_over_time(ws)
                if warm:
                    warm_worker, warm_started_at = _keep_warm(ws, warm_worker, warm_started_at)
            except Exception as exc:  # the loop must outlive any one bad run folder
                log.exception("scheduling failed")
                state["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
                state["last_error_at"] = time.time()
            state["warm_worker_pid"] = warm_worker.pid if warm_worker else None
            state["heartbeat_at"] = time.time()
            try:
                atomic_write_json(_state_path(ws), state)
            except OSError:
                log.exception("could not write the heartbeat")
            _sleep(poll_s, stopping)
    finally:
        if warm_worker is not None and warm_worker.poll() is None:
            warm_worker.terminate()  # idle: it has no run to lose
            try:
                warm_worker.wait(10)
            except subprocess.TimeoutExpired:
                warm_worker.kill()
        _state_path(ws).unlink(missing_ok=True)
        log.info("scheduler stopped")
    return 0


def _stop_runs_over_time(ws: Workspace) -> list[str]:
    """Asks runs that trained past ``TLS_MAX_RUN_MINUTES`` to stop (they keep their best
    model, as when a person stops them), noting why in their progress log."""
    stopped = []
    for record in runs.list_runs(ws):
        status = record.status
        if record.state != runs.RUNNING or status is None or runs.cancel_requested(record.dir):
            continue
        if quotas.over_time(status.pid_started):
            runs.request_cancel(record.dir)
            minutes = (quotas.limits().max_run_seconds or 0) / 60
            runs.append_progress(record.dir, TIME_LIMIT_EVENT, minutes=round(minutes, 1))
            log.warning("run %s reached the time limit of %.0f minutes", record.id, minutes)
            stopped.append(record.id)
    return stopped


def _sleep(seconds: float, stopping: dict) -> None:
    deadline = time.monotonic() + seconds
    while not stopping["now"] and time.monotonic() < deadline:
        time.sleep(min(0.1, seconds))


def _warm_worker_wanted(ws: Workspace) -> bool:
    """Whether a run could be handed a warm worker soon: a slot is free, or one is queued.

    While every slot is busy and nothing waits, a new warm worker would only import
    TensorFlow beside the runs, slowing them on a small machine; it starts when a slot frees.
    """
    states = [record.state for record in runs.list_runs(ws)]
    if runs.QUEUED in states:
        return True
    return states.count(runs.RUNNING) < jobs.max_concurrent_runs()


def _keep_warm(
    ws: Workspace, worker: subprocess.Popen | None, started_at: float
) -> tuple[subprocess.Popen | None, float]:
    """Keeps one idle warm worker while one is wanted (`_warm_worker_wanted`); one that was
    handed a run (now training) is replaced then."""
    if worker is not None:
        alive = worker.poll() is None
        claimed = jobs.warm_worker_claimed(ws, worker.pid)
        if alive and not claimed:
            return worker, started_at  # still waiting for a run
        if not claimed and time.time() - started_at < WARM_RESTART_PAUSE_S:
            return worker, started_at  # died young without a run: not restarted in a loop
        if not claimed:
            log.warning("the warm worker (pid %d) ended without a run", worker.pid)
        if not alive:
            jobs.forget_warm_worker(ws, worker.pid)
        # A live worker that was handed a run removes its own files once it has read the
        # run id: removing them here could take the id away before it was read (the run
        # would stay "running" with a worker waiting forever).
    if not _warm_worker_wanted(ws):
        return None, started_at
    return jobs.start_warm_worker(ws), time.time()
