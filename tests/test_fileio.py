import errno
import os

import pytest

from tlcore import fileio


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "status.json"
    fileio.atomic_write_json(path, {"state": "queued"})
    fileio.atomic_write_json(path, {"state": "running"})
    assert fileio.read_json(path) == {"state": "running"}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    fileio.atomic_write_json(path, {"state": "queued"})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(fileio.StorageError, match="disk is full"):
        fileio.atomic_write_json(path, {"state": "running"})
    assert fileio.read_json(path) == {"state": "queued"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_says_so(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(fileio.StorageError, match="No permission"):
            fileio.atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        tmp_path.chmod(0o700)


def test_jsonl_tail_reads_only_what_was_appended_and_waits_for_torn_lines(tmp_path):
    path = tmp_path / "progress.jsonl"
    tail = fileio.JsonlTail()
    assert tail.read(path) == []
    fileio.append_jsonl(path, {"epoch": 1})
    assert tail.read(path) == [{"epoch": 1}]
    with open(path, "a") as fh:
        fh.write('{"epoch": 2}\n{"epo')  # the writer is mid-line
    assert tail.read(path) == [{"epoch": 1}, {"epoch": 2}]
    with open(path, "a") as fh:
        fh.write('ch": 3}\n')
    assert tail.read(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    path.unlink()
    fileio.append_jsonl(path, {"epoch": 9})  # a new file at the same path
    assert tail.read(path) == [{"epoch": 9}]
