"""The improvement loop in a real browser, on real photos with planted wrong labels:
find the likely mislabelled → accept the suggested classes (a new version) → retrain with
the same settings → the comparison before/after the fix opens with a paired test. (The
camera: ``test_browser_camera.py``.)

Real photos come from ``$TLS_FLOWERS_DIR`` and real ImageNet weights (MobileNetV2 α 0.35)
from ``$TLS_TEST_KERAS_HOME``; in CI both must be there.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.browser import streamlit_server, wait_for_app_idle
from tests.conftest import REPO_ROOT
from tests.test_flowers import _require
from tlcore.config import RunConfig
from tlcore.data import datasets, label_check
from tlcore.store import jobs, runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLASSES = ("daisy", "sunflower")
PER_CLASS = 24
PLANTED_PER_CLASS = 3
WAIT_S = 420


@pytest.fixture
def keras_home(tmp_path) -> Path:
    source = Path(os.environ.get("TLS_TEST_KERAS_HOME", REPO_ROOT.parent / "shared" / "keras_home"))
    _require(source / "models", "the shared Keras weights")
    home = tmp_path / "keras_home"
    shutil.copytree(source, home)
    return home


@pytest.fixture
def planted(ws, tmp_path):
    """24 daisies and 24 sunflowers, 3 of each filed under the other class. Returns the
    dataset and the file names planted."""
    flowers = _require(
        Path(os.environ.get("TLS_FLOWERS_DIR", REPO_ROOT.parent / "shared/datasets/flowers5")),
        "flowers5",
    )
    rng = random.Random(7)
    src = tmp_path / "flowers"
    wrong = set()
    for name in CLASSES:
        photos = sorted((flowers / name).glob("*.jpg"))[:PER_CLASS]
        other = next(c for c in CLASSES if c != name)
        moved = set(rng.sample(range(PER_CLASS), PLANTED_PER_CLASS))
        for index, photo in enumerate(photos):
            folder = src / (other if index in moved else name)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, folder / photo.name)
            if index in moved:
                wrong.add(photo.name)
    return datasets.import_folder(ws, src, name="flowers"), wrong


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def _open(page, url: str) -> None:
    page.goto(url)
    wait_for_app_idle(page)
    _no_exception(page)


@pytest.mark.timeout(1500)
def test_planted_wrong_labels_are_found_fixed_retrained_and_compared(
    browser, ws, planted, keras_home, tmp_path, screenshots, monkeypatch
):
    dataset, wrong = planted
    monkeypatch.setenv("KERAS_HOME", str(keras_home))  # the workers, and the server's tasks
    first = jobs.submit(ws, RunConfig(dataset="flowers", backbone="MobileNetV2", alpha=0.35))
    env = {"KERAS_HOME": str(keras_home)}
    with streamlit_server(ws.root, tmp_path / "server.log", env) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _open(page, f"{url}/dataset?dataset={dataset.id}")
        # The first page run imports the studio's modules while the first run trains.
        page.get_by_role("radio", name="Likely mislabelled").click(timeout=180_000)
        wait_for_app_idle(page)
        page.get_by_role("button", name="Find likely mislabelled images").click()
        page.get_by_text(f"Checked {dataset.num_images} images").wait_for(timeout=WAIT_S * 1000)
        wait_for_app_idle(page)
        _no_exception(page)

        check = label_check.stored(ws, dataset.id)
        flagged = {s.path.rsplit("/", 1)[-1] for s in check.suspects}
        found = flagged & wrong
        print(
            f"\nplanted {len(wrong)} of {dataset.num_images}; flagged {len(flagged)}; "
            f"precision {len(found)}/{len(flagged)}, recall {len(found)}/{len(wrong)}"
        )
        assert len(found) > len(wrong) / 2  # most of them
        page.screenshot(path=str(screenshots / "fix_loop_1_suspects.png"), full_page=True)

        page.get_by_role("button", name="Select this page").click()
        wait_for_app_idle(page)
        page.get_by_role("button", name="Accept the suggested classes").click()
        page.get_by_text("Made version 2 of").wait_for(timeout=60_000)
        wait_for_app_idle(page)
        fixed = datasets.load_dataset(ws, "flowers")
        assert fixed.version == 2
        moved = {m["path"].rsplit("/", 1)[-1] for m in fixed.manifest["changes"]["moved"]}
        assert moved == flagged

        done = jobs.wait_for(ws, first, timeout=WAIT_S)
        assert done.state == runs.FINISHED, done.status.error
        page.reload()
        wait_for_app_idle(page)
        page.get_by_role("button", name="Retrain").first.click()
        page.wait_for_url("**/training**", timeout=60_000)
        wait_for_app_idle(page)
        [again] = [r for r in runs.list_runs(ws) if r.id != first]
        assert again.config.dataset == fixed.id
        assert jobs.wait_for(ws, again.id, timeout=WAIT_S).state == runs.FINISHED

        _open(page, f"{url}/evaluation?run={again.id}")
        page.get_by_text("Before and after the fix").first.wait_for(timeout=60_000)
        paired = page.locator('[data-testid="stMetric"]', has_text="Paired test")
        paired.wait_for(timeout=WAIT_S * 1000)
        wait_for_app_idle(page)
        _no_exception(page)
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert f"n = {len(fixed.items('test'))}" in text
        page.screenshot(path=str(screenshots / "fix_loop_2_before_after.png"), full_page=True)
        page.close()
