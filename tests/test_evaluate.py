"""Evaluating runs (issue 6): stored evaluations, other datasets, comparisons, the report, CLI.

A tiny run is trained once per module in this process (as the worker would), which also
evaluates it; the other tests read and re-evaluate that run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tiny_config, write_class_folders
from tlcore import cli
from tlcore.evaluation import compare, evaluate, run_report
from tlcore.fileio import atomic_write_json, read_json
from tlcore.store import runs
from tlcore.store.workspace import open_workspace
from tlcore.training import train


def _train_in_process(ws, config):
    """Trains a run in this process and closes it as the worker does."""
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    runs.set_state(ws, record.id, result.state, summary=result.summary)
    return record.id


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with the 3-class tiny dataset and one finished, evaluated run."""
    from tlcore.data import datasets

    root = tmp_path_factory.mktemp("evaluate")
    ws = open_workspace(root / "workspace")
    src = write_class_folders(root / "tiny", {"red": 20, "green": 20, "blue": 20})
    ds = datasets.import_folder(ws, src, name="tiny")
    run_id = _train_in_process(ws, tiny_config(ds.name, epochs=3))
    return ws, run_id, ds


def _events(ws, run_id, name):
    return [e for e in runs.read_progress(ws.run_dir(run_id)) if e["event"] == name]


# --------------------------------------------------------------------------- stored results


@pytest.mark.slow
def test_a_finished_run_is_evaluated_once_and_stored_beside_the_training_summary(trained):
    ws, run_id, ds = trained
    folder = ws.run_dir(run_id) / "evaluation" / ds.id
    for name in (
        "evaluation.json",
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.csv",
        "predictions.npz",
        "validation/metrics.json",
    ):
        assert (folder / name).is_file(), name
    # The run folder's metrics.json is still the training summary.
    assert "epochs_completed" in read_json(ws.run_dir(run_id) / "metrics.json")
    [end] = _events(ws, run_id, "evaluation_end")
    assert end["split"] == "test" and end["dataset_id"] == ds.id
    assert _events(ws, run_id, "evaluation_failed") == []


@pytest.mark.slow
def test_stored_numbers_are_the_models_own_predictions(trained):
    from tlcore.data import pipeline
    from tlcore.model import models

    ws, run_id, ds = trained
    result = evaluate.load_evaluation(ws, run_id)
    assert result is not None and result.split == "test" and result.note == ""
    test_items = ds.items("test")
    assert result.metrics.num_samples == len(test_items)

    model = models.load_model(ws.run_dir(run_id) / "model.keras")
    expected = model.predict(pipeline.load_images_array(test_items, 32), verbose=0)
    paths, y_true, probs = evaluate.read_predictions(result.folder)
    assert paths == [str(i.path) for i in test_items]
    assert list(y_true) == [i.label for i in test_items]
    np.testing.assert_allclose(probs, expected, atol=1e-5)

    accuracy = float(np.mean(expected.argmax(axis=1) == y_true))
    assert result.metrics.accuracy == pytest.approx(accuracy)
    assert sum(map(sum, result.metrics.confusion_matrix)) == len(test_items)
    assert result.validation is not None
    assert result.validation.num_samples == len(ds.items("val"))
    interp = result.interpretation()
    assert len(interp) == len(test_items)
    wrong = int(np.sum(expected.argmax(axis=1) != y_true))
    assert len(interp.top_losses(100)) == wrong


@pytest.mark.slow
def test_evaluating_again_reports_progress_and_replaces_the_stored_result(trained):
    ws, run_id, _ = trained
    seen = []
    result = evaluate.evaluate_run(ws, run_id, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("batch" in m for _, m in seen)
    again = evaluate.load_evaluation(ws, run_id)
    assert again.created_at == result.created_at
    assert again.metrics == result.metrics
    assert evaluate.is_current(ws, again)
    # ensure_evaluation reuses it rather than predicting again.
    assert evaluate.ensure_evaluation(ws, run_id).created_at == result.created_at


# --------------------------------------------------------------------------- other datasets


@pytest.mark.slow
def test_a_dataset_with_a_subset_of_the_classes_is_a_new_test_set(trained, tmp_path):
    from tlcore.data import datasets

    ws, run_id, _ = trained
    src = write_class_folders(tmp_path / "sub", {"red": 6, "green": 5}, seed=7)
    # Class folders are matched by name; the palette colour follows the folder order.
    sub = datasets.import_folder(ws, src, name="two of them")
    result = evaluate.evaluate_run(ws, run_id, dataset="two of them")
    assert result.split == "all" and not result.own_dataset
    assert result.metrics.num_samples == 11
    assert result.metrics.class_names == ("blue", "green", "red")  # the model's classes
    supports = {c.name: c.support for c in result.metrics.per_class}
    assert supports == {"blue": 0, "green": 5, "red": 6}
    assert "not trained on" in result.note
    assert evaluate.load_evaluation(ws, run_id, sub.id).metrics == result.metrics
    # The run's own evaluation is still there, and still the default.
    assert evaluate.load_evaluation(ws, run_id).own_dataset
    ids = [m["dataset_id"] for m in evaluate.list_evaluations(ws, run_id)]
    assert ids[0] != sub.id and sub.id in ids


@pytest.mark.slow
def test_a_dataset_with_unknown_classes_is_refused_by_name(trained, tmp_path):
    from tlcore.data import datasets

    ws, run_id, _ = trained
    src = write_class_folders(tmp_path / "other", {"red": 5, "purple": 5}, seed=3)
    datasets.import_folder(ws, src, name="purple things")
    with pytest.raises(evaluate.EvaluationError, match="'purple'") as info:
        evaluate.evaluate_run(ws, run_id, dataset="purple things")
    assert "subset" in str(info.value)
    reasons = {s.name: reason for s, reason in evaluate.compatible_datasets(ws, run_id)}
    assert reasons["tiny"] is None and "purple" in reasons["purple things"]


# --------------------------------------------------------------------------- the report


@pytest.mark.slow
def test_the_html_report_and_its_files_hold_the_numbers(trained, tmp_path):
    ws, run_id, _ = trained
    result = evaluate.load_evaluation(ws, run_id)
    written = run_report.export_report(ws, run_id, tmp_path / "out" / "tiny-report.html")
    html = written["html"].read_text()
    assert f"{result.metrics.accuracy * 100:.1f}%" in html
    assert f"{result.metrics.macro_avg.f1:.3f}" in html
    for name in result.metrics.class_names:
        assert name in html
    assert "Training curves" in html and "SmallCNN" in html
    assert written["metrics"].name == "tiny-report.metrics.json"
    stored = json.loads(written["metrics"].read_text())
    assert stored["accuracy"] == pytest.approx(result.metrics.accuracy)
    assert written["per_class"].read_text().startswith("class,precision,recall,f1,support")


@pytest.mark.slow
def test_cli_evaluate_with_report_writes_the_html(trained, tmp_path, capsys):
    ws, run_id, _ = trained
    path = tmp_path / "cli.html"
    code = cli.main(
        ["--workspace", str(ws.root), "evaluate", run_id, "--report", str(path), "--json"]
    )
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and 0.0 <= out["metrics"]["accuracy"] <= 1.0
    # The CLI contract: the headline with its interval and n, flat.
    low, high = out["accuracy_ci95"]
    assert low <= out["accuracy"] <= high and out["num_samples"] > 0
    assert isinstance(out["macro_f1"], float) and isinstance(out["collapsed"], bool)
    assert out["report"]["html"] == str(path)
    assert "<!DOCTYPE html>" in path.read_text()


def test_cli_evaluate_of_an_unknown_run_is_a_usage_error(ws, capsys):
    assert cli.main(["--workspace", str(ws.root), "evaluate", "nope"]) == 2
    assert "No run with id 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- refusals


def test_a_run_without_a_model_says_why(ws):
    queued = runs.create_run(ws, tiny_config("tiny"))
    with pytest.raises(evaluate.EvaluationError, match="has no saved model: it is still queued"):
        evaluate.evaluate_run(ws, queued.id)

    failed = runs.create_run(ws, tiny_config("tiny"))
    runs.set_state(ws, failed.id, runs.RUNNING)
    runs.set_state(ws, failed.id, runs.FAILED, error="The loss became NaN at epoch 2")
    with pytest.raises(evaluate.EvaluationError) as info:
        evaluate.evaluate_run(ws, failed.id)
    assert f"Run {failed.id} has no saved model: it failed" in str(info.value)
    assert "NaN" in str(info.value)

    with pytest.raises(runs.RunNotFoundError):
        evaluate.evaluate_run(ws, "20990101-000000-abcdef")
    assert evaluate.load_evaluation(ws, queued.id) is None


def test_a_running_run_is_not_evaluated_before_it_finishes(ws):
    record = runs.create_run(ws, tiny_config("tiny"))
    runs.set_state(ws, record.id, runs.RUNNING)
    (record.dir / "model.keras").write_bytes(b"checkpoint")
    with pytest.raises(evaluate.EvaluationError, match="still running"):
        evaluate.evaluate_run(ws, record.id)


def _run_with_classes(ws, classes, **summary):
    record = runs.create_run(ws, tiny_config("tiny"))
    atomic_write_json(record.dir / "classes.json", {"classes": classes, "dataset_id": "x"})
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary=summary)
    return record.id


def test_comparing_runs_with_different_classes_is_refused_clearly(ws):
    a = _run_with_classes(ws, ["cat", "dog"])
    b = _run_with_classes(ws, ["cat", "dog", "fox"])
    with pytest.raises(ValueError, match="different classes") as info:
        compare.compare_runs(ws, [a, b])
    assert f"only in {b}: 'fox'" in str(info.value)


def test_comparing_runs_gives_one_row_each_with_cost(ws):
    a = _run_with_classes(ws, ["cat", "dog"], train_seconds=12.5, trainable_params=1000)
    b = _run_with_classes(ws, ["dog", "cat"], train_seconds=30.0, trainable_params=90000)
    rows = compare.compare_runs(ws, [a, b])
    assert [r["run_id"] for r in rows] == [a, b]
    assert rows[1]["trainable_params"] == 90000 and rows[0]["train_seconds"] == 12.5
    assert rows[0]["accuracy"] is None and rows[0]["evaluated_on"] is None  # not evaluated
    assert [r.id for r in compare.comparable_runs(ws, a)] == [b]


@pytest.mark.slow
def test_a_failing_evaluation_leaves_the_training_finished(ws, tiny_dataset, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(evaluate, "evaluate_run", broken)
    record = runs.create_run(ws, tiny_config(tiny_dataset, epochs=1))
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    assert result.state == runs.FINISHED
    [failed] = _events(ws, record.id, "evaluation_failed")
    assert failed["message"] == "disk on fire"


@pytest.mark.slow
def test_without_a_test_split_the_validation_split_is_used_and_said(ws, tmp_path):
    from tlcore.data import datasets

    src = write_class_folders(tmp_path / "notest", {"red": 10, "green": 10})
    options = datasets.ImportOptions(val_fraction=0.3, test_fraction=0.0)
    ds = datasets.import_folder(ws, src, name="no test", options=options)
    assert ds.items("test") == []
    run_id = _train_in_process(ws, tiny_config(ds.name, epochs=1))
    result = evaluate.load_evaluation(ws, run_id)
    assert result.split == "val" and result.validation is None
    assert "no test split" in result.note and "optimistic" in result.note

    # A model file changed after training is not loaded.
    with open(ws.run_dir(run_id) / "model.keras", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(evaluate.EvaluationError, match="changed after training"):
        evaluate.evaluate_run(ws, run_id)


@pytest.mark.slow
def test_a_model_made_to_collapse_is_flagged_by_the_cli_and_the_run_summary(
    ws, tiny_dataset, capsys
):
    from tlcore.model import model_store, models

    run_id = _train_in_process(ws, tiny_config(tiny_dataset, epochs=1))
    path = ws.run_dir(run_id) / runs.MODEL_FILE
    model = models.load_model(path)
    logits = models.head_model(model).get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[:] = [50.0, 0.0, 0.0]  # class 0 wins for every image
    logits.set_weights([kernel * 0.0, bias])
    model_store.save_model(model, path)

    code = cli.main(["--workspace", str(ws.root), "evaluate", run_id, "--fresh", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["collapsed"] is True
    assert "collapsed to one class" in out["collapse_message"]
    assert cli.main(["--workspace", str(ws.root), "evaluate", run_id]) == 0
    assert "WARNING: The model predicts" in capsys.readouterr().out
    figures = train.evaluated_figures(evaluate.load_evaluation(ws, run_id))
    assert "collapsed to one class" in figures["collapse"]
