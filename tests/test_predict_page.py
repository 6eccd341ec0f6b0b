"""The Predict page (AppTest): upload images, see the top class and the heatmap, batch a
folder, export, and the refusals (tampered model, full-model upload, bad images)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT
from tests.test_model_store import make_finished_run
from tlcore.serving import predict
from tlcore.store import runs, tasks

TIMEOUT_S = 120


def _png_bytes(color=(220, 40, 40), size=48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def open_predict(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    at.switch_page("views/predict.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _markdown(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in [*at.markdown, *at.caption])


def test_an_uploaded_image_shows_its_top_class_chart_and_heatmap(ws):
    run_id, _ = make_finished_run(ws)
    expected = predict.Predictor.for_run(ws, run_id).predict_images([("red.png", _png_bytes())])[0]
    at = open_predict(run_id)
    assert "verified model" in _markdown(at)
    at.file_uploader(key="predict_uploads").set_value(("red.png", _png_bytes(), "image/png"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = _markdown(at)
    assert f"**red.png** &nbsp; :blue-badge[{expected.predicted_class}]" in text
    assert f"Where it looked for **{expected.predicted_class}**" in text
    assert len(at.get("plotly_chart")) == 1
    assert len(at.image) == 2  # the picture and its Grad-CAM overlay

    # Any class can be explained.
    other = next(i for i, c in enumerate(["red", "green", "blue"]) if c != expected.predicted_class)
    explain_box = next(s for s in at.selectbox if "explain" in (s.key or ""))
    explain_box.set_value(other).run()
    assert not at.exception
    assert f"Where it looked for **{['red', 'green', 'blue'][other]}**" in _markdown(at)


def test_bad_files_get_their_own_message_beside_good_ones(ws):
    run_id, _ = make_finished_run(ws)
    at = open_predict(run_id)
    at.file_uploader(key="predict_uploads").set_value(
        [
            ("good.png", _png_bytes(), "image/png"),
            ("notes.jpg", b"not a picture at all", "image/jpeg"),
        ]
    )
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("notes.jpg is not an image" in e for e in errors)
    assert "1 of 2 images classified" in _markdown(at)
    assert len(at.dataframe) == 1


def test_a_tampered_model_is_refused_on_the_page(ws):
    run_id, _ = make_finished_run(ws)
    path = ws.run_dir(run_id) / runs.MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    at = open_predict(run_id)
    errors = [e.value for e in at.error]
    assert any("was changed after training (hash mismatch)" in e for e in errors), errors
    assert not at.file_uploader  # nothing to predict with


def test_a_full_model_upload_is_refused_with_the_way_out(ws, tmp_path):
    run_id, model = make_finished_run(ws)
    model.save(tmp_path / "mine.keras")
    at = open_predict(run_id)
    at.file_uploader(key=f"predict_weights_{run_id}").set_value(
        ("mine.keras", (tmp_path / "mine.keras").read_bytes(), "application/octet-stream")
    )
    at.run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("never loads uploaded models" in w for w in warnings), warnings
    at.checkbox(key=f"predict_allow_full_{run_id}").check().run()
    assert not at.exception
    assert "weights: mine.keras" in _markdown(at)


def test_batch_over_a_server_folder_gives_a_table_and_a_csv(ws):
    run_id, _ = make_finished_run(ws)
    folder = ws.incoming_dir / "new"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(_png_bytes((40 * i, 100, 200)))
    (folder / "readme.txt").write_text("hello")
    at = open_predict(run_id)
    at.segmented_control(key="predict_batch_source").set_value("Folder on the server").run()
    at.text_input(key="predict_batch_folder").input(str(folder)).run()
    next(b for b in at.button if b.label == "Predict all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.metric] == ["4", "3", "1"]
    frame = at.dataframe[0].value
    assert list(frame["File"]) == ["0.png", "1.png", "2.png", "readme.txt"]
    assert any(b.label == "Download CSV" for b in at.get("download_button"))


def test_a_batch_over_etc_is_refused_and_predicts_nothing(ws):
    run_id, _ = make_finished_run(ws)
    at = open_predict(run_id)
    at.segmented_control(key="predict_batch_source").set_value("Folder on the server").run()
    assert str(ws.incoming_dir) in _markdown(at), "the page says which folders are shared"
    at.text_input(key="predict_batch_folder").input("/etc").run()
    next(b for b in at.button if b.label == "Predict all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("is outside the folders this server shares" in e for e in errors), errors
    assert not at.metric and not at.dataframe
    assert "predict_batch" not in at.session_state


def _wait_for_export(ws, run_id: str) -> tasks.Task:
    deadline = time.monotonic() + 300  # a fresh process imports TensorFlow, then converts
    while time.monotonic() < deadline:
        task = tasks.latest(ws, run_id, "export")
        if task is not None and not task.active:
            return task
        time.sleep(0.5)
    raise AssertionError(f"the export did not end: {tasks.latest(ws, run_id, 'export')}")


@pytest.mark.slow
def test_export_runs_in_the_background_and_shows_the_agreement(ws):
    run_id, _ = make_finished_run(ws, dataset="gone")
    at = open_predict(run_id)
    at.multiselect(key=f"predict_formats_{run_id}").set_value(["tflite"]).run()
    at.button(key="predict_export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    task = tasks.latest(ws, run_id, "export")
    assert task is not None and task.kind == "export"
    done = _wait_for_export(ws, run_id)
    assert done.state == tasks.FINISHED, done.message
    # Another session (a second tab) picks the result up from the run folder.
    at = open_predict(run_id)
    at.tabs  # noqa: B018 - the export tab is rendered with the others
    frame = next(d.value for d in at.dataframe if "Format" in d.value.columns)
    assert list(frame["Format"]) == ["TensorFlow Lite (float32)"]
    assert frame["Top-1 agreement"].iloc[0] == 1.0
    assert np.isclose(frame["Max. probability difference"].iloc[0], 0, atol=1e-4)
    assert any(b.label == "Download bundle" for b in at.get("download_button"))


def test_a_failed_export_says_why_on_the_page(ws):
    run_id, _ = make_finished_run(ws, dataset="gone")
    (ws.run_dir(run_id) / "exports").write_text("a file where the exports folder goes")
    at = open_predict(run_id)
    at.button(key="predict_export").click().run()
    done = _wait_for_export(ws, run_id)
    assert done.state == tasks.FAILED and "Could not create" in done.message
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "Export failed." in errors and "Could not create" in errors


def test_a_camera_picture_is_classified_like_an_upload(ws):
    run_id, _ = make_finished_run(ws)
    at = open_predict(run_id)
    assert not at.camera_input
    at.toggle(key="predict_camera_on").set_value(True).run()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 200, 60)).save(buffer, "JPEG")
    at.camera_input(key="predict_camera").set_value(("shot.jpg", buffer.getvalue(), "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "**Camera picture**" in _markdown(at)
    assert len(at.image) == 2


def test_the_same_picture_given_twice_is_classified_once_and_said_to_be_there(ws):
    run_id, _ = make_finished_run(ws)
    at = open_predict(run_id)
    red, green = _png_bytes(), _png_bytes(color=(40, 200, 60))
    at.file_uploader(key="predict_uploads").set_value(
        [
            ("red.png", red, "image/png"),
            ("green.png", green, "image/png"),
            ("red.png", red, "image/png"),  # the same photo uploaded again
            ("red copy.png", red, "image/png"),  # and under another name
        ]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "2 of 2 images classified" in _markdown(at)
    (table,) = at.dataframe
    assert list(table.value["File"]) == ["red.png", "green.png"]
    notes = " ".join(i.value for i in at.info)
    assert "**red.png** is already added" in notes
    assert "**red copy.png** is already added (as *red.png*)" in notes


def _finished_export(ws, run_id: str, result: dict) -> None:
    """An export task of this run that ended with ``result``, reported by this process as
    the export's own process reports it (nothing is converted)."""
    import unittest.mock

    from tlcore.store import jobs

    with unittest.mock.patch.object(jobs, "start_cli", lambda *a, **k: None):
        task = tasks.start(ws, run_id, "export", ["export", run_id])
    with tasks.TaskReporter(ws, run_id, task.id) as report:
        report.finish(result)


def test_an_export_says_what_each_check_demands_and_which_fell_short(ws):
    from tlcore.serving.export import FLOAT_CHECK, INT8_CHECK
    from tlcore.serving.export.bundle import agreement

    run_id, _ = make_finished_run(ws, dataset="gone")
    bundle = ws.run_dir(run_id) / "exports" / f"{run_id}_export_20260101-000000.zip"
    bundle.parent.mkdir()
    bundle.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    reference = np.tile([[0.7, 0.2, 0.1]], (32, 1))
    int8 = reference.copy()
    int8[:5] = [0.3, 0.6, 0.1]  # 5 of 32 images change class: 84% agree, 0.4 apart
    formats = [
        ("tflite", "TensorFlow Lite (float32)", reference + 1e-6, FLOAT_CHECK),
        ("tflite-int8", "TensorFlow Lite (int8)", int8, INT8_CHECK),
    ]
    result = {
        "bundle": str(bundle),
        "agreement_measured_on": "32 images of the test split of dataset 'tiny'",
        "formats": [
            {
                "format": key,
                "label": label,
                "files": [f"{key}.tflite"],
                "size_bytes": 1000,
                "agreement": agreement(reference, probs, check),
                "error": None,
            }
            for key, label, probs, check in formats
        ],
    }
    _finished_export(ws, run_id, result)
    at = open_predict(run_id)
    frame = next(d.value for d in at.dataframe if "Format" in d.value.columns)
    assert list(frame["Check"]) == ["✓ passed", "✗ did not pass"]
    warnings = " ".join(w.value for w in at.warning)
    assert "**TensorFlow Lite (int8) did not pass its check:** top-1 agreement 84.4%" in warnings
    assert "(needs ≥ 95%)" in warnings and "(allowed ≤ 0.15)" in warnings
    rules = " ".join(c.value for c in at.caption)
    assert (
        "TensorFlow Lite (float32): the same top class on every image and max. probability "
        "difference ≤ 0.001" in rules
    )
    assert (
        "TensorFlow Lite (int8): top-1 agreement ≥ 95% and max. probability difference ≤ 0.15"
        in rules
    )
