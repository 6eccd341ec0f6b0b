"""Shared fixtures: a fresh workspace per test and a tiny image dataset to train on."""

from __future__ import annotations

import os
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.store import runs
from tlcore.store.workspace import open_workspace

REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition, what: str, timeout: float, *, poll: float = 0.2, explain=lambda: ""):
    """``condition()``'s first truthy value, polled; fails naming ``what`` (and ``explain()``)
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}. {explain()}")


# Real-browser tests: Debian's Chromium driven by Playwright (no browser download). A
# module-scoped browser: Playwright's sync API must not outlive the module's event loop use.
@pytest.fixture(scope="module")
def browser():
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/ensure_chromium.sh")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where browser tests save screenshots: ``$TLS_SCREENSHOTS`` or a temp folder."""
    folder = Path(os.environ.get("TLS_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """An empty workspace; workers started by the test are killed at the end."""
    workspace = open_workspace(tmp_path / "workspace")
    monkeypatch.setenv("TLS_WORKSPACE", str(workspace.root))
    # Pages would measure the machine's speed in a background process: not in tests.
    monkeypatch.setenv("TLS_AUTO_CALIBRATE", "0")
    # Nor start the workspace's scheduler: tests that need one start it themselves.
    monkeypatch.setenv("TLS_SCHEDULER", "off")
    yield workspace
    for record in runs.list_runs(workspace):
        pid = record.status.pid if record.status else None
        try:
            # Only a worker's own process group (workers lead one); never a made-up pid's.
            if pid and pid > 1 and os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def write_class_folders(root: Path, classes: dict[str, int], size: int = 24, seed: int = 0) -> Path:
    """Writes ``root/<class>/<n>.png`` images whose colour depends on the class (learnable)."""
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 200, 30), (150, 50, 200)]
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array(palette[c % len(palette)], dtype=np.float32)
        for i in range(count):
            noise = rng.normal(0, 25, size=(size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")
    return root


@pytest.fixture
def tiny_dataset(ws, tmp_path):
    """A 3-class dataset of 24 px images imported into ``ws``; returns its name."""
    from tlcore.data import datasets

    src = write_class_folders(tmp_path / "tiny", {"red": 20, "green": 20, "blue": 20})
    ds = datasets.import_folder(ws, src, name="tiny")
    return ds.name


def tiny_config(dataset: str, **changes):
    """A run that trains a small CNN for a couple of seconds."""
    from tlcore.config import RunConfig

    values = dict(
        dataset=dataset,
        backbone="SmallCNN",
        weights="none",
        image_size=32,
        epochs=2,
        batch_size=8,
        flip="none",
        strategy="full_fine_tune",
        head_search=False,  # epochs of SGD: what most training mechanics tests exercise
    )
    values.update(changes)
    return RunConfig(**values)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height 1-bit pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
