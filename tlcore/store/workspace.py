"""The workspace: one folder holding every dataset, run and cache of this installation.

Layout::

    workspace/
      datasets/<dataset_id>/dataset.json   (+ images, report, split)
      runs/<run_id>/config.json, status.json, progress.jsonl, ...
      cache/                               (feature and image caches; safe to delete)
      incoming/                            (the folder the web UI may read images from by
                                            default; see `tlcore.store.server_paths`)
      index.sqlite                         (fast listing; rebuilt from the folders)
      audit.jsonl                          (append-only: who cancelled, deleted, logged in)
      login-attempts.json                  (failed logins, for the lock-out)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tlcore.fileio import StorageError

WORKSPACE_ENV = "TLS_WORKSPACE"
DEFAULT_WORKSPACE = "workspace"
MAX_ID_CHARS = 255  # a run's or dataset's id is a folder name: NAME_MAX on common systems
DATASET_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")  # what imports make (tlcore.data.catalog)


def is_dataset_id(value: object) -> bool:
    """Whether ``value`` can be a dataset's id: lowercase letters, digits and dashes.

    The one check for ids typed by a user and ids read from files (a run's
    ``classes.json``, a stored evaluation's manifest): never a path, never ``..``.
    """
    return (
        isinstance(value, str)
        and len(value) <= MAX_ID_CHARS
        and DATASET_ID_PATTERN.fullmatch(value) is not None
    )


def is_run_id(value: object) -> bool:
    """Whether ``value`` can name a run folder: one file name (no separator, not ``.`` or
    ``..``, no hidden ``.`` prefix, no NUL) of at most `MAX_ID_CHARS` bytes.

    Run ids are made by `tlcore.store.runs.new_run_id`; this only rules out what can
    never be one, so that a lookup answers "no such run" rather than failing on the path.
    """
    return (
        isinstance(value, str)
        and 0 < len(value.encode("utf-8", "surrogateescape")) <= MAX_ID_CHARS
        and not value.startswith(".")
        and not any(c in value for c in "/\\\0")
    )


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace folder. Create with `open_workspace`."""

    root: Path

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def incoming_dir(self) -> Path:
        """Where files to import through the web UI are copied (its default shared folder)."""
        return self.root / "incoming"

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def login_attempts_path(self) -> Path:
        return self.root / "login-attempts.json"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def free_disk_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def resolve_workspace_path(path: str | os.PathLike | None = None) -> Path:
    """The workspace folder: ``path`` if given, else ``$TLS_WORKSPACE``, else ``./workspace``."""
    chosen = path or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    return Path(chosen).expanduser().resolve()


def open_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """Opens (creating if needed) a workspace and checks that it is writable.

    Args:
        path: the folder; defaults to ``$TLS_WORKSPACE`` or ``./workspace``.

    Raises:
        StorageError: the folder cannot be created or written, with what to do about it.
    """
    root = resolve_workspace_path(path)
    ws = Workspace(root)
    try:
        for folder in (root, ws.datasets_dir, ws.runs_dir, ws.cache_dir, ws.incoming_dir):
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StorageError(
            exc.errno,
            f"The workspace {root} is not writable ({exc.strerror or exc}). "
            f"Point {WORKSPACE_ENV} or --workspace at a folder you can write to.",
        ) from exc
    return ws
