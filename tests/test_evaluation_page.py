"""The Evaluation page (AppTest): metrics, confusion matrix and drill-down, evaluate now,
baseline and sweep buttons.

Runs are made with the folder functions the worker uses; their evaluation goes through
`evaluate.evaluate_run` with the model replaced by fixed probabilities, so no TensorFlow is
needed. One slow test trains a real tiny run first. `jobs.schedule` is replaced so that no
worker starts.
"""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config
from tlcore.data import datasets
from tlcore.evaluation import compare, evaluate, stats
from tlcore.fileio import atomic_write_json
from tlcore.store import jobs, runs
from tlcore.training import sweep, train

TIMEOUT_S = 180
PAGE = "views/evaluation.py"


@pytest.fixture(autouse=True)
def schedule_calls(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(jobs, "schedule", lambda ws: calls.append(ws.root) or [])
    return calls


class _FakeModel:
    input_shape = (None, 32, 32, 3)
    output_shape = (None, 3)


def _fixed_probs(items, num_classes=3):
    """Mostly right: every fourth image is taken for the next class, 70% sure."""
    probs = np.full((len(items), num_classes), 0.1, dtype=np.float32)
    for i, item in enumerate(items):
        guess = (item.label + 1) % num_classes if i % 4 == 3 else item.label
        probs[i] = 0.3 / (num_classes - 1)
        probs[i, guess] = 0.7
    return probs


@pytest.fixture
def fake_model(monkeypatch):
    """`evaluate_run` predicts fixed probabilities instead of loading a Keras model."""
    monkeypatch.setattr(evaluate, "_load_model", lambda record: _FakeModel())
    monkeypatch.setattr(
        evaluate,
        "_predict",
        lambda model, items, size, batch, report, split: _fixed_probs(items),
    )


def make_finished_run(ws, dataset: str, *, name: str, evaluated: bool = True, **changes):
    """A finished run of ``dataset`` with a history, a (dummy) model and its evaluation."""
    ds = datasets.load_dataset(ws, dataset)
    record = runs.create_run(ws, tiny_config(dataset, name=name, epochs=3, **changes))
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
    (record.dir / runs.MODEL_FILE).write_bytes(b"not read: the model is faked")
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


def test_a_finished_run_shows_tiles_confusion_matrix_and_cell_images(ws, tiny_dataset, fake_model):
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


def test_the_query_parameter_chooses_the_run(ws, tiny_dataset, fake_model):
    first = make_finished_run(ws, tiny_dataset, name="first run")
    make_finished_run(ws, tiny_dataset, name="second run")
    at = open_page(ws, {"run": first})
    assert at.selectbox(key="evaluation_run_select").value == first
    assert "first run" in _text(at)


def test_a_run_without_stored_evaluation_can_be_evaluated_now(ws, tiny_dataset, fake_model):
    run_id = make_finished_run(ws, tiny_dataset, name="old run", evaluated=False)
    at = open_page(ws)
    assert "has no stored evaluation yet" in _text(at)
    at.button(key="evaluate_now").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert evaluate.load_evaluation(ws, run_id) is not None
    assert "Confusion matrix" in _text(at)


def test_transfer_and_sweep_buttons_queue_runs(ws, tiny_dataset, fake_model, schedule_calls):
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


def test_runs_with_other_classes_are_not_offered_for_comparison(ws, tiny_dataset, fake_model):
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
