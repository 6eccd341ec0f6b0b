"""Who may change what (tlcore.store.access), owners of runs and datasets, and the audit log."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from tests.conftest import tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.store import access, audit, jobs, runs
from tlcore.store.access import ADMIN, LOCAL, MEMBER, Actor, NotAllowedError

ANA = Actor("ana", MEMBER)
BEN = Actor("ben", MEMBER)
BOSS = Actor("boss", ADMIN)


@pytest.fixture(autouse=True)
def no_workers(monkeypatch):
    """Runs stay queued: nothing trains in these tests."""
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])


def _refusals(ws) -> list[dict]:
    return [r for r in audit.read(ws) if r["outcome"] == audit.REFUSED]


# -- the rule -------------------------------------------------------------------------------
def test_the_rule():
    assert access.can_change(ANA, "ana") and access.can_change(ANA, "ANA")
    assert not access.can_change(ANA, "ben")
    assert not access.can_change(ANA, None)  # nobody's: admins only
    assert access.can_change(BOSS, "ben") and access.can_change(BOSS, None)
    assert access.needs_override(BOSS, "ben") and not access.needs_override(BOSS, "boss")
    assert access.can_change(LOCAL, "ben") and not access.needs_override(LOCAL, "ben")
    assert LOCAL.owner is None and ANA.owner == "ana"
    with pytest.raises(ValueError, match="Received: role='root'"):
        Actor("x", "root")


# -- runs ---------------------------------------------------------------------------------
def test_runs_record_who_started_them(ws):
    mine = jobs.submit(ws, tiny_config("tiny"), owner="ana")
    cli_run = jobs.submit(ws, tiny_config("tiny"))
    assert runs.read_run(ws, mine).owner == "ana"
    assert json.loads((ws.run_dir(mine) / runs.STATUS_FILE).read_text())["owner"] == "ana"
    assert runs.read_run(ws, cli_run).owner is None
    # The owner survives state changes and the listing (index) alike.
    jobs.cancel(ws, mine, actor=ANA)
    assert {r.id: r.owner for r in runs.list_runs(ws)}[mine] == "ana"
    assert runs.run_row(runs.read_run(ws, mine))["owner"] == "ana"


def test_a_member_cannot_stop_or_resume_another_members_run(ws):
    run_id = jobs.submit(ws, tiny_config("tiny"), owner="ana")
    with pytest.raises(NotAllowedError, match=r"it belongs to ana\. Only ana or an admin can"):
        jobs.cancel(ws, run_id, actor=BEN)
    assert runs.read_run(ws, run_id).state == runs.QUEUED
    assert jobs.cancel(ws, run_id, actor=ANA) == runs.CANCELLED
    with pytest.raises(NotAllowedError, match="cannot resume run"):
        jobs.resume(ws, run_id, actor=BEN)
    assert runs.read_run(ws, run_id).state == runs.CANCELLED
    jobs.resume(ws, run_id, actor=ANA)
    assert runs.read_run(ws, run_id).state == runs.QUEUED
    refused = _refusals(ws)
    assert [(r["actor"], r["action"], r["owner"]) for r in refused] == [
        ("ben", "resume", "ana"),
        ("ben", "cancel", "ana"),
    ]


def test_an_admin_may_stop_anyones_run_once_confirmed(ws):
    run_id = jobs.submit(ws, tiny_config("tiny"), owner="ana")
    with pytest.raises(NotAllowedError, match="confirm first"):
        jobs.cancel(ws, run_id, actor=BOSS)
    assert runs.read_run(ws, run_id).state == runs.QUEUED
    assert jobs.cancel(ws, run_id, actor=BOSS, override=True) == runs.CANCELLED
    line = audit.read(ws)[0]
    assert line["actor"] == "boss" and line["role"] == ADMIN and line["owner"] == "ana"
    assert line["action"] == "cancel" and line["outcome"] == "done" and line["admin_override"]
    assert line["target"] == f"run {run_id}"


def test_runs_without_an_owner_are_admins_only(ws):
    run_id = runs.create_run(ws, tiny_config("tiny")).id
    # A run folder from before owners were recorded has no "owner" key at all.
    path = ws.run_dir(run_id) / runs.STATUS_FILE
    status = json.loads(path.read_text())
    del status["owner"]
    path.write_text(json.dumps(status))
    assert runs.read_run(ws, run_id).owner is None
    with pytest.raises(NotAllowedError, match="no recorded owner, so only an admin can"):
        jobs.cancel(ws, run_id, actor=ANA)
    assert jobs.cancel(ws, run_id) == runs.CANCELLED  # the command line (LOCAL) may
    assert audit.read(ws)[0]["actor"] == "local"


# -- datasets -----------------------------------------------------------------------------
def test_datasets_record_who_imported_them_and_only_they_delete(ws, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    ds = datasets.import_folder(ws, src, owner="ana")
    assert ds.owner == "ana" and ds.manifest["owner"] == "ana"
    assert datasets.list_datasets(ws)[0].owner == "ana"
    with pytest.raises(NotAllowedError, match="cannot delete dataset pets"):
        datasets.delete_dataset(ws, ds.id, actor=BEN)
    assert ws.dataset_dir(ds.id).is_dir()
    with pytest.raises(NotAllowedError, match="confirm first"):
        datasets.delete_dataset(ws, ds.id, actor=BOSS)
    datasets.delete_dataset(ws, ds.id, actor=ANA)
    assert not ws.dataset_dir(ds.id).exists()
    done = audit.read(ws)[0]
    assert (done["actor"], done["action"], done["outcome"]) == ("ana", "delete_dataset", "done")
    assert "admin_override" not in done


def test_an_admin_deletes_someone_elses_dataset_with_override(ws, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    ds = datasets.import_folder(ws, src, owner="ana")
    datasets.delete_dataset(ws, ds.id, actor=BOSS, override=True)
    assert not ws.dataset_dir(ds.id).exists()
    assert audit.read(ws)[0]["admin_override"] is True


def test_command_line_imports_have_no_owner(ws, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    ds = datasets.import_folder(ws, src)
    assert ds.owner is None and ds.manifest["owner"] is None


# -- the audit log ------------------------------------------------------------------------
def _append_many(root: str, writer: int) -> None:
    from tlcore.store.workspace import Workspace

    ws = Workspace(Path(root))
    for i in range(100):
        audit.append(
            ws,
            actor=f"writer{writer}",
            role=MEMBER,
            action="cancel",
            target=f"run {i}",
            outcome=audit.DONE,
            padding="x" * 3000,  # longer than a pipe's atomic write, shorter than a page
        )


def test_audit_log_is_append_only_and_lines_never_interleave(ws):
    audit.append(ws, actor="a", role=MEMBER, action="cancel", target="run 1", outcome="done")
    first = ws.audit_path.read_text()
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(ws.root), w)) for w in range(4)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(60)
    text = ws.audit_path.read_text()
    assert text.startswith(first)  # nothing before was rewritten
    lines = text.splitlines()
    assert len(lines) == 401
    assert all(json.loads(line)["action"] == "cancel" for line in lines)
    newest_first = audit.read(ws, limit=5)
    assert len(newest_first) == 5 and newest_first[0]["target"] == "run 99"
