"""Prediction (issue 7): the same loader as training, per-file errors, folders, zips, CSV,
a compiled inference function, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_header_only
from tests.test_model_store import CLASSES, make_finished_run
from tlcore import cli
from tlcore.data import archives, images
from tlcore.model import model_store
from tlcore.serving import predict
from tlcore.store import runs


@pytest.fixture
def predictor(ws):
    run_id, _ = make_finished_run(ws)
    return predict.Predictor.for_run(ws, run_id)


def _png(path, color=(200, 30, 30), size=40, seed=0):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 20, (size, size, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _jpeg_bytes(size=64) -> bytes:
    rng = np.random.default_rng(5)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_predictions_match_the_models_output(ws, tmp_path):
    run_id, model = make_finished_run(ws)
    predictor = predict.Predictor.for_run(ws, run_id)
    paths = [_png(tmp_path / f"{i}.png", seed=i, color=(30 * i, 90, 200)) for i in range(5)]
    results = predictor.predict_images(paths, top_k=3)
    expected = model(np.stack([images.load_image_array(p, 32) for p in paths]), training=False)
    expected = np.asarray(expected)
    for result, probs in zip(results, expected, strict=True):
        assert result.ok
        order = np.argsort(-probs)
        assert [c for c, _ in result.top] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([p for _, p in result.top], probs[order], rtol=1e-5)
    assert results[0].name == str(paths[0])


def test_the_inference_function_is_traced_once(predictor):
    for n in (1, 3, 32, 1):
        probs = predictor.predict_arrays(np.zeros((n, 32, 32, 3), np.uint8))
        assert probs.shape == (n, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert predictor.predict_arrays(np.zeros((32, 32, 3))).shape == (3,)
    assert predictor._infer.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match=r"shape \(n, 32, 32, 3\)"):
        predictor.predict_arrays(np.zeros((1, 64, 64, 3)))


def test_bad_files_get_a_message_naming_them_and_the_rest_are_predicted(predictor, tmp_path):
    good = _png(tmp_path / "good.png")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    truncated = tmp_path / "cut.jpg"
    data = _jpeg_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(20_000, 20_000))
    results = predictor.predict_images([text, good, truncated, huge])
    by_name = {r.name.rsplit("/", 1)[-1]: r for r in results}
    assert by_name["good.png"].ok and by_name["good.png"].predicted_class in CLASSES
    assert by_name["notes.jpg"].reason == "not_an_image"
    assert "notes.jpg is not an image" in by_name["notes.jpg"].error
    assert by_name["cut.jpg"].reason == "truncated"
    assert "cut.jpg is truncated" in by_name["cut.jpg"].error
    assert by_name["huge.png"].reason == "too_large"
    assert "huge.png is too large" in by_name["huge.png"].error
    assert [r.name for r in results] == [str(p) for p in (text, good, truncated, huge)]


def test_uploads_and_bytes_are_named_sources(predictor):
    upload = io.BytesIO(_jpeg_bytes())
    upload.name = "holiday.jpg"
    bad = io.BytesIO(b"GIF89a-broken")
    bad.name = "broken.gif"
    results = predictor.predict_images([upload, ("camera.jpg", _jpeg_bytes()), bad], top_k=2)
    assert [r.name for r in results] == ["holiday.jpg", "camera.jpg", "broken.gif"]
    assert results[0].ok and len(results[0].top) == 2
    assert not results[2].ok and "broken.gif" in results[2].error


def test_top_k_is_checked_and_capped_at_the_number_of_classes(predictor, tmp_path):
    path = _png(tmp_path / "a.png")
    assert len(predictor.predict_images([path], top_k=10)[0].top) == 3
    with pytest.raises(ValueError, match=r"top_k must be a positive integer\. Received: top_k=0"):
        predictor.predict_images([path], top_k=0)


def _folder_of_images(root, count=4):
    (root / "sub").mkdir(parents=True)
    for i in range(count):
        _png(root / ("sub" if i % 2 else ".") / f"img_{i}.png", seed=i)
    (root / "readme.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x00")
    return root


def test_batch_over_a_folder_gives_rows_and_csv(predictor, tmp_path):
    root = _folder_of_images(tmp_path / "photos")
    results = predictor.predict_folder(root, top_k=2)
    names = [r.name for r in results]
    assert names == ["img_0.png", "img_2.png", "readme.txt", "sub/img_1.png", "sub/img_3.png"]
    assert predict.summarize(results)["failed"] == 1
    rows = list(csv.DictReader(io.StringIO(predict.predictions_csv(results, top_k=2))))
    assert list(rows[0]) == [
        "file",
        "predicted_class",
        "probability",
        "class_2",
        "probability_2",
        "error",
    ]
    assert rows[2]["file"] == "readme.txt" and "not an image" in rows[2]["error"]
    assert rows[0]["predicted_class"] in CLASSES and float(rows[0]["probability"]) > 0


def test_batch_over_a_zip_is_extracted_safely(predictor, tmp_path):
    root = _folder_of_images(tmp_path / "photos")
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, f"photos/{path.relative_to(root).as_posix()}")
    results = predictor.predict_zip(archive)
    assert [r.name for r in results if r.ok] == [
        "photos/img_0.png",
        "photos/img_2.png",
        "photos/sub/img_1.png",
        "photos/sub/img_3.png",
    ]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.png", b"x")
    with pytest.raises(archives.ArchiveError):
        predictor.predict_zip(evil)


def test_a_missing_folder_is_named(predictor, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder on this machine"):
        predictor.predict_folder(tmp_path / "nowhere")


def test_a_tampered_run_gives_no_predictor(ws):
    run_id, _ = make_finished_run(ws)
    path = ws.run_dir(run_id) / runs.MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(model_store.ModelIntegrityError, match="hash mismatch"):
        predict.Predictor.for_run(ws, run_id)


def test_cli_predict_prints_a_table_and_writes_csv(ws, tmp_path, capsys):
    run_id, _ = make_finished_run(ws)
    root = _folder_of_images(tmp_path / "photos")
    single = _png(tmp_path / "one.png")
    out = tmp_path / "out" / "predictions.csv"
    code = cli.main(
        [
            "--workspace",
            str(ws.root),
            "predict",
            run_id,
            str(single),
            str(root),
            "--csv",
            str(out),
            "--top-k",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert code == cli.EXIT_FAILED  # readme.txt is not an image: reported, exit 1
    assert "one.png" in captured.out and "readme.txt is not an image" in captured.out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and rows[0]["file"].endswith("one.png")
    assert "probability_2" in rows[0]
    summary = json.loads(captured.err.strip().splitlines()[-1])
    assert summary == {"csv": str(out), "failed": 1, "images": 6, "predicted": 5} | {
        "by_class": summary["by_class"]
    }


def test_cli_predict_refuses_a_tampered_model(ws, tmp_path, capsys):
    run_id, _ = make_finished_run(ws)
    path = ws.run_dir(run_id) / runs.MODEL_FILE
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    code = cli.main(["--workspace", str(ws.root), "predict", run_id, str(_png(tmp_path / "a.png"))])
    assert code == cli.EXIT_USAGE
    assert "hash mismatch" in capsys.readouterr().err


def test_augmentation_never_runs_at_prediction(ws):
    run_id, model = make_finished_run(ws, flip="horizontal", rotation=0.2, brightness=0.3)
    predictor = predict.Predictor.for_run(ws, run_id)
    x = np.random.default_rng(4).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    first, second = predictor.predict_arrays(x), predictor.predict_arrays(x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, model(x, training=False), rtol=1e-5, atol=1e-6)
