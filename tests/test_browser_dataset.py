"""The Dataset page in a real browser: import the demo set and a zip, and see the report."""

from __future__ import annotations

import zipfile

import pytest

from tests.browser import streamlit_server, wait_for_app_idle
from tests.conftest import write_class_folders

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMPORT_TIMEOUT_MS = 120_000


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_demo_import_shows_the_report(browser, tmp_path, screenshots):
    with streamlit_server(tmp_path / "workspace", tmp_path / "server.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/dataset")
        wait_for_app_idle(page)
        page.get_by_text("No datasets yet").wait_for(timeout=60_000)

        page.get_by_role("tab", name="Demo dataset").click()
        page.get_by_role("button", name="Import the demo dataset").click()
        page.get_by_text("Imported Demo shapes").wait_for(timeout=IMPORT_TIMEOUT_MS)
        wait_for_app_idle(page)

        _no_exception(page)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=30_000)
        for tile in ("Images", "Classes"):
            assert page.locator('[data-testid="stMetric"]', has_text=tile).count() >= 1
        report = page.locator('[data-testid="stMain"]').inner_text()
        assert "400" in report and "Near-copies" in report
        page.get_by_role("tab", name="Sample images").click()
        for shape in ("circle", "hexagon", "square", "star", "triangle"):
            page.locator(f'strong:text-is("{shape}")').wait_for(timeout=30_000)
        thumbnails = page.locator('[data-testid="stImage"] img')
        thumbnails.nth(39).wait_for(timeout=30_000)  # 8 per class
        page.set_viewport_size({"width": 1400, "height": 2200})
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshots / "dataset_demo_report.png"), full_page=True)
        page.close()


def test_zip_upload_imports(browser, tmp_path, screenshots):
    src = write_class_folders(tmp_path / "pets", {"cats": 6, "dogs": 6})
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*.png")):
            zf.write(path, path.relative_to(tmp_path).as_posix())

    with streamlit_server(tmp_path / "workspace", tmp_path / "server.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/dataset")
        wait_for_app_idle(page)
        uploader = page.locator('[data-testid="stFileUploader"]').first
        uploader.locator('input[type="file"]').set_input_files(str(archive))
        page.get_by_text("pets.zip").first.wait_for(timeout=30_000)
        wait_for_app_idle(page)

        page.get_by_role("button", name="Import zip").click()
        page.get_by_text("Imported pets").wait_for(timeout=IMPORT_TIMEOUT_MS)
        wait_for_app_idle(page)

        _no_exception(page)
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert "cats" in main and "dogs" in main
        page.set_viewport_size({"width": 1400, "height": 1800})
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshots / "dataset_zip_imported.png"), full_page=True)
        page.close()
