"""The training process: ``python -m tlcore.training.worker WORKSPACE RUN_ID``.

Started by `tlcore.store.jobs`, never imported by anything else. Whatever happens, the run
ends in a closed state (MLflow's rule): ``finished``, ``cancelled``, ``failed`` with
the reason, or ``interrupted`` when the process is told to terminate. A process killed
outright (SIGKILL, power loss) is found dead by `jobs.reconcile` and marked
``interrupted`` there. When the run ends, the next queued run is started.

``--warm``: a worker started ahead of time by the scheduler, which waits with TensorFlow
imported until a run is handed to it (see `tlcore.store.jobs`' warm workers).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from tlcore.store import jobs, runs
from tlcore.store.run_layout import WORKER_LOG
from tlcore.store.workspace import Workspace

WARM_POLL_S = 0.05  # how often an idle warm worker looks for its run


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


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, is "no space left on device"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):  # h5py, TensorFlow: their own types
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _disk_full_message(exc: BaseException) -> str:
    return (
        f"The disk filled up: {str(exc).strip()[:500]} Free some space (Home's Storage "
        "panel gives back caches and old checkpoints), then Resume: the run continues from "
        "its last completed epoch."
    )


CLOSE_RETRY_DELAYS_S = (1.0, 3.0, 10.0)  # a status write that fails (disk full) is retried


def _close(ws: Workspace, run_id: str, state: str, **changes) -> None:
    """Writes the run's final state, retrying a write that fails (the disk is full).

    If it still cannot be written, the process exits anyway and the run, ``running`` with
    a dead worker, is marked ``interrupted`` (resumable) by `jobs.reconcile` once it can.
    """
    for delay in (*CLOSE_RETRY_DELAYS_S, None):
        try:
            with jobs.scheduler_lock(ws):
                record = runs.read_run(ws, run_id)
                if record.state == runs.RUNNING:
                    runs.set_state(ws, run_id, state, **changes)
            break
        except OSError:
            if delay is None:
                traceback.print_exc()
                return
            time.sleep(delay)
    try:
        runs.append_progress(ws.run_dir(run_id), "run_end", state=state, error=changes.get("error"))
    except OSError:
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--warm":
        return _warm(Workspace(Path(argv[1]).resolve()))
    if len(argv) != 2:
        print(
            "usage: python -m tlcore.training.worker WORKSPACE RUN_ID\n"
            "       python -m tlcore.training.worker --warm WORKSPACE",
            file=sys.stderr,
        )
        return 2
    ws, run_id = Workspace(Path(argv[0]).resolve()), argv[1]
    signal.signal(signal.SIGTERM, _on_sigterm)
    return _train(ws, run_id)


def _warm(ws: Workspace) -> int:
    """A warm worker: imports TensorFlow, says it is ready, and waits to be handed a run.

    Kept by the scheduler (`tlcore.store.scheduler`), which stops it with SIGTERM while it
    is idle; it also leaves by itself when the scheduler that started it is gone.
    """
    _import_what_training_needs()
    scheduler_pid, me = os.getppid(), os.getpid()
    jobs.announce_warm_worker(ws)
    while (run_id := jobs.warm_worker_assignment(ws, me)) is None:
        if os.getppid() != scheduler_pid:  # orphaned: nobody will hand it a run
            jobs.forget_warm_worker(ws, me)
            return 0
        time.sleep(WARM_POLL_S)
    signal.signal(signal.SIGTERM, _on_sigterm)
    jobs.forget_warm_worker(ws, me)
    with open(ws.run_dir(run_id) / WORKER_LOG, "ab") as log:  # from now on, the run's log
        os.dup2(log.fileno(), sys.stdout.fileno())
        os.dup2(log.fileno(), sys.stderr.fileno())
    return _train(ws, run_id)


def _import_what_training_needs() -> None:
    """Imports, ahead of the run, what `train.train_run` imports when it starts (TensorFlow,
    Keras, scikit-learn and the modules that use them): the seconds a warm worker saves."""
    import keras  # noqa: F401
    import sklearn.utils.class_weight  # noqa: F401
    import tensorflow  # noqa: F401

    from tlcore.data import datasets, pipeline  # noqa: F401
    from tlcore.evaluation import evaluate, stats  # noqa: F401
    from tlcore.model import model_store, models  # noqa: F401
    from tlcore.training import callbacks, distribution, features, head_search, train  # noqa: F401


def _train(ws: Workspace, run_id: str) -> int:
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
        if _disk_full(exc):  # nothing wrong with the run: it can go on once there is room
            _close(ws, run_id, runs.INTERRUPTED, error=_disk_full_message(exc))
        else:
            _close(ws, run_id, runs.FAILED, error=_failure_message(exc))
        return 1
    finally:
        try:
            jobs.schedule(ws)
        except Exception:  # starting the next run must not mask this one's end
            traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
