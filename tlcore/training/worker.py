"""The training process: ``python -m tlcore.training.worker WORKSPACE RUN_ID``.

Started by `tlcore.store.jobs`, never imported by anything else. Whatever happens, the run
ends in a closed state (MLflow's rule): ``finished``, ``cancelled``, ``failed`` with
the reason, or ``interrupted`` when the process is told to terminate. A process killed
outright (SIGKILL, power loss) is found dead by `jobs.reconcile` and marked
``interrupted`` there. When the run ends, the next queued run is started.
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

from tlcore.store import jobs, runs
from tlcore.store.workspace import Workspace


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that ``finally`` blocks run."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _failure_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MemoryError) or "OOM" in text or "out of memory" in text.lower():
        return (
            f"Out of memory: {text[:500]}. Lower the batch size or the image size, "
            "or choose a smaller backbone."
        )
    return text[:2000]


def _close(ws: Workspace, run_id: str, state: str, **changes) -> None:
    with jobs.scheduler_lock(ws):
        record = runs.read_run(ws, run_id)
        if record.state == runs.RUNNING:
            runs.set_state(ws, run_id, state, **changes)
    runs.append_progress(ws.run_dir(run_id), "run_end", state=state, error=changes.get("error"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m tlcore.training.worker WORKSPACE RUN_ID", file=sys.stderr)
        return 2
    ws, run_id = Workspace(Path(argv[0]).resolve()), argv[1]
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from tlcore.training.train import train_run  # imports TensorFlow: after the signal handler

        result = train_run(ws, run_id)
        _close(ws, run_id, result.state, summary=result.summary)
        return 0
    except _Terminated:
        _close(
            ws,
            run_id,
            runs.INTERRUPTED,
            error="Training was stopped by the system (terminated). Resume continues from the "
            "last completed epoch.",
        )
        return 1
    except BaseException as exc:  # every failure must close the run
        traceback.print_exc()
        _close(ws, run_id, runs.FAILED, error=_failure_message(exc))
        return 1
    finally:
        try:
            jobs.schedule(ws)
        except Exception:  # starting the next run must not mask this one's end
            traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
