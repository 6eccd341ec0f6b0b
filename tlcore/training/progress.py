"""What a run's progress log means: from ``progress.jsonl`` events to what a person sees.

A run's worker appends events to ``progress.jsonl`` (see
`tlcore.training.callbacks.ProgressLogger`, `tlcore.training.train`, `tlcore.store.jobs` and
`tlcore.training.worker`). `summarize_progress` folds them into a
`RunProgress`: the phase in progress, epochs done out of the total, where the current epoch
is (batch, images/s, ETA), one history row per completed epoch and the last error. It is pure
(no I/O, no clock), so the Training page, the CLI and tests all read a log the same way.

Rules that make a log from several sessions of one run (resumes) read as one story:

- epochs count across phases; an epoch recorded twice (it was re-run after a resume) keeps
  its last record;
- the in-epoch position is only shown while the epoch it belongs to is still in progress,
  i.e. no ``epoch_end``, ``phase_end``, ``run_end`` or ``interrupted`` came after it;
- the error is the one of the last session's end; a later ``resume_requested`` or
  ``run_start`` clears it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from tlcore.config import RunConfig
from tlcore.model.strategies import STRATEGY_LABELS as STRATEGY_TABLE_LABELS
from tlcore.model.strategies import training_phases

METRIC_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
BACKUP_DAMAGED_EVENT = "backup_damaged"  # written by tlcore.training.backup via phase_fit
# The pace behind the ETA: an exponentially weighted mean of the current phase's epoch times
# (validation and checkpoints included), each new epoch's time first limited to within
# ETA_STEP_LIMIT times the pace so far. One slow epoch (a long validation, a model write, the
# first epoch's tracing) so moves the pace by at most ETA_SMOOTHING * (ETA_STEP_LIMIT - 1) =
# 15% up or 10% down, and a lasting change of pace is followed within a few epochs.
ETA_SMOOTHING = 0.3
ETA_STEP_LIMIT = 1.5
DIVERGENCE_GROWTH = 10.0  # a last-epoch loss this many times the first epoch's ...
DIVERGENCE_CHANCE_FACTOR = 10.0  # ... and this many times chance's loss, log(classes) ...
DIVERGENCE_ABSOLUTE_LOSS = 1e3  # ... or at least this: the training diverged

# What each freezing strategy is called, for headers and tables (the one table of them).
STRATEGY_LABELS = STRATEGY_TABLE_LABELS

# Logs written before phases recorded ``what`` (tlcore.model.strategies.Phase.what) have
# only the whole description ("phase 2 of 2: fine-tuning ..."): its prefix is cut.
_LEGACY_PHASE_PREFIX = re.compile(r"^\s*phase\s+\d+\s+of\s+\d+\s*[:·—–-]?\s*", re.IGNORECASE)


def _legacy_what(event: dict) -> str:
    return _LEGACY_PHASE_PREFIX.sub("", str(event.get("description") or ""))


# Stages of a run as seen from its log.
WAITING, TRAINING, ENDED = "waiting", "training", "ended"


@dataclass(frozen=True)
class EpochRow:
    """One completed epoch: its number (1-based, across phases), phase and metrics."""

    epoch: int
    phase: int
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float | None = None

    def metric(self, key: str) -> float | None:
        return getattr(self, key) if key in METRIC_KEYS else None


@dataclass(frozen=True)
class PhaseInfo:
    """A training phase as announced by its ``phase_start`` event.

    ``description`` says what the phase trains, without a leading "phase N of M:".
    """

    index: int
    phases: int
    description: str
    epochs: int | None = None


@dataclass(frozen=True)
class RunProgress:
    """A run's progress log, summarized for display. Build with `summarize_progress`.

    Attributes:
        stage: ``waiting`` (no training phase has started yet), ``training`` (a phase is
            running as far as the log knows) or ``ended`` (the last session ended).
        phase: the current (or last) phase, or None before the first ``phase_start``.
        total_epochs: epochs over all phases; 0 when unknown.
        epochs_done: completed epochs (the highest completed epoch number).
        current_epoch: the epoch in progress (1-based), or None between epochs.
        batch, batches: position in the epoch in progress, or None.
        images_per_sec: training throughput of the epoch in progress, or None.
        epoch_eta_s: seconds until the epoch in progress ends (training batches only).
        eta_s: seconds until the whole run ends, estimated; None when unknown.
        history: one row per completed epoch, in epoch order.
        phase_starts: first epoch of each phase seen, for marking phase boundaries.
        error: the message of the last session's failure, or None.
        resumes: how many times the run was resumed.
        last_event_time: ISO time of the newest event, or None for an empty log.
        notices: sentences a person should read about how the run went (a damaged backup
            passed over on resume, `BACKUP_DAMAGED_EVENT`), oldest first.
    """

    stage: str = WAITING
    phase: PhaseInfo | None = None
    phases: dict[int, PhaseInfo] = field(default_factory=dict)
    total_epochs: int = 0
    epochs_done: int = 0
    current_epoch: int | None = None
    batch: int | None = None
    batches: int | None = None
    images_per_sec: float | None = None
    epoch_eta_s: float | None = None
    eta_s: float | None = None
    history: tuple[EpochRow, ...] = ()
    phase_starts: dict[int, int] = field(default_factory=dict)
    error: str | None = None
    end_state: str | None = None
    resumes: int = 0
    last_event_time: str | None = None
    notices: tuple[str, ...] = ()

    # -- derived, for display ---------------------------------------------------------
    @property
    def phase_text(self) -> str:
        """``"Phase 2 of 2: fine-tuning top 2 blocks"``; the description alone for one phase."""
        if self.phase is None:
            return ""
        description = self.phase.description.strip()
        if self.phase.phases <= 1:
            return _capitalized(description) or "Training"
        text = f"Phase {self.phase.index} of {self.phase.phases}"
        return f"{text}: {description}" if description else text

    @property
    def epoch_fraction(self) -> float:
        """How far the epoch in progress is, 0 to 1; 0 between epochs."""
        if not self.batch or not self.batches:
            return 0.0
        return min(max(self.batch / self.batches, 0.0), 1.0)

    @property
    def overall_fraction(self) -> float:
        """Epochs done plus the current epoch's fraction, over the total; 0 to 1."""
        if self.total_epochs <= 0:
            return 0.0
        partial = self.epoch_fraction if self.current_epoch else 0.0
        return min((self.epochs_done + partial) / self.total_epochs, 1.0)

    @property
    def latest(self) -> EpochRow | None:
        return self.history[-1] if self.history else None

    @property
    def previous(self) -> EpochRow | None:
        return self.history[-2] if len(self.history) > 1 else None

    def metric_delta(self, key: str) -> float | None:
        """The latest epoch's ``key`` minus the previous epoch's; None if either is missing."""
        latest, previous = self.latest, self.previous
        if latest is None or previous is None:
            return None
        now, before = latest.metric(key), previous.metric(key)
        if now is None or before is None:
            return None
        return now - before

    def best_epoch(self, key: str = "val_accuracy") -> EpochRow | None:
        """The epoch with the best ``key`` (highest accuracy, lowest loss)."""
        rows = [r for r in self.history if _finite(r.metric(key))]
        if not rows:
            return None
        pick = min if "loss" in key else max
        return pick(rows, key=lambda r: r.metric(key))

    @property
    def has_metrics(self) -> bool:
        return bool(self.history)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _int(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None and math.isfinite(number) else None


def divergence_message(
    history: list[dict], num_classes: int, learning_rate: float | None = None
) -> str | None:
    """What to tell the user when a run's training loss blew up without becoming NaN.

    A run diverged when its last epoch's (finite) training loss is at least
    ``DIVERGENCE_ABSOLUTE_LOSS``, or over ``DIVERGENCE_GROWTH`` times the first epoch's and
    over ``DIVERGENCE_CHANCE_FACTOR`` times ``log(num_classes)`` (the loss of guessing).

    Args:
        history: one row per epoch with its ``loss`` (`tlcore.store.runs.epoch_history`).
        num_classes: the number of classes.
        learning_rate: the run's learning rate, to suggest a tenth of it; default None.

    Returns:
        A sentence (what happened, what to do), or None when the loss did not diverge.
    """
    losses = [
        (row.get("epoch", i + 1), float(row["loss"]))
        for i, row in enumerate(history)
        if _finite(row.get("loss"))
    ]
    if not losses:
        return None
    (first_epoch, first), (last_epoch, last) = losses[0], losses[-1]
    chance = math.log(max(num_classes, 2))
    grew = last > DIVERGENCE_GROWTH * first and last > DIVERGENCE_CHANCE_FACTOR * chance
    if not (last >= DIVERGENCE_ABSOLUTE_LOSS or grew):
        return None
    suggestion = (
        f" (learning_rate={learning_rate / 10:g} instead of {learning_rate:g})"
        if learning_rate
        else ""
    )
    return (
        f"The training loss grew from {first:.3g} (epoch {first_epoch}) to {last:.3g} "
        f"(epoch {last_epoch}), far above the {chance:.2f} of guessing: the training "
        "diverged, so the model is unlikely to be useful. Lower the learning rate, e.g. "
        f"10×{suggestion}, and train again."
    )


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def summarize_progress(events: list[dict], *, total_epochs: int | None = None) -> RunProgress:
    """Folds a run's progress events into what the Training page shows.

    Args:
        events: the records of ``progress.jsonl`` in file order (`tlcore.store.runs.read_progress`).
            Unknown events and malformed fields are ignored, never raised on.
        total_epochs: epochs over all phases, usually ``RunConfig.total_epochs``. When None,
            it is the sum of the announced phases' epochs if every phase was announced.

    Returns:
        A `RunProgress`; an empty log gives ``stage="waiting"`` with nothing done.
    """
    rows: dict[int, EpochRow] = {}
    phases: dict[int, PhaseInfo] = {}
    phase_starts: dict[int, int] = {}
    current: PhaseInfo | None = None
    batch_event: dict | None = None  # the last batch event of an epoch still in progress
    stage = WAITING
    error = end_state = last_time = None
    resumes = 0
    notices: list[str] = []

    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("event")
        last_time = event.get("time", last_time)
        if kind in ("run_start", "worker_started"):
            error = end_state = None
            batch_event = None
            stage = WAITING
        elif kind == "resume_requested":
            resumes += 1
            error = end_state = None
            batch_event = None
            stage = WAITING
        elif kind == "phase_start":
            index = _int(event.get("phase")) or 1
            info = PhaseInfo(
                index=index,
                phases=_int(event.get("phases")) or 1,
                description=str(event.get("what") or _legacy_what(event)),
                epochs=_int(event.get("epochs")),
            )
            phases[index] = info
            current = info
            stage = TRAINING
            batch_event = None
        elif kind == "batch":
            batch_event = event
            stage = TRAINING
            index = _int(event.get("phase"))
            if index is not None and index in phases:
                current = phases[index]
        elif kind == "epoch_end":
            epoch = _int(event.get("epoch"))
            if epoch is None or epoch < 1:
                continue
            logs = event.get("logs") if isinstance(event.get("logs"), dict) else {}
            phase = _int(event.get("phase")) or (current.index if current else 1)
            rows[epoch] = EpochRow(
                epoch=epoch,
                phase=phase,
                seconds=_number(event.get("seconds")),
                **{k: _number(logs.get(k)) for k in METRIC_KEYS},
            )
            batch_event = None
        elif kind == "phase_end":
            batch_event = None
        elif kind == "run_end":
            stage = ENDED
            batch_event = None
            end_state = event.get("state")
            error = event.get("error") or None
        elif kind == BACKUP_DAMAGED_EVENT and event.get("message"):
            phase = _int(event.get("phase"))
            notices.append((f"Phase {phase}: " if phase else "") + str(event["message"]))
        elif kind == "interrupted":
            stage = ENDED
            batch_event = None
            end_state = "interrupted"

    history = tuple(rows[k] for k in sorted(rows))
    for row in history:
        phase_starts.setdefault(row.phase, row.epoch)
    if current is not None and current.index not in phase_starts:
        # The current phase has started but not finished an epoch yet.
        # Epochs count across phases from each phase's planned length (see tlcore.training.train).
        before = [phases.get(i) for i in range(1, current.index)]
        if all(info is not None and info.epochs for info in before):
            phase_starts[current.index] = sum(info.epochs for info in before) + 1
        else:
            earlier = [r.epoch for r in history if r.phase < current.index]
            phase_starts[current.index] = (max(earlier) if earlier else 0) + 1

    epochs_done = history[-1].epoch if history else 0
    if total_epochs is None or total_epochs <= 0:
        total_epochs = _announced_total(phases)
    total_epochs = max(total_epochs, epochs_done)

    current_epoch = batch = batches = ips = epoch_eta = None
    if batch_event is not None and stage == TRAINING:
        current_epoch = _int(batch_event.get("epoch"))
        batch = _int(batch_event.get("batch"))
        batches = _int(batch_event.get("batches"))
        ips = _number(batch_event.get("images_per_sec"))
        epoch_eta = _number(batch_event.get("eta_s"))
        if current_epoch is not None and current_epoch <= epochs_done:
            current_epoch = batch = batches = ips = epoch_eta = None  # a stale batch record

    progress = RunProgress(
        stage=stage,
        phase=current,
        phases=phases,
        total_epochs=total_epochs,
        epochs_done=epochs_done,
        current_epoch=current_epoch,
        batch=batch,
        batches=batches,
        images_per_sec=ips,
        epoch_eta_s=epoch_eta,
        history=history,
        phase_starts=phase_starts,
        error=error,
        end_state=end_state,
        resumes=resumes,
        last_event_time=last_time,
        notices=tuple(notices),
    )
    return _with_eta(progress)


def _announced_total(phases: dict[int, PhaseInfo]) -> int:
    if not phases:
        return 0
    count = max(info.phases for info in phases.values())
    if set(phases) >= set(range(1, count + 1)) and all(p.epochs for p in phases.values()):
        return sum(phases[i].epochs for i in range(1, count + 1))
    return 0


def smoothed_epoch_seconds(
    durations, *, smoothing: float = ETA_SMOOTHING, step_limit: float = ETA_STEP_LIMIT
) -> float | None:
    """The pace of epochs to come, from the times of epochs done, without jumps.

    An exponentially weighted mean: each epoch's seconds (after the first, which starts the
    estimate) are first limited to within ``step_limit`` times the estimate so far, then
    weighted by ``smoothing``. So one epoch that took three times as long moves the pace by
    at most ``smoothing * (step_limit - 1)`` (15% with the defaults), while a lasting change
    of pace is followed within a few epochs.

    Args:
        durations: seconds of completed epochs, oldest first; values that are not positive
            finite numbers are skipped.
        smoothing: the weight of the newest epoch, default `ETA_SMOOTHING` (0.3).
        step_limit: how many times the estimate an epoch counts as at most (and one over it
            at least), default `ETA_STEP_LIMIT` (1.5).

    Returns:
        Seconds per epoch, or None when no duration is usable.
    """
    estimate = None
    for seconds in durations:
        if not _finite(seconds) or seconds <= 0:
            continue
        if estimate is None:
            estimate = float(seconds)
            continue
        bounded = min(max(float(seconds), estimate / step_limit), estimate * step_limit)
        estimate += smoothing * (bounded - estimate)
    return estimate


def _with_eta(progress: RunProgress) -> RunProgress:
    """Adds the whole run's ETA: this epoch's rest plus the remaining epochs at the recent pace.

    The rest of the epoch in progress blends the pace of earlier epochs with this epoch's
    own batches, trusting the latter more as the epoch goes on (both reach 0 at its end), so
    the ETA does not jump up when an epoch starts, nor down when its first batches are fast.
    """
    if progress.stage != TRAINING or progress.total_epochs <= 0:
        return progress
    in_epoch = progress.current_epoch is not None
    remaining = progress.total_epochs - progress.epochs_done - (1 if in_epoch else 0)
    pace = _phase_pace(progress)
    if in_epoch and progress.epoch_eta_s is None:
        return progress
    eta = 0.0
    if in_epoch:
        eta = progress.epoch_eta_s
        if pace is not None:
            fraction = progress.epoch_fraction
            eta = (1 - fraction) * pace * (1 - fraction) + fraction * progress.epoch_eta_s
    per_epoch = pace if pace is not None else _pace_of_this_epoch(progress)
    if remaining > 0:
        if per_epoch is None:
            return progress
        eta += remaining * per_epoch
    elif not in_epoch:
        return progress
    return replace(progress, eta_s=round(eta, 1))


def _phase_pace(progress: RunProgress) -> float | None:
    """Seconds per epoch of the current phase so far (`smoothed_epoch_seconds`)."""
    phase = progress.phase.index if progress.phase else None
    return smoothed_epoch_seconds(
        r.seconds for r in progress.history if phase is None or r.phase == phase
    )


def _pace_of_this_epoch(progress: RunProgress) -> float | None:
    """The whole epoch in progress's time, from how long its rest will take."""
    fraction = progress.epoch_fraction
    if progress.epoch_eta_s is not None and 0 < fraction < 1:
        return progress.epoch_eta_s / (1 - fraction)
    return None


def format_duration(seconds: float | None) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``; ``"–"`` when unknown."""
    if seconds is None or not _finite(seconds) or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_metric(key: str, value: float | None) -> str:
    """Accuracies as percentages, losses with four significant digits; ``"–"`` if missing."""
    if not _finite(value):
        return "–" if value is None else str(value)
    if "accuracy" in key:
        return f"{value:.1%}"
    return f"{value:.4g}"


def strategy_label(strategy: str, unfreeze: int | None = None, unit: str = "blocks") -> str:
    """The freezing strategy in words, with how much is unfrozen where that applies."""
    label = STRATEGY_LABELS.get(strategy, strategy.replace("_", " ").capitalize())
    if strategy in ("fine_tune_top", "two_phase") and unfreeze:
        noun = unit if unfreeze != 1 else unit.rstrip("s")
        # "Fine-tune the top" reads on into its count; other labels take it after a dot.
        joiner = " " if label.endswith(" the top") else " · top "
        label += f"{joiner}{unfreeze} {noun}"
    return label


def schedule_label(config: RunConfig) -> str:
    """How the run trains, in words, with the learning rate of every phase.

    ``"6 epochs · batch 32 · lr 0.001"``; a two-phase run gives both phases' epochs and
    rates, ``"4 + 2 epochs · batch 32 · lr 0.001, then 1e-05"``; a head chosen by
    cross-validation, ``"cross-validated head · batch 32"``.
    """
    if config.searches_head:
        return f"cross-validated head · batch {config.batch_size}"
    phases = training_phases(config)
    epochs = " + ".join(str(p.epochs) for p in phases)
    rates = ", then ".join(f"{p.learning_rate:g}" for p in phases)
    return f"{epochs} epochs · batch {config.batch_size} · lr {rates}"


def _parse_time(text: str | None) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time to another (``RunStatus.started_at`` to ``finished_at``)."""
    a, b = _parse_time(start), _parse_time(end)
    if a is None or b is None:
        return None
    return max((b - a).total_seconds(), 0.0)


def format_ago(when: str | None, now: datetime | None = None) -> str:
    """``"just now"``, ``"5 min ago"``, ``"3 h ago"``, else the date: ``"25 Nov 14:50"``.

    Args:
        when: an ISO time as stored in ``status.json``.
        now: the present, default the current UTC time (tests pass a fixed one).
    """
    then = _parse_time(when)
    if then is None:
        return "–"
    now = now or datetime.now(UTC)
    seconds = (now - then).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(round(seconds / 60), 1)} min ago"
    if seconds < 12 * 3600:
        return f"{round(seconds / 3600)} h ago"
    local = then.astimezone()
    return f"{local.day} {local:%b %H:%M}" if local.year == now.year else f"{local:%d %b %Y}"
