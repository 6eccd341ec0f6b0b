"""Two people at once: imports with the same name, and listings that race a status write.

Each test forces the interleaving that loses (a barrier, or a write slipped between two
steps), so it fails every time the guard is missing rather than once in a while.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict

from tests.conftest import tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.fileio import atomic_write_json
from tlcore.store import index, runs

STORING = 0.7  # an import's progress past this: its images are being copied in


def _hashes(folder) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_two_imports_with_one_name_at_once_end_as_two_names(ws, tmp_path):
    sources = {
        owner: write_class_folders(tmp_path / owner, {"a": 8, "b": 8}, seed=seed)
        for seed, owner in enumerate(("ana", "ben"))
    }
    # Both have chosen a name and are copying their images before either is published.
    both_copying = threading.Barrier(2, timeout=30)
    results, errors = {}, []

    def import_as(owner: str) -> None:
        waited = []

        def progress(fraction: float, message: str) -> None:
            if fraction > STORING and not waited:
                waited.append(True)
                both_copying.wait()

        try:
            results[owner] = datasets.import_folder(
                ws, sources[owner], name="Flowers", owner=owner, progress=progress
            )
        except Exception as exc:  # reported below, with the other thread's outcome
            errors.append(exc)
            both_copying.abort()

    threads = [threading.Thread(target=import_as, args=(owner,)) for owner in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors

    names = sorted(ds.name for ds in results.values())
    assert names == ["Flowers", "Flowers (2)"]
    for owner, ds in results.items():
        opened = datasets.load_dataset(ws, ds.name)  # each name answers with one dataset
        assert opened.id == ds.id and opened.owner == owner
        stored = {item.sha256 for item in opened.items()}
        assert stored == _hashes(sources[owner])  # its own images, all of them
        assert all(item.path.is_relative_to(opened.dir) for item in opened.items())
    renamed = results["ana"] if results["ana"].name != "Flowers" else results["ben"]
    assert any("already exists" in w for w in renamed.report["warnings"])


def test_a_listing_that_races_a_status_write_does_not_keep_the_old_state(ws, monkeypatch):
    run_id = runs.create_run(ws, tiny_config("tiny")).id
    status_path = ws.run_dir(run_id) / runs.STATUS_FILE
    # A writer has replaced status.json and not yet told the index: the listing re-reads it.
    before = asdict(runs.read_run(ws, run_id).status)
    atomic_write_json(status_path, before | {"state": runs.RUNNING})
    read_run = runs.read_run

    def read_then_another_write(ws_, rid):
        record = read_run(ws_, rid)
        monkeypatch.setattr(runs, "read_run", read_run)
        runs.set_state(ws_, rid, runs.CANCELLED)  # the next write lands meanwhile
        return record

    monkeypatch.setattr(runs, "read_run", read_then_another_write)
    assert [r.state for r in runs.list_runs(ws)] == [runs.RUNNING]  # what it read

    assert read_run(ws, run_id).state == runs.CANCELLED
    assert [r.state for r in runs.list_runs(ws)] == [runs.CANCELLED]
    assert index.cached_runs(ws)[run_id][0]["state"] == runs.CANCELLED
