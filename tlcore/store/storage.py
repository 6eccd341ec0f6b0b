"""Space the workspace can give back without losing a result: cached features, the resume
checkpoints of runs that can no longer resume, and leftovers of interrupted uploads.

Home lists each with its size (`cleanable`) and removes one kind on request (`remove`).
Nothing listed here is a model, a dataset or an evaluation.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tlcore.store import quotas, runs
from tlcore.store.run_layout import BACKUP_DIR
from tlcore.store.workspace import Workspace

FEATURES = "features"
CHECKPOINTS = "checkpoints"
UPLOADS = "uploads"
# Runs in these states cannot resume, so their resume checkpoints are of no further use.
ENDED_FOR_GOOD = (runs.FINISHED, runs.FAILED)
UPLOAD_LEFTOVER_AGE_S = 3600.0


@dataclass(frozen=True)
class Cleanable:
    """One kind of space that can be given back."""

    kind: str
    label: str
    size_bytes: int
    count: int
    note: str


def _feature_folders(ws: Workspace) -> list[Path]:
    root = ws.cache_dir / "features"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def _checkpoint_folders(ws: Workspace) -> list[Path]:
    return [
        r.dir / BACKUP_DIR
        for r in runs.list_runs(ws)
        if r.state in ENDED_FOR_GOOD and (r.dir / BACKUP_DIR).is_dir()
    ]


def _upload_folders(ws: Workspace) -> list[Path]:
    root = ws.cache_dir / "uploads"
    if not root.is_dir():
        return []
    cutoff = time.time() - UPLOAD_LEFTOVER_AGE_S  # a younger one may be an upload under way
    return [p for p in root.iterdir() if p.stat().st_mtime < cutoff]


def _folders(ws: Workspace, kind: str) -> list[Path]:
    found = {FEATURES: _feature_folders, CHECKPOINTS: _checkpoint_folders, UPLOADS: _upload_folders}
    if kind not in found:
        raise ValueError(f"Nothing called {kind!r} can be cleaned; choose one of {list(found)}.")
    return found[kind](ws)


def _size(path: Path) -> int:
    return quotas.folder_size(path) if path.is_dir() else path.stat().st_size


def cleanable(ws: Workspace) -> list[Cleanable]:
    """Each kind of removable space, with its size and how many items it is."""
    notes = {
        FEATURES: (
            "Cached features",
            "What a frozen backbone computed for each image; recomputed when a run needs "
            "them again (seconds to minutes).",
        ),
        CHECKPOINTS: (
            "Resume checkpoints of finished and failed runs",
            "Those runs cannot resume; their kept model and results stay.",
        ),
        UPLOADS: ("Leftovers of interrupted uploads", "Nothing uses them."),
    }
    items = []
    for kind, (label, note) in notes.items():
        folders = _folders(ws, kind)
        size = sum(_size(p) for p in folders)
        items.append(Cleanable(kind, label, size, len(folders), note))
    return items


def remove(ws: Workspace, kind: str) -> int:
    """Removes every item of ``kind``; returns the bytes given back.

    Raises:
        ValueError: an unknown kind, or cached features while a run is training (it may be
            reading or writing them).
    """
    if kind == FEATURES and any(r.state == runs.RUNNING for r in runs.list_runs(ws)):
        raise ValueError(
            "A run is training and may be using the cached features. Remove them when no "
            "run is training."
        )
    freed = 0
    for path in _folders(ws, kind):
        try:
            size = _size(path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # in use or already gone: the rest is still removed
        freed += size
    return freed
