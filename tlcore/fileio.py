"""Crash-safe file writes: every file a run or dataset produces goes through here.

A reader (the UI, another process) must never see half a file, so whole files are
written to a temporary sibling and moved into place with ``os.replace``; logs are
append-only and flushed to disk per record.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


class StorageError(OSError):
    """A write failed for a reason the user can act on (disk full, no permission)."""


def _explain(exc: OSError, path: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        what = f"The disk is full: could not write {path}. Free some space and try again."
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = (
            f"No permission to write {path}. Choose a writable workspace "
            "(--workspace or TLS_WORKSPACE)."
        )
    else:
        what = f"Could not write {path}: {exc.strerror or exc}."
    err = StorageError(exc.errno, what)
    err.filename = str(path)
    return err


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in chunks (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` so that readers see the old file or the new, never half.

    Raises:
        StorageError: the disk is full or the folder is not writable; no temp file is left.
    """
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Calls ``write(binary file)`` on a unique temporary sibling, then moves it into place.

    Two processes writing the same path never share a temporary file; the last to finish
    wins whole.

    Raises:
        StorageError: the disk is full or the folder is not writable; no temp file is left.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise _explain(exc, path) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 ``text`` atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically (see `atomic_write_bytes`)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file. Raises OSError or ValueError (json.JSONDecodeError) as is."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Appends one JSON line and forces it to disk, so a crash loses at most this record."""
    path = Path(path)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _explain(exc, path) from exc


class JsonlTail:
    """Reads an append-only JSON-lines file incrementally: each call parses only new lines.

    The Training page polls a run's progress log every second or two for as long as the run
    lasts; re-parsing the whole file each time would grow with the run. Complete lines are
    parsed once and kept; a torn last line is read again on the next call. Thread-safe (the
    web server renders sessions in several threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int, list[dict]]] = {}  # path → (inode, offset, records)

    def read(self, path: str | os.PathLike) -> list[dict]:
        key = os.fspath(path)
        with self._lock:
            try:
                st = os.stat(key)
            except FileNotFoundError:
                self._seen.pop(key, None)
                return []
            inode, offset, records = self._seen.get(key, (st.st_ino, 0, []))
            if inode != st.st_ino or st.st_size < offset:  # replaced or truncated: start over
                offset, records = 0, []
            if st.st_size > offset:
                with open(key, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(st.st_size - offset)
                complete = chunk.rfind(b"\n") + 1
                for line in chunk[:complete].splitlines():
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        continue
                offset += complete
            self._seen[key] = (st.st_ino, offset, records)
            return list(records)
