"""Real browser: the Home page's runs table and the Model page's weights overview fit a
1400 px wide window, with no column hidden behind a horizontal scroll bar."""

from __future__ import annotations

import pytest

from tests.browser import streamlit_server, wait_for_app_idle
from tests.conftest import tiny_config
from tlcore.data import datasets
from tlcore.store import runs
from tlcore.store.workspace import open_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOAD_TIMEOUT_MS = 120_000
WINDOW = {"width": 1400, "height": 1000}
# How much wider than its box a table's content is: > 0 means a horizontal scroll bar.
OVERFLOW_JS = """el => {
    const scroller = el.querySelector('.dvn-scroller');
    return scroller.scrollWidth - scroller.clientWidth;
}"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A workspace with the demo dataset and runs of every state, some with long names."""
    root = tmp_path_factory.mktemp("tables")
    ws = open_workspace(root / "workspace")
    dataset = datasets.import_demo(ws).name
    names = [
        "flowers5 · baseline of sweep 2 · fine-tune top",
        f"{dataset} · sweep 2 · feature extraction",
        "MobileNet on flowers with a long descriptive name",
    ]
    for i, name in enumerate(names):
        record = runs.create_run(ws, tiny_config(dataset, name=name, epochs=30))
        runs.set_state(ws, record.id, runs.RUNNING)
        summary = {
            "val_accuracy": 0.5446,
            "test_accuracy": 0.7712,
            "epochs_completed": 30,
            "kept_epoch": 25 - i,
        }
        runs.set_state(ws, record.id, runs.FINISHED, summary=summary)
    failed = runs.create_run(ws, tiny_config(dataset, name="old experiment (broken weights)"))
    runs.set_state(
        ws,
        failed.id,
        runs.FAILED,
        error="The weights file garbage.h5 is not an HDF5 file (whatever its name says), so it "
        "cannot hold Keras weights. Choose a .h5 or .weights.h5 file saved by Keras.",
    )
    runs.create_run(ws, tiny_config(dataset, name="waiting its turn"))
    return ws, root


def _overflow(page, table) -> int:
    table.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.wait_for_timeout(500)  # the grid lays its columns out after it appears
    return table.evaluate(OVERFLOW_JS)


def test_the_home_runs_table_needs_no_horizontal_scrolling(browser, studio, screenshots):
    ws, root = studio
    with streamlit_server(ws.root, root / "server-home.log", {"TLS_SCHEDULER": "off"}) as url:
        page = browser.new_page(viewport=WINDOW)
        page.goto(url)
        wait_for_app_idle(page, timeout_ms=LOAD_TIMEOUT_MS)
        table = page.locator('[data-testid="stDataFrame"]').first
        overflow = _overflow(page, table)
        table.screenshot(path=str(screenshots / "home-runs-table.png"))
        page.close()
    assert overflow <= 0, f"the runs table is {overflow} px wider than the page"


def test_the_weights_overview_needs_no_horizontal_scrolling(browser, studio, screenshots):
    ws, root = studio
    with streamlit_server(ws.root, root / "server-model.log", {"TLS_SCHEDULER": "off"}) as url:
        page = browser.new_page(viewport=WINDOW)
        page.goto(f"{url}/model")
        wait_for_app_idle(page, timeout_ms=LOAD_TIMEOUT_MS)
        page.get_by_text("ImageNet weights of every backbone").click()
        expander = page.locator('[data-testid="stExpander"]').filter(
            has_text="ImageNet weights of every backbone"
        )
        table = expander.locator('[data-testid="stDataFrame"]').first
        overflow = _overflow(page, table)
        expander.screenshot(path=str(screenshots / "weights-overview.png"))
        page.close()
    assert overflow <= 0, f"the weights table is {overflow} px wider than its column"
