"""Fair use on a shared server: disk and workspace limits, epochs and time per run, the
space Home can give back, and the health line."""

from __future__ import annotations

import shutil
import subprocess
from collections import namedtuple

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.store import health, jobs, quotas, runs, scheduler, storage
from tlcore.store.run_layout import BACKUP_DIR

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def no_workers(monkeypatch):
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])


def _disk_with(monkeypatch, free: int) -> None:
    monkeypatch.setattr(quotas.shutil, "disk_usage", lambda path: Usage(10**12, 0, free))


def test_an_import_is_refused_when_the_disk_is_almost_full(ws, tmp_path, monkeypatch):
    src = write_class_folders(tmp_path / "src", {"a": 8, "b": 8})
    _disk_with(monkeypatch, 100 * 1024**2)
    with pytest.raises(quotas.QuotaError, match=r"No import can start: only 100\.0 MB is free"):
        datasets.import_folder(ws, src, name="pets")
    assert datasets.list_datasets(ws) == []  # nothing half-made
    monkeypatch.setenv(quotas.MIN_FREE_ENV, "50")
    assert datasets.import_folder(ws, src, name="pets").name == "pets"


def test_a_run_is_refused_past_the_workspace_limit_and_the_epoch_limit(
    ws, tiny_dataset, monkeypatch, no_workers
):
    monkeypatch.setenv(quotas.MAX_EPOCHS_ENV, "5")
    with pytest.raises(quotas.QuotaError, match="at most 5 epochs per run"):
        jobs.submit(ws, tiny_config(tiny_dataset, epochs=6))
    assert jobs.submit(ws, tiny_config(tiny_dataset, epochs=5))
    monkeypatch.setenv(quotas.WORKSPACE_MAX_ENV, "0")
    quotas.workspace_usage(ws, fresh=True)
    with pytest.raises(quotas.QuotaError, match="its limit on this server is"):
        jobs.submit(ws, tiny_config(tiny_dataset, epochs=1))
    assert len(runs.list_runs(ws)) == 1


def test_a_bad_limit_says_which_variable(monkeypatch):
    monkeypatch.setenv(quotas.MAX_RUN_MINUTES_ENV, "an hour")
    with pytest.raises(quotas.QuotaError, match="TLS_MAX_RUN_MINUTES must be a number"):
        quotas.limits()


def test_a_run_over_the_time_limit_is_asked_to_stop(ws, tiny_dataset, monkeypatch):
    record = runs.create_run(ws, tiny_config(tiny_dataset))
    # A stand-in worker in its own session (the ws fixture kills its group at the end).
    worker = subprocess.Popen(["sleep", "120"], start_new_session=True)
    runs.set_state(ws, record.id, runs.RUNNING, pid=worker.pid, pid_started=1000.0)
    assert scheduler._stop_runs_over_time(ws) == []  # no limit set
    monkeypatch.setenv(quotas.MAX_RUN_MINUTES_ENV, "30")
    assert scheduler._stop_runs_over_time(ws) == [record.id]
    assert runs.cancel_requested(record.dir)
    events = [e for e in runs.read_progress(record.dir) if e["event"] == "time_limit"]
    assert events and events[0]["minutes"] == 30
    assert scheduler._stop_runs_over_time(ws) == []  # asked once


def test_home_can_give_back_features_and_dead_checkpoints_only(ws, tiny_dataset, monkeypatch):
    features = ws.cache_dir / "features" / "mobilenetv2-train-abc"
    features.mkdir(parents=True)
    (features / "features.npy").write_bytes(b"x" * 5000)
    finished = runs.create_run(ws, tiny_config(tiny_dataset, name="done"))
    runs.set_state(ws, finished.id, runs.RUNNING)
    runs.set_state(ws, finished.id, runs.FINISHED)
    interrupted = runs.create_run(ws, tiny_config(tiny_dataset, name="to resume"))
    runs.set_state(ws, interrupted.id, runs.RUNNING)
    runs.set_state(ws, interrupted.id, runs.INTERRUPTED)
    for record in (finished, interrupted):
        (record.dir / BACKUP_DIR).mkdir()
        (record.dir / BACKUP_DIR / "ckpt").write_bytes(b"y" * 3000)
    by_kind = {item.kind: item for item in storage.cleanable(ws)}
    assert (by_kind["features"].size_bytes, by_kind["features"].count) == (5000, 1)
    assert (by_kind["checkpoints"].size_bytes, by_kind["checkpoints"].count) == (3000, 1)
    assert storage.remove(ws, "checkpoints") == 3000
    assert not (finished.dir / BACKUP_DIR).exists()
    assert (interrupted.dir / BACKUP_DIR / "ckpt").exists()  # it can still resume
    # Features are not removed under a training run's feet.
    running = runs.create_run(ws, tiny_config(tiny_dataset, name="now"))
    runs.set_state(ws, running.id, runs.RUNNING)
    with pytest.raises(ValueError, match="A run is training"):
        storage.remove(ws, "features")
    runs.set_state(ws, running.id, runs.CANCELLED)
    assert storage.remove(ws, "features") == 5000 and not features.exists()
    with pytest.raises(ValueError, match="Nothing called 'models'"):
        storage.remove(ws, "models")


def test_health_reports_the_queue_the_disk_and_the_newest_error(ws, tiny_dataset):
    failed = runs.create_run(ws, tiny_config(tiny_dataset, name="broke"))
    runs.set_state(ws, failed.id, runs.RUNNING)
    runs.set_state(ws, failed.id, runs.FAILED, error="Out of memory: lower the batch size.")
    runs.create_run(ws, tiny_config(tiny_dataset, name="waits"))
    now = health.check(ws)
    assert (now.running, now.queued) == (0, 1)
    assert not now.scheduler.alive
    assert now.last_error == "Out of memory: lower the batch size."
    assert now.last_error_source == f"run {failed.id}"
    assert now.disk_free == shutil.disk_usage(ws.root).free


def test_home_shows_the_health_line_and_the_storage_panel(ws, tiny_dataset, no_workers):
    runs.create_run(ws, tiny_config(tiny_dataset, name="waits"))
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    line = next(c.value for c in at.caption if "queued" in c.value)
    assert "No scheduler" in line and "0 training · 1 queued" in line and "free" in line
    assert any(e.label == "Storage" for e in at.expander)
    labels = " ".join(m.value for m in at.markdown)
    assert "Cached features" in labels and "Resume checkpoints" in labels


def test_one_person_cannot_hold_every_slot_or_fill_the_queue(ws, tiny_dataset, monkeypatch):
    started: list[str] = []
    monkeypatch.setattr(jobs, "_spawn_worker", lambda ws, record: started.append(record.id))
    monkeypatch.setenv(jobs.MAX_CONCURRENT_ENV, "2")
    monkeypatch.setenv(quotas.MAX_RUNNING_PER_USER_ENV, "1")
    monkeypatch.setenv(quotas.MAX_QUEUED_PER_USER_ENV, "2")
    config = tiny_config(tiny_dataset)
    ana_1 = runs.create_run(ws, config, owner="ana").id
    ana_2 = runs.create_run(ws, config, owner="ana").id
    bo_1 = runs.create_run(ws, config, owner="bo").id
    # The slots are filled oldest first, but ana gets one: bo's later run takes the second.
    assert jobs.schedule(ws) == [ana_1, bo_1]
    assert ana_2 not in started
    # (The faked spawn leaves runs queued.) ana has two waiting: a third is refused.
    with pytest.raises(quotas.QuotaError, match="You have 2 runs waiting in the queue"):
        jobs.submit(ws, config, owner="ANA")  # names ignore case, as in the permission rule
    assert jobs.submit(ws, config, owner="cy")  # others are not held back


def test_the_training_page_says_a_run_was_stopped_at_the_time_limit(ws, tiny_dataset, no_workers):
    record = runs.create_run(ws, tiny_config(tiny_dataset, name="long one"))
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.append_progress(record.dir, scheduler.TIME_LIMIT_EVENT, minutes=30)
    runs.set_state(ws, record.id, runs.CANCELLED)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.query_params["run"] = record.id
    at.run()
    at.switch_page("views/training.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(i.value for i in at.info)
    assert "time limit of 30 minutes per run" in shown and "Resume" in shown
