"""Real browser, issue 5: Quick start trains on the demo dataset; the Training page follows the
run live, survives a reload, and shows it finish."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.browser import streamlit_server, wait_for_app_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EPOCH_TEXT = re.compile(r"Epoch (\d+) of (\d+)")


def _epoch_shown(page) -> int:
    match = EPOCH_TEXT.search(page.locator('[data-testid="stMain"]').inner_text())
    return int(match.group(1)) if match else 0


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_quick_start_run_is_followed_live_and_survives_a_reload(browser, tmp_path):
    shots = Path(os.environ.get("TLS_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    # No weights cache: the quick start says so and trains a small net from scratch, slowly
    # enough (several seconds an epoch) for the page to be seen moving.
    env = {"KERAS_HOME": str(tmp_path / "no-weights")}
    with streamlit_server(tmp_path / "workspace", tmp_path / "server.log", env) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        wait_for_app_idle(page)
        page.get_by_role("button", name="Try it now").click()
        page.wait_for_url(re.compile(r".*/training.*"), timeout=120_000)
        page.get_by_text("from scratch").first.wait_for(timeout=60_000)

        _wait(lambda: _epoch_shown(page) >= 1, 240, "the first epoch on the page")
        first = _epoch_shown(page)
        _wait(lambda: _epoch_shown(page) > first, 240, "the curves to move")
        charts = page.locator('[data-testid="stPlotlyChart"]')
        _wait(lambda: charts.count() >= 2, 60, "the loss and accuracy curves")
        page.screenshot(path=str(shots / "training_live.png"), full_page=True)

        page.reload()
        wait_for_app_idle(page)
        page.get_by_text("Quick start").first.wait_for(timeout=60_000)
        assert _epoch_shown(page) >= first

        page.get_by_text(re.compile(r"^Finished( in [^:]+)?:")).first.wait_for(timeout=600_000)
        page.screenshot(path=str(shots / "training_finished.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.close()
