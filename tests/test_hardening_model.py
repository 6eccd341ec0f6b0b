"""Hardening of models, output and training reports (hardening issue, rows 8, 12, 13, 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import tiny_config
from tlcore.fileio import atomic_write_json
from tlcore.model import model_store
from tlcore.store import runs
from tlcore.training import train

CLASSES = ["red", "green", "blue"]


def _train_in_process(ws, config):
    """Runs a whole training in this process, as the worker would; returns the run id."""
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    runs.set_state(ws, record.id, result.state, summary=result.summary)
    return record.id, result


def _finished_untrained_run(ws, dataset: str, **changes) -> str:
    """A finished run whose model is built but never fitted (its architecture is the point)."""
    from tlcore.model import models
    from tlcore.store.run_layout import CLASSES_FILE

    config = tiny_config(dataset, **changes)
    record = runs.create_run(ws, config)
    model_store.save_model(models.build_model(config, len(CLASSES)), record.dir / runs.MODEL_FILE)
    atomic_write_json(
        record.dir / CLASSES_FILE,
        {"classes": CLASSES, "dataset_id": dataset, "dataset_hash": "0" * 64},
    )
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={})
    return record.id


# -- row 8: the studio's own models are accepted as weights ------------------------------
@pytest.mark.slow
def test_a_feature_extraction_runs_model_is_accepted_as_weights_for_every_strategy(
    ws, tiny_dataset
):
    # The head of a feature-extraction run is fitted on its own, so the saved .keras holds
    # that head's optimizer state under layers/<head>/optimizer: not weights of the model.
    source_id, result = _train_in_process(
        ws, tiny_config(tiny_dataset, strategy="feature_extraction", epochs=1)
    )
    assert result.state == runs.FINISHED
    source = model_store.load_run_model(ws, source_id).model
    data = (ws.run_dir(source_id) / runs.MODEL_FILE).read_bytes()
    x = np.random.default_rng(8).uniform(0, 255, (2, 32, 32, 3)).astype("float32")

    for strategy in ("full_fine_tune", "feature_extraction", "two_phase"):
        target_id = _finished_untrained_run(
            ws, tiny_dataset, strategy=strategy, name=f"target-{strategy}"
        )
        loaded = model_store.load_weights_for_run(
            ws, target_id, data, "model.keras", allow_full_model=True
        )
        np.testing.assert_allclose(loaded.model(x), source(x), rtol=1e-5, atol=1e-6)


# -- row 14: a NaN before any epoch finished keeps no model, and says so ----------------------
@pytest.mark.slow
def test_a_nan_loss_in_the_first_batch_says_no_model_was_kept(ws, tiny_dataset, monkeypatch):
    import keras

    class NaNLoss(keras.losses.CategoricalCrossentropy):
        """The training loss, NaN from the first batch on (as a broken input would make it)."""

        def call(self, y_true, y_pred):
            return super().call(y_true, y_pred) * math.nan

    monkeypatch.setattr(keras.losses, "CategoricalCrossentropy", NaNLoss)
    record = runs.create_run(ws, tiny_config(tiny_dataset, epochs=1))
    runs.set_state(ws, record.id, runs.RUNNING)
    with pytest.raises(train.TrainingError) as raised:
        train.train_run(ws, record.id)
    message = str(raised.value)
    assert "epoch 1, batch 1" in message
    assert "No model was kept" in message
    assert "best model so far is kept" not in message
    assert not (ws.run_dir(record.id) / runs.MODEL_FILE).exists()


# -- row 12: control characters never reach the terminal or the log raw ------------------
EVIL_NAME = "evil\x1b[2J\nfake row"


def test_datasets_list_escapes_control_characters_in_names(ws, tmp_path, capsys):
    from tests.conftest import write_class_folders
    from tlcore import cli
    from tlcore.data import datasets

    src = write_class_folders(tmp_path / "src", {"a": 5, "b": 5}, size=8)
    datasets.import_folder(ws, src, name=EVIL_NAME)
    capsys.readouterr()

    assert cli.main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 2  # the header and the one dataset: no forged row
    assert "evil\\x1b[2J\\nfake row" in lines[1]


def test_table_and_log_lines_escape_every_control_character(ws):
    import logging

    from tlcore.cli_output import table
    from tlcore.store import studio_log

    shown = table([{"name": "a\x1b[31m\r\tb\x7f\x9bc", "ok": "étoile ✓"}], ["name", "ok"])
    assert shown.splitlines()[1].split("  ")[0] == "a\\x1b[31m\\r\\tb\\x7f\\x9bc"
    assert "étoile ✓" in shown

    logger = studio_log.configure(ws)
    try:
        logging.getLogger("tlcore.test").warning("dataset %s imported", EVIL_NAME)
        for handler in logger.handlers:
            handler.flush()
    finally:
        for handler in list(logger.handlers):
            if getattr(handler, "baseFilename", None) == str(studio_log.log_path(ws)):
                logger.removeHandler(handler)
                handler.close()
    text = studio_log.log_path(ws).read_text()
    assert "\x1b" not in text
    assert len(text.splitlines()) == 1
    assert "dataset evil\\x1b[2J\\nfake row imported" in text


# -- row 13: a diverged run says so ------------------------------------------------------
def test_a_loss_that_blew_up_is_reported_as_divergence_with_what_to_do():
    from tlcore.training.progress import divergence_message

    diverged = [{"epoch": 1, "loss": 2.1}, {"epoch": 2, "loss": 9.8e4}, {"epoch": 3, "loss": 1.2e5}]
    message = divergence_message(diverged, 3, learning_rate=10.0)
    assert "grew from 2.1 (epoch 1) to 1.2e+05 (epoch 3)" in message
    assert "Lower the learning rate, e.g. 10× (learning_rate=1 instead of 10)" in message
    # Learning, noise and a NaN are not divergence (the NaN stop reports those).
    assert divergence_message([{"loss": 1.1}, {"loss": 0.4}], 3) is None
    assert divergence_message([{"loss": 0.05}, {"loss": 0.9}], 3) is None  # 18x, near chance
    assert divergence_message([{"loss": 1.1}, {"loss": math.nan}], 3) is None


def test_the_training_page_warns_about_a_diverged_run(ws):
    from tests.test_training_page import make_run, open_training, page_text

    summary = {"kept_epoch": 1, "divergence": "The training loss grew from 2.1 to 1.2e+05."}
    record = make_run(ws, runs.FINISHED, name="Diverged", epochs=4, summary=summary)
    at = open_training(record.id)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("Training diverged." in w and "1.2e+05" in w for w in warnings), page_text(at)


def test_evaluate_json_carries_the_divergence_warning(ws, tiny_dataset):
    import json

    from tests.conftest import tiny_config
    from tests.test_cli import tlcore
    from tlcore.data import datasets
    from tlcore.fileio import atomic_write_json
    from tlcore.model import model_store, models
    from tlcore.store.run_layout import CLASSES_FILE

    ds = datasets.load_dataset(ws, tiny_dataset)
    config = tiny_config(tiny_dataset, learning_rate=10.0)
    record = runs.create_run(ws, config)
    model_store.save_model(models.build_model(config, 3), record.dir / runs.MODEL_FILE)
    atomic_write_json(
        record.dir / CLASSES_FILE,
        {"classes": ds.classes, "dataset_id": ds.id, "dataset_hash": ds.content_hash},
    )
    warning = "The training loss grew from 2.1 (epoch 1) to 1.2e+05 (epoch 3): it diverged."
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={"divergence": warning})

    out = tlcore(ws, "evaluate", record.id, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["diverged"] is True and data["divergence_message"] == warning
    plain = tlcore(ws, "evaluate", record.id)
    assert f"WARNING: {warning}" in plain.stdout
