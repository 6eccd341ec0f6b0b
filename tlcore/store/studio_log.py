"""The workspace's own log: ``<workspace>/logs/studio.log``, rotated at 5 MB, 3 kept.

Written by the scheduler, the one long-lived process of a workspace (so one writer rotates
it); a run's own output stays in its folder (``worker.log``). Home shows the last error.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from tlcore.store.workspace import Workspace

LOG_DIR = "logs"
LOG_FILE = "studio.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"


def log_dir(ws: Workspace) -> Path:
    folder = ws.root / LOG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_path(ws: Workspace) -> Path:
    return log_dir(ws) / LOG_FILE


def configure(ws: Workspace, level: int = logging.INFO) -> logging.Logger:
    """Sends the ``tlcore`` loggers of this process to the workspace's rotating log."""
    logger = logging.getLogger("tlcore")
    path = log_path(ws)
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
