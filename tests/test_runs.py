import json

import pytest

from tlcore.config import RunConfig
from tlcore.store import index, runs


def _config(**changes):
    return RunConfig(dataset="flowers", **changes)


def test_new_run_has_a_complete_folder(ws):
    record = runs.create_run(ws, _config(name="first"))
    assert (record.dir / "config.json").exists()
    assert record.state == "queued"
    again = runs.read_run(ws, record.id)
    assert again.config == record.config and again.problem is None


@pytest.mark.parametrize(
    "path",
    [
        ["running", "finished"],
        ["running", "failed"],
        ["running", "cancelled", "queued", "running", "finished"],
        ["running", "interrupted", "queued", "running", "finished"],
        ["cancelled"],
        ["failed"],
    ],
)
def test_allowed_transitions_stamp_times(ws, path):
    run_id = runs.create_run(ws, _config()).id
    for state in path:
        status = runs.set_state(ws, run_id, state)
        assert status.state == state
    if path[-1] in runs.FINAL_STATES:
        assert status.finished_at is not None
    if "running" in path:
        assert status.started_at is not None
    assert status.resumes == path.count("queued")


@pytest.mark.parametrize(("path", "bad"), [([], "finished"), (["running", "finished"], "running")])
def test_forbidden_transitions_are_refused(ws, path, bad):
    run_id = runs.create_run(ws, _config()).id
    for state in path:
        runs.set_state(ws, run_id, state)
    with pytest.raises(runs.InvalidTransitionError, match=f"cannot become {bad}"):
        runs.set_state(ws, run_id, bad)


def test_failed_run_keeps_its_error(ws):
    run_id = runs.create_run(ws, _config()).id
    runs.set_state(ws, run_id, "running", pid=123)
    runs.set_state(ws, run_id, "failed", error="The loss became NaN")
    record = runs.read_run(ws, run_id)
    assert record.status.error == "The loss became NaN" and record.status.pid is None


def test_corrupt_or_missing_files_are_listed_not_fatal(ws):
    good = runs.create_run(ws, _config(name="good")).id
    corrupt = runs.create_run(ws, _config(name="corrupt")).id
    no_config = runs.create_run(ws, _config(name="noconfig")).id
    (ws.run_dir(corrupt) / "status.json").write_text("{not json")
    (ws.run_dir(no_config) / "config.json").unlink()

    listed = {r.id: r for r in runs.list_runs(ws)}
    assert listed[good].problem is None and listed[good].state == "queued"
    assert listed[corrupt].state == "unreadable"
    assert "status.json is unreadable" in listed[corrupt].problem
    assert "config.json is missing" in listed[no_config].problem
    assert ws.run_dir(corrupt).exists() and ws.run_dir(no_config).exists()  # nothing deleted


def test_listing_uses_the_index_and_notices_changes(ws):
    run_id = runs.create_run(ws, _config()).id
    assert runs.list_runs(ws)[0].state == "queued"
    # Another process rewrites the status file behind the index's back.
    path = ws.run_dir(run_id) / "status.json"
    data = json.loads(path.read_text()) | {"state": "running"}
    path.write_text(json.dumps(data))
    assert runs.list_runs(ws)[0].state == "running"


def test_index_is_rebuilt_from_folders(ws):
    ids = {runs.create_run(ws, _config()).id for _ in range(3)}
    ws.index_path.unlink()
    assert index.rebuild(ws, runs.index_rows(ws), []) == (3, 0)
    assert set(index.cached_runs(ws)) == ids
    assert {r.id for r in runs.list_runs(ws)} == ids


def test_unknown_run_is_a_clear_error(ws):
    with pytest.raises(runs.RunNotFoundError, match="runs list"):
        runs.read_run(ws, "nope")


def test_cancel_request_is_idempotent(ws):
    record = runs.create_run(ws, _config())
    runs.request_cancel(record.dir)
    runs.request_cancel(record.dir)
    assert runs.cancel_requested(record.dir)
    runs.clear_cancel(record.dir)
    runs.clear_cancel(record.dir)
    assert not runs.cancel_requested(record.dir)
