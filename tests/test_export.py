"""Export (issue 7): every format is reloaded with its own runtime and compared with the
Keras model; the bundle carries a model card and a usage script that works on its own."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import numpy as np
import pytest

from tests.conftest import tiny_config, write_class_folders
from tests.test_model_store import make_finished_run
from tlcore import cli
from tlcore.data import datasets
from tlcore.model import backbones, model_store, registry, tlcore_layers
from tlcore.serving import export, predict
from tlcore.serving.export import rendering
from tlcore.store import runs
from tlcore.store.workspace import open_workspace
from tlcore.training import train

FLOAT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A really trained tiny run (colour classes), finished, in its own workspace."""
    root = tmp_path_factory.mktemp("export")
    ws = open_workspace(root / "workspace")
    source = write_class_folders(root / "tiny", {"red": 20, "green": 20, "blue": 20})
    datasets.import_folder(ws, source, name="tiny")
    record = runs.create_run(ws, tiny_config("tiny", epochs=4))
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    runs.set_state(ws, record.id, runs.FINISHED, summary=result.summary)
    return ws, record.id, source


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    """Every format exported once; the zip extracted for inspection."""
    ws, run_id, _ = trained
    steps = []
    result = export.export_run(
        ws, run_id, list(export.FORMATS), progress=lambda f, m: steps.append((f, m))
    )
    folder = tmp_path_factory.mktemp("bundle")
    with zipfile.ZipFile(result.bundle) as archive:
        archive.extractall(folder)
    return result, folder / f"{run_id}-export", steps


@pytest.mark.slow
def test_every_format_round_trips_and_records_its_agreement(trained, bundle):
    ws, run_id, _ = trained
    result, folder, steps = bundle
    assert result.bundle.parent == ws.run_dir(run_id) / "exports"
    assert [p.name for p in (ws.run_dir(run_id) / "exports").iterdir()] == [result.bundle.name]
    assert not result.failed, [r.error for r in result.failed]
    by_format = {r.format: r for r in result.formats}
    assert list(by_format) == list(export.FORMATS)
    for fmt in FLOAT_FORMATS:
        agreement = by_format[fmt].agreement
        assert agreement["samples"] > 0
        assert agreement["top1_match_rate"] == 1.0, fmt
        assert agreement["max_abs_prob_diff"] < 1e-4, fmt
        assert by_format[fmt].passed, fmt  # the same computation: it passes its check
        assert agreement["max_abs_prob_diff_allowed"] == export.FLOAT_CHECK.max_prob_diff
    int8 = by_format["tflite-int8"].agreement
    assert int8["top1_match_rate"] >= 0.8  # quantized: recorded, allowed to differ a little
    assert int8["max_abs_prob_diff"] < 0.35
    assert int8["passed"] == export.INT8_CHECK.passes(
        int8["top1_match_rate"], int8["max_abs_prob_diff"]
    )
    assert int8["rule"] == export.INT8_CHECK.rule
    assert "test split of dataset 'tiny'" in result.samples_from
    for name in ("model.keras", "tlcore_layers.py", "model.tflite", "model_int8.tflite"):
        assert (folder / name).is_file(), name
    assert (folder / "model.onnx").is_file() and (folder / "saved_model").is_dir()
    assert steps[0][0] == 0.0 and steps[-1] == (1.0, "Done")


@pytest.mark.slow
def test_the_model_card_says_what_the_model_is(trained, bundle):
    ws, run_id, _ = trained
    result, folder, _ = bundle
    card = json.loads((folder / "model_card.json").read_text())
    assert card == result.card
    assert card["classes"] == ["blue", "green", "red"]
    assert card["backbone"]["name"] == "SmallCNN"
    assert card["weights_origin"].startswith("none")
    assert card["strategy"] == "full_fine_tune"
    assert len(card["dataset"]["content_hash"]) == 64
    assert card["metrics"]["epochs_completed"] == 4
    assert card["input"]["preprocessing"] == (
        "raw RGB 0–255, resized to 32×32; preprocessing is inside the model"
    )
    assert card["model_sha256"] == model_store.recorded_hash(ws.run_dir(run_id))
    assert {f["format"] for f in card["formats"]} == set(export.FORMATS)
    text = (folder / "model_card.md").read_text()
    assert "| Classes | blue, green, red |" in text
    assert "Top-1 agreement" in text and "TensorFlow Lite (int8)" in text
    assert "| ONNX | `model.onnx` | ONNX Runtime (CPU) | 100.0% |" in text
    assert card["input"]["dtype"] == "float32, except uint8 for TensorFlow Lite (int8)"
    assert (folder / "labels.txt").read_text().split() == ["blue", "green", "red"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "keras", "tflite-int8"])
def test_the_usage_script_runs_without_the_studio(trained, bundle, fmt):
    ws, run_id, source = trained
    _, folder, _ = bundle
    image = source / "red" / "img_000.png"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "usage.py", str(image), "--format", fmt, "--top-k", "1"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = done.stdout.split()[0]
    expected = predict.Predictor.for_run(ws, run_id).predict_images([image])[0].predicted_class
    assert predicted == expected == "red"


@pytest.mark.slow
def test_the_bundle_ships_the_studios_own_layers_module(bundle):
    _, folder, _ = bundle
    shipped = (folder / export.LAYERS_MODULE_FILE).read_bytes()
    assert shipped == Path(tlcore_layers.__file__).read_bytes()
    assert shipped.decode("utf-8") == export.custom_layers_source()


@pytest.mark.slow
def test_a_format_that_fails_after_writing_leaves_nothing_in_the_bundle(ws, monkeypatch):
    def broken(path, x):
        raise RuntimeError("the runtime could not read it")

    keras_format = dataclasses.replace(export.EXPORT_FORMATS["keras"], checker=broken)
    monkeypatch.setitem(export.EXPORT_FORMATS, "keras", keras_format)
    run_id, _ = make_finished_run(ws, dataset="gone")
    result = export.export_run(ws, run_id, ["keras", "savedmodel"], samples=4)
    assert [r.format for r in result.failed] == ["keras"]
    assert result.failed[0].error == (
        "Keras (.keras) export failed (RuntimeError: the runtime could not read it)."
    )
    names = zipfile.ZipFile(result.bundle).namelist()
    assert not any(n.endswith(("model.keras", "tlcore_layers.py")) for n in names), names
    usage = zipfile.ZipFile(result.bundle).read(f"{run_id}-export/usage.py").decode()
    assert "FORMATS = ['savedmodel']" in usage


@pytest.mark.slow
def test_cli_export_writes_the_bundle_where_asked(trained, tmp_path, capsys):
    ws, run_id, _ = trained
    out = tmp_path / "bundles"
    code = cli.main(
        ["--workspace", str(ws.root), "export", run_id, "--format", "tflite", "--out", str(out)]
    )
    assert code == cli.EXIT_OK
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["bundle"].startswith(str(out))
    assert printed["formats"][0]["format"] == "tflite"
    assert printed["formats"][0]["agreement"]["top1_match_rate"] == 1.0
    names = zipfile.ZipFile(printed["bundle"]).namelist()
    assert f"{run_id}-export/model.tflite" in names
    assert f"{run_id}-export/usage.py" in names


def test_cli_export_names_an_unknown_format(ws, capsys):
    run_id, _ = make_finished_run(ws)
    code = cli.main(["--workspace", str(ws.root), "export", run_id, "--format", "coreml"])
    assert code == cli.EXIT_USAGE
    assert "Received: format='coreml'" in capsys.readouterr().err


def test_int8_without_the_runs_dataset_says_why(ws):
    run_id, _ = make_finished_run(ws, dataset="gone")
    with pytest.raises(export.ExportError, match="calibrated on images of the run's training"):
        export.export_run(ws, run_id, ["tflite-int8"])
    assert export.list_exports(ws.run_dir(run_id)) == []
    assert not any((ws.run_dir(run_id) / "exports").iterdir())  # no staging left behind


@pytest.mark.slow
def test_one_failing_format_does_not_lose_the_others(ws):
    run_id, _ = make_finished_run(ws, dataset="gone")
    result = export.export_run(ws, run_id, ["tflite-int8", "tflite"])
    assert [r.format for r in result.failed] == ["tflite-int8"]
    assert "random images" in result.samples_from
    names = zipfile.ZipFile(result.bundle).namelist()
    assert f"{run_id}-export/model.tflite" in names
    assert not any(n.endswith("model_int8.tflite") for n in names)
    assert export.list_exports(ws.run_dir(run_id)) == [result.bundle]
    assert export.bundle_summary(result.bundle)["run_id"] == run_id


def test_a_tampered_model_is_not_exported(ws):
    run_id, _ = make_finished_run(ws)
    path = ws.run_dir(run_id) / runs.MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(model_store.ModelIntegrityError, match="hash mismatch"):
        export.export_run(ws, run_id, ["keras"])


def test_formats_are_checked_before_anything_happens():
    assert export.check_formats(["onnx", "keras", "onnx"]) == ["keras", "onnx"]
    with pytest.raises(ValueError, match="Choose at least one format"):
        export.check_formats([])
    assert export.available_formats()["onnx"] is None  # tf2onnx + onnxruntime installed


def test_every_format_in_the_table_has_a_writer_a_checker_files_and_a_label():
    assert list(export.FORMATS) == list(export.EXPORT_FORMATS)
    for key, fmt in export.EXPORT_FORMATS.items():
        assert fmt.key == key
        assert export.FORMATS[key] == fmt.label and fmt.label
        assert fmt.files and fmt.main_file == fmt.files[0], key
        assert export.FORMAT_FILES[key] == fmt.files
        assert callable(fmt.writer) and callable(fmt.checker) and callable(fmt.unavailable), key
        assert fmt.runtime, key
        assert fmt.input_dtype in ("float32", "uint8"), key
    everything = [f for fmt in export.EXPORT_FORMATS.values() for f in fmt.files]
    assert len(everything) == len(set(everything))  # no two formats write the same file
    preferences = [fmt.usage_preference for fmt in export.EXPORT_FORMATS.values()]
    assert len(preferences) == len(set(preferences))
    assert export.usage_order(list(export.FORMATS))[0] == "tflite"


def test_a_format_that_cannot_be_made_here_says_why(monkeypatch):
    onnx = dataclasses.replace(export.EXPORT_FORMATS["onnx"], unavailable=lambda: "no tf2onnx")
    monkeypatch.setitem(export.EXPORT_FORMATS, "onnx", onnx)
    assert export.available_formats() == {**dict.fromkeys(export.FORMATS), "onnx": "no tf2onnx"}


def test_the_usage_script_names_the_bundles_formats_and_files():
    source = export.usage_script("run-1", 96, ["keras", "onnx", "tflite-int8"])
    compile(source, "usage.py", "exec")
    assert "FORMATS = ['onnx', 'keras', 'tflite-int8']" in source
    assert "SIZE = 96\n" in source and "from run run-1." in source
    for fmt in export.EXPORT_FORMATS.values():
        assert f'"{fmt.main_file}"' in source, fmt.key
    with pytest.raises(jinja2.UndefinedError):  # a missing name is an error, not ""
        rendering.render("usage.py.j2", run_id="run-1")


def test_the_custom_layers_module_is_self_contained():
    source = export.custom_layers_source()
    assert '@keras.saving.register_keras_serializable(package="tlcore")' in source
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"math", "keras"}
    # The studio builds its models with this very module, and its constants are the registry's.
    assert backbones.Preprocess is tlcore_layers.Preprocess
    assert backbones.FeaturePooling is tlcore_layers.FeaturePooling
    for name in ("PREPROCESS_MODES", "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "CAFFE_MEAN_BGR"):
        assert getattr(tlcore_layers, name) == getattr(registry, name), name
    namespace: dict = {}
    exec(compile(source, "tlcore_layers.py", "exec"), namespace)  # defines, registers nothing new
    layer = namespace["Preprocess"]("tf")
    np.testing.assert_allclose(layer(np.full((1, 2, 2, 3), 255.0, np.float32)), 1.0)


@pytest.mark.slow
def test_augmentation_layers_stay_out_of_the_exports(ws):
    # Model.export leaves Keras' random augmentation active; the exports must not.
    run_id, _ = make_finished_run(
        ws, dataset="gone", flip="horizontal", rotation=0.1, brightness=0.2, contrast=0.2
    )
    result = export.export_run(ws, run_id, ["savedmodel", "tflite", "onnx"], samples=16)
    assert not result.failed, [r.error for r in result.failed]
    for r in result.formats:
        assert r.agreement["top1_match_rate"] == 1.0, r.format
        assert r.agreement["max_abs_prob_diff"] < 1e-4, r.format


# -- the agreement each format must reach --------------------------------------------------
def test_every_format_states_what_agreement_passes_and_int8_is_held_to_its_own():
    for key, fmt in export.EXPORT_FORMATS.items():
        expected = export.INT8_CHECK if key == "tflite-int8" else export.FLOAT_CHECK
        assert fmt.check is expected, key
    assert export.FLOAT_CHECK.rule == (
        "the same top class on every image and max. probability difference ≤ 0.001"
    )
    assert export.INT8_CHECK.rule == (
        "top-1 agreement ≥ 95% and max. probability difference ≤ 0.15"
    )


@pytest.mark.parametrize(
    ("changed", "shift", "passed"),
    [
        (0, 0.10, True),  # every top class agrees, probabilities within 0.15
        (1, 0.10, True),  # 31 of 32 agree: 96.9% >= 95%
        (2, 0.10, False),  # 30 of 32: 93.8%
        (0, 0.25, False),  # every top class agrees, but a probability moved by 0.25
    ],
)
def test_int8_passes_only_with_both_top1_agreement_and_a_small_difference(changed, shift, passed):
    from tlcore.serving.export.bundle import agreement

    reference = np.tile(np.array([[0.80, 0.15, 0.05]], dtype=np.float32), (32, 1))
    reference[:2] = [0.50, 0.45, 0.05]  # two close calls
    probs = reference.copy()
    probs[2:] += np.array([-shift, shift, 0.0], dtype=np.float32)  # the top class stays
    probs[:changed] = [0.44, 0.51, 0.05]  # a close call tips over (by 0.06)
    measured = agreement(reference, probs, export.INT8_CHECK)
    assert measured["passed"] is passed, measured
    assert measured["min_top1_match_rate"] == 0.95
    assert measured["max_abs_prob_diff_allowed"] == 0.15
    # The same images through a float format: any difference at all beyond rounding fails.
    assert agreement(reference, reference + 1e-6, export.FLOAT_CHECK)["passed"] is True
    assert agreement(reference, probs, export.FLOAT_CHECK)["passed"] is False


def test_the_model_card_states_the_thresholds_and_a_failed_check():
    from tlcore.serving.export.bundle import agreement

    reference = np.tile(np.array([[0.7, 0.2, 0.1]], dtype=np.float32), (32, 1))
    int8 = reference.copy()
    int8[:5] = [0.45, 0.5, 0.05]  # 5 of 32 change class; 0.3 apart
    results = [
        export.FormatResult(
            format=key,
            label=export.FORMATS[key],
            files=list(export.FORMAT_FILES[key][:1]),
            runtime=export.EXPORT_FORMATS[key].runtime,
            agreement=agreement(reference, probs, export.EXPORT_FORMATS[key].check),
        )
        for key, probs in (("tflite", reference), ("tflite-int8", int8))
    ]
    card = {
        "run_id": "run-1",
        "name": "pets",
        "exported_at": "2026-01-01T00:00:00+00:00",
        "classes": ["a", "b", "c"],
        "num_classes": 3,
        "backbone": {"name": "SmallCNN", "display_name": "Small CNN"},
        "weights_origin": "none (random initialisation)",
        "strategy": "full_fine_tune",
        "phases": ["every layer"],
        "dataset": {"name": "pets", "id": "pets-1", "content_hash": "0" * 64},
        "metrics": {},
        "input": {"shape": [None, 32, 32, 3], "preprocessing": "raw RGB"},
        "output": "probabilities",
        "model_sha256": "0" * 64,
        "agreement_measured_on": "32 images of the test split of dataset 'pets'",
        "formats": [dataclasses.asdict(r) for r in results],
    }
    text = export.model_card_markdown(card)
    assert (
        "- TensorFlow Lite (float32): the same top class on every image and max. probability "
        "difference ≤ 0.001" in text
    )
    assert (
        "- TensorFlow Lite (int8): top-1 agreement ≥ 95% and max. probability difference "
        "≤ 0.15" in text
    )
    assert (
        "| TensorFlow Lite (int8) | `model_int8.tflite` | TensorFlow Lite interpreter (tf.lite) "
        "| 84.4% | 0.3 | top-1 agreement ≥ 95% and max. probability difference ≤ 0.15 "
        "| **did not pass** |" in text
    )
    assert "| 100.0% | 0 | the same top class on every image" in text
    assert "**TensorFlow Lite (int8) did not pass its check**" in text
