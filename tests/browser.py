"""Helpers for real-browser tests: `streamlit run` on loopback, driven by Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("TLS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(
    workspace: Path, log_path: Path, env_extra: dict | None = None, address: str = "127.0.0.1"
):
    """Runs the app on a free port, listening on ``address`` (default loopback only); yields
    its base URL (on loopback, which every address reaches)."""
    port = _free_port()
    env = dict(os.environ, TLS_WORKSPACE=str(workspace), **(env_extra or {}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.address",
                address,
                "--server.headless",
                "true",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start; see {log_path}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        _stop_scheduler(workspace)


def _stop_scheduler(workspace: Path) -> None:
    """Stops the scheduler the app started for ``workspace`` (it outlives the app by design;
    it stops its own warm worker), so tests leave no processes behind."""
    from tlcore.store import scheduler
    from tlcore.store.workspace import Workspace

    status = scheduler.status(Workspace(Path(workspace)))
    try:
        if status.alive and status.pid and os.getpgid(status.pid) == status.pid:
            os.kill(status.pid, 15)
            deadline = time.monotonic() + 15
            while scheduler.status(Workspace(Path(workspace))).alive:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_app_idle(page, timeout_ms: int = 60_000, quiet_ms: int = 1500) -> None:
    """Waits until Streamlit's "running" indicator has been gone for ``quiet_ms``."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        skeleton = page.locator('[data-testid="stSkeleton"]').count() > 0
        if running or skeleton:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif (time.monotonic() - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(100)
    raise TimeoutError("the app kept running for too long")
