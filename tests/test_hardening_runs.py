"""The hardening issue's rows about run folders: damaged files, swapped models, odd ids and
a full disk never crash a listing or a page, and never serve a wrong answer."""

from __future__ import annotations

import errno
import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT
from tests.test_model_store import make_finished_run
from tlcore import cli
from tlcore.fileio import atomic_write_json, read_json
from tlcore.store import runs

TIMEOUT_S = 120
BAD_STATUS_FIELDS = [
    {"summary": "str"},
    {"summary": {"val_accuracy": "high"}},
    {"created_at": 12345},
]


def _break_status(run_dir, **fields) -> None:
    path = run_dir / runs.STATUS_FILE
    atomic_write_json(path, read_json(path) | fields)


# -- row 5: run-folder files are schema-checked when read --------------------------------
@pytest.mark.parametrize("fields", BAD_STATUS_FIELDS, ids=lambda f: json.dumps(f))
def test_a_status_with_wrong_types_is_listed_as_unreadable_with_the_reason(ws, fields, capsys):
    good, _ = make_finished_run(ws)
    bad, _ = make_finished_run(ws)
    runs.list_runs(ws)  # both indexed as good
    _break_status(ws.run_dir(bad), **fields)
    listed = {r.id: r for r in runs.list_runs(ws)}
    assert listed[good].problem is None and listed[good].state == runs.FINISHED
    assert listed[bad].state == runs.UNREADABLE
    assert "status.json" in listed[bad].problem and next(iter(fields)) in listed[bad].problem
    assert cli.main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert good in out and bad in out and runs.UNREADABLE in out


def test_a_finished_run_with_an_invalid_config_is_listed_as_unreadable(ws, capsys):
    good, _ = make_finished_run(ws)
    bad, _ = make_finished_run(ws)
    path = ws.run_dir(bad) / runs.CONFIG_FILE
    atomic_write_json(path, read_json(path) | {"epochs": "many"})
    listed = {r.id: r for r in runs.list_runs(ws)}
    assert listed[good].problem is None
    assert "config.json" in listed[bad].problem and "epochs" in listed[bad].problem
    assert runs.run_row(listed[bad])["state"] == runs.UNREADABLE
    assert cli.main(["runs", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if bad in line)
    assert runs.UNREADABLE in row


def _broken_workspace(ws) -> tuple[str, str]:
    good, _ = make_finished_run(ws)
    bad_status, _ = make_finished_run(ws)
    _break_status(ws.run_dir(bad_status), summary="str", created_at=12345)
    bad_config, _ = make_finished_run(ws)
    path = ws.run_dir(bad_config) / runs.CONFIG_FILE
    atomic_write_json(path, read_json(path) | {"epochs": "many"})
    return good, bad_status


@pytest.mark.parametrize("page", ["home", "training", "evaluation", "predict"])
def test_every_page_works_beside_a_broken_run(ws, page):
    _broken_workspace(ws)  # one good run beside two broken ones
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    if page != "home":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]


# -- row 6: stored metrics only while the model file is the one evaluated ----------------
def _swap_model(ws, run_id: str) -> None:
    """Replaces the run's model.keras with another valid model, leaving model.json alone."""
    from tests.conftest import tiny_config
    from tlcore.model import models

    other = models.build_model(tiny_config("tiny", seed=7), 3)
    other.save(ws.run_dir(run_id) / "swapped.keras")
    os.replace(ws.run_dir(run_id) / "swapped.keras", ws.run_dir(run_id) / runs.MODEL_FILE)


def test_evaluate_refuses_stored_metrics_once_the_model_file_is_swapped(ws, tiny_dataset, capsys):
    from tests.test_evaluation_page import make_finished_run as make_evaluated_run
    from tlcore.evaluation import evaluate

    run_id = make_evaluated_run(ws, tiny_dataset, name="swapped")
    assert cli.main(["evaluate", run_id]) == 0  # the stored metrics, while the model is its own
    capsys.readouterr()
    _swap_model(ws, run_id)
    assert cli.main(["evaluate", run_id]) != 0
    err = capsys.readouterr().err
    assert "changed after training" in err and run_id in err
    with pytest.raises(evaluate.EvaluationError, match="changed after training"):
        evaluate.load_evaluation(ws, run_id)


# -- row 7: ids read from run files are checked like ids a user types ----------------------
@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_an_absolute_dataset_id_in_classes_json_never_leads_out_of_the_workspace(
    ws, tiny_dataset, tmp_path, kind
):
    import shutil

    from tests.test_evaluation_page import make_finished_run as make_evaluated_run
    from tlcore.evaluation import evaluate
    from tlcore.store.run_layout import CLASSES_FILE

    run_id = make_evaluated_run(ws, tiny_dataset, name="escape")
    genuine = evaluate.load_evaluation(ws, run_id)
    outside = tmp_path / "outside"
    shutil.copytree(genuine.folder, outside)  # looks like a good evaluation, but elsewhere
    path = ws.run_dir(run_id) / CLASSES_FILE
    escape = str(outside) if kind == "absolute" else "../../../../outside"
    atomic_write_json(path, read_json(path) | {"dataset_id": escape})
    assert (genuine.folder.parent / escape).resolve() == outside.resolve()
    result = evaluate.load_evaluation(ws, run_id)
    assert result is not None and result.folder == genuine.folder
    with pytest.raises(evaluate.EvaluationError, match="no dataset with id"):
        evaluate.load_evaluation(ws, run_id, escape)


# -- row 11: over-long or odd ids are "no such run/dataset", never a traceback ------------
LONG_ID = "a" * 300
RUN_COMMANDS = [
    ["runs", "show", LONG_ID],
    ["runs", "cancel", LONG_ID],
    ["runs", "resume", LONG_ID],
    ["evaluate", LONG_ID],
    ["predict", LONG_ID, "x.png"],
    ["export", LONG_ID],
    ["baseline", LONG_ID],
    ["runs", "show", "."],
    ["runs", "show", "a/../.."],
]
DATASET_COMMANDS = [
    ["datasets", "show", LONG_ID],
    ["datasets", "delete", LONG_ID, "--yes"],
    ["train", "--dataset", LONG_ID],
    ["evaluate", "RUN", "--dataset", LONG_ID],
]


@pytest.mark.parametrize("argv", RUN_COMMANDS + DATASET_COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_an_over_long_or_odd_id_is_no_such_run_or_dataset(ws, argv, capsys):
    if "RUN" in argv:
        argv = [make_finished_run(ws)[0] if a == "RUN" else a for a in argv]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    what = "No dataset named" if argv in DATASET_COMMANDS or "--dataset" in argv else "No run"
    assert what in err.splitlines()[-1] and "Traceback" not in err


# -- row 3: a run stopped by a full disk can be resumed, as its message says ---------------
def _running_run(ws):
    from tests.conftest import tiny_config

    record = runs.create_run(ws, tiny_config("tiny"))
    runs.set_state(ws, record.id, runs.RUNNING)
    return record.id


def _disk_full_error(path) -> Exception:
    from tlcore.fileio import StorageError

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        except OSError as exc:
            raise StorageError(
                exc.errno,
                f"Could not save the best model to {path}. Free disk space and resume the run.",
            ) from exc
    except StorageError as err:
        return err


def test_a_run_that_ran_out_of_disk_is_interrupted_and_resumes(ws, monkeypatch):
    from tlcore.store import jobs
    from tlcore.training import train, worker

    run_id = _running_run(ws)
    error = _disk_full_error(ws.run_dir(run_id) / runs.MODEL_FILE)

    def full(ws, run_id):
        raise error

    monkeypatch.setattr(train, "train_run", full)
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    assert worker._train(ws, run_id) == 1
    status = runs.read_run(ws, run_id).status
    assert status.state == runs.INTERRUPTED
    assert "disk filled up" in status.error and "Resume" in status.error
    jobs.resume(ws, run_id)  # the action the message names
    assert runs.read_run(ws, run_id).state == runs.QUEUED


def test_other_failures_still_fail(ws, monkeypatch):
    from tlcore.store import jobs
    from tlcore.training import train, worker

    run_id = _running_run(ws)

    def broken(ws, run_id):
        raise ValueError("the dataset is gone")

    monkeypatch.setattr(train, "train_run", broken)
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    worker._train(ws, run_id)
    assert runs.read_run(ws, run_id).state == runs.FAILED


# -- row 4: status writes that cannot happen leave the run recoverable ---------------------
def _fill_the_disk(monkeypatch, *, failures: int | None = None) -> None:
    """Every status write (and index update) fails with ENOSPC; after ``failures`` status
    writes, if given, they succeed again (space was freed)."""
    import sqlite3

    from tlcore.store import index

    real = runs.atomic_write_json
    left = [failures]

    def write(path, obj):
        if left[0] is None or left[0] > 0:
            left[0] = None if left[0] is None else left[0] - 1
            raise _disk_full_error(path)
        return real(path, obj)

    def no_room(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(runs, "atomic_write_json", write)
    monkeypatch.setattr(index, "record_run", no_room)


def test_with_the_disk_full_runs_list_works_and_the_run_is_interrupted_later(
    ws, monkeypatch, capsys
):
    from tlcore.store import jobs

    run_id = _running_run(ws)  # no worker recorded: as one that died, its last write failed
    with monkeypatch.context() as patch:
        _fill_the_disk(patch)
        assert cli.main(["runs", "list"]) == 0
        captured = capsys.readouterr()
        assert run_id in captured.out and "warning:" in captured.err
        assert runs.read_run(ws, run_id).state == runs.RUNNING  # could not be written yet
    assert jobs.reconcile(ws) == [run_id]  # space freed: now it is resumable
    assert runs.read_run(ws, run_id).state == runs.INTERRUPTED


def test_the_worker_retries_its_last_status_write(ws, monkeypatch):
    from tlcore.store import jobs
    from tlcore.training import train, worker

    run_id = _running_run(ws)

    def broken(ws, run_id):
        raise ValueError("the dataset is gone")

    monkeypatch.setattr(train, "train_run", broken)
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    monkeypatch.setattr(worker, "CLOSE_RETRY_DELAYS_S", (0, 0, 0))
    _fill_the_disk(monkeypatch, failures=2)
    worker._train(ws, run_id)
    assert runs.read_run(ws, run_id).state == runs.FAILED


# -- row 4: resume falls back to the previous good backup ----------------------------------
def _tiny_fit(backup_dir, epochs: int, *, seed: int = 0):
    """Fits a two-layer model on 16 random points with a `ResumableBackup`; returns the
    callback and the 0-based epochs that ran."""
    import keras
    import numpy as np

    from tlcore.training.backup import ResumableBackup

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ran, reports = [], []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: ran.append(epoch))
    backup = ResumableBackup(str(backup_dir), report=reports.append)
    x, y = np.random.rand(16, 4).astype("float32"), np.arange(16) % 3
    model.fit(x, y, epochs=epochs, batch_size=8, callbacks=[backup, record], verbose=0)
    return backup, ran, reports, model


def test_a_half_written_backup_resumes_from_the_one_before(tmp_path):
    from tlcore.training import backup

    _tiny_fit(tmp_path, 3)  # backups after epochs 3 (latest) and 2 (previous)
    (tmp_path / "training_metadata.json").write_text('{"epo')  # the disk filled up here
    restored, ran, reports, _ = _tiny_fit(tmp_path, 5)
    assert restored.restored == backup.PREVIOUS
    assert ran == [2, 3, 4]  # epoch 3 again, then 4 and 5
    assert "after epoch 2" in reports[0]
    # The good pair is the latest again, so the next resume needs no fallback.
    again, ran, _, _ = _tiny_fit(tmp_path, 6)
    assert again.restored == backup.LATEST and ran == [5]


def test_a_truncated_weights_file_resumes_from_the_one_before(tmp_path):
    from tlcore.training import backup

    _tiny_fit(tmp_path, 3)
    weights = tmp_path / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    restored, ran, _, _ = _tiny_fit(tmp_path, 4)
    assert restored.restored == backup.PREVIOUS and ran == [2, 3]


def test_when_both_backups_are_damaged_the_phase_starts_again_and_says_so(tmp_path):
    import numpy as np

    from tlcore.training import backup

    _tiny_fit(tmp_path, 3)
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        (tmp_path / name).write_text("")
    restored, ran, reports, model = _tiny_fit(tmp_path, 2, seed=7)
    assert restored.restored == backup.RESTARTED and ran == [0, 1]
    assert "started again from its first epoch" in reports[0]
    _, _, _, fresh = _tiny_fit(tmp_path / "elsewhere", 2, seed=7)
    for ours, theirs in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # no weights from the damaged files


@pytest.mark.slow
def test_a_run_whose_last_backup_was_half_written_resumes_and_says_why(ws, tiny_dataset):
    from tests.conftest import tiny_config
    from tlcore.training import progress, train

    record = runs.create_run(ws, tiny_config(tiny_dataset, epochs=3))
    runs.set_state(ws, record.id, runs.RUNNING)
    train.train_run(ws, record.id)
    # As if the worker died writing the last epoch's backup: phase 1 never ended.
    log = record.dir / runs.PROGRESS_FILE
    events = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text(
        "".join(json.dumps(e) + "\n" for e in events if e["event"] not in ("phase_end", "run_end"))
    )
    (record.dir / "phase1.weights.h5").unlink()
    (record.dir / "backup" / "phase1" / "training_metadata.json").write_text("{")
    result = train.train_run(ws, record.id)
    assert result.state == runs.FINISHED
    summary = progress.summarize_progress(runs.read_progress(record.dir))
    assert [row.epoch for row in summary.history] == [1, 2, 3]
    assert summary.notices and "resumed from the one before" in summary.notices[0]
