"""Training recipes, the cached-feature fast path and training faults (issue 5)."""

from __future__ import annotations

import errno
import json

import pytest

from tests.conftest import tiny_config
from tlcore.fileio import StorageError
from tlcore.store import jobs, runs
from tlcore.training import callbacks, train

RUN_TIMEOUT_S = 300


def _train_in_process(ws, config):
    """Runs a whole training in this process, as the worker would."""
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, "running")
    result = train.train_run(ws, record.id)
    return record.id, result


def _events(ws, run_id, name):
    return [e for e in runs.read_progress(ws.run_dir(run_id)) if e["event"] == name]


def test_balanced_class_weights_follow_sklearns_rule():
    weights = train.class_weights([0, 0, 0, 1], 2)
    assert weights == pytest.approx({0: 4 / (2 * 3), 1: 4 / (2 * 1)})


@pytest.mark.slow
def test_frozen_backbone_trains_the_head_on_cached_features_and_reuses_them(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, strategy="feature_extraction", epochs=3)
    first, result = _train_in_process(ws, config)
    assert result.state == "finished"
    ready = _events(ws, first, "features_ready")
    # The end-of-run evaluation predicts the test and validation splits from their features
    # too: the test split's computed and cached then, the validation split's reused.
    assert [(e["split"], e["reused"]) for e in ready] == [
        ("train", False),
        ("val", False),
        ("test", False),
        ("val", True),
    ]
    assert _events(ws, first, "phase_start")[0]["feature_cache"] is True

    second, _ = _train_in_process(ws, config.replace(name="again"))
    again = _events(ws, second, "features_ready")
    assert len(again) == 4 and all(e["reused"] for e in again)

    # The saved model is the whole model: it takes raw images, and predicting them gives
    # the probabilities the evaluation got from the cached features.
    from tlcore.data import datasets, pipeline
    from tlcore.evaluation import evaluate
    from tlcore.model import models

    model = models.load_model(ws.run_dir(first) / "model.keras")
    assert model.input_shape == (None, 32, 32, 3)
    dataset = datasets.load_dataset(ws, tiny_dataset)
    for split in ("val", "test"):
        items = dataset.items(split)
        images = pipeline.load_images_array(items, 32)
        assert model.predict(images, verbose=0).shape == (len(items), 3)
    evaluation = evaluate.load_evaluation(ws, first, dataset.id)
    paths, _, stored = evaluate.read_predictions(evaluation.folder)
    assert paths == [str(i.path) for i in items]
    assert stored == pytest.approx(model.predict(images, verbose=0), abs=1e-5)


@pytest.mark.slow
def test_augmentation_turns_the_cache_off(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, strategy="feature_extraction", epochs=1, flip="horizontal")
    run_id, result = _train_in_process(ws, config)
    assert result.state == "finished"
    assert _events(ws, run_id, "phase_start")[0]["feature_cache"] is False
    assert _events(ws, run_id, "features_ready") == []


@pytest.mark.slow
def test_two_phase_runs_both_phases_with_their_descriptions(ws, tiny_dataset):
    config = tiny_config(
        tiny_dataset, strategy="two_phase", epochs=2, fine_tune_epochs=2, unfreeze=1
    )
    run_id, result = _train_in_process(ws, config)
    assert result.state == "finished"
    starts = _events(ws, run_id, "phase_start")
    assert [s["phase"] for s in starts] == [1, 2]
    assert starts[1]["description"].startswith("phase 2 of 2")
    epochs = [(e["phase"], e["epoch"]) for e in _events(ws, run_id, "epoch_end")]
    assert epochs == [(1, 1), (1, 2), (2, 3), (2, 4)]
    # The fine-tuned backbone's features are not the cached ones: the evaluation predicts images.
    assert "test" not in {e["split"] for e in _events(ws, run_id, "features_ready")}
    history = json.loads((ws.run_dir(run_id) / "history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


@pytest.mark.slow
def test_same_seed_repeats_the_numbers_on_cpu(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, epochs=2)
    a, _ = _train_in_process(ws, config)
    b, _ = _train_in_process(ws, config)
    loss_a = [e["logs"]["loss"] for e in _events(ws, a, "epoch_end")]
    loss_b = [e["logs"]["loss"] for e in _events(ws, b, "epoch_end")]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)


@pytest.mark.slow
def test_nan_loss_fails_the_run_with_that_reason_and_keeps_the_best_model(ws, tiny_dataset):
    config = tiny_config(
        tiny_dataset, optimizer="sgd", learning_rate=10.0, momentum=0.99, epochs=30
    )
    run_id = jobs.submit(ws, config)
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "failed"
    assert "NaN" in record.status.error and "learning rate" in record.status.error


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "model.keras"
    calls = []

    def flaky_save(m, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        m.save(target)

    checkpoint = callbacks.BestModelCheckpoint(path, save_fn=flaky_save, min_interval_s=0)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_accuracy": 0.5, "val_loss": 1.0})
    before = path.read_bytes()
    with pytest.raises(StorageError, match="previous checkpoint is kept"):
        checkpoint.on_epoch_end(1, {"val_accuracy": 0.7, "val_loss": 0.5})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.keras"]


def test_checkpoint_holds_quick_improvements_and_writes_the_best_at_the_end(tmp_path):
    import keras
    import numpy as np

    from tlcore.model import model_store

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "model.keras"
    checkpoint = callbacks.BestModelCheckpoint(path, min_interval_s=3600)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_accuracy": 0.5, "val_loss": 1.0})  # written at once
    first_write = path.read_bytes()
    model.set_weights([np.full((2, 1), 7.0), np.zeros(1)])
    checkpoint.on_epoch_end(1, {"val_accuracy": 0.8, "val_loss": 0.5})  # best: held in memory
    assert path.read_bytes() == first_write
    model.set_weights([np.full((2, 1), -3.0), np.zeros(1)])
    # Lower loss but lower accuracy: the rule keeps accuracy first, so not kept.
    checkpoint.on_epoch_end(2, {"val_accuracy": 0.7, "val_loss": 0.1})
    checkpoint.on_train_end()
    saved = keras.saving.load_model(path)
    assert model_store.read_record(path).sha256 == model_store.sha256_file(path)
    assert np.allclose(saved.get_weights()[0], 7.0)
    assert np.allclose(model.get_weights()[0], -3.0)  # training state left as it was


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(ws, tiny_dataset, monkeypatch):
    monkeypatch.setenv("TLS_LOGICAL_CPUS", "2")
    run_id = jobs.submit(ws, tiny_config(tiny_dataset, epochs=2, distribution="mirrored"))
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    assert record.state == "finished", record.status.error
    placement = _events(ws, run_id, "placement")[0]["description"]
    assert "2 CPU device(s)" in placement and "2 replica(s)" in placement


def test_missing_weights_run_is_refused_clearly(ws):
    config = tiny_config("tiny", weights="run:20990101-000000-abcdef")
    with pytest.raises(runs.RunNotFoundError, match="No run with id"):
        train.resolve_run_weights(ws, config, ws.root)
    source = runs.create_run(ws, tiny_config("tiny"))
    with pytest.raises(train.TrainingError, match="finished run"):
        train.resolve_run_weights(ws, tiny_config("tiny", weights=f"run:{source.id}"), ws.root)


@pytest.mark.slow
def test_transfer_from_an_earlier_run_checks_its_model_and_keeps_a_copy(ws, tiny_dataset):
    from tlcore.model import model_store

    source_id, _ = _train_in_process(ws, tiny_config(tiny_dataset, epochs=1))
    runs.set_state(ws, source_id, "finished")
    config = tiny_config(tiny_dataset, epochs=1, weights=f"run:{source_id}")
    run_id, result = _train_in_process(ws, config)
    assert result.state == "finished"
    copy = ws.run_dir(run_id) / train.SOURCE_MODEL_FILE
    assert model_store.sha256_file(copy) == model_store.recorded_hash(ws.run_dir(source_id))

    model_file = ws.run_dir(source_id) / "model.keras"
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    with pytest.raises(model_store.ModelIntegrityError):
        train.resolve_run_weights(ws, config, ws.root)


@pytest.mark.slow
def test_every_figure_of_a_run_is_the_kept_epochs(ws, tiny_dataset):
    from tlcore.evaluation import evaluate
    from tlcore.training import kept_model

    config = tiny_config(tiny_dataset, epochs=5, learning_rate=3e-3)
    run_id, result = _train_in_process(ws, config)
    history = runs.epoch_history(ws.run_dir(run_id))
    kept = kept_model.kept_epoch(history)
    summary = result.summary
    assert summary["kept_epoch"] == kept["epoch"]
    assert summary["val_accuracy"] == summary["best_val_accuracy"] == kept["val_accuracy"]
    assert summary["val_loss"] == kept["val_loss"]
    assert summary["val_samples"] == 9 and "best validation accuracy" in summary["keep_rule"]
    # The saved model is that epoch's: scoring it on the validation split gives its figure.
    stored = evaluate.load_evaluation(ws, run_id)
    assert stored.validation.accuracy == pytest.approx(summary["val_accuracy"], abs=1e-6)
    # Test figures sit beside validation, with their interval and n.
    assert summary["evaluated_split"] == "test"
    assert summary["test_samples"] == stored.metrics.num_samples
    low, high = summary["test_accuracy_ci95"]
    assert low <= summary["test_accuracy"] <= high


@pytest.mark.slow
def test_the_recommended_recipe_chooses_its_head_by_cross_validation(ws, tiny_dataset):
    from tlcore.evaluation import evaluate

    config = tiny_config(tiny_dataset, strategy="feature_extraction", head_search=True)
    assert config.searches_head
    run_id, result = _train_in_process(ws, config)
    assert result.state == "finished"
    ready = {e["split"] for e in _events(ws, run_id, "features_ready")}
    # Training's four; the evaluation's test split from its features as well.
    assert ready == {"train", "val", "train-mirrored", "val-mirrored", "test"}
    summary = result.summary
    # 42 train + 9 val images cross-validated, then refitted on all of them.
    assert summary["val_samples"] == 51 and summary["trained_on_validation"] is True
    assert "cross-validation" in summary["validation_method"]
    search = summary["head_search"]
    assert search["folds"] == 5 and len(search["candidates"]) >= 5
    assert search["chosen_c"] in [c["c"] for c in search["candidates"]]
    # The validation images trained the model, so evaluation scores the test split only.
    stored = evaluate.load_evaluation(ws, run_id)
    assert stored.split == "test" and stored.validation is None


def test_head_search_folds_standardisation_into_an_exact_dense_layer():
    import numpy as np

    from tlcore.training import head_search

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 8))
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(0, 1, (60, 8)) + 50.0  # far from zero, unevenly scaled
    x[:, 0] *= 100
    result = head_search.search(x, None, y, 4, seed=1)  # class 3 has no images
    assert result.folds == 5 and result.cv_accuracy > 0.8
    logits = x @ result.kernel + result.bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert np.mean(np.argmax(probs, axis=1) == y) == pytest.approx(result.train_accuracy)
    assert probs[:, 3].max() < 1e-6  # a class never seen is never predicted


def test_head_search_handles_two_classes_and_too_few_images():
    import numpy as np

    from tlcore.training import head_search

    rng = np.random.default_rng(2)
    y = np.array([0] * 3 + [1] * 17)
    x = np.where(y[:, None] == 1, 2.0, -2.0) + rng.normal(0, 0.5, (20, 4))
    result = head_search.search(x, x + rng.normal(0, 0.1, x.shape), y, 2)
    assert result.folds == 3  # stratified: no more folds than the smallest class has images
    logits = x @ result.kernel + result.bias
    assert list(np.argmax(logits, axis=1)) == list(y)
    too_few = head_search.search(x[2:], None, y[2:], 2)  # one image of class 0
    assert too_few.folds == 0 and too_few.cv_accuracy is None
    assert "too few images" in too_few.describe()
