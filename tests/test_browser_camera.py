"""Photos taken with a camera (Chromium's fake camera stream) added to a class of a dataset
as a new version, on the Dataset page in a real browser."""

from __future__ import annotations

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_for_app_idle
from tlcore.data import datasets

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def camera_browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *FAKE_CAMERA])
        yield chromium
        chromium.close()


def _take_photo(page, done_text: str, tries: int = 12) -> None:
    """Clicks Take Photo until the page counts the photo: a fresh camera widget takes a
    moment (longer on a loaded machine) before its stream gives a frame to capture."""
    for _ in range(tries):
        take = page.get_by_role("button", name="Take Photo")
        take.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # the fake stream's first frames
        take.click()
        done = page.get_by_text(done_text)
        try:
            done.wait_for(timeout=8_000)
        except Exception:  # Playwright's TimeoutError
            if take.is_visible():
                continue  # no frame was captured yet: click again
            # A photo was captured (the widget shows it instead of its button) and the page,
            # on a loaded machine, is still counting it.
            done.wait_for(timeout=60_000)
        wait_for_app_idle(page)
        return
    raise AssertionError(f"the camera never gave a photo ({done_text!r} not shown)")


def _open(page, url: str) -> None:
    page.goto(url)
    wait_for_app_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0


@pytest.mark.timeout(600)
def test_photos_from_the_camera_are_added_to_a_class_as_a_new_version(
    camera_browser, ws, tiny_dataset, tmp_path, screenshots
):
    dataset = datasets.load_dataset(ws, tiny_dataset)
    with streamlit_server(ws.root, tmp_path / "server.log") as url:
        page = camera_browser.new_page(viewport={"width": 1400, "height": 1000})
        _open(page, f"{url}/dataset?dataset={dataset.id}")
        page.get_by_role("radio", name="Camera").click()
        wait_for_app_idle(page)
        for taken in (1, 2):
            _take_photo(page, f"{taken} photo{'s' if taken > 1 else ''} taken")
        page.screenshot(path=str(screenshots / "camera_capture.png"), full_page=True)
        target = dataset.classes[0]
        page.get_by_role("button", name=f"Add 2 photo(s) to {target}").click()
        page.get_by_text("Made version 2 of").wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.close()
    newest = datasets.load_dataset(ws, tiny_dataset)
    added = newest.manifest["changes"]["added"]
    assert newest.version == 2 and len(added) == 2
    assert {a["class"] for a in added} == {target}
