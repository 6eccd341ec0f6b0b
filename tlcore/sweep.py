"""Runs queued to answer a question: which freezing strategy wins, and did transfer help?

A **strategy sweep** (`start_sweep`) queues one run per strategy in `SWEEP_STRATEGIES`,
all on the same dataset and split, with the same architecture and the same epoch budget,
so the only thing that differs is what trains. It is recorded twice: in each run's
``config.extra`` (``{"sweep": id, "sweep_role": strategy}``) and in
``<workspace>/sweeps/<id>.json``. `sweep_results` reads the runs back: which finished
run has the best test accuracy, and at what cost (training seconds, trainable
parameters).

A **baseline** (`start_baseline`) is the from-scratch twin of a run: same architecture,
data, split and total epochs, random weights, every layer trained. When both have
finished, `baseline_comparison` says how much the pretrained weights were worth.

Both only queue runs (`tlcore.jobs.submit`); training happens in the worker processes,
and the test accuracies come from the evaluation each run stores as it finishes.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tlcore import evaluate, jobs, runs
from tlcore.config import RunConfig
from tlcore.fileio import atomic_write_json, read_json
from tlcore.workspace import Workspace

SWEEPS_DIR = "sweeps"
SWEEP_STRATEGIES = (
    "feature_extraction",
    "fine_tune_top",
    "bias_only",
    "two_phase",
    "from_scratch",
)
EXTRA_SWEEP = "sweep"
EXTRA_ROLE = "sweep_role"
EXTRA_BASELINE_OF = "baseline_of"


class SweepError(ValueError):
    """A sweep or baseline that cannot be started or read, with what to do about it."""


# --------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class Sweep:
    """A recorded sweep: ``runs`` maps each strategy (its role) to its run id."""

    id: str
    created_at: str
    dataset: str
    epochs: int
    unfreeze: int
    runs: dict[str, str]
    base_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "unfreeze": self.unfreeze,
            "runs": [{"role": role, "run_id": run_id} for role, run_id in self.runs.items()],
            "base_config": self.base_config,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Sweep:
        return cls(
            id=data["id"],
            created_at=data.get("created_at", ""),
            dataset=data.get("dataset", ""),
            epochs=int(data.get("epochs", 0)),
            unfreeze=int(data.get("unfreeze", 0)),
            runs={entry["role"]: entry["run_id"] for entry in data.get("runs", [])},
            base_config=data.get("base_config", {}),
        )


def sweeps_dir(ws: Workspace):
    return ws.root / SWEEPS_DIR


def new_sweep_id() -> str:
    return "sweep-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def split_budget(total_epochs: int) -> tuple[int, int]:
    """Two-phase epochs for a budget: head first (the larger half), then fine-tuning."""
    head = max(math.ceil(total_epochs / 2), 1)
    return head, max(total_epochs - head, 0)


def sweep_configs(base: RunConfig, *, unfreeze: int = 2) -> dict[str, RunConfig]:
    """The configuration of each run of a sweep, by strategy.

    Every run keeps ``base``'s dataset, architecture, head, optimiser, augmentation and seed,
    and trains for ``base.total_epochs`` epochs in all: two-phase splits them into head and
    fine-tuning epochs (keeping ``base``'s split when it is two-phase itself); from scratch
    uses random weights (``weights="none"``).

    Args:
        base: the run settings to vary.
        unfreeze: blocks (or layers, per ``base.unfreeze_unit``) that fine-tune-top and
            two-phase unfreeze; default 2.

    Raises:
        ValueError: a resulting configuration is invalid (the message names the field).
    """
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 1:
        raise ValueError(f"unfreeze must be a positive integer. Received: unfreeze={unfreeze!r}")
    budget = base.total_epochs
    if base.strategy == "two_phase":
        head, tune = base.epochs, base.fine_tune_epochs
    else:
        head, tune = split_budget(budget)
    configs = {}
    for strategy in SWEEP_STRATEGIES:
        changes: dict[str, Any] = {"strategy": strategy, "unfreeze": unfreeze, "epochs": budget}
        if strategy == "two_phase":
            changes.update(epochs=head, fine_tune_epochs=tune)
        if strategy == "from_scratch":
            changes["weights"] = "none"
        configs[strategy] = base.replace(**changes)
    return configs


def start_sweep(ws: Workspace, base_config: RunConfig, *, unfreeze: int = 2) -> Sweep:
    """Queues one run per strategy of `SWEEP_STRATEGIES` and records the sweep.

    Args:
        ws: the workspace.
        base_config: the settings every run shares (its ``strategy`` is replaced).
        unfreeze: blocks unfrozen by fine-tune-top and two-phase; default 2.

    Returns:
        The `Sweep`, with ``id`` and ``runs`` (strategy → run id). The first run may already
        be training; the others wait in the queue.

    Raises:
        ValueError: a configuration is invalid.
        tlcore.fileio.StorageError: the workspace is not writable.
    """
    from tlcore.progress import STRATEGY_LABELS

    configs = sweep_configs(base_config, unfreeze=unfreeze)
    sweep_id = new_sweep_id()
    prefix = (base_config.name.strip() or f"{base_config.backbone}")[:60]
    sweep = Sweep(
        id=sweep_id,
        created_at=runs.now_iso(),
        dataset=base_config.dataset,
        epochs=base_config.total_epochs,
        unfreeze=unfreeze,
        runs={},
        base_config=base_config.to_dict(),
    )
    path = sweeps_dir(ws) / f"{sweep_id}.json"
    for strategy, config in configs.items():
        config = config.replace(
            name=f"{prefix} · sweep: {STRATEGY_LABELS.get(strategy, strategy)}",
            extra={**config.extra, EXTRA_SWEEP: sweep_id, EXTRA_ROLE: strategy},
        )
        sweep.runs[strategy] = jobs.submit(ws, config)
        atomic_write_json(path, sweep.to_dict())  # after each run: a crash loses none
    return sweep


def load_sweep(ws: Workspace, sweep_id: str) -> Sweep:
    """Reads a recorded sweep.

    Raises:
        SweepError: there is no sweep with that id, or its file is damaged.
    """
    path = sweeps_dir(ws) / f"{sweep_id}.json"
    if "/" in sweep_id or not path.is_file():
        raise SweepError(f"No sweep with id {sweep_id!r} in {sweeps_dir(ws)}.")
    try:
        return Sweep.from_dict(read_json(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SweepError(f"The sweep file {path} cannot be read ({exc}).") from None


def list_sweeps(ws: Workspace) -> list[Sweep]:
    """Every recorded sweep, newest first (damaged files are left out)."""
    try:
        paths = sorted(sweeps_dir(ws).glob("sweep-*.json"), reverse=True)
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            out.append(load_sweep(ws, path.stem))
        except SweepError:
            continue
    return out


def sweeps_of_run(ws: Workspace, run_id: str) -> list[Sweep]:
    """The sweeps that include ``run_id``."""
    return [s for s in list_sweeps(ws) if run_id in s.runs.values()]


@dataclass(frozen=True)
class SweepResults:
    """What a sweep found so far.

    Attributes:
        sweep: the sweep.
        rows: one dict per run, in `SWEEP_STRATEGIES` order: ``role``, ``run_id``,
            ``state``, ``test_accuracy`` (None until evaluated), ``evaluated_on``,
            ``macro_f1``, ``best_val_accuracy``, ``train_seconds``, ``trainable_params``,
            ``total_params``, ``error``, ``winner``.
        winner: the role (strategy) of the finished run with the best test accuracy (ties:
            fewer training seconds), or None while no run has a test accuracy.
        finished: how many runs have finished.
        pending: how many are still queued or running.
        message: one sentence saying who won and at what cost, or how far it got.
    """

    sweep: Sweep
    rows: list[dict]
    winner: str | None
    finished: int
    pending: int
    message: str

    @property
    def done(self) -> bool:
        return self.pending == 0


def sweep_results(ws: Workspace, sweep_id: str) -> SweepResults:
    """Reads a sweep's runs back: states, test accuracies and costs, and the winner.

    Raises:
        SweepError: there is no such sweep.
    """
    from tlcore.progress import STRATEGY_LABELS, format_duration

    sweep = load_sweep(ws, sweep_id)
    rows = []
    for role, run_id in sweep.runs.items():
        try:
            record = runs.read_run(ws, run_id)
        except runs.RunNotFoundError:
            rows.append(_missing_row(role, run_id))
            continue
        rows.append(_result_row(ws, role, record))
    rows.sort(
        key=lambda r: SWEEP_STRATEGIES.index(r["role"]) if r["role"] in SWEEP_STRATEGIES else 99
    )
    scored = [r for r in rows if r["state"] == runs.FINISHED and r["test_accuracy"] is not None]
    winner_row = (
        max(scored, key=lambda r: (r["test_accuracy"], -(r["train_seconds"] or math.inf)))
        if scored
        else None
    )
    for row in rows:
        row["winner"] = row is winner_row
    finished = sum(r["state"] == runs.FINISHED for r in rows)
    pending = sum(r["state"] in runs.ACTIVE_STATES for r in rows)
    if winner_row is None:
        message = (
            f"No result yet: {finished} of {len(rows)} runs finished, {pending} still to go."
            if pending
            else "No run of this sweep finished with a test accuracy."
        )
    else:
        label = STRATEGY_LABELS.get(winner_row["role"], winner_row["role"])
        cost = []
        if winner_row["train_seconds"] is not None:
            cost.append(f"{format_duration(winner_row['train_seconds'])} of training")
        if winner_row["trainable_params"] is not None:
            cost.append(f"{winner_row['trainable_params']:,} trainable parameters")
        message = f"{label} wins with {winner_row['test_accuracy']:.1%} test accuracy"
        message += f" ({', '.join(cost)})." if cost else "."
        if pending:
            message += f" {pending} run(s) still to finish, so this may change."
    return SweepResults(
        sweep, rows, winner_row["role"] if winner_row else None, finished, pending, message
    )


def _missing_row(role: str, run_id: str) -> dict:
    return {
        "role": role,
        "run_id": run_id,
        "state": "deleted",
        "test_accuracy": None,
        "evaluated_on": None,
        "macro_f1": None,
        "best_val_accuracy": None,
        "train_seconds": None,
        "trainable_params": None,
        "total_params": None,
        "error": "the run folder was deleted",
    }


def _result_row(ws: Workspace, role: str, record: runs.RunRecord) -> dict:
    training = (record.status.summary if record.status else {}) or {}
    result = None
    if record.state == runs.FINISHED:
        try:
            result = evaluate.load_evaluation(ws, record.id)
        except evaluate.EvaluationError:
            result = None
    return {
        "role": role,
        "run_id": record.id,
        "state": record.state,
        "test_accuracy": result.metrics.accuracy if result else None,
        "evaluated_on": result.split_label if result else None,
        "macro_f1": result.metrics.macro_avg.f1 if result else None,
        "best_val_accuracy": training.get("best_val_accuracy"),
        "train_seconds": training.get("train_seconds"),
        "trainable_params": training.get("trainable_params"),
        "total_params": training.get("total_params"),
        "error": (record.status.error if record.status else record.problem) or None,
    }


# --------------------------------------------------------------------------- baselines


def baseline_config(config: RunConfig, run_id: str) -> RunConfig:
    """The from-scratch twin of ``config``: same everything, random weights, all trained.

    The epoch budget is the original's total (both phases of a two-phase run), at the
    original's first learning rate.

    Raises:
        SweepError: the run already trains from scratch.
    """
    if config.strategy == "from_scratch":
        raise SweepError(
            f"Run {run_id} already trains from scratch; it is its own baseline. Compare it "
            "with a run that starts from pretrained weights."
        )
    name = (config.name.strip() or config.backbone)[:80]
    return config.replace(
        strategy="from_scratch",
        weights="none",
        epochs=config.total_epochs,
        name=f"{name} · baseline from scratch",
        extra={k: v for k, v in config.extra.items() if k not in (EXTRA_SWEEP, EXTRA_ROLE)}
        | {EXTRA_BASELINE_OF: run_id},
    )


def find_baseline(ws: Workspace, run_id: str) -> runs.RunRecord | None:
    """The newest baseline run of ``run_id`` that did not fail or get cancelled, or None."""
    candidates = [
        r
        for r in runs.list_runs(ws)
        if r.config is not None and r.config.extra.get(EXTRA_BASELINE_OF) == run_id
    ]
    alive = [r for r in candidates if r.state not in (runs.FAILED, runs.CANCELLED)]
    return (alive or candidates or [None])[0]


def start_baseline(ws: Workspace, run_id: str) -> str:
    """Queues the from-scratch twin of a run ("did transfer help?") and returns its id.

    Idempotent: when the run already has a baseline that is queued, running, interrupted
    or finished, that one's id is returned and nothing new is queued.

    Raises:
        tlcore.runs.RunNotFoundError: there is no such run.
        SweepError: the run already trains from scratch, or its folder is damaged.
    """
    record = runs.read_run(ws, run_id)
    if record.config is None:
        raise SweepError(f"Run {run_id} cannot be copied: {record.problem}.")
    config = baseline_config(record.config, run_id)
    existing = find_baseline(ws, run_id)
    if existing is not None and existing.state not in (runs.FAILED, runs.CANCELLED):
        return existing.id
    return jobs.submit(ws, config)


@dataclass(frozen=True)
class TransferVerdict:
    """The pretrained run against its from-scratch baseline.

    Attributes:
        run_id, baseline_id: the two runs.
        baseline_state: the baseline's state.
        accuracy, baseline_accuracy: test accuracies (None until both are evaluated).
        delta: ``accuracy - baseline_accuracy``, or None.
        metric: what was compared: ``"test accuracy"`` or, without evaluations, ``"best
            validation accuracy"``.
        train_seconds, baseline_train_seconds: training time of each.
        message: one sentence for people.
    """

    run_id: str
    baseline_id: str
    baseline_state: str
    accuracy: float | None
    baseline_accuracy: float | None
    delta: float | None
    metric: str
    train_seconds: float | None
    baseline_train_seconds: float | None
    message: str

    @property
    def ready(self) -> bool:
        return self.delta is not None


def baseline_comparison(ws: Workspace, run_id: str) -> TransferVerdict | None:
    """How the run compares with its baseline; None when it has no baseline.

    Test accuracy is compared when both runs have a stored evaluation, else the best
    validation accuracy of each (saying so).
    """
    baseline = find_baseline(ws, run_id)
    if baseline is None:
        return None
    record = runs.read_run(ws, run_id)
    ours, theirs = _test_accuracy(ws, record), _test_accuracy(ws, baseline)
    metric = "test accuracy"
    if ours is None or theirs is None:
        ours, theirs = (
            _summary_value(record, "best_val_accuracy"),
            _summary_value(baseline, "best_val_accuracy"),
        )
        metric = "best validation accuracy"
    seconds = _summary_value(record, "train_seconds"), _summary_value(baseline, "train_seconds")
    delta = None
    if baseline.state != runs.FINISHED:
        message = f"The baseline is {baseline.state}; the comparison appears when it finishes."
        if baseline.state == runs.FAILED:
            error = baseline.status.error if baseline.status else ""
            message = f"The baseline failed: {error}"
    elif ours is None or theirs is None:
        message = "The comparison needs both runs' accuracies; evaluate them first."
    else:
        delta = ours - theirs
        points = abs(delta) * 100
        if delta > 0.005:
            message = (
                f"Yes: pretrained weights added {points:.1f} points of {metric} "
                f"({ours:.1%} against {theirs:.1%} from scratch)."
            )
        elif delta < -0.005:
            message = (
                f"No: training from scratch did {points:.1f} points better on {metric} "
                f"({theirs:.1%} against {ours:.1%}). The pretrained features may not "
                "suit these images, or the run needs more epochs or another strategy."
            )
        else:
            message = (
                f"Not in accuracy: both reach about {ours:.1%} {metric}. Transfer may "
                "still have saved training time."
            )
    return TransferVerdict(
        run_id=run_id,
        baseline_id=baseline.id,
        baseline_state=baseline.state,
        accuracy=ours,
        baseline_accuracy=theirs,
        delta=delta,
        metric=metric,
        train_seconds=seconds[0],
        baseline_train_seconds=seconds[1],
        message=message,
    )


def _test_accuracy(ws: Workspace, record: runs.RunRecord) -> float | None:
    if record.state != runs.FINISHED:
        return None
    try:
        result = evaluate.load_evaluation(ws, record.id)
    except evaluate.EvaluationError:
        return None
    return result.metrics.accuracy if result else None


def _summary_value(record: runs.RunRecord, key: str):
    summary = (record.status.summary if record.status else {}) or {}
    return summary.get(key)
