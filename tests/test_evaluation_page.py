"""The Evaluation page (AppTest): metrics, confusion matrix and drill-down, evaluate now,
baseline and sweep buttons.

Runs are made with the folder functions the worker uses and a real, untrained small CNN
saved as training saves it; their evaluation is the real `evaluate.evaluate_run`. "Evaluate
now" starts a real background task (its own process). One slow test trains a real tiny run
first. `jobs.schedule` is replaced so that no training worker starts.
"""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config
from tlcore.config import RunConfig
from tlcore.data import datasets
from tlcore.evaluation import compare, evaluate, stats
from tlcore.fileio import atomic_write_json
from tlcore.store import jobs, runs, tasks
from tlcore.training import sweep, train

TIMEOUT_S = 180
TASK_TIMEOUT_S = 180  # a fresh process imports TensorFlow, then evaluates
PAGE = "views/evaluation.py"


@pytest.fixture(autouse=True)
def schedule_calls(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(jobs, "schedule", lambda ws: calls.append(ws.root) or [])
    return calls


def make_finished_run(ws, dataset: str, *, name: str, evaluated: bool = True, **changes):
    """A finished run of ``dataset`` with a history, a real (untrained) model saved as
    training saves it, and its evaluation."""
    from tlcore.model import model_store, models

    ds = datasets.load_dataset(ws, dataset)
    config = tiny_config(dataset, name=name, epochs=3, **changes)
    record = runs.create_run(ws, config)
    atomic_write_json(
        record.dir / train.CLASSES_FILE,
        {"classes": ds.classes, "dataset_id": ds.id, "dataset_hash": ds.content_hash},
    )
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.append_progress(record.dir, "phase_start", phase=1, phases=1, description="x", epochs=3)
    history = []
    for epoch in (1, 2, 3):
        logs = {"loss": 1.0 / epoch, "accuracy": 0.5 + 0.1 * epoch}
        logs |= {"val_loss": 1.1 / epoch, "val_accuracy": 0.45 + 0.1 * epoch}
        runs.append_progress(record.dir, "epoch_end", phase=1, epoch=epoch, logs=logs, seconds=1)
        history.append({"epoch": epoch, "phase": 1, "seconds": 1} | logs)
    atomic_write_json(record.dir / runs.HISTORY_FILE, {"epochs": history})
    model = models.build_model(config, len(ds.classes))
    model_store.save_model(model, record.dir / runs.MODEL_FILE)
    summary = {
        "epochs_completed": 3,
        "val_accuracy": 0.75,
        "best_val_accuracy": 0.75,
        "train_seconds": 3.0,
        "trainable_params": 1234,
        "total_params": 5678,
    }
    runs.set_state(ws, record.id, runs.FINISHED, summary=summary)
    if evaluated:
        evaluate.evaluate_run(ws, record.id)
    return record.id


def open_page(ws, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    if query:
        for key, value in query.items():
            at.query_params[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += (
        [e.value for e in at.info] + [e.value for e in at.warning] + [e.value for e in at.success]
    )
    return "\n".join(str(p) for p in parts)


def test_a_finished_run_shows_tiles_confusion_matrix_and_cell_images(ws, tiny_dataset):
    run_id = make_finished_run(ws, tiny_dataset, name="colours")
    result = evaluate.load_evaluation(ws, run_id)
    at = open_page(ws)
    text = _text(at)
    assert "Confusion matrix" in text and "Images in a cell" in text
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Accuracy"] == f"{result.metrics.accuracy:.1%}"
    assert tiles["Macro F1"] == f"{result.metrics.macro_avg.f1:.3f}"
    assert {"Log loss", "Calibration error"} <= set(tiles)
    # The accuracy carries its 95% interval and n, on the tile and in the caption.
    m = result.metrics
    accuracy_tile = next(t for t in at.metric if t.label == "Accuracy")
    assert accuracy_tile.delta.endswith(f"n {m.num_samples}")
    assert stats.format_accuracy(m.accuracy, m.num_samples) in text

    # The drill-down starts on the most confused cell; choose a diagonal cell instead.
    at.selectbox(key="cm_true").set_value("red").run()
    at.selectbox(key="cm_pred").set_value("red").run()
    assert not at.exception
    red = result.metrics.class_names.index("red")
    count = result.metrics.confusion_matrix[red][red]
    assert f"**{count:,}** of" in _text(at) and "were recognised" in _text(at)


def test_the_query_parameter_chooses_the_run(ws, tiny_dataset):
    first = make_finished_run(ws, tiny_dataset, name="first run")
    make_finished_run(ws, tiny_dataset, name="second run")
    at = open_page(ws, {"run": first})
    assert at.selectbox(key="evaluation_run_select").value == first
    assert "first run" in _text(at)


def _wait_for_task(ws, run_id: str, kind: str = "evaluate") -> tasks.Task:
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while time.monotonic() < deadline:
        task = tasks.latest(ws, run_id, kind)
        if task is not None and not task.active:
            return task
        time.sleep(0.5)
    raise AssertionError(f"the {kind} task did not end: {tasks.latest(ws, run_id, kind)}")


def test_a_run_without_stored_evaluation_is_evaluated_in_a_background_task(ws, tiny_dataset):
    run_id = make_finished_run(ws, tiny_dataset, name="old run", evaluated=False)
    at = open_page(ws)
    assert "has no stored evaluation yet" in _text(at)
    at.button(key="evaluate_now").click().run()
    assert not at.exception, [e.value for e in at.exception]
    task = tasks.latest(ws, run_id, "evaluate")
    assert task is not None  # started in its own process; the page follows it
    if task.active:
        assert "Evaluating the run on its test images" in _text(at)
    done = _wait_for_task(ws, run_id)
    assert done.state == tasks.FINISHED, done.message
    assert done.result["run_id"] == run_id and "accuracy" in done.result
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert evaluate.load_evaluation(ws, run_id) is not None
    assert "Confusion matrix" in _text(at)
    assert not any(b.key == "evaluate_now" for b in at.button)


def test_an_evaluation_that_fails_says_why_and_can_be_started_again(ws, tiny_dataset):
    run_id = make_finished_run(ws, tiny_dataset, name="no model", evaluated=False)
    runs.read_run(ws, run_id).dir.joinpath(runs.MODEL_FILE).unlink()
    at = open_page(ws)
    at.button(key="evaluate_now").click().run()
    done = _wait_for_task(ws, run_id)
    assert done.state == tasks.FAILED
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "Could not evaluate the run." in errors and done.message in errors
    assert at.button(key="evaluate_now").label == "Evaluate now"  # offered again


def test_transfer_and_sweep_buttons_queue_runs(ws, tiny_dataset, schedule_calls):
    run_id = make_finished_run(ws, tiny_dataset, name="pretrained", strategy="fine_tune_top")
    at = open_page(ws)
    next(b for b in at.button if b.label == "Train the from-scratch baseline").click().run()
    assert not at.exception, [e.value for e in at.exception]
    baseline = compare.find_baseline(ws, run_id)
    assert baseline is not None and baseline.config.strategy == "from_scratch"
    assert "queued" in _text(at)

    next(b for b in at.button if b.label == "Start the sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [started] = sweep.list_sweeps(ws)
    assert sorted(started.runs) == sorted(sweep.SWEEP_STRATEGIES)
    assert "0 of 5 runs finished" in _text(at)


def test_runs_with_other_classes_are_not_offered_for_comparison(ws, tiny_dataset):
    run_id = make_finished_run(ws, tiny_dataset, name="three colours")
    other = runs.create_run(ws, tiny_config(tiny_dataset, name="two colours"))
    atomic_write_json(other.dir / train.CLASSES_FILE, {"classes": ["a", "b"], "dataset_id": "y"})
    runs.set_state(ws, other.id, runs.RUNNING)
    runs.set_state(ws, other.id, runs.FINISHED, summary={})
    at = open_page(ws, {"run": run_id})
    assert "1 finished run(s) have other classes" in _text(at)


@pytest.mark.slow
def test_a_really_trained_run_renders_without_exception(ws, tiny_dataset):
    record = runs.create_run(ws, tiny_config(tiny_dataset, name="real", epochs=2))
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    runs.set_state(ws, record.id, result.state, summary=result.summary)
    at = open_page(ws)
    assert "Confusion matrix" in _text(at)
    assert len(at.tabs) == 4


def test_train_again_fills_the_model_form_with_the_shown_runs_settings(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, name="shown", epochs=4, learning_rate=2e-3)
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={"epochs_completed": 4})
    at = open_page(ws, {"run": record.id})
    at.button(key="evaluation_train_again").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="mf_name").value == "shown (again)"
    assert at.number_input(key="mf_epochs").value == 4
    assert at.selectbox(key="mf_backbone").value == "SmallCNN"
    assert RunConfig.from_dict(at.session_state["run_config"]).learning_rate == 2e-3
