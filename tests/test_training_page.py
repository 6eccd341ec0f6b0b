"""The Training page (AppTest): queue, live progress of a run, stop, resume and failures.

Runs are faked with the same folder functions the worker uses (`runs.create_run`,
`runs.set_state`, `runs.append_progress`); no training happens. A "running" run points at a
`sleep` process in its own session, so the scheduler sees a live worker; `jobs.schedule` is
replaced so that no real worker starts.
"""

from __future__ import annotations

import subprocess

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config
from tlcore.config import RunConfig
from tlcore.store import jobs, runs
from tlcore.training.progress import EpochRow
from ui.charts import shared_training_curve_figure, training_curve_figure

TIMEOUT_S = 120
PAGE = "views/training.py"

# Descriptions as tlcore.model.models.training_phases writes them.
PHASES = [
    ("phase 1 of 2: training the head on a frozen backbone", 2),
    ("phase 2 of 2: fine-tuning the top 2 blocks of the backbone at learning rate 1e-05", 2),
]
EPOCH_LOGS = {
    1: {"loss": 1.2, "accuracy": 0.50, "val_loss": 1.3, "val_accuracy": 0.45},
    2: {"loss": 0.9, "accuracy": 0.70, "val_loss": 1.0, "val_accuracy": 0.65},
    3: {"loss": 0.6, "accuracy": 0.85, "val_loss": 0.7, "val_accuracy": 0.80},
    4: {"loss": 0.5, "accuracy": 0.90, "val_loss": 0.6, "val_accuracy": 0.84},
}


@pytest.fixture(autouse=True)
def schedule_calls(monkeypatch) -> list:
    """`jobs.schedule` records its calls instead of starting workers."""
    calls: list = []
    monkeypatch.setattr(jobs, "schedule", lambda ws: calls.append(ws.root) or [])
    return calls


@pytest.fixture
def live_pid():
    """A process that stands in for a training worker (killed by the `ws` fixture)."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield proc.pid
    proc.kill()
    proc.wait()


def _config(name: str) -> RunConfig:
    return RunConfig(
        dataset="flowers", name=name, strategy="two_phase", epochs=2, fine_tune_epochs=2
    )


def make_run(
    ws,
    state: str,
    *,
    name: str,
    epochs: int = 0,
    batch: int | None = None,
    pid: int | None = None,
    error: str | None = None,
    summary: dict | None = None,
) -> runs.RunRecord:
    """A run in ``state`` whose log shows ``epochs`` completed epochs (two-phase, 2 + 2)."""
    record = runs.create_run(ws, _config(name))
    if state == runs.QUEUED:
        return record
    runs.set_state(ws, record.id, runs.RUNNING, pid=pid)
    runs.append_progress(record.dir, "worker_started", pid=pid)
    runs.append_progress(record.dir, "run_start", resumes=0)
    epoch = 0
    for index, (description, count) in enumerate(PHASES, start=1):
        if epoch >= epochs and batch is None:
            break
        runs.append_progress(
            record.dir,
            "phase_start",
            phase=index,
            phases=2,
            description=description,
            epochs=count,
        )
        for _ in range(count):
            if epoch >= epochs:
                break
            epoch += 1
            runs.append_progress(
                record.dir,
                "epoch_end",
                phase=index,
                epoch=epoch,
                logs=EPOCH_LOGS[epoch],
                seconds=20.0,
            )
        if epoch >= epochs:
            if batch is not None:
                runs.append_progress(
                    record.dir,
                    "batch",
                    phase=index,
                    epoch=epoch + 1,
                    batch=batch,
                    batches=40,
                    images_per_sec=321.0,
                    eta_s=12.0,
                    logs={"loss": 0.5},
                )
            break
        runs.append_progress(record.dir, "phase_end", phase=index)
    if state != runs.RUNNING:
        runs.append_progress(record.dir, "run_end", state=state, error=error)
        runs.set_state(
            ws, record.id, state, error=error, **({"summary": summary} if summary else {})
        )
    return runs.read_run(ws, record.id)


def open_training(run_id: str | None = None) -> AppTest:
    """Opens the app, then the Training page (optionally with ``?run=`` in the URL)."""
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    if run_id is not None:
        at.query_params["run"] = run_id
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    for kind in (at.info, at.warning, at.error, at.success):
        parts += [e.value for e in kind]
    parts += [n.proto.text for n in at.get("progress")]
    return "\n".join(str(p) for p in parts)


# -- what a running run shows -------------------------------------------------------
def test_running_run_shows_phase_progress_and_latest_metrics(ws, live_pid):
    record = make_run(ws, runs.RUNNING, name="Flowers", epochs=3, batch=10, pid=live_pid)
    at = open_training()
    text = page_text(at)
    assert "Phase 2 of 2: fine-tuning the top 2 blocks of the backbone at learning" in text
    assert "Epoch 4 of 4" in text  # the epoch in progress, out of 2 + 2
    assert "Batch 10 of 40 · 321 images/s · 12 s left in this epoch" in text
    assert "Flowers" in text and record.id in text
    assert "**flowers**" in text and "**Two-phase · top 2 blocks**" in text
    metrics = {m.label: (m.value, m.delta) for m in at.metric}
    assert metrics["Train loss"] == ("0.6", "-0.3000")
    assert metrics["Val. accuracy"] == ("80.0%", "+15.0 pp")
    assert len(at.get("plotly_chart")) == 2
    assert at.button(key="stop_run").label == "Stop"


def test_default_is_the_running_run_and_the_url_remembers_the_choice(ws, live_pid):
    finished = make_run(ws, runs.FINISHED, name="Done before", epochs=4)
    running = make_run(ws, runs.RUNNING, name="Training now", epochs=1, pid=live_pid)
    at = open_training()
    assert at.query_params["run"] == running.id
    assert at.session_state["training_run"] == running.id
    # Pick the finished run in the queue: the URL follows, so a reload re-attaches to it.
    at.button(key=f"pick_{finished.id}").click().run()
    assert not at.exception
    assert at.session_state["training_run"] == finished.id
    assert at.query_params["run"] == finished.id
    assert "**Finished**: 4 epochs." in page_text(at)
    # Another tab (or a reload) with ?run= shows that run.
    other = open_training(finished.id)
    assert "### Done before" in page_text(other)


def test_unknown_run_in_the_url_falls_back_with_a_warning(ws):
    make_run(ws, runs.FINISHED, name="Only run", epochs=2)
    at = open_training("20990101-000000-abcdef")
    assert "There is no run `20990101-000000-abcdef`" in page_text(at)
    assert "### Only run" in page_text(at)


def test_queue_lists_running_queued_in_order_and_recent_runs(ws, live_pid):
    make_run(ws, runs.RUNNING, name="Now", epochs=1, pid=live_pid)
    queued = [make_run(ws, runs.QUEUED, name=f"Waiting {i}") for i in range(2)]
    make_run(ws, runs.FAILED, name="Broke", epochs=1, error="Boom")
    at = open_training()
    first, second = sorted(queued, key=lambda r: r.id)
    assert at.button(key=f"pick_{first.id}").label.startswith("1. ")
    assert at.button(key=f"pick_{second.id}").label.startswith("2. ")
    text = page_text(at)
    assert "MobileNetV2 · epoch 1 of 4" in text  # the running run's row has a progress bar
    assert ":red-badge[failed]" in text and ":gray-badge[queued]" in text


# -- stop and resume -------------------------------------------------------------------
def test_stop_asks_the_worker_to_stop_at_the_next_batch(ws, live_pid):
    record = make_run(ws, runs.RUNNING, name="Flowers", epochs=1, batch=5, pid=live_pid)
    at = open_training()
    at.button(key="stop_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (record.dir / runs.CANCEL_FILE).exists()
    assert runs.read_run(ws, record.id).state == runs.RUNNING  # the worker ends it, not the page
    assert "Stopping at the next batch…" in page_text(at)
    stop = at.button(key="stop_run")
    assert stop.disabled and stop.label == "Stopping…"  # idempotent: nothing more to press


def test_remove_a_queued_run_from_the_queue(ws, live_pid):
    make_run(ws, runs.RUNNING, name="Now", epochs=1, pid=live_pid)
    waiting = make_run(ws, runs.QUEUED, name="Later")
    at = open_training(waiting.id)
    assert "Waiting in the queue" in page_text(at)
    at.button(key="stop_run").click().run()
    assert not at.exception
    assert runs.read_run(ws, waiting.id).state == runs.CANCELLED
    assert "Removed from the queue" in page_text(at)
    assert at.button(key="resume_run").label == "Resume"


def test_resume_an_interrupted_run_queues_it(ws, schedule_calls):
    record = make_run(
        ws, runs.INTERRUPTED, name="Cut short", epochs=2, error=jobs.LOST_WORKER_MESSAGE
    )
    at = open_training(record.id)
    text = page_text(at)
    assert "Interrupted after 2 of 4 epochs." in text and "picks up at epoch 3" in text
    schedule_calls.clear()
    at.button(key="resume_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert runs.read_run(ws, record.id).state == runs.QUEUED
    assert schedule_calls, "resume must ask the scheduler to start the run"
    text = page_text(at)
    assert "Resumed: the run is queued" in text and ":gray-badge[queued]" in text


def test_resume_that_is_no_longer_allowed_says_so(ws, monkeypatch):
    record = make_run(ws, runs.CANCELLED, name="Stopped", epochs=1)
    at = open_training(record.id)
    assert "Stopped after 1 of 4 epochs." in page_text(at)

    def already_resumed(ws, run_id, **who):  # e.g. resumed meanwhile from another tab
        raise runs.InvalidTransitionError(f"Run {run_id} is queued; it cannot become queued.")

    monkeypatch.setattr(jobs, "resume", already_resumed)
    at.button(key="resume_run").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("This run cannot be resumed." in e and "is queued" in e for e in errors)


# -- ended runs --------------------------------------------------------------------------
def test_failed_run_shows_what_happened_and_what_to_do(ws):
    message = "Out of memory: OOM when allocating. Lower the batch size."
    record = make_run(ws, runs.FAILED, name="Too big", epochs=1, error=message)
    (record.dir / jobs.WORKER_LOG).write_text("Traceback …\nResourceExhaustedError: OOM\n")
    at = open_training(record.id)
    errors = [e.value for e in at.error]
    assert any("Training failed after 1 of 4 epochs." in e and message in e for e in errors)
    assert any("What to do" in e for e in errors)
    assert at.expander[0].label.startswith("Technical details")
    assert not [b for b in at.button if b.key in ("stop_run", "resume_run")]


def test_finished_run_links_to_evaluation(ws):
    record = make_run(ws, runs.FINISHED, name="Good", epochs=4)
    at = open_training(record.id)
    links = {n.proto.label: n.proto for n in at.get("page_link")}
    assert "Evaluate" in links
    assert "**Finished**: 4 epochs." in page_text(at)
    assert "All 2 phases complete" in page_text(at)


def test_a_run_whose_summary_has_no_keep_rule_says_no_none(ws):
    record = make_run(ws, runs.FINISHED, name="Older", epochs=4, summary={"kept_epoch": 3})
    at = open_training(record.id)
    finished = next(s.value for s in at.success if "Finished" in s.value)
    assert "The kept model is epoch 3." in finished and "None" not in finished


def test_a_run_that_resumed_past_a_damaged_backup_says_so(ws):
    from tlcore.training.progress import BACKUP_DAMAGED_EVENT

    record = make_run(ws, runs.FINISHED, name="Resumed", epochs=4)
    runs.append_progress(
        record.dir, BACKUP_DAMAGED_EVENT, phase=2, message="The last backup was damaged."
    )
    at = open_training(record.id)
    assert "Phase 2: The last backup was damaged." in [i.value for i in at.info]


def test_a_finished_run_shows_its_kept_model_with_intervals_and_a_collapse(ws):
    summary = {
        "kept_epoch": 3,
        "keep_rule": "the epoch with the best validation accuracy (ties: the lower loss)",
        "val_accuracy": 0.8,
        "val_samples": 10,
        "test_accuracy": 0.5,
        "test_samples": 20,
        "evaluated_split": "test",
        "collapse": "The model predicts 'a' for 100% of the test split, where only 50% are 'a'",
    }
    record = make_run(ws, runs.FINISHED, name="One class", epochs=4, summary=summary)
    at = open_training(record.id)
    text = page_text(at)
    assert "The kept model is epoch 3: the epoch with the best validation accuracy" in text
    assert "80.0% (95% CI 49.0–94.3%, n = 10)" in text
    assert "**Test** (held out): 50.0% (95% CI" in text and "n = 20)" in text
    assert any("Collapsed to one class" in e.value for e in at.error)


def test_a_dead_worker_is_found_and_the_run_shown_interrupted(ws, monkeypatch):
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = make_run(ws, runs.RUNNING, name="Orphan", epochs=1, pid=gone.pid)
    monkeypatch.setattr(jobs, "schedule", lambda ws: jobs.reconcile(ws))
    at = open_training(record.id)
    assert runs.read_run(ws, record.id).state == runs.INTERRUPTED
    assert "Interrupted after 1 of 4 epochs." in page_text(at)
    assert at.button(key="resume_run")


# -- the curves ---------------------------------------------------------------------------
def test_curve_figure_has_train_and_validation_and_marks_the_phase_boundary():
    history = [EpochRow(epoch=e, phase=1 if e <= 2 else 2, **EPOCH_LOGS[e]) for e in (1, 2, 3)]
    fig = training_curve_figure(history, "accuracy", total_epochs=4, phase_starts={1: 1, 2: 3})
    names = [trace.name for trace in fig.data]
    assert names[:2] == ["Training", "Validation"]
    assert list(fig.data[1].y) == [0.45, 0.65, 0.80]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [s.x0 for s in lines] == [2.5]  # between epoch 2 (phase 1) and epoch 3 (phase 2)
    assert tuple(fig.layout.xaxis.range) == (0.5, 4.5)
    with pytest.raises(ValueError, match="metric must be one of"):
        training_curve_figure(history, "f1")


def test_curves_are_built_once_per_epoch_and_shared_by_every_poll():
    history = tuple(EpochRow(epoch=e, phase=1, **EPOCH_LOGS[e]) for e in (1, 2))
    args = ("loss", 4, ((1, 1),), ((1, "training the head"),))
    fig = shared_training_curve_figure(history, *args)
    assert shared_training_curve_figure(history, *args) is fig  # the next poll: no rebuild
    fresh = training_curve_figure(
        history,
        "loss",
        total_epochs=4,
        phase_starts={1: 1},
        phase_descriptions={1: "training the head"},
    )
    assert fig.to_dict() == fresh.to_dict()
    later = (*history, EpochRow(epoch=3, phase=1, **EPOCH_LOGS[3]))
    assert shared_training_curve_figure(later, *args) is not fig  # an epoch ended: redrawn


def test_train_again_fills_the_model_form_with_the_runs_settings(ws, tiny_dataset):
    config = tiny_config(
        tiny_dataset,
        name="Colours",
        strategy="two_phase",
        epochs=3,
        fine_tune_epochs=2,
        fine_tune_learning_rate=3e-5,
        dense_units=(16,),
        seed=11,
    )
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FAILED, error="out of memory")
    at = open_training(record.id)
    at.button(key="train_again").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="mf_name").value == "Colours (again)"
    assert at.radio(key="mf_strategy").value == "two_phase"
    assert at.number_input(key="mf_fine_tune_epochs").value == 2
    assert at.number_input(key="mf_seed").value == 11
    assert at.text_input(key="mf_dense_units").value == "16"
    assert any("The settings of run *Colours*" in i.value for i in at.info)
    submitted = RunConfig.from_dict(at.session_state["run_config"])
    assert submitted.fine_tune_learning_rate == 3e-5 and submitted.backbone == "SmallCNN"


def test_the_schedule_of_a_two_phase_run_gives_both_learning_rates(ws):
    record = make_run(ws, runs.QUEUED, name="Two rates")
    at = open_training(record.id)
    # _config: two-phase, 2 + 2 epochs at the defaults 1e-3, then 1e-5.
    shown = page_text(at).replace("\u2011", "-")  # "1e-05" is kept on one line
    assert "2 + 2 epochs · batch 32 · lr 0.001, then 1e-05" in shown
