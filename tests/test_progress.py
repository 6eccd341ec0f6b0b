"""From progress events to what the Training page shows: phases, epochs, ETA, history, errors."""

import itertools
from datetime import UTC, datetime

import pytest

from tlcore.config import RunConfig
from tlcore.store import runs
from tlcore.training.progress import (
    ENDED,
    ETA_SMOOTHING,
    ETA_STEP_LIMIT,
    TRAINING,
    WAITING,
    format_ago,
    format_duration,
    format_metric,
    schedule_label,
    seconds_between,
    smoothed_epoch_seconds,
    strategy_label,
    summarize_progress,
)


def _epoch(epoch, phase=1, loss=1.0, acc=0.5, val_loss=1.1, val_acc=0.45, seconds=10.0):
    logs = {"loss": loss, "accuracy": acc, "val_loss": val_loss, "val_accuracy": val_acc}
    return {"event": "epoch_end", "phase": phase, "epoch": epoch, "logs": logs, "seconds": seconds}


def _phase(index, phases, description, epochs):
    return {
        "event": "phase_start",
        "phase": index,
        "phases": phases,
        "description": description,
        "epochs": epochs,
    }


def _batch(epoch, batch, batches, phase=1, ips=200.0, eta=12.0):
    return {
        "event": "batch",
        "phase": phase,
        "epoch": epoch,
        "batch": batch,
        "batches": batches,
        "images_per_sec": ips,
        "eta_s": eta,
        "logs": {"loss": 0.9},
    }


TWO_PHASE = [
    {"event": "worker_started", "pid": 1},
    {"event": "run_start", "resumes": 0},
    _phase(1, 2, "training the head", 2),
    _epoch(1, loss=1.0, acc=0.5),
    _epoch(2, loss=0.8, acc=0.6),
    {"event": "phase_end", "phase": 1},
    _phase(2, 2, "fine-tuning top 2 blocks", 3),
    _epoch(3, phase=2, loss=0.5, acc=0.8, seconds=20.0),
    _batch(4, 30, 120, phase=2, ips=512.0, eta=15.0),
]


def test_empty_log_is_waiting_with_nothing_done():
    progress = summarize_progress([], total_epochs=10)
    assert progress.stage == WAITING
    assert progress.phase is None and progress.phase_text == ""
    assert progress.epochs_done == 0 and progress.total_epochs == 10
    assert progress.history == () and not progress.has_metrics
    assert progress.overall_fraction == 0.0 and progress.epoch_fraction == 0.0
    assert progress.eta_s is None and progress.error is None
    assert progress.latest is None and progress.metric_delta("loss") is None


def test_two_phase_run_in_progress():
    progress = summarize_progress(TWO_PHASE, total_epochs=5)
    assert progress.stage == TRAINING
    assert progress.phase_text == "Phase 2 of 2: fine-tuning top 2 blocks"
    assert progress.epochs_done == 3 and progress.total_epochs == 5
    assert (progress.current_epoch, progress.batch, progress.batches) == (4, 30, 120)
    assert progress.images_per_sec == 512.0
    assert progress.epoch_fraction == pytest.approx(0.25)
    assert progress.overall_fraction == pytest.approx((3 + 0.25) / 5)
    assert [row.epoch for row in progress.history] == [1, 2, 3]
    assert [row.phase for row in progress.history] == [1, 1, 2]
    assert progress.phase_starts == {1: 1, 2: 3}


def test_eta_is_this_epochs_rest_plus_remaining_epochs_at_the_current_phase_pace():
    progress = summarize_progress(TWO_PHASE, total_epochs=5)
    # 15 s left in epoch 4, then epoch 5 at phase 2's pace (20 s; phase 1's 10 s ignored).
    assert progress.epoch_eta_s == 15.0
    assert progress.eta_s == pytest.approx(35.0)


def test_eta_before_any_epoch_is_estimated_from_the_epoch_in_progress():
    events = [_phase(1, 1, "training the head", 3), _batch(1, 25, 100, eta=30.0)]
    progress = summarize_progress(events, total_epochs=3)
    # A quarter done with 30 s left: 40 s per epoch, two more epochs after this one.
    assert progress.eta_s == pytest.approx(30.0 + 2 * 40.0)


def test_a_description_that_already_names_its_phase_is_not_repeated():
    # tlcore.model.models.training_phases writes descriptions as "phase i of n: what trains".
    events = [_phase(2, 2, "phase 2 of 2: fine-tuning the top 2 blocks of the backbone", 3)]
    progress = summarize_progress(events)
    assert progress.phase_text == "Phase 2 of 2: fine-tuning the top 2 blocks of the backbone"
    single = summarize_progress([_phase(1, 1, "phase 1 of 1: training the head", 3)])
    assert single.phase_text == "Training the head"


def test_total_epochs_defaults_to_the_announced_phases():
    events = [_phase(1, 2, "head", 2), _phase(2, 2, "fine-tune", 3)]
    assert summarize_progress(events).total_epochs == 5
    assert summarize_progress(events[:1]).total_epochs == 0  # phase 2 not announced yet


def test_single_phase_text_is_the_description_alone():
    progress = summarize_progress([_phase(1, 1, "training the head, backbone frozen", 5)])
    assert progress.phase_text == "Training the head, backbone frozen"


def test_an_epoch_rerun_after_resume_keeps_its_last_record():
    events = [
        _phase(1, 1, "head", 4),
        _epoch(1, loss=1.0),
        _epoch(2, loss=0.9),
        _batch(3, 10, 50),
        {"event": "interrupted"},
        {"event": "resume_requested"},
        {"event": "worker_started", "pid": 2},
        {"event": "run_start", "resumes": 1},
        _phase(1, 1, "head", 4),
        _epoch(2, loss=0.7),  # epoch 2 ran again from the last backup
        _epoch(3, loss=0.6),
    ]
    progress = summarize_progress(events, total_epochs=4)
    assert [row.epoch for row in progress.history] == [1, 2, 3]
    assert [row.loss for row in progress.history] == [1.0, 0.7, 0.6]
    assert progress.resumes == 1
    assert progress.stage == TRAINING and progress.error is None


def test_a_finished_phase_skipped_on_resume_keeps_its_description_and_boundary():
    events = [
        *TWO_PHASE[:8],
        {"event": "interrupted"},
        {"event": "resume_requested"},
        {"event": "run_start", "resumes": 1},
        _phase(2, 2, "fine-tuning top 2 blocks", 3),  # phase 1 is done: not announced again
        _epoch(4, phase=2),
    ]
    progress = summarize_progress(events, total_epochs=5)
    assert progress.phases[1].description == "training the head"
    assert progress.phase_starts == {1: 1, 2: 3}
    assert progress.epochs_done == 4


def test_in_epoch_position_is_dropped_once_the_run_ends():
    events = [*TWO_PHASE, {"event": "run_end", "state": "cancelled", "error": None}]
    progress = summarize_progress(events, total_epochs=5)
    assert progress.stage == ENDED and progress.end_state == "cancelled"
    assert progress.current_epoch is None and progress.batch is None
    assert progress.eta_s is None
    assert progress.overall_fraction == pytest.approx(3 / 5)


def test_batch_record_of_a_completed_epoch_is_stale():
    events = [_phase(1, 1, "head", 3), _batch(1, 99, 100), _epoch(1)]
    progress = summarize_progress(events, total_epochs=3)
    assert progress.current_epoch is None and progress.epoch_fraction == 0.0


def test_last_error_is_kept_until_the_run_is_resumed():
    failed = [*TWO_PHASE, {"event": "run_end", "state": "failed", "error": "Out of memory"}]
    assert summarize_progress(failed).error == "Out of memory"
    assert summarize_progress([*failed, {"event": "resume_requested"}]).error is None


def test_latest_metrics_and_deltas_against_the_previous_epoch():
    progress = summarize_progress(TWO_PHASE, total_epochs=5)
    assert progress.latest.epoch == 3 and progress.previous.epoch == 2
    assert progress.metric_delta("loss") == pytest.approx(0.5 - 0.8)
    assert progress.metric_delta("accuracy") == pytest.approx(0.8 - 0.6)
    assert progress.best_epoch("accuracy").epoch == 3
    assert progress.best_epoch("loss").epoch == 3


def test_malformed_events_are_ignored():
    events = [
        "not a dict",
        {"event": "epoch_end", "epoch": "x"},
        {"event": "epoch_end", "epoch": 1, "logs": "oops"},
        {"event": "batch", "epoch": None},
        {"event": "something_new"},
    ]
    progress = summarize_progress(events, total_epochs=2)
    assert [row.epoch for row in progress.history] == [1]
    assert progress.history[0].loss is None


def test_reads_the_log_the_run_folder_keeps(tmp_path):
    for event in TWO_PHASE:
        fields = {k: v for k, v in event.items() if k != "event"}
        runs.append_progress(tmp_path, event["event"], **fields)
    progress = summarize_progress(runs.read_progress(tmp_path), total_epochs=5)
    assert progress.epochs_done == 3 and progress.last_event_time is not None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (-1, "–"), (0, "0 s"), (44.6, "45 s"), (200, "3 min 20 s"), (120, "2 min")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_hours():
    assert format_duration(3900) == "1 h 05 min"


def test_format_metric():
    assert format_metric("val_accuracy", 0.9312) == "93.1%"
    assert format_metric("loss", 0.123456) == "0.1235"
    assert format_metric("loss", None) == "–"


def test_time_helpers():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert format_ago("2026-03-01T11:59:50+00:00", now) == "just now"
    assert format_ago("2026-03-01T11:55:00+00:00", now) == "5 min ago"
    assert format_ago("2026-03-01T09:00:00+00:00", now) == "3 h ago"
    assert format_ago(None, now) == "–"
    assert seconds_between("2026-03-01T11:00:00+00:00", "2026-03-01T11:02:30+00:00") == 150
    assert seconds_between(None, "2026-03-01T11:02:30+00:00") is None


def test_strategy_label():
    assert strategy_label("two_phase", 2, "blocks") == "Two-phase · top 2 blocks"
    assert strategy_label("fine_tune_top", 1, "layers") == "Fine-tune the top 1 layer"
    assert strategy_label("feature_extraction", 2) == "Feature extraction"


# -- a smooth ETA -------------------------------------------------------------------------
def _etas(epochs: list[tuple[float, float]], batches: int = 10, poll_s: float = 1.0):
    """The whole-run ETA a page polling every ``poll_s`` shows over a simulated run, with
    the true time left: ``epochs`` are (training, validation) seconds; a batch event after
    every batch, its ``eta_s`` as `ProgressLogger` computes it."""
    timeline = [(0.0, _phase(1, 1, "training the head", len(epochs)))]
    start = 0.0
    for epoch, (train, val) in enumerate(epochs, start=1):
        for b in range(1, batches + 1):
            elapsed = train * b / batches
            event = _batch(epoch, b, batches, eta=elapsed / b * (batches - b))
            timeline.append((start + elapsed, event))
        start += train + val
        timeline.append((start, _epoch(epoch, seconds=train + val)))
    shown, now = [], 0.0
    while now < start:
        events = [event for when, event in timeline if when <= now]
        shown.append((now, summarize_progress(events, total_epochs=len(epochs)).eta_s, start - now))
        now += poll_s
    return shown


def test_one_slow_epoch_moves_the_pace_by_a_bounded_step():
    jumpy = [10, 10, 10, 30, 10, 10, 10, 31, 9, 11, 10]
    paces = [smoothed_epoch_seconds(jumpy[:n]) for n in range(1, len(jumpy) + 1)]
    step = ETA_SMOOTHING * (ETA_STEP_LIMIT - 1)  # 15%
    for before, after in itertools.pairwise(paces):
        assert after / before <= 1 + step + 1e-9
        assert before / after <= 1 + step + 1e-9
    assert paces[-1] == pytest.approx(10, rel=0.15)  # back near the usual pace
    # A lasting change of pace is followed within a few epochs.
    slower = smoothed_epoch_seconds([10, 10, 10] + [20] * 8)
    assert slower == pytest.approx(20, rel=0.1)
    assert smoothed_epoch_seconds([]) is None
    assert smoothed_epoch_seconds([None, 0, float("nan"), 12.0]) == 12.0


def test_the_eta_only_goes_down_when_every_epoch_takes_as_long():
    shown = _etas([(8, 2)] * 6)
    # From the first completed epoch on, the pace is known: the ETA never rises.
    known = [eta for now, eta, _ in shown if now >= 10 and eta is not None]
    assert len(known) > 40
    assert all(b <= a for a, b in itertools.pairwise(known))
    assert known[-1] < 3


def test_a_slow_epoch_does_not_make_the_eta_jump():
    # Epochs of 8 s of training and 2 s of validation; epoch 4 validates for 22 s.
    shown = _etas([(8, 2)] * 3 + [(8, 22)] + [(8, 2)] * 4)
    known = [eta for now, eta, _ in shown if now >= 10 and eta is not None]
    step = ETA_SMOOTHING * (ETA_STEP_LIMIT - 1)
    for before, after in itertools.pairwise(known):
        # Up by at most 15% once, after the slow epoch (the mean of the last three epochs
        # rose by 67% there); down about as fast as the time passes, so no drop when the
        # slow epoch is forgotten (that mean dropped 9.5 s in a second, three times).
        assert after <= before * (1 + step) + 0.05
        assert before - after <= 2.5
    assert sum(after > before for before, after in itertools.pairwise(known)) == 1
    assert known[-1] < 3


def test_the_schedule_names_every_phases_learning_rate():
    two = RunConfig(
        dataset="d",
        strategy="two_phase",
        head_search=False,
        epochs=4,
        fine_tune_epochs=2,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-5,
    )
    assert schedule_label(two) == "4 + 2 epochs · batch 32 · lr 0.001, then 1e-05"
    assert schedule_label(two.replace(fine_tune_epochs=0)) == "4 epochs · batch 32 · lr 0.001"
    one = two.replace(strategy="full_fine_tune", learning_rate=3e-4, batch_size=16)
    assert schedule_label(one) == "4 epochs · batch 16 · lr 0.0003"
    assert schedule_label(RunConfig(dataset="d")) == "cross-validated head · batch 32"
