"""Real browser, issues 6 and 7: a finished demo run's evaluation shows its confusion matrix,
and the Predict page classifies an uploaded image and shows where the model looked."""

from __future__ import annotations

import pytest

from tests.browser import streamlit_server, wait_for_app_idle
from tests.conftest import tiny_config
from tlcore.data import datasets
from tlcore.store import jobs
from tlcore.store.workspace import open_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOAD_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def finished_demo_run(tmp_path_factory):
    """A workspace holding the demo dataset and one finished (and evaluated) run on it."""
    root = tmp_path_factory.mktemp("results")
    ws = open_workspace(root / "workspace")
    dataset = datasets.import_demo(ws)
    run_id = jobs.submit(ws, tiny_config(dataset.name, epochs=2, name="Demo in the browser"))
    record = jobs.wait_for(ws, run_id, timeout=600)
    assert record.state == "finished", record.status.error
    image = dataset.items("test")[0]
    return ws, run_id, image, root


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_evaluation_of_a_finished_demo_run_shows_the_confusion_matrix(
    browser, finished_demo_run, screenshots
):
    ws, run_id, _, root = finished_demo_run
    with streamlit_server(ws.root, root / "server-eval.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/evaluation?run={run_id}")
        wait_for_app_idle(page)
        page.get_by_text("Confusion matrix").first.wait_for(timeout=LOAD_TIMEOUT_MS)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=LOAD_TIMEOUT_MS)
        _no_exception(page)
        page.screenshot(path=str(screenshots / "evaluation.png"), full_page=True)
        page.close()


def test_predict_page_classifies_an_upload_and_shows_the_heatmap(
    browser, finished_demo_run, screenshots
):
    ws, run_id, image, root = finished_demo_run
    with streamlit_server(ws.root, root / "server-predict.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/predict?run={run_id}")
        wait_for_app_idle(page)
        images_uploader = page.locator('[data-testid="stFileUploader"]').filter(
            has=page.get_by_text("Images", exact=True)
        )
        uploader = images_uploader.locator('input[type="file"]').first
        uploader.wait_for(state="attached", timeout=LOAD_TIMEOUT_MS)
        uploader.set_input_files(str(image.path))
        page.get_by_text("Where it looked for").first.wait_for(timeout=LOAD_TIMEOUT_MS)
        wait_for_app_idle(page)
        card = page.locator('[data-testid="stMain"]').inner_text()
        demo_classes = datasets.load_dataset(ws, "Demo shapes").classes
        assert any(name in card for name in demo_classes)  # the top class is named
        assert page.locator('[data-testid="stImage"]').count() >= 2  # picture and heatmap
        _no_exception(page)
        page.screenshot(path=str(screenshots / "predict.png"), full_page=True)
        page.close()
