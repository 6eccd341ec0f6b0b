"""Runs queued to answer a question: which freezing strategy wins, and did transfer help?

A **strategy sweep** (`start_sweep`) queues one run per strategy in `SWEEP_STRATEGIES`,
all on the same dataset and split, with the same architecture and the same epoch budget,
so the only thing that differs is what trains. It is recorded twice: in each run's
``config.extra`` (``{"sweep": id, "sweep_role": strategy}``) and in
``<workspace>/sweeps/<id>.json``. Its runs are named after the dataset, the sweep's number
on that dataset and the strategy ("flowers · sweep 2 · fine-tune top"), so that lists and
chart legends tell them apart even where long names are cut short. `sweep_results`
reads the runs back: which finished run has the best test accuracy, and at what cost
(training seconds, trainable parameters).

A **baseline** (`start_baseline`) is the from-scratch twin of a run: same architecture,
data and split, random weights, every layer trained with the schedule and augmentation
such a network needs. When both have finished, `baseline_comparison` says whether the
pretrained weights helped, by an exact McNemar test on the test images — and says
"inconclusive" when the twin did not learn, rather than crediting transfer with it. The
twin is named after the dataset and the run it copies ("flowers · baseline of sweep 2 ·
fine-tune top").

Both only queue runs (`tlcore.store.jobs.submit`); training happens in the worker processes,
and the test accuracies come from the evaluation each run stores as it finishes.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tlcore.config import RunConfig
from tlcore.evaluation import compare, evaluate, stats
from tlcore.evaluation.compare import EXTRA_BASELINE_OF, find_baseline
from tlcore.fileio import atomic_write_json, read_json
from tlcore.model.strategies import STRATEGY_SHORT_LABELS, STRATEGY_TABLE
from tlcore.store import jobs, runs
from tlcore.store.workspace import Workspace

SWEEPS_DIR = "sweeps"
SWEEP_STRATEGIES = tuple(name for name, s in STRATEGY_TABLE.items() if s.in_sweep)
EXTRA_SWEEP = "sweep"
EXTRA_ROLE = "sweep_role"
NAME_DATASET_CHARS = 40  # of the dataset's name in a run name (a name holds 120 at most)
NAME_SOURCE_CHARS = 60  # of the copied run's name in its baseline's name


class SweepError(ValueError):
    """A sweep or baseline that cannot be started or read, with what to do about it."""


# --------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class Sweep:
    """A recorded sweep: ``runs`` maps each strategy (its role) to its run id; ``number``
    counts the sweeps on its dataset (1 for the first; 0 for sweeps recorded before)."""

    id: str
    created_at: str
    dataset: str
    epochs: int
    unfreeze: int
    runs: dict[str, str]
    base_config: dict = field(default_factory=dict)
    number: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "unfreeze": self.unfreeze,
            "runs": [{"role": role, "run_id": run_id} for role, run_id in self.runs.items()],
            "base_config": self.base_config,
            "number": self.number,
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
            number=int(data.get("number", 0)),
        )


def sweeps_dir(ws: Workspace):
    return ws.root / SWEEPS_DIR


def new_sweep_id() -> str:
    return "sweep-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def next_sweep_number(ws: Workspace, dataset: str) -> int:
    """The number the next sweep on ``dataset`` gets: 1 for the first, then one more than
    the sweeps recorded on it."""
    mine = [s for s in list_sweeps(ws) if s.dataset == dataset]
    return max([len(mine), *(s.number for s in mine)]) + 1


def sweep_run_name(dataset: str, number: int, strategy: str) -> str:
    """A sweep run's name: ``"<dataset> · sweep <number> · <strategy>"``, what tells it apart
    from the other runs of its sweep and from other sweeps, and short enough to read in a
    list ("flowers · sweep 2 · fine-tune top")."""
    label = STRATEGY_SHORT_LABELS.get(strategy) or strategy.replace("_", " ")
    return f"{_cut(dataset, NAME_DATASET_CHARS)} · sweep {number} · {label}"


def baseline_run_name(config: RunConfig) -> str:
    """The name of the from-scratch twin of a run with ``config``:
    ``"<dataset> · baseline of <run>"``, where the run is its name without the dataset in
    front ("flowers · baseline of sweep 2 · fine-tune top"), or its backbone and strategy
    when it has no name ("flowers · baseline of MobileNet · feature extraction")."""
    source = " ".join(config.name.split())
    lead = f"{config.dataset} · "
    if source.startswith(lead):
        source = source[len(lead) :]
    if not source:
        strategy = STRATEGY_SHORT_LABELS.get(config.strategy) or config.strategy
        source = f"{config.backbone} · {strategy}"
    dataset = _cut(config.dataset, NAME_DATASET_CHARS)
    return f"{dataset} · baseline of {_cut(source, NAME_SOURCE_CHARS)}"


def split_budget(total_epochs: int) -> tuple[int, int]:
    """Two-phase epochs for a budget: head first (the larger half), then fine-tuning."""
    head = max(math.ceil(total_epochs / 2), 1)
    return head, max(total_epochs - head, 0)


def sweep_configs(base: RunConfig, *, unfreeze: int = 2) -> dict[str, RunConfig]:
    """The configuration of each run of a sweep, by strategy.

    Every run keeps ``base``'s dataset, architecture, head, optimiser, augmentation and seed,
    and trains for ``base.epoch_budget`` epochs in all: two-phase splits them into head and
    fine-tuning epochs (keeping ``base``'s split when it is two-phase itself); from scratch
    uses random weights (``weights="none"``). No run searches its head (``head_search``
    off), so the validation split every run is chosen on stays held out.

    Args:
        base: the run settings to vary.
        unfreeze: blocks (or layers, per ``base.unfreeze_unit``) that fine-tune-top and
            two-phase unfreeze; default 2.

    Raises:
        ValueError: a resulting configuration is invalid (the message names the field).
    """
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 1:
        raise ValueError(f"unfreeze must be a positive integer. Received: unfreeze={unfreeze!r}")
    budget = base.epoch_budget
    if base.strategy == "two_phase":
        head, tune = base.epochs, base.fine_tune_epochs
    else:
        head, tune = split_budget(budget)
    configs = {}
    for strategy in SWEEP_STRATEGIES:
        # Epochs of SGD for every strategy (no cross-validated head refitted on train +
        # val): the sweep chooses on the validation split, which must stay held out.
        changes: dict[str, Any] = {
            "strategy": strategy,
            "unfreeze": unfreeze,
            "epochs": budget,
            "head_search": False,
        }
        if strategy == "two_phase":
            changes.update(epochs=head, fine_tune_epochs=tune)
        if strategy == "from_scratch":
            changes["weights"] = "none"
        configs[strategy] = base.replace(**changes)
    return configs


def start_sweep(
    ws: Workspace, base_config: RunConfig, *, unfreeze: int = 2, owner: str | None = None
) -> Sweep:
    """Queues one run per strategy of `SWEEP_STRATEGIES` and records the sweep.

    Args:
        ws: the workspace.
        base_config: the settings every run shares (its ``strategy`` is replaced).
        unfreeze: blocks unfrozen by fine-tune-top and two-phase; default 2.
        owner: who starts it (a user name), recorded on every run; default None (nobody).

    Returns:
        The `Sweep`, with ``id``, ``number`` (`next_sweep_number`) and ``runs`` (strategy →
        run id), named by `sweep_run_name`. The first run may already be training; the
        others wait in the queue.

    Raises:
        ValueError: a configuration is invalid.
        tlcore.fileio.StorageError: the workspace is not writable.
    """
    configs = sweep_configs(base_config, unfreeze=unfreeze)
    sweep_id = new_sweep_id()
    number = next_sweep_number(ws, base_config.dataset)
    sweep = Sweep(
        id=sweep_id,
        created_at=runs.now_iso(),
        dataset=base_config.dataset,
        epochs=base_config.epoch_budget,
        unfreeze=unfreeze,
        runs={},
        base_config=base_config.to_dict(),
        number=number,
    )
    path = sweeps_dir(ws) / f"{sweep_id}.json"
    for strategy, config in configs.items():
        config = config.replace(
            name=sweep_run_name(base_config.dataset, number, strategy),
            extra={**config.extra, EXTRA_SWEEP: sweep_id, EXTRA_ROLE: strategy},
        )
        sweep.runs[strategy] = jobs.submit(ws, config, owner=owner)
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
            ``state``, ``val_accuracy``, ``val_accuracy_ci95``, ``val_samples``,
            ``test_accuracy``, ``test_accuracy_ci95``, ``test_samples`` (None until
            evaluated), ``evaluated_on``, ``macro_f1``, ``best_val_accuracy``,
            ``train_seconds``, ``trainable_params``, ``total_params``, ``error``,
            ``winner``, ``tied``, and for runs tied with the best ``vs_best`` (the paired
            test as a dict) and ``vs_best_text``.
        winner: the strategy chosen on the validation split: the best validation
            accuracy when an exact McNemar test finds it clearly better than every other
            finished run; None while nothing is scored or when it is a tie.
        finished: how many runs have finished.
        pending: how many are still queued or running.
        message: one sentence saying who won (or that it is a tie), with the chosen run's
            test figure, or how far the sweep got.
        tied: the strategies not clearly worse than the best on validation.
        note: when tied, how many validation images would tell them apart, else "".
    """

    sweep: Sweep
    rows: list[dict]
    winner: str | None
    finished: int
    pending: int
    message: str
    tied: tuple[str, ...] = ()
    note: str = ""

    @property
    def done(self) -> bool:
        return self.pending == 0


def sweep_results(ws: Workspace, sweep_id: str) -> SweepResults:
    """Reads a sweep's runs back: states, test accuracies and costs, and the winner.

    Raises:
        SweepError: there is no such sweep.
    """

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
    finished = sum(r["state"] == runs.FINISHED for r in rows)
    pending = sum(r["state"] in runs.ACTIVE_STATES for r in rows)
    choice = _choose_on_validation(ws, rows)
    for row in rows:
        row["winner"] = choice.winner is not None and row["role"] == choice.winner
        row["tied"] = row["role"] in choice.tied
    message = choice.message
    if choice.best is None:
        message = (
            f"No result yet: {finished} of {len(rows)} runs finished, {pending} still to go."
            if pending
            else "No run of this sweep finished with a validation accuracy to choose on."
        )
    elif pending:
        message += f" {pending} run(s) still to finish, so this may change."
    return SweepResults(
        sweep, rows, choice.winner, finished, pending, message, choice.tied, choice.note
    )


@dataclass(frozen=True)
class _Choice:
    best: str | None  # the role with the best validation accuracy
    winner: str | None  # ... when it is clearly better than every other (else a tie)
    tied: tuple[str, ...]  # the roles not clearly worse than the best
    message: str
    note: str  # "the split is too small to tell ... about N images would be needed"


def _choose_on_validation(ws: Workspace, rows: list[dict]) -> _Choice:
    """Picks the strategy on the validation split, with exact McNemar tests against the best.

    The best validation accuracy (ties: fewer training seconds) is the candidate; it wins
    only when it is significantly better (p < 0.05) than every other finished run on the
    same validation images, else the runs not clearly worse are a tie. The test split is
    reported for the chosen run only, never used to choose.
    """
    from tlcore.training.progress import STRATEGY_LABELS, format_duration

    scored = [r for r in rows if r.get("_evaluation") is not None and r["val_accuracy"] is not None]
    if not scored:
        return _Choice(None, None, (), "", "")
    best = max(scored, key=lambda r: (r["val_accuracy"], -(r["train_seconds"] or math.inf)))
    label = STRATEGY_LABELS.get(best["role"], best["role"])
    tied, needed = [best["role"]], []
    for row in scored:
        if row is best:
            continue
        comparison = compare.paired_comparison(
            best["_evaluation"], row["_evaluation"], validation=True
        )
        row["vs_best"] = comparison.to_dict() if comparison else None
        if comparison is None or comparison.winner != "a":
            tied.append(row["role"])
            more = stats.images_needed(comparison) if comparison else None
            if more:
                needed.append(more)
            row["vs_best_text"] = (
                comparison.wording(label, STRATEGY_LABELS.get(row["role"], row["role"]))
                if comparison
                else "not scored on the same validation images"
            )
    n = best["val_samples"]
    test = ""
    if best["test_accuracy"] is not None:
        shown = stats.format_accuracy(best["test_accuracy"], best["test_samples"])
        test = f"; on the test split it scores {shown}"
    cost = (
        f" ({format_duration(best['train_seconds'])} of training)"
        if best["train_seconds"] is not None
        else ""
    )
    note = ""
    if len(tied) == 1:
        message = (
            f"{label} wins: {best['val_accuracy']:.1%} validation accuracy (n = {n}), "
            f"clearly better than every other strategy{cost}{test}."
        )
    else:
        names = ", ".join(STRATEGY_LABELS.get(r, r) for r in tied)
        message = (
            f"Tie: no strategy is clearly better on the {n} validation images ({names}). "
            f"{label} scored highest, {best['val_accuracy']:.1%}{cost}{test}."
        )
        if needed:
            note = (
                f"The validation split is too small to tell these strategies apart: about "
                f"{min(needed):,} validation images would be needed to tell {label} from the "
                "closest one (5% significance, 80% power)."
            )
    for row in rows:
        row.pop("_evaluation", None)
    return _Choice(
        best["role"], best["role"] if len(tied) == 1 else None, tuple(tied), message, note
    )


def _missing_row(role: str, run_id: str) -> dict:
    return {
        "role": role,
        "run_id": run_id,
        "state": "deleted",
        "val_accuracy": None,
        "val_accuracy_ci95": None,
        "val_samples": None,
        "test_accuracy": None,
        "test_accuracy_ci95": None,
        "test_samples": None,
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
    validation = result.validation if result else None
    return {
        "role": role,
        "run_id": record.id,
        "state": record.state,
        "val_accuracy": validation.accuracy if validation else None,
        "val_accuracy_ci95": (
            list(stats.accuracy_interval(validation.accuracy, validation.num_samples))
            if validation
            else None
        ),
        "val_samples": validation.num_samples if validation else None,
        "test_accuracy": result.metrics.accuracy if result else None,
        "test_accuracy_ci95": (
            list(stats.accuracy_interval(result.metrics.accuracy, result.metrics.num_samples))
            if result
            else None
        ),
        "test_samples": result.metrics.num_samples if result else None,
        "evaluated_on": result.split_label if result else None,
        "macro_f1": result.metrics.macro_avg.f1 if result else None,
        "_evaluation": result if validation else None,  # for the paired tests; dropped after
        "best_val_accuracy": training.get("best_val_accuracy"),
        "train_seconds": training.get("train_seconds"),
        "trainable_params": training.get("trainable_params"),
        "total_params": training.get("total_params"),
        "error": (record.status.error if record.status else record.problem) or None,
    }


# --------------------------------------------------------------------------- baselines


# A network learning from random weights needs what a pretrained one does not: enough
# epochs, a decaying learning rate and augmentation to fight overfitting on a small set.
TWIN_MIN_EPOCHS = 30
TWIN_LEARNING_RATE = 1e-3
TWIN_AUGMENTATION = {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.1}


def baseline_config(config: RunConfig, run_id: str) -> RunConfig:
    """The from-scratch twin of ``config``: the same architecture with random weights.

    Same backbone, size, head, batch size and seed; every layer trains, with the recipe
    a network learning from scratch needs: at least `TWIN_MIN_EPOCHS` epochs (the
    original's whole budget when longer), Adam at 1e-3 with cosine decay, flips and
    small rotations, zooms and shifts (`models` also lets its batch-norm statistics
    follow training quickly). Its name is `baseline_run_name`.

    Raises:
        SweepError: the run already trains from scratch.
    """
    if config.strategy == "from_scratch":
        raise SweepError(
            f"Run {run_id} already trains from scratch; it is its own baseline. Compare it "
            "with a run that starts from pretrained weights."
        )
    return config.replace(
        strategy="from_scratch",
        weights="none",
        head_search=False,
        epochs=max(config.epoch_budget, TWIN_MIN_EPOCHS),
        optimizer="adam",
        learning_rate=TWIN_LEARNING_RATE,
        lr_schedule="cosine",
        early_stopping_patience=0,
        **TWIN_AUGMENTATION,
        name=baseline_run_name(config),
        extra={k: v for k, v in config.extra.items() if k not in (EXTRA_SWEEP, EXTRA_ROLE)}
        | {EXTRA_BASELINE_OF: run_id},
    )


def start_baseline(ws: Workspace, run_id: str, *, owner: str | None = None) -> str:
    """Queues the from-scratch twin of a run ("did transfer help?") and returns its id.

    Idempotent: when the run already has a baseline that is queued, running, interrupted
    or finished, that one's id is returned and nothing new is queued. ``owner`` (default
    None, nobody) is recorded as whoever queued the twin.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no such run.
        SweepError: the run already trains from scratch, or its folder is damaged.
    """
    record = runs.read_run(ws, run_id)
    if record.config is None:
        raise SweepError(f"Run {run_id} cannot be copied: {record.problem}.")
    config = baseline_config(record.config, run_id)
    existing = find_baseline(ws, run_id)
    if existing is not None and existing.state not in (runs.FAILED, runs.CANCELLED):
        return existing.id
    return jobs.submit(ws, config, owner=owner)
