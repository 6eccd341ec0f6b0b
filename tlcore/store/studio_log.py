"""The workspace's own log: ``<workspace>/logs/studio.log``, rotated at 5 MB, 3 kept.

Written by the scheduler, the one long-lived process of a workspace (so one writer rotates
it); a run's own output stays in its folder (``worker.log``). Home shows the last error.

Every message is written through `escape_control` (`EscapingFormatter`), so a dataset or run
name holding a newline or a terminal escape code cannot forge a log line or act on the
terminal that reads the log; the command line's tables use the same function.
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

# C0 controls, DEL and C1 controls: a terminal acts on them (ESC starts an escape sequence,
# a newline starts a row), so a name holding them could clear the screen or forge rows.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def escape_control(value) -> str:
    """``str(value)`` with every control character shown as a visible escape.

    Newline, carriage return and tab become ``\\n``, ``\\r``, ``\\t``; other C0/C1
    controls and DEL become ``\\xNN``. Everything else (accents, CJK, emoji) is kept, so
    what a user named a dataset or run is printed as they typed it, on one line.
    """
    return str(value).translate(_CONTROL_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` whose message and traceback are escaped (`escape_control`):
    one record is one line (a traceback's own line breaks are kept, its text escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = escape_control(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = "\n".join(
                escape_control(line) for line in record.exc_text.split("\n")
            )
        record.exc_info = None
        return super().format(record)


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
        handler.setFormatter(EscapingFormatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
