"""A SQLite index over the workspace's run and dataset folders, for fast listing.

The folders are the source of truth. Each row remembers the modification time of the
file it was read from, so a listing re-reads only folders that changed since, and
`rebuild` recreates the whole index from the folders. Losing the index loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from tlcore.store.run_layout import CONFIG_FILE, STATUS_FILE
from tlcore.store.workspace import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_json TEXT NOT NULL,
    config_json TEXT,
    files_stamp TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    manifest_json TEXT NOT NULL
);
"""


def _connect(ws: Workspace) -> sqlite3.Connection:
    conn = sqlite3.connect(ws.index_path, timeout=30)
    conn.executescript(SCHEMA)
    return conn


def _file_stamp(path: Path) -> str:
    # Atomic writes replace the file, so the inode changes even within one mtime tick.
    try:
        st = path.stat()
    except OSError:
        return "-"
    return f"{st.st_ino}.{st.st_mtime_ns}.{st.st_size}"


def run_files_stamp(ws: Workspace, run_id: str) -> str:
    """Changes whenever the run's status.json or config.json is rewritten or removed."""
    folder = ws.run_dir(run_id)
    return f"{_file_stamp(folder / STATUS_FILE)}:{_file_stamp(folder / CONFIG_FILE)}"


def record_run(
    ws: Workspace, run_id: str, status: dict, config: dict | None, *, stamp: str | None = None
) -> None:
    """Stores a run's ``status.json`` as read or written, with its `run_files_stamp`.

    Args:
        stamp: the stamp taken *before* the files were read (a reader: the listing, a
            rebuild). Default None: taken now, right for a writer that has just written
            them under the scheduler lock. A reader must not take it after reading: a
            status written in between would get the stamp of the newer file with the
            older contents, and listings would trust that stale row until the run changed
            again (a finished run shown, and scheduled, as running).
    """
    stamp = run_files_stamp(ws, run_id) if stamp is None else stamp
    with closing(_connect(ws)) as conn, conn:
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
            (
                run_id,
                status["state"],
                json.dumps(status),
                json.dumps(config) if config is not None else None,
                stamp,
            ),
        )


def cached_runs(ws: Workspace) -> dict[str, tuple[dict, dict | None, str]]:
    """Indexed runs: id → (status, config, `run_files_stamp` when indexed)."""
    with closing(_connect(ws)) as conn:
        rows = conn.execute("SELECT id, status_json, config_json, files_stamp FROM runs")
        return {
            rid: (json.loads(st), json.loads(cf) if cf else None, stamp)
            for rid, st, cf, stamp in rows
        }


def record_dataset(ws: Workspace, manifest: dict) -> None:
    """Stores a dataset's manifest (``dataset.json``) for listing."""
    with closing(_connect(ws)) as conn, conn:
        conn.execute(
            "INSERT OR REPLACE INTO datasets VALUES (?, ?, ?)",
            (manifest["id"], manifest.get("name", manifest["id"]), json.dumps(manifest)),
        )


def forget_dataset(ws: Workspace, dataset_id: str) -> None:
    with closing(_connect(ws)) as conn, conn:
        conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))


def rebuild(
    ws: Workspace,
    run_rows: Iterable[tuple[str, dict, dict | None]],
    dataset_manifests: Iterable[dict],
) -> tuple[int, int]:
    """Recreates the index from what the folders hold. Returns (runs, datasets).

    Args:
        run_rows: ``(run id, status, config or None, stamp)`` per readable run, the
            stamp taken before the folder was read (`tlcore.store.runs.index_rows`).
        dataset_manifests: every valid ``dataset.json`` (`tlcore.data.datasets.manifests`).
    """
    with closing(_connect(ws)) as conn, conn:
        conn.execute("DELETE FROM runs")
        conn.execute("DELETE FROM datasets")
    run_count = 0
    for run_id, status, config, stamp in run_rows:
        record_run(ws, run_id, status, config, stamp=stamp)
        run_count += 1
    dataset_count = 0
    for manifest in dataset_manifests:
        record_dataset(ws, manifest)
        dataset_count += 1
    return run_count, dataset_count
