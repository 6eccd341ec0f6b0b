"""The login in a real browser: a studio on 0.0.0.0 shows nothing of itself before a login."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser import streamlit_server, wait_for_app_idle
from tests.conftest import tiny_config
from tlcore.store import accounts, jobs, runs
from tlcore.store.workspace import open_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
QUIET = {"TLS_SCHEDULER": "off", "TLS_AUTO_CALIBRATE": "0"}
NO_LOGIN = {
    name: ""
    for name in (
        accounts.USERS_ENV,
        accounts.PASSWORD_HASH_ENV,
        accounts.ADMIN_PASSWORD_HASH_ENV,
        accounts.REQUIRE_LOGIN_ENV,
    )
}


def _workspace_with_a_run(tmp_path):
    ws = open_workspace(tmp_path / "workspace")
    record = runs.create_run(ws, tiny_config("tiny", name="A private run"), owner="ana")
    jobs.cancel(ws, record.id)  # listed, but never started: no worker in this test
    return ws


def _assert_nothing_of_the_studio(page) -> None:
    body = page.locator("body").inner_text()
    assert "A private run" not in body and "Quick start" not in body
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.locator('[data-testid="stDataFrame"]').count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0


def test_shared_server_without_a_login_only_says_how_to_configure_one(
    browser, tmp_path, screenshots
):
    ws = _workspace_with_a_run(tmp_path)
    env = NO_LOGIN | QUIET
    with streamlit_server(ws.root, tmp_path / "server.log", env, address="0.0.0.0") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for path in ("", "training"):
            page.goto(f"{url}/{path}")
            wait_for_app_idle(page)
            page.get_by_role("heading", name="Configure a login first").wait_for(timeout=60_000)
            # The commands to run (a code block draws a moment after the text around it).
            page.locator("pre").filter(has_text="--role admin").first.wait_for(timeout=30_000)
            _assert_nothing_of_the_studio(page)
        page.screenshot(path=str(screenshots / "login_configure.png"), full_page=True)
        page.close()


def test_unauthenticated_browser_sees_only_the_login_form_then_logs_in(
    browser, tmp_path, screenshots
):
    ws = _workspace_with_a_run(tmp_path)
    users = {"ana": {"password_hash": accounts.hash_password(PASSWORD), "role": "admin"}}
    env = NO_LOGIN | QUIET | {accounts.USERS_ENV: json.dumps(users)}
    with streamlit_server(ws.root, tmp_path / "server.log", env, address="0.0.0.0") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/training")  # a deep link: it opens after the login
        wait_for_app_idle(page)
        page.get_by_role("heading", name="Log in").wait_for(timeout=60_000)
        page.get_by_role("textbox", name="Password").wait_for(timeout=30_000)
        _assert_nothing_of_the_studio(page)
        page.screenshot(path=str(screenshots / "login_form.png"), full_page=True)

        page.get_by_role("textbox", name="User name").fill("ana")
        page.get_by_role("textbox", name="Password").fill("wrong password")
        page.get_by_role("button", name="Log in").click()
        wait_for_app_idle(page)
        page.get_by_text("Wrong name or password.").wait_for(timeout=30_000)
        _assert_nothing_of_the_studio(page)

        page.get_by_role("textbox", name="User name").fill("ana")
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        wait_for_app_idle(page)
        page.get_by_role("heading", name="Training").first.wait_for(timeout=60_000)
        assert "A private run" in page.locator("body").inner_text()
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert re.search(r"ana\s*·\s*admin", sidebar.inner_text())
        assert "Build" in page.locator('[data-testid="stSidebarNav"]').inner_text()
        page.screenshot(path=str(screenshots / "login_done.png"), full_page=True)
        page.close()
