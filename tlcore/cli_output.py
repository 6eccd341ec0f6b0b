"""What the command line prints: JSON, plain tables, tqdm progress bars on stderr, and the
progress line of a training followed in the foreground."""

from __future__ import annotations

import json
import sys
import time

from tlcore.store import jobs, runs
from tlcore.store.studio_log import escape_control
from tlcore.training.progress import format_duration, summarize_progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed without a traceback (exit code 2)."""


def print_json(obj) -> None:
    """One JSON object on stdout, keys sorted (scripts parse it)."""
    print(json.dumps(obj, sort_keys=True, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    """Rows as left-aligned columns under upper-case headers; empty for no rows.

    Every cell goes through `escape_control`, so one row is always one line.
    """
    if not rows:
        return ""
    cells = [{c: escape_control(r.get(c, "")) for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in cells]
    return "\n".join(lines)


def fmt_metric(value) -> str:
    return "" if value is None else f"{value:.3f}"


class _LineWriter:
    """The stream tqdm draws on when stderr is not a terminal (a log file, a pipe).

    tqdm redraws a bar in place with carriage returns, which a log keeps as one ever-growing
    line; here each redraw becomes a line of its own, and the clearing writes vanish.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def stderr_progress(label: str):
    """A ``report(fraction, message)`` callback drawing a tqdm bar named ``label`` on stderr.

    The bar appears on the first report and is closed, showing 100 %, when a report reaches
    1.0; a later report below 1.0 starts a new bar, and later ones at 1.0 are ignored. On a
    terminal it redraws in place at most every 0.1 s; elsewhere it writes a line at most every
    5 s (plus the first and the last), so a long job does not flood a log. A bar never finished
    (the work failed) disappears quietly instead of redrawing itself after the error.
    """
    from tqdm import tqdm

    stream = sys.stderr
    tty = stream.isatty()
    state: dict = {"bar": None, "finished": False}

    def report(fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        bar = state["bar"]
        if bar is None:
            if state["finished"] and fraction >= 1.0:
                return
            bar = state["bar"] = tqdm(
                total=1.0,
                initial=fraction,
                desc=label,
                postfix=message[:60] or None,
                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}",
                file=stream if tty else _LineWriter(stream),
                dynamic_ncols=tty,
                ncols=None if tty else 80,
                mininterval=0.1 if tty else 5.0,
                leave=False,  # until finished: see the docstring
            )
        else:
            bar.set_postfix_str(message[:60], refresh=False)
            if fraction < 1.0:
                bar.update(fraction - bar.n)  # draws only when mininterval has passed
            else:
                bar.n = fraction  # close() below draws the last state, once
        if fraction >= 1.0:
            bar.leave = True
            bar.close()
            state["bar"], state["finished"] = None, True

    return report


# -- a training followed in the foreground ---------------------------------------------
def _progress_line(events: list[dict], total_epochs: int) -> str:
    """One line of text for the foreground progress bar."""
    progress = summarize_progress(events, total_epochs=total_epochs)
    width = 30
    filled = int(width * progress.overall_fraction)
    line = (
        f"epoch {progress.epochs_done}/{progress.total_epochs} "
        f"[{'#' * filled}{'.' * (width - filled)}]"
    )
    if progress.batch and progress.batches:
        line += f" batch {progress.batch}/{progress.batches}"
        if progress.images_per_sec:
            line += f" {progress.images_per_sec:.0f} img/s"
        if progress.eta_s is not None:
            line += f" ETA {format_duration(progress.eta_s)}"
    if progress.latest is not None:
        line += "  " + " ".join(
            f"{key}={progress.latest.metric(key):.3f}"
            for key in ("loss", "accuracy", "val_loss", "val_accuracy")
            if progress.latest.metric(key) is not None
        )
    return line


def follow_run(ws, run_id: str, total_epochs: int, quiet: bool) -> runs.RunRecord:
    """Draws a run's progress line on stderr until the run ends; returns its record."""
    tty = sys.stderr.isatty()
    last = ""
    while True:
        record = runs.read_run(ws, run_id)
        if not quiet:
            line = f"{record.state}: " + _progress_line(
                runs.read_progress(record.dir), total_epochs
            )
            if line != last:
                print(("\r" if tty else "") + line + ("" if tty else "\n"), end="", file=sys.stderr)
                last = line
        if record.state in runs.FINAL_STATES or record.status is None:
            if not quiet and tty:
                print(file=sys.stderr)
            return record
        if record.state == runs.RUNNING and not jobs.worker_alive(record.status):
            jobs.reconcile(ws)
            continue
        time.sleep(0.5)
