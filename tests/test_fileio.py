import errno
import io
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


class _CountingFile(io.FileIO):
    """A file that adds every byte read from the disk to a shared count."""

    def __init__(self, path, counted: list[int]):
        super().__init__(path, "r")
        self.counted = counted

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.counted[0] += n or 0
        return n

    def readall(self):
        data = super().readall()
        self.counted[0] += len(data)
        return data


def _counting_open(counted: list[int]):
    """``open`` for `tlcore.fileio`: reads go through `_CountingFile`, other modes as usual."""

    def counting_open(file, mode="r", *args, encoding=None, **kwargs):
        if set(mode) - {"r", "b", "t"}:
            return open(file, mode, *args, encoding=encoding, **kwargs)
        buffered = io.BufferedReader(_CountingFile(file, counted))
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=encoding)

    return counting_open


def test_jsonl_tail_reads_only_what_was_appended_and_waits_for_torn_lines(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    for epoch in range(100):  # a long run's log: re-reading it would show in the count
        fileio.append_jsonl(path, {"epoch": epoch, "loss": 0.25})
    counted = [0]
    monkeypatch.setattr(fileio, "open", _counting_open(counted), raising=False)

    def read_counting(tail):
        counted[0] = 0
        return tail.read(path), counted[0]

    tail = fileio.JsonlTail()
    records, read = read_counting(tail)
    assert len(records) == 100 and read == path.stat().st_size
    assert read_counting(tail) == (records, 0)  # nothing new: nothing read

    size = path.stat().st_size
    fileio.append_jsonl(path, {"epoch": 100})
    records, read = read_counting(tail)
    assert records[-1] == {"epoch": 100} and len(records) == 101
    assert read == path.stat().st_size - size  # the new line only, not the whole file

    with open(path, "a") as fh:
        fh.write('{"epoch": 101}\n{"epo')  # the writer is mid-line
    records, read = read_counting(tail)
    assert records[-1] == {"epoch": 101} and len(records) == 102
    assert read == len('{"epoch": 101}\n{"epo')
    with open(path, "a") as fh:
        fh.write('ch": 102}\n')
    records, read = read_counting(tail)
    assert records[-1] == {"epoch": 102} and len(records) == 103
    assert read == len('{"epo') + len('ch": 102}\n')  # the torn line again, then the rest

    path.unlink()
    fileio.append_jsonl(path, {"epoch": 9})  # a new file at the same path
    records, read = read_counting(tail)
    assert records == [{"epoch": 9}] and read == path.stat().st_size
