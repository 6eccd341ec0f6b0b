"""The login in front of the app (AppTest): what a locked studio shows, logging in, lock-out,
and what members and admins may do with other people's runs."""

from __future__ import annotations

import json

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.store import accounts, audit, jobs, runs

TIMEOUT_S = 120
PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin staple battery"


@pytest.fixture(scope="module")
def users_env() -> str:
    """TLS_USERS with ana (admin), ben and cleo (members)."""
    member, admin = accounts.hash_password(PASSWORD), accounts.hash_password(ADMIN_PASSWORD)
    return json.dumps(
        {
            "ana": {"password_hash": admin, "role": "admin"},
            "ben": {"password_hash": member},
            "cleo": {"password_hash": member},
        }
    )


@pytest.fixture
def address():
    """Sets ``server.address`` as ``--server.address`` would; restored afterwards."""
    before = st_config.get_option("server.address")
    yield lambda value: st_config.set_option("server.address", value)
    st_config.set_option("server.address", before)


@pytest.fixture
def shared_server(ws, address, users_env, monkeypatch):
    """A studio on 0.0.0.0 with per-user passwords (from the environment)."""
    address("0.0.0.0")
    monkeypatch.setenv(accounts.USERS_ENV, users_env)
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    return ws


def _open(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [t.value for t in at.title] + [s.value for s in at.subheader]
    for kind in (at.info, at.warning, at.error, at.success):
        parts += [e.value for e in kind]
    return "\n".join(str(p) for p in parts)


def _log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    [submit] = [b for b in at.button if b.label == "Log in"]
    submit.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _assert_locked(at: AppTest) -> None:
    """Nothing of the studio: no page, no runs, no quick start, no navigation."""
    text = _text(at)
    assert "Quick start" not in text and "Runs" not in text and "System" not in text
    assert not at.dataframe and not at.sidebar.children
    assert "Transfer Learning Studio" not in [t.value for t in at.title]


# -- a locked studio ------------------------------------------------------------------------
@pytest.mark.parametrize("listen", ["0.0.0.0", ""])
def test_shared_server_without_login_shows_only_how_to_configure_one(ws, address, listen):
    address(listen)
    run_id = runs.create_run(ws, tiny_config("tiny", name="Secret run")).id
    at = _open({"run": run_id})
    assert [t.value for t in at.title] == ["Configure a login first"]
    text = _text(at)
    assert "python -m tlcore hash-password --user ana --role admin" in text
    assert "[studio_users]" in text and "[auth]" in text and "127.0.0.1" in text
    _assert_locked(at)
    assert "Secret run" not in text and run_id not in text
    # A deep link to another page shows the same, not the page.
    at.switch_page("views/training.py").run()
    assert [t.value for t in at.title] == ["Configure a login first"]
    assert "Secret run" not in _text(at)


def test_loopback_needs_no_login_unless_required(ws, users_env, monkeypatch):
    monkeypatch.setenv(accounts.USERS_ENV, users_env)  # .streamlit/config.toml: 127.0.0.1
    at = _open()
    assert at.title[0].value == "Transfer Learning Studio"
    assert not [b for b in at.button if b.label == "Log out"]
    monkeypatch.setenv(accounts.REQUIRE_LOGIN_ENV, "1")
    at = _open()
    assert [t.value for t in at.title] == ["Log in"]


def test_broken_login_settings_keep_the_studio_closed(ws, monkeypatch):
    monkeypatch.setenv(accounts.PASSWORD_HASH_ENV, "hunter2")  # a password, not its hash
    at = _open()
    assert [t.value for t in at.title] == ["The login settings need fixing"]
    assert "TLS_PASSWORD_HASH: This is not a password hash" in _text(at)
    _assert_locked(at)


# -- logging in ------------------------------------------------------------------------------
def test_only_the_login_form_until_the_right_password(shared_server):
    runs.create_run(shared_server, tiny_config("tiny", name="Ana's run"), owner="ana")
    at = _open()
    assert [t.value for t in at.title] == ["Log in"]
    assert [w.label for w in at.text_input] == ["User name", "Password"]
    _assert_locked(at)
    assert "Ana's run" not in _text(at)

    _log_in(at, "ana", "not the password")
    assert "Wrong name or password." in _text(at)
    _assert_locked(at)

    _log_in(at, "ana", ADMIN_PASSWORD)
    assert at.title[0].value == "Transfer Learning Studio"
    assert "Ana's run" in at.dataframe[0].value["Run"].tolist()
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "**ana**" in sidebar and "admin" in sidebar
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    outcomes = [(r["actor"], r["outcome"]) for r in audit.read(shared_server)]
    assert outcomes == [("ana", "done"), ("ana", "refused")]

    at.sidebar.button[0].click().run()
    assert [t.value for t in at.title] == ["Log in"]
    assert audit.read(shared_server)[0]["action"] == "logout"


def test_wrong_passwords_pause_logins(shared_server):
    at = _open()
    for _ in range(accounts.MAX_FAILURES - 1):
        _log_in(at, "ben", "wrong password")
        assert "Wrong name or password." in _text(at)
    _log_in(at, "ben", "wrong password")
    assert "Logins paused." in _text(at) and "paused for 30 s" in _text(at)
    # The right password waits too, also in a new session (a reload, another tab).
    at = _open()
    _log_in(at, "ben", PASSWORD)
    assert "Logins paused." in _text(at)
    _assert_locked(at)


def test_shared_password_asks_for_a_name(ws, address, monkeypatch):
    address("0.0.0.0")
    monkeypatch.setenv(accounts.PASSWORD_HASH_ENV, accounts.hash_password(PASSWORD))
    at = _open()
    assert [w.label for w in at.text_input] == ["Your name", "Password"]
    _log_in(at, "Dora", PASSWORD)
    assert at.title[0].value == "Transfer Learning Studio"
    assert "**Dora**" in "\n".join(m.value for m in at.sidebar.markdown)


def test_single_sign_on_user_is_let_in_by_email(ws, address):
    address("0.0.0.0")
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.secrets["auth"] = {
        "redirect_uri": "https://studio.lab.org/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "studio",
        "client_secret": "secret",
        "server_metadata_url": "https://idp.lab.org/.well-known/openid-configuration",
    }
    at.secrets["studio"] = {"admins": ["boss@lab.org"]}
    at.user = {"is_logged_in": False}
    at.run()
    assert [t.value for t in at.title] == ["Log in"]
    assert [b.label for b in at.button] == ["Log in with single sign-on"]
    assert not at.text_input  # no password form when only OIDC is set up
    at.user = {"is_logged_in": True, "email": "Boss@lab.org", "name": "The Boss"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Transfer Learning Studio"
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "**boss@lab.org**" in sidebar and "admin" in sidebar
    assert audit.read(ws)[0]["method"] == "oidc"


# -- other people's runs -------------------------------------------------------------------------
def _training(at: AppTest, run_id: str) -> AppTest:
    at.query_params["run"] = run_id
    at.switch_page("views/training.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_member_sees_anothers_run_without_stop_or_resume(shared_server):
    theirs = runs.create_run(shared_server, tiny_config("tiny", name="Ben's"), owner="ben")
    cancelled = runs.create_run(shared_server, tiny_config("tiny", name="Ben's old"), owner="ben")
    jobs.cancel(shared_server, cancelled.id)
    mine = runs.create_run(shared_server, tiny_config("tiny", name="Cleo's"), owner="cleo")
    at = _log_in(_open(), "cleo", PASSWORD)

    at = _training(at, theirs.id)
    assert not [b for b in at.button if b.key in ("stop_run", "resume_run")]
    text = _text(at)
    assert "started by **ben**" in text
    assert "This run belongs to **ben**: only ben or an admin can stop" in text
    at = _training(at, cancelled.id)
    assert not [b for b in at.button if b.key in ("stop_run", "resume_run")]

    at = _training(at, mine.id)
    assert "started by you" in _text(at)
    at.button(key="stop_run").click().run()
    assert runs.read_run(shared_server, mine.id).state == runs.CANCELLED
    assert runs.read_run(shared_server, theirs.id).state == runs.QUEUED
    # Members do not see the audit log.
    at.switch_page("views/home.py").run()
    assert not [e for e in at.expander if e.label == "Audit log"]


def test_an_admin_confirms_before_stopping_anothers_run(shared_server):
    theirs = runs.create_run(shared_server, tiny_config("tiny", name="Ben's"), owner="ben")
    at = _training(_log_in(_open(), "ana", ADMIN_PASSWORD), theirs.id)
    assert at.button(key="stop_run").disabled
    at.checkbox(key=f"override_{theirs.id}").check().run()
    assert not at.button(key="stop_run").disabled
    at.button(key="stop_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert runs.read_run(shared_server, theirs.id).state == runs.CANCELLED
    line = audit.read(shared_server)[0]
    assert (line["actor"], line["action"], line["owner"]) == ("ana", "cancel", "ben")
    assert line["admin_override"] is True
    # The admin sees it in the audit log on Home.
    at.switch_page("views/home.py").run()
    [log] = [e for e in at.expander if e.label == "Audit log"]
    table = log.dataframe[0].value
    assert table.iloc[0]["Action"] == "cancel" and "admin override" in table.iloc[0]["Outcome"]


def test_datasets_of_others_cannot_be_deleted_by_members(shared_server, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    ds = datasets.import_folder(shared_server, src, owner="ben")
    at = _log_in(_open(), "cleo", PASSWORD)
    at.query_params["dataset"] = ds.id
    at.switch_page("views/dataset.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "imported by **ben**" in _text(at)
    assert not [b for b in at.button if b.key == f"ds_delete_{ds.id}"]
    assert "This dataset belongs to **ben**: only ben or an admin can" in _text(at)

    at = _log_in(_open(), "ana", ADMIN_PASSWORD)
    at.query_params["dataset"] = ds.id
    at.switch_page("views/dataset.py").run()
    at.checkbox(key=f"ds_confirm_delete_{ds.id}").check().run()
    assert at.button(key=f"ds_delete_{ds.id}").disabled  # the admin's own confirmation first
    at.checkbox(key=f"ds_override_delete_{ds.id}").check().run()
    at.button(key=f"ds_delete_{ds.id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not shared_server.dataset_dir(ds.id).exists()
    assert audit.read(shared_server)[0]["admin_override"] is True
