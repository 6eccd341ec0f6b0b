"""The workspace's scheduler process: the queue never stalls, restarts pick up where they left,
one scheduler per workspace, and a warm worker is handed the next run.

Each test starts the real ``python -m tlcore scheduler`` and real training workers (a small
CNN on 24 px images, a few seconds each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_config, wait_until
from tlcore.store import jobs, runs, scheduler

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # a worker imports TensorFlow (~5 s on 2 cores), more under load


def _start_scheduler(ws, *, warm: bool) -> subprocess.Popen:
    env, cwd = jobs.child_environment()
    env |= {"TLS_WARM_WORKER": "1" if warm else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "scheduler"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait(lambda: scheduler.status(ws).alive, "the scheduler to report in")
    return proc


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def _wait(condition, what: str, timeout: float = WAIT_S):
    return wait_until(condition, what, timeout)


def _state(ws, run_id: str) -> str:
    return runs.read_run(ws, run_id).state


@pytest.fixture
def one_slot(monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "1")


@pytest.mark.timeout(300)
def test_a_killed_worker_is_reaped_and_the_queued_run_starts_by_itself(ws, tiny_dataset, one_slot):
    proc = _start_scheduler(ws, warm=False)
    try:
        first = jobs.submit(ws, tiny_config(tiny_dataset, name="long", epochs=500))
        second = jobs.submit(ws, tiny_config(tiny_dataset, name="next", epochs=1))
        assert _state(ws, first) == runs.RUNNING and _state(ws, second) == runs.QUEUED
        pid = runs.read_run(ws, first).status.pid
        os.killpg(pid, signal.SIGKILL)  # no worker is left to start the next run
        _wait(lambda: _state(ws, first) == runs.INTERRUPTED, "the lost run to be marked")
        _wait(lambda: _state(ws, second) != runs.QUEUED, "the queued run to start", 15)
        assert runs.read_run(ws, first).status.error == jobs.LOST_WORKER_MESSAGE
        _wait(lambda: _state(ws, second) == runs.FINISHED, "the second run to finish")
    finally:
        assert _stop(proc) == 0
    assert not scheduler.status(ws).alive


@pytest.mark.timeout(300)
def test_after_a_restart_lost_runs_are_interrupted_and_queued_ones_start(ws, tiny_dataset):
    # As the run folders are after a reboot: one says running (its process is long gone),
    # one is queued, and nothing runs the scheduler until it is started.
    lost = runs.create_run(ws, tiny_config(tiny_dataset, name="was training"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.set_state(ws, lost.id, runs.RUNNING, pid=dead.pid, pid_started=1.0)
    waiting = runs.create_run(ws, tiny_config(tiny_dataset, name="was waiting", epochs=1))
    proc = _start_scheduler(ws, warm=False)
    try:
        _wait(lambda: _state(ws, lost.id) == runs.INTERRUPTED, "the lost run to be marked")
        _wait(lambda: _state(ws, waiting.id) == runs.FINISHED, "the queued run to finish")
        jobs.resume(ws, lost.id)  # interrupted runs can be resumed
        _wait(lambda: _state(ws, lost.id) == runs.FINISHED, "the resumed run to finish")
    finally:
        assert _stop(proc) == 0


@pytest.mark.timeout(300)
def test_only_one_scheduler_serves_a_workspace(ws):
    proc = _start_scheduler(ws, warm=False)
    try:
        env, cwd = jobs.child_environment()
        second = subprocess.run(
            [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "scheduler"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0
        assert f"A scheduler already serves {ws.root} (pid {proc.pid})" in second.stderr
        assert scheduler.status(ws).pid == proc.pid
        assert not scheduler.ensure_running(ws)  # the app starts none while one is alive
    finally:
        assert _stop(proc) == 0


def _scheduler_cli(ws, *args: str) -> subprocess.CompletedProcess:
    env, cwd = jobs.child_environment()
    env["TLS_WARM_WORKER"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "scheduler", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_app_starts_the_scheduler_in_the_background_once(ws, monkeypatch):
    monkeypatch.setenv("TLS_WARM_WORKER", "0")  # the scheduler inherits it
    first = _scheduler_cli(ws, "--background")
    assert first.returncode == 0 and "Scheduler started" in first.stderr
    pid = _wait(lambda: scheduler.status(ws).alive and scheduler.status(ws).pid, "it to serve")
    try:
        again = _scheduler_cli(ws, "--background")
        assert again.returncode == 0
        assert f"A scheduler already serves {ws.root} (pid {pid})" in again.stderr
        assert scheduler.status(ws).pid == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: not scheduler.status(ws).alive, "it to stop")
    assert "scheduler --background" in (ROOT / "run-app.sh").read_text()


def test_pages_start_a_new_scheduler_when_the_old_one_died(ws, monkeypatch):
    from ui import common

    monkeypatch.setenv(scheduler.AUTOSTART_ENV, "on")  # the tests' default is off
    started = []
    monkeypatch.setattr(scheduler, "ensure_running", lambda w: started.append(w.root) or True)
    monkeypatch.setattr(common, "_scheduler_checked_at", {})
    clock = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    common._keep_scheduler_alive(ws)
    common._keep_scheduler_alive(ws)  # checked a moment ago: not again
    assert started == [ws.root]
    clock[0] += common.SCHEDULER_CHECK_S
    common._keep_scheduler_alive(ws)
    assert started == [ws.root, ws.root]
    monkeypatch.setenv(scheduler.AUTOSTART_ENV, "off")
    clock[0] += common.SCHEDULER_CHECK_S
    common._keep_scheduler_alive(ws)
    assert len(started) == 2


@pytest.mark.timeout(300)
def test_a_warm_worker_is_handed_the_next_run(ws, tiny_dataset, one_slot):
    proc = _start_scheduler(ws, warm=True)
    try:
        warm_pid = _wait(lambda: scheduler.status(ws).warm_worker_pid, "a warm worker")
        ready = ws.cache_dir / jobs.WARM_DIR / f"{warm_pid}.ready"
        _wait(ready.exists, "the warm worker to have imported TensorFlow")
        run_id = jobs.submit(ws, tiny_config(tiny_dataset, name="warm", epochs=1))
        record = runs.read_run(ws, run_id)
        assert record.status.pid == warm_pid  # handed to the waiting process
        _wait(lambda: _state(ws, run_id) == runs.FINISHED, "the run to finish")
        started = [e for e in runs.read_progress(record.dir) if e["event"] == "worker_started"]
        assert started[0]["warm"] is True
        # The scheduler keeps a new idle one for the next run.
        _wait(
            lambda: scheduler.status(ws).warm_worker_pid not in (None, warm_pid),
            "a new warm worker",
        )
    finally:
        assert _stop(proc) == 0
    _wait(lambda: not jobs.process_alive(warm_pid, None), "the used worker to end", 30)


class _LiveProcess:
    """Stands in for the warm worker's `subprocess.Popen`: alive, with a pid of our own."""

    pid = os.getpid()

    def poll(self):
        return None


def test_replacing_a_handed_over_warm_worker_keeps_the_run_it_was_handed(ws, monkeypatch):
    # The run's starter claims the worker (.claimed), then writes the run id (.run); the
    # scheduler may look in between or just after, before the worker has read the id.
    folder = ws.cache_dir / jobs.WARM_DIR
    folder.mkdir(parents=True)
    me = _LiveProcess.pid
    (folder / f"{me}.claimed").write_text("{}")
    (folder / f"{me}.run").write_text("20261204-000000-abcdef0")
    started = []
    monkeypatch.setattr(jobs, "start_warm_worker", lambda ws: started.append(1) or _LiveProcess())

    scheduler._keep_warm(ws, _LiveProcess(), started_at=0.0)

    assert started == [1]  # a new idle worker for the next run (a slot is free)
    assert jobs.warm_worker_assignment(ws, me) == "20261204-000000-abcdef0"


def test_no_new_warm_worker_imports_tensorflow_beside_busy_slots_until_one_is_needed(
    ws, tiny_dataset, one_slot, monkeypatch
):
    running = runs.create_run(ws, tiny_config(tiny_dataset, name="training"))
    runs.set_state(ws, running.id, runs.RUNNING)
    started = []
    monkeypatch.setattr(jobs, "start_warm_worker", lambda ws: started.append(1) or _LiveProcess())

    assert scheduler._keep_warm(ws, None, started_at=0.0)[0] is None
    assert started == []  # the one slot is busy and nothing waits
    runs.create_run(ws, tiny_config(tiny_dataset, name="next"))  # queued: it will want one
    assert scheduler._keep_warm(ws, None, started_at=0.0)[0] is not None
    assert started == [1]
