"""Safe model loading (issue 7): hashes recorded at save time, tampering refused, uploads
loaded as weights only."""

from __future__ import annotations

import errno
import json
import zipfile

import numpy as np
import pytest

from tests.conftest import tiny_config
from tlcore.fileio import atomic_write_json, read_json
from tlcore.model import model_store
from tlcore.model.weights import WeightsMismatchError
from tlcore.store import runs
from tlcore.training import callbacks

CLASSES = ["red", "green", "blue"]


def make_finished_run(ws, dataset: str = "tiny", classes=CLASSES, **changes):
    """A finished run with an untrained model saved as training saves it (no fitting).

    Returns ``(run_id, model)``.
    """
    from tlcore.model import models
    from tlcore.store.run_layout import CLASSES_FILE

    config = tiny_config(dataset, **changes)
    record = runs.create_run(ws, config)
    model = models.build_model(config, len(classes))
    model_store.save_model(model, record.dir / runs.MODEL_FILE)
    atomic_write_json(
        record.dir / CLASSES_FILE,
        {"classes": list(classes), "dataset_id": dataset, "dataset_hash": "0" * 64},
    )
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={"val_accuracy": 0.5})
    return record.id, model


def _flip_a_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_records_the_hash_of_the_file_it_moved_into_place(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "model.keras"
    record = model_store.save_model(model, path)
    assert record.sha256 == model_store.sha256_file(path)
    assert record.previous_sha256 is None
    stored = read_json(tmp_path / "model.json")
    assert stored["sha256"] == record.sha256 and stored["file"] == "model.keras"
    second = model_store.save_model(model, path)
    assert second.previous_sha256 == record.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.keras"]


def test_a_crash_between_record_and_rename_leaves_a_loadable_model(tmp_path, monkeypatch):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "model.keras"
    model_store.save_model(model, path)
    before = path.read_bytes()

    def dies(*args):
        raise OSError(errno.EIO, "killed")

    monkeypatch.setattr(model_store.os, "replace", dies)
    with pytest.raises(OSError):
        model_store.save_model(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old model, the new record
    assert model_store.verified_model_bytes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.keras"]


def test_checkpoint_and_final_save_record_the_hash(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = callbacks.BestModelCheckpoint(tmp_path / "model.keras")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_accuracy": 0.5, "val_loss": 1.0})
    record = model_store.read_record(tmp_path / "model.keras")
    assert record.sha256 == model_store.sha256_file(tmp_path / "model.keras")


def test_a_finished_run_loads_after_its_hash_is_checked(ws):
    run_id, model = make_finished_run(ws)
    loaded = model_store.load_run_model(ws, run_id)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.model(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-6
    )
    assert loaded.sha256 == model_store.recorded_hash(ws.run_dir(run_id))


def test_a_tampered_model_file_is_refused(ws):
    run_id, _ = make_finished_run(ws)
    _flip_a_byte(ws.run_dir(run_id) / runs.MODEL_FILE)
    with pytest.raises(model_store.ModelIntegrityError) as info:
        model_store.load_run_model(ws, run_id)
    message = str(info.value)
    assert f"The model file of run {run_id} was changed after training (hash mismatch)" in message
    assert "will not be loaded" in message and "Retrain or restore it" in message


def test_a_model_without_a_recorded_hash_is_refused(ws):
    run_id, _ = make_finished_run(ws)
    (ws.run_dir(run_id) / model_store.MODEL_RECORD_FILE).unlink()
    with pytest.raises(model_store.ModelIntegrityError, match="no recorded hash"):
        model_store.load_run_model(ws, run_id)


def test_an_unfinished_run_is_refused_by_state(ws):
    record = runs.create_run(ws, tiny_config("tiny"))
    with pytest.raises(model_store.ModelLoadError, match="is queued, not finished"):
        model_store.load_run_model(ws, record.id)


def test_an_uploaded_keras_model_is_refused_for_prediction(ws, tmp_path):
    run_id, model = make_finished_run(ws)
    model.save(tmp_path / "mine.keras")
    data = (tmp_path / "mine.keras").read_bytes()
    assert model_store.check_upload(data) == model_store.FULL_KERAS_MODEL
    with pytest.raises(model_store.UnsafeModelError) as info:
        model_store.load_weights_for_run(ws, run_id, data, "mine.keras")
    message = str(info.value)
    assert "mine.keras is a .keras model archive" in message
    assert "never loads uploaded models" in message and "Import only its weights" in message


def test_a_full_h5_model_is_refused_unless_imported_as_weights(ws, tmp_path):
    run_id, model = make_finished_run(ws)
    model.save(tmp_path / "legacy.h5")  # Keras' legacy full-model format
    data = (tmp_path / "legacy.h5").read_bytes()
    assert model_store.check_upload(data) == model_store.FULL_H5_MODEL
    with pytest.raises(model_store.UnsafeModelError, match=r"full Keras \.h5 model"):
        model_store.load_weights_for_run(ws, run_id, data, "legacy.h5")
    loaded = model_store.load_weights_for_run(ws, run_id, data, "legacy.h5", allow_full_model=True)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.model(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_keras_archive_imported_as_weights_reads_only_its_weights(ws, tmp_path):
    run_id, _ = make_finished_run(ws)
    from tlcore.model import models

    other = models.build_model(tiny_config("tiny", seed=7), 3)
    other.save(tmp_path / "other.keras")
    # A config that would run code if it were ever deserialized: it must not matter.
    with zipfile.ZipFile(tmp_path / "other.keras", "a") as archive:
        archive.writestr("config.json.evil", json.dumps({"class_name": "Lambda"}))
    data = (tmp_path / "other.keras").read_bytes()
    loaded = model_store.load_weights_for_run(
        ws, run_id, data, "other.keras", allow_full_model=True
    )
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.model(x), other(x), rtol=1e-5, atol=1e-6)
    assert loaded.source == "weights_upload"


def test_a_weights_file_loads_into_the_runs_architecture(ws, tmp_path):
    run_id, _ = make_finished_run(ws)
    from tlcore.model import models

    trained_elsewhere = models.build_model(tiny_config("tiny", seed=3), 3)
    trained_elsewhere.save_weights(tmp_path / "w.weights.h5")
    data = (tmp_path / "w.weights.h5").read_bytes()
    assert model_store.check_upload(data) == model_store.WEIGHTS_FILE
    loaded = model_store.load_weights_for_run(ws, run_id, data, "w.weights.h5")
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.model(x), trained_elsewhere(x), rtol=1e-5, atol=1e-6)


def test_weights_of_another_architecture_are_refused_by_name(ws, tmp_path):
    run_id, _ = make_finished_run(ws)
    from tlcore.model import models

    bigger = models.build_model(tiny_config("tiny", dense_units=(16,)), 3)
    bigger.save_weights(tmp_path / "big.weights.h5")
    with pytest.raises(WeightsMismatchError, match=r"big\.weights\.h5 does not fit"):
        model_store.load_weights_for_run(
            ws, run_id, (tmp_path / "big.weights.h5").read_bytes(), "big.weights.h5"
        )


def test_a_non_model_upload_is_named(ws):
    run_id, _ = make_finished_run(ws)
    with pytest.raises(ValueError, match=r"notes\.h5 is not a Keras weights file"):
        model_store.load_weights_for_run(ws, run_id, b"hello", "notes.h5")
