"""Background tasks of a run (evaluation, export): start once, report, survive a lost process.

`jobs.start_cli` is replaced here, so no process starts; the pages' tests
(test_evaluation_page, test_predict_page) run real task processes end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import tiny_config
from tlcore.store import jobs, runs, tasks


@pytest.fixture
def started(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(jobs, "start_cli", lambda ws, *args, log=None: calls.append(args))
    return calls


@pytest.fixture
def run_id(ws) -> str:
    return runs.create_run(ws, tiny_config("tiny")).id


def test_a_task_starts_the_cli_with_its_id_and_is_read_back(ws, run_id, started):
    task = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id, "--json"])
    assert started == [("evaluate", run_id, "--json", "--task", task.id)]
    again = tasks.read_task(ws, run_id, task.id)
    assert again.state == tasks.STARTING and again.active and again.kind == "evaluate"
    assert tasks.latest(ws, run_id, "evaluate") == again
    assert tasks.latest(ws, run_id, "export") is None


def test_a_second_start_while_one_is_active_returns_the_first(ws, run_id, started):
    first = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id], key="")
    second = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id], key="")
    other = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id, "--dataset", "d"], key="d")
    assert second.id == first.id and other.id != first.id
    assert len(started) == 2


def test_the_reporter_records_progress_the_result_and_the_pid(ws, run_id, started):
    task = tasks.start(ws, run_id, "export", ["export", run_id])
    with tasks.TaskReporter(ws, run_id, task.id) as report:
        now = tasks.read_task(ws, run_id, task.id)
        assert now.state == tasks.RUNNING and now.active  # this process is alive
        report.progress(0.5, "Halfway")
        report._last_write = 0.0  # not throttled: the next report is written
        report.progress(0.75, "Three quarters")
        assert tasks.read_task(ws, run_id, task.id).message == "Three quarters"
        report.finish({"bundle": "b.zip"})
    done = tasks.read_task(ws, run_id, task.id)
    assert done.state == tasks.FINISHED and done.result == {"bundle": "b.zip"}
    assert done.fraction == 1.0 and not done.active


def test_an_exception_marks_the_task_failed_with_its_message(ws, run_id, started):
    task = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id])
    with pytest.raises(ValueError), tasks.TaskReporter(ws, run_id, task.id):
        raise ValueError("The dataset 'x' was deleted. Import it again.")
    failed = tasks.read_task(ws, run_id, task.id)
    assert failed.failed and failed.message == "The dataset 'x' was deleted. Import it again."


def test_a_task_whose_process_died_reads_as_failed(ws, run_id, started):
    task = tasks.start(ws, run_id, "export", ["export", run_id])
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = ws.run_dir(run_id) / "tasks" / f"{task.id}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"state": "running", "pid": child.pid}))
    lost = tasks.read_task(ws, run_id, task.id)
    assert lost.failed and "stopped before it finished" in lost.message
    # ... and a new one may start.
    assert tasks.start(ws, run_id, "export", ["export", run_id]).id != task.id


def test_a_task_that_never_started_reads_as_failed_after_the_timeout(
    ws, run_id, started, monkeypatch
):
    task = tasks.start(ws, run_id, "evaluate", ["evaluate", run_id])
    monkeypatch.setattr(tasks, "START_TIMEOUT_S", 0.0)
    stuck = tasks.read_task(ws, run_id, task.id)
    assert stuck.failed and "did not start" in stuck.message


def test_old_finished_tasks_are_forgotten(ws, run_id, started, monkeypatch):
    monkeypatch.setattr(tasks, "KEEP_PER_RUN", 2)
    for _ in range(4):
        task = tasks.start(ws, run_id, "export", ["export", run_id])
        with tasks.TaskReporter(ws, run_id, task.id) as report:
            report.finish({})
    tasks.start(ws, run_id, "export", ["export", run_id])
    assert len(tasks.list_tasks(ws, run_id)) == 3  # two kept, plus the new one


def test_bad_requests_are_refused(ws, run_id, started):
    with pytest.raises(ValueError, match="A task runs one of"):
        tasks.start(ws, run_id, "train", ["train"])
    with pytest.raises(ValueError, match="A task runs one of"):
        tasks.start(ws, run_id, "evaluate", ["export", run_id])
    with pytest.raises(LookupError, match="No run"):
        tasks.start(ws, "no-such-run", "evaluate", ["evaluate", "no-such-run"])
    with pytest.raises(LookupError):
        tasks.read_task(ws, run_id, "../../status")
    assert started == []
