"""How long the server takes to run each page, for a benchmark to read.

A page load is three parts: the browser's request, this server running the page's script,
and the browser drawing what it sent. Only the middle is the server's, and it is the only
part a lab server's load changes when the browsers are on people's own machines.
`PageRun` measures it (wall time, so waiting for a CPU counts) and, when
``TLS_PAGE_TIMES`` names a file, appends one JSON line per whole-page run to it:
``{"page", "start", "seconds", "outcome"}``, outcome ``done``, ``rerun`` (cut short by a
newer run of the same session), ``stopped`` (``st.stop``) or ``error``.
`bench/bench_server.py` reads them. Without the variable nothing is measured or written.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

TIMES_ENV = "TLS_PAGE_TIMES"
_write_lock = threading.Lock()  # one server process runs every session's scripts
_CONTROL_FLOW = {"RerunException": "rerun", "StopException": "stopped"}  # Streamlit's


class PageRun:
    """One whole-page script run, timed from its creation (the top of ``app.py``)."""

    def __init__(self) -> None:
        self.target = os.environ.get(TIMES_ENV)
        self.start, self.began = time.time(), time.perf_counter()

    @contextlib.contextmanager
    def until_end(self, page: str):
        """The rest of the run, as a run of ``page``; written when the block is left."""
        if not self.target:
            yield
            return
        outcome = "done"
        try:
            yield
        except BaseException as exc:
            outcome = _CONTROL_FLOW.get(type(exc).__name__, "error")
            raise
        finally:
            line = {
                "page": page,
                "start": self.start,
                "seconds": round(time.perf_counter() - self.began, 4),
                "outcome": outcome,
            }
            with _write_lock, contextlib.suppress(OSError), open(self.target, "a") as out:
                out.write(json.dumps(line) + "\n")
