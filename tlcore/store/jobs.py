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
from tlcore.fileio import atomic_write_json, atomic_write_text, read_json
from tlcore.store import quotas, runs
from tlcore.store.access import LOCAL, Actor, audited
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


def submit(ws: Workspace, config: RunConfig, *, owner: str | None = None) -> str:
    """Creates a run and starts it now, or queues it if the concurrency limit is reached.

    Returns at once with the run id; training happens in another process. ``owner`` (a
    user name; default None, nobody) is recorded as the person who started it.

    Raises:
        tlcore.store.quotas.QuotaError: more epochs than this server allows, or too little
            room on its disk.
    """
    quotas.check_epochs(config.total_epochs)
    quotas.check_room(ws, "run")
    if owner is not None:
        queued = [r for r in runs.list_runs(ws) if r.state == runs.QUEUED]
        quotas.check_queued(_runs_of(queued, owner))
    record = runs.create_run(ws, config, owner=owner)
    schedule(ws)
    return record.id


def resume(ws: Workspace, run_id: str, *, actor: Actor = LOCAL, override: bool = False) -> None:
    """Queues an interrupted or cancelled run again; it continues from its last epoch.

    ``actor`` must own the run or be an admin (``override=True`` once an admin confirmed
    acting on someone else's; see `tlcore.store.access.audited`). Default: the command line.
    """
    quotas.check_room(ws, "run")
    with scheduler_lock(ws):
        record = runs.read_run(ws, run_id)
        with audited(
            ws, actor, "resume", f"run {run_id}", record.owner, verb="resume", override=override
        ):
            if record.state not in (runs.INTERRUPTED, runs.CANCELLED):
                raise runs.InvalidTransitionError(
                    f"Run {run_id} is {record.state}; only interrupted or cancelled runs can "
                    "resume."
                )
            runs.clear_cancel(record.dir)
            runs.set_state(ws, run_id, runs.QUEUED)
            runs.append_progress(record.dir, "resume_requested")
    schedule(ws)


def cancel(ws: Workspace, run_id: str, *, actor: Actor = LOCAL, override: bool = False) -> str:
    """Asks a run to stop. Idempotent: cancelling a cancelled or ended run changes nothing.

    A queued run becomes ``cancelled`` at once; a running one stops at its next batch,
    keeping its best checkpoint, and then becomes ``cancelled``. Returns the run's state
    after the request. ``actor`` and ``override``: as for `resume`.

    Raises:
        tlcore.store.access.NotAllowedError: ``actor`` may not stop this run.
    """
    with scheduler_lock(ws):
        record = runs.read_run(ws, run_id)
        with audited(
            ws, actor, "cancel", f"run {run_id}", record.owner, verb="stop", override=override
        ):
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
        running = [r for r in records if r.state == runs.RUNNING]
        queued = sorted((r for r in records if r.state == runs.QUEUED), key=lambda r: r.id)
        per_user = quotas.limits().max_running_per_user
        for record in queued:
            if len(running) >= limit:
                break
            # One person's queue does not hold the slots for everyone: past their share,
            # their next run waits and someone else's starts.
            if per_user is not None and _runs_of(running, record.owner) >= per_user:
                continue
            _spawn_worker(ws, record)
            running.append(record)
            started.append(record.id)
    return started


def _runs_of(records: list[runs.RunRecord], owner: str | None) -> int:
    """How many of ``records`` belong to ``owner`` (0 for nobody: no cap applies)."""
    return 0 if owner is None else sum(1 for r in records if _same_owner(r, owner))


def _same_owner(record: runs.RunRecord, owner: str) -> bool:
    return (record.owner or "").casefold() == owner.casefold()


def _spawn_worker(ws: Workspace, record: runs.RunRecord) -> None:
    """Starts the worker process for a queued run and marks the run ``running``.

    A warm worker (TensorFlow already imported, kept by the scheduler) is handed the run
    when one is ready; otherwise a new process starts. Called with the scheduler lock
    held, so the worker cannot write its final status before this ``running`` status is on
    disk (it takes the same lock to do so).
    """
    warm = _claim_warm_worker(ws) if _may_run_warm(record) else None
    if warm is not None:
        pid, pid_started = warm
        runs.set_state(ws, record.id, runs.RUNNING, pid=pid, pid_started=pid_started)
        runs.append_progress(record.dir, "worker_started", pid=pid, warm=True)
        atomic_write_text(_warm_path(ws, pid, ".run"), record.id)  # the worker starts now
        return
    log_path = record.dir / WORKER_LOG
    with open(log_path, "ab") as log:
        proc = _start_worker_process([str(ws.root), record.id], ws, log)
    _children.append(proc)
    runs.set_state(
        ws, record.id, runs.RUNNING, pid=proc.pid, pid_started=process_start_time(proc.pid)
    )
    runs.append_progress(record.dir, "worker_started", pid=proc.pid)


def _may_run_warm(record: runs.RunRecord) -> bool:
    """A warm worker has the scheduler's environment, not this process's: a run that needs
    this one's cluster settings (``TF_CONFIG``, several machines) gets a fresh process."""
    multi_worker = record.config is not None and record.config.distribution == "multi_worker"
    return not multi_worker and "TF_CONFIG" not in os.environ


def _start_worker_process(
    args: list[str], ws: Workspace, log, *, drop_env: tuple[str, ...] = ()
) -> subprocess.Popen:
    env, project_root = child_environment()
    for name in drop_env:
        env.pop(name, None)
    env["TLS_WORKSPACE"] = str(ws.root)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "tlcore.training.worker", *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=project_root,
        start_new_session=True,  # survives the server and the terminal that started it
        close_fds=True,
    )


# -- warm workers ------------------------------------------------------------------------
# A warm worker announces itself with cache/warm/<pid>.ready once TensorFlow is imported.
# Whoever starts a run claims it by renaming that file to <pid>.claimed (atomic: one winner),
# marks the run running with the worker's pid, then writes the run id to <pid>.run, which
# the worker is polling for.
WARM_DIR = "warm"


def _warm_path(ws: Workspace, pid: int, suffix: str) -> Path:
    return ws.cache_dir / WARM_DIR / f"{pid}{suffix}"


def start_warm_worker(ws: Workspace) -> subprocess.Popen:
    """Starts a warm worker (for the scheduler, which keeps one)."""
    folder = ws.cache_dir / WARM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "warm-worker.log", "ab") as log:
        # Never part of a cluster: runs that are go to fresh processes (`_may_run_warm`).
        proc = _start_worker_process(["--warm", str(ws.root)], ws, log, drop_env=("TF_CONFIG",))
    _children.append(proc)
    return proc


def announce_warm_worker(ws: Workspace) -> None:
    """Called by a warm worker once it is ready to be handed a run."""
    pid = os.getpid()
    path = _warm_path(ws, pid, ".ready")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"pid": pid, "pid_started": process_start_time(pid)})


def warm_worker_assignment(ws: Workspace, pid: int) -> str | None:
    """The run handed to warm worker ``pid``, once there is one."""
    try:
        return _warm_path(ws, pid, ".run").read_text().strip() or None
    except OSError:
        return None


def warm_worker_claimed(ws: Workspace, pid: int) -> bool:
    return _warm_path(ws, pid, ".claimed").exists() or _warm_path(ws, pid, ".run").exists()


def forget_warm_worker(ws: Workspace, pid: int) -> None:
    for suffix in (".ready", ".claimed", ".run"):
        _warm_path(ws, pid, suffix).unlink(missing_ok=True)


def _claim_warm_worker(ws: Workspace) -> tuple[int, float | None] | None:
    for ready in sorted((ws.cache_dir / WARM_DIR).glob("*.ready")):
        try:
            data = read_json(ready)
            pid, pid_started = int(data["pid"]), data.get("pid_started")
        except (OSError, ValueError, KeyError, TypeError):
            ready.unlink(missing_ok=True)
            continue
        if not process_alive(pid, pid_started):
            forget_warm_worker(ws, pid)
            continue
        try:
            os.rename(ready, ready.with_suffix(".claimed"))
        except OSError:
            continue  # another process claimed it first
        return pid, pid_started
    return None


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
