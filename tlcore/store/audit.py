"""The audit log: who cancelled, resumed or deleted what, and every login, in one file.

``<workspace>/audit.jsonl`` holds one JSON object per line, oldest first::

    {"time": "...", "actor": "ana", "role": "member", "action": "cancel",
     "target": "run 20260101-...", "owner": "ana", "outcome": "done", ...}

The file is only ever appended to. Each line is written with a single ``write`` on a file
opened with ``O_APPEND``, so lines from several server processes never interleave, and it is
forced to disk before the action is reported done.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from tlcore.fileio import StorageError
from tlcore.store.workspace import Workspace

# Outcomes of an action as the log records them.
DONE, REFUSED, FAILED = "done", "refused", "failed"


def append(
    ws: Workspace,
    *,
    actor: str,
    role: str,
    action: str,
    target: str,
    outcome: str,
    **detail: Any,
) -> dict:
    """Appends one line to the audit log and returns it.

    Args:
        ws: the workspace.
        actor: who acted (a user name, or "local" for the command line).
        role: their role ("admin" or "member").
        action: what they did: "cancel", "resume", "delete_dataset", "login", ...
        target: what they did it to, e.g. "run 20260101-120000-abc" or "dataset flowers".
        outcome: `DONE`, `REFUSED` or `FAILED`.
        **detail: anything else worth keeping (the owner, an admin override, the reason).

    Raises:
        tlcore.fileio.StorageError: the log cannot be written (disk full, no permission).
    """
    record = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "actor": actor,
        "role": role,
        "action": action,
        "target": target,
        "outcome": outcome,
        **{k: v for k, v in detail.items() if v is not None},
    }
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    path = ws.audit_path
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)  # one write per line: concurrent appends do not interleave
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"Could not write the audit log {path}: {exc.strerror or exc}."
        ) from exc
    return record


def read(ws: Workspace, *, limit: int | None = None) -> list[dict]:
    """The audit log's lines, newest first (``limit`` of them; default all).

    A line that is not a JSON object (a torn write after a crash) is skipped.
    """
    try:
        with open(ws.audit_path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    return records
