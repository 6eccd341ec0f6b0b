"""The job runner: real worker processes training a tiny model on a tiny dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_config
from tlcore.store import jobs, runs

RUN_TIMEOUT_S = 240


def _wait_for_event(run_dir, event: str, count: int = 1, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(e.get("event") == event for e in runs.read_progress(run_dir)) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no {event!r} event in {run_dir}")


def test_reconcile_marks_runs_of_dead_workers_interrupted(ws):
    run_id = runs.create_run(ws, tiny_config("tiny")).id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.set_state(ws, run_id, "running", pid=dead.pid, pid_started=time.time())
    assert jobs.reconcile(ws) == [run_id]
    record = runs.read_run(ws, run_id)
    assert record.state == "interrupted" and "Resume" in record.status.error
    assert jobs.reconcile(ws) == []  # idempotent


def test_concurrency_limit_setting_is_validated(monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "zero")
    with pytest.raises(ValueError, match="TLS_MAX_CONCURRENT_RUNS"):
        jobs.max_concurrent_runs()
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "3")
    assert jobs.max_concurrent_runs() == 3


def test_cancelling_a_queued_run_is_immediate_and_idempotent(ws, monkeypatch):
    run_id = runs.create_run(ws, tiny_config("tiny")).id  # queued, never scheduled
    assert jobs.cancel(ws, run_id) == "cancelled"
    assert jobs.cancel(ws, run_id) == "cancelled"
    assert runs.read_run(ws, run_id).state == "cancelled"


@pytest.mark.slow
def test_run_trains_in_another_process_and_leaves_a_complete_folder(ws, tiny_dataset):
    run_id = jobs.submit(ws, tiny_config(tiny_dataset, epochs=3))
    record = runs.read_run(ws, run_id)
    assert record.state == "running" and record.status.pid != os.getpid()
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "finished", (
        record.status.error,
        (record.dir / "worker.log").read_text(),
    )
    for name in (
        "config.json",
        "status.json",
        "progress.jsonl",
        "model.keras",
        "history.json",
        "metrics.json",
        "classes.json",
    ):
        assert (record.dir / name).exists(), name
    assert (record.dir / "logs").is_dir()  # TensorBoard
    epochs = [e["epoch"] for e in runs.read_progress(record.dir) if e["event"] == "epoch_end"]
    assert epochs == [1, 2, 3]
    assert record.status.summary["epochs_completed"] == 3
    assert 0.0 <= record.status.summary["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_cancel_twice_ends_cancelled_and_keeps_the_best_model(ws, tiny_dataset):
    run_id = jobs.submit(ws, tiny_config(tiny_dataset, epochs=500))
    run_dir = ws.run_dir(run_id)
    _wait_for_event(run_dir, "epoch_end")
    assert jobs.cancel(ws, run_id) == "running"
    assert jobs.cancel(ws, run_id) == "running"
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "cancelled"
    assert jobs.cancel(ws, run_id) == "cancelled"  # and once more after it ended
    assert (run_dir / "model.keras").exists()
    assert record.status.summary["epochs_completed"] < 500


@pytest.mark.slow
def test_killed_worker_becomes_interrupted_and_resumes_to_the_full_history(ws, tiny_dataset):
    run_id = jobs.submit(ws, tiny_config(tiny_dataset, epochs=6))
    run_dir = ws.run_dir(run_id)
    _wait_for_event(run_dir, "epoch_end", count=2)
    os.kill(runs.read_run(ws, run_id).status.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while runs.read_run(ws, run_id).state != "interrupted" and time.monotonic() < deadline:
        jobs.reconcile(ws)
        time.sleep(0.2)
    assert runs.read_run(ws, run_id).state == "interrupted"

    jobs.resume(ws, run_id)
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "finished", record.status.error
    assert record.status.resumes == 1
    epochs = sorted({e["epoch"] for e in runs.read_progress(run_dir) if e["event"] == "epoch_end"})
    assert epochs == [1, 2, 3, 4, 5, 6]
    history = (run_dir / "history.json").read_text()
    assert '"epoch": 6' in history


@pytest.mark.slow
def test_second_run_waits_queued_then_starts_by_itself(ws, tiny_dataset, monkeypatch):
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "1")
    first = jobs.submit(ws, tiny_config(tiny_dataset, epochs=2))
    second = jobs.submit(ws, tiny_config(tiny_dataset, epochs=1))
    assert runs.read_run(ws, second).state == "queued"
    first_record = jobs.wait_for(ws, first, timeout=RUN_TIMEOUT_S)
    second_record = jobs.wait_for(ws, second, timeout=RUN_TIMEOUT_S)
    assert (first_record.state, second_record.state) == ("finished", "finished")
    assert second_record.status.started_at >= first_record.status.finished_at


@pytest.mark.slow
def test_an_exception_in_the_worker_fails_the_run_with_its_message(ws):
    run_id = jobs.submit(ws, tiny_config("no-such-dataset"))
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "failed"
    assert "no-such-dataset" in record.status.error
