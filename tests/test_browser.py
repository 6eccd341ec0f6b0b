"""The real-browser test: Chromium opens every page of a running studio."""

from __future__ import annotations

import pytest

from tests.browser import streamlit_server, wait_for_app_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The first visit after the server starts is a deep link: it must still get app.py's
# navigation and page config (see ui.common.PAGES).
PAGES = {
    "training": "Training",
    "": "Transfer Learning Studio",
    "dataset": "Dataset",
    "model": "Model",
    "evaluation": "Evaluation",
    "predict": "Predict",
}


def test_every_page_opens_in_a_real_browser(browser, tmp_path, screenshots):
    with streamlit_server(tmp_path / "workspace", tmp_path / "server.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for path, heading in PAGES.items():
            page.goto(f"{url}/{path}")
            wait_for_app_idle(page)
            page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            sidebar = page.locator('[data-testid="stSidebarNav"]')
            assert "Build" in sidebar.inner_text() and "Predict" in sidebar.inner_text()
            # No developer chrome for users: no Deploy button.
            assert page.get_by_role("button", name="Deploy").count() == 0
            page.screenshot(path=str(screenshots / f"page_{path or 'home'}.png"), full_page=True)
        page.close()
