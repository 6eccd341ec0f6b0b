"""Real browser, issue 14: the Predict page's live camera classifies frame after frame.

Chromium's fake camera (``--use-fake-device-for-media-stream``, a moving test pattern) with
the permission prompt answered yes (``--use-fake-ui-for-media-stream``). The page is on
127.0.0.1, a secure context, so the camera is offered as it would be on localhost.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_for_app_idle
from tests.test_model_store import make_finished_run
from tlcore.store.workspace import open_workspace
from ui.live_camera import FRONTEND_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
QUIET = {"TLS_SCHEDULER": "off", "TLS_AUTO_CALIBRATE": "0"}
LOAD_TIMEOUT_MS = 180_000
FRAMES_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def playwright():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/ensure_chromium.sh")
    with playwright_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def camera_browser(playwright):
    chromium = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS + FAKE_CAMERA
    )
    yield chromium
    chromium.close()


def _frames_classified(page) -> int | None:
    tile = page.locator('[data-testid="stMetric"]').filter(has_text="Frames classified")
    if tile.count() == 0:
        return None
    return int(tile.locator('[data-testid="stMetricValue"]').inner_text().strip())


def _frames_sent(camera) -> int:
    found = re.search(r"frame (\d+)", camera.locator("#status").inner_text())
    return int(found.group(1)) if found else 0


def test_the_live_camera_keeps_classifying_frames_until_stopped(
    camera_browser, tmp_path, screenshots
):
    ws = open_workspace(tmp_path / "workspace")
    run_id, _ = make_finished_run(ws)  # a finished run's saved model: no training needed
    with streamlit_server(ws.root, tmp_path / "server.log", QUIET) as url:
        page = camera_browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/predict?run={run_id}")
        wait_for_app_idle(page, timeout_ms=LOAD_TIMEOUT_MS)
        # The first page to load a model imports TensorFlow: on a busy machine, a while.
        page.get_by_text("verified model").first.wait_for(timeout=LOAD_TIMEOUT_MS)
        page.get_by_role("tab", name="Live camera").click(timeout=LOAD_TIMEOUT_MS)
        camera = page.frame_locator('iframe[title*="live_camera"]')
        camera.get_by_role("button", name="Start").click(timeout=LOAD_TIMEOUT_MS)
        camera.get_by_role("button", name="Stop").wait_for(timeout=30_000)  # the camera is on

        seen: list[int] = []
        deadline = time.monotonic() + FRAMES_TIMEOUT_S
        while time.monotonic() < deadline and (not seen or seen[-1] < 3):
            sent = _frames_sent(camera)  # read first: the page can only be ahead of it
            classified = _frames_classified(page)
            if classified is not None:
                # One frame in flight at most: the next is sent only once one is answered.
                assert sent <= classified + 1, (sent, classified)
                if not seen or classified > seen[-1]:
                    seen.append(classified)
            page.wait_for_timeout(200)
        assert len(seen) >= 2 and seen[-1] >= 3, f"frames classified over time: {seen}"

        main = page.locator('[data-testid="stMain"]')
        assert main.locator('[data-testid="stPlotlyChart"]').count() == 1  # the top-k bars
        assert "Top 3 classes" in main.inner_text()
        fps = page.locator('[data-testid="stMetric"]').filter(has_text="Frames per second")
        assert re.fullmatch(r"\d+\.\d", fps.locator('[data-testid="stMetricValue"]').inner_text())
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(screenshots / "live_camera.png"), full_page=True)

        camera.get_by_role("button", name="Stop").click()
        camera.get_by_text("Stopped after").wait_for(timeout=10_000)
        stopped_at = _frames_classified(page)
        page.wait_for_timeout(2000)
        assert _frames_classified(page) <= stopped_at + 1  # at most the frame in flight
        page.close()


@pytest.mark.parametrize(
    ("flags", "url", "message"),
    [
        # Not https and not localhost: browsers offer no camera; said before Start is pressed.
        (FAKE_CAMERA, "http://studio.example/live/index.html", "The camera needs a secure page."),
        # A camera, but the permission prompt is answered no (headless Chromium says no).
        (FAKE_CAMERA[:1], "http://127.0.0.1/live/index.html", "The camera was refused."),
        # Permission given, but no camera at all.
        (FAKE_CAMERA[1:], "http://127.0.0.1/live/index.html", "No camera was found."),
    ],
    ids=["insecure-page", "refused", "no-camera"],
)
def test_a_camera_that_cannot_be_had_says_why_and_what_to_do(playwright, flags, url, message):
    """The component on its own (its page served as the app serves it): what the user
    sees when the browser gives no camera."""
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + flags)
    try:
        page = chromium.new_page()
        html = (FRONTEND_DIR / "index.html").read_text(encoding="utf-8")
        page.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
        page.goto(url)
        toggle = page.get_by_role("button", name="Start")
        if toggle.is_enabled():
            toggle.click()
        else:
            assert "secure page" in message  # nothing to try: Start is off
        page.locator("#placeholder.error").filter(has_text=message).wait_for(timeout=15_000)
        assert page.locator("video").is_hidden()
    finally:
        chromium.close()
