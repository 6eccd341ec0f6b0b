"""Logins (tlcore.store.accounts): hashes, the settings, where login is required, lock-out."""

from __future__ import annotations

import json

import pytest

from tlcore import cli
from tlcore.store import accounts, audit, passwords
from tlcore.store.access import ADMIN, MEMBER

PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin staple battery"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {
        "ana": accounts.hash_password(ADMIN_PASSWORD),
        "ben": accounts.hash_password(PASSWORD),
        "shared": accounts.hash_password(PASSWORD),
    }


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- hashes ------------------------------------------------------------------------------
def test_hash_verifies_only_its_password():
    stored = accounts.hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$")
    assert accounts.verify_password(PASSWORD, stored)
    assert not accounts.verify_password(PASSWORD + "!", stored)
    assert not accounts.verify_password("", stored)
    # A fresh salt every time: the same password never gives the same line twice.
    assert accounts.hash_password(PASSWORD) != stored


def test_verification_compares_in_constant_time(monkeypatch):
    stored = accounts.hash_password(PASSWORD)
    calls = []
    real = passwords.hmac.compare_digest
    monkeypatch.setattr(
        passwords.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b)
    )
    assert not accounts.verify_password("wrong password", stored)
    assert len(calls) == 1


def test_short_password_and_damaged_hash_are_refused():
    with pytest.raises(ValueError, match=r"at least 8 characters\. Received: 3"):
        accounts.hash_password("abc")
    with pytest.raises(ValueError, match="not a password hash the studio made"):
        accounts.verify_password(PASSWORD, "plain-text-password")
    with pytest.raises(ValueError, match="damaged"):
        accounts.parse_password_hash("scrypt$16384$8$1$not base64!$abc")
    with pytest.raises(ValueError, match=r"out of range\. Received: N=3"):
        accounts.parse_password_hash("scrypt$3$8$1$c2FsdHNhbHQ=$" + "A" * 44)


def test_cli_hash_password_prints_a_line_to_paste(monkeypatch, capsys, tmp_path):
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["hash-password", "--user", "ana", "--role", "admin"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('"ana" = { password_hash = "scrypt$') and 'role = "admin"' in line
    import tomllib

    entry = tomllib.loads(line)["ana"]
    assert accounts.verify_password(PASSWORD, entry["password_hash"])
    assert not (tmp_path / "workspace").exists()  # needs no workspace


def test_cli_hash_password_refuses_two_different_passwords(monkeypatch, capsys):
    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["hash-password"]) == 2
    assert "The two passwords differ" in capsys.readouterr().err


# -- settings ------------------------------------------------------------------------------
def test_users_shared_password_and_env_are_read(hashes):
    secrets = {
        "studio_users": {
            "ana": {"password_hash": hashes["ana"], "role": "admin"},
            "ben": {"password_hash": hashes["ben"]},
        },
        "studio": {"password_hash": hashes["shared"], "admins": ["Boss@Lab.org"]},
    }
    env = {accounts.USERS_ENV: json.dumps({"cleo": {"password_hash": hashes["ben"]}})}
    config = accounts.load_login_config(secrets, env)
    assert sorted(config.users) == ["ana", "ben", "cleo"]
    assert config.users["ana"].role == ADMIN and config.users["ben"].role == MEMBER
    assert config.shared_hash == hashes["shared"] and config.asks_for_name
    assert config.admins == {"boss@lab.org"} and config.configured and not config.has_oidc
    assert not accounts.load_login_config({}, {}).configured


@pytest.mark.parametrize(
    ("secrets", "env", "message"),
    [
        ({"studio_users": {"ana": {"role": "admin"}}}, {}, "'ana' needs a password_hash"),
        (
            {"studio_users": {"ana": {"password_hash": "x", "role": "boss"}}},
            {},
            "unknown role. Received: role='boss'",
        ),
        (
            {"studio_users": {"ana": {"password_hash": "hunter2"}}},
            {},
            "password_hash: This is not a password hash the studio made",
        ),
        ({}, {accounts.USERS_ENV: "{not json"}, "TLS_USERS is not valid JSON"),
        ({}, {accounts.USERS_ENV: "[1, 2]"}, "must be a JSON object of users"),
        ({}, {accounts.PASSWORD_HASH_ENV: "secret"}, "TLS_PASSWORD_HASH: This is not"),
        ({"studio": "yes"}, {}, "[studio] in .streamlit/secrets.toml must be a table"),
        ({}, {accounts.REQUIRE_LOGIN_ENV: "maybe"}, "TLS_REQUIRE_LOGIN must be 1 or 0"),
        ({"auth": {"client_id": "x"}}, {}, "lacks redirect_uri and cookie_secret"),
        (
            {"auth": {"redirect_uri": "u", "cookie_secret": "s", "client_id": "x"}},
            {},
            "lacks client_secret, server_metadata_url",
        ),
        ({"auth": {"redirect_uri": "u", "cookie_secret": "s"}}, {}, "names no provider"),
        ({"studio_users": {"local": {"password_hash": "x"}}}, {}, "the command line's name"),
    ],
)
def test_bad_settings_say_which_and_what_to_do(secrets, env, message, hashes):
    # A valid hash where the case is not about the hash itself.
    for entry in secrets.get("studio_users", {}).values():
        if entry.get("password_hash") == "x":
            entry["password_hash"] = hashes["ben"]
    with pytest.raises(accounts.LoginConfigError) as caught:
        accounts.load_login_config(secrets, env)
    assert message in str(caught.value)


def test_oidc_providers_default_and_named():
    provider = {"client_id": "i", "client_secret": "s", "server_metadata_url": "https://x"}
    base = {"redirect_uri": "https://studio/oauth2callback", "cookie_secret": "c" * 32}
    assert accounts.load_login_config({"auth": base | provider}, {}).oidc_providers == ("default",)
    named = accounts.load_login_config({"auth": base | {"google": provider}}, {})
    assert named.oidc_providers == ("google",) and named.configured


def test_oidc_actor_is_admin_by_email():
    config = accounts.LoginConfig(oidc_providers=("default",), admins=frozenset({"ana@lab.org"}))
    assert accounts.oidc_actor(config, {"email": "Ana@Lab.org"}).role == ADMIN
    ben = accounts.oidc_actor(config, {"email": "ben@lab.org"})
    assert (ben.name, ben.role) == ("ben@lab.org", MEMBER)
    with pytest.raises(accounts.LoginError, match="neither an e-mail address nor a subject"):
        accounts.oidc_actor(config, {})


# -- where login is required ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),  # unset: Streamlit listens on every interface
        (None, False),
        ("192.168.1.20", False),
        ("studio.lab.org", False),
        ("unix:///run/studio.sock", False),  # a reverse proxy's way in
    ],
)
def test_only_loopback_goes_without_login(address, loopback):
    assert accounts.is_loopback(address) is loopback
    assert accounts.login_required(address, accounts.LoginConfig()) is not loopback


def test_require_login_also_on_loopback():
    config = accounts.load_login_config({}, {accounts.REQUIRE_LOGIN_ENV: "1"})
    assert accounts.login_required("127.0.0.1", config)


# -- logging in --------------------------------------------------------------------------------
def test_user_logs_in_with_own_password_and_it_is_audited(ws, hashes):
    config = accounts.load_login_config(
        {"studio_users": {"Ana": {"password_hash": hashes["ana"], "role": "admin"}}}, {}
    )
    actor = accounts.authenticate(ws, config, name="ana", password=ADMIN_PASSWORD, client="1.2.3.4")
    assert (actor.name, actor.role, actor.authenticated) == ("Ana", ADMIN, True)
    with pytest.raises(accounts.LoginError, match="Wrong name or password"):
        accounts.authenticate(ws, config, name="Ana", password=PASSWORD, client="1.2.3.4")
    with pytest.raises(accounts.LoginError, match="Wrong name or password"):
        accounts.authenticate(ws, config, name="nobody", password=PASSWORD, client="1.2.3.4")
    lines = audit.read(ws)
    assert [(r["actor"], r["action"], r["outcome"]) for r in lines] == [
        ("nobody", "login", "refused"),
        ("Ana", "login", "refused"),
        ("Ana", "login", "done"),
    ]
    assert lines[0]["reason"] == "wrong password" and lines[2]["client"] == "1.2.3.4"
    assert PASSWORD not in ws.audit_path.read_text()


def test_shared_password_takes_a_name_and_admin_password_makes_an_admin(ws, hashes):
    config = accounts.load_login_config(
        {
            "studio": {"password_hash": hashes["shared"], "admin_password_hash": hashes["ana"]},
            "studio_users": {"ben": {"password_hash": hashes["ana"]}},
        },
        {},
    )
    member = accounts.authenticate(ws, config, name=" Cleo ", password=PASSWORD)
    admin = accounts.authenticate(ws, config, name="Dora", password=ADMIN_PASSWORD)
    assert (member.name, member.role) == ("Cleo", MEMBER)
    assert (admin.name, admin.role) == ("Dora", ADMIN)
    # A configured user cannot be impersonated with the shared password.
    with pytest.raises(accounts.LoginError):
        accounts.authenticate(ws, config, name="ben", password=PASSWORD)
    with pytest.raises(accounts.LoginError, match="is empty"):
        accounts.authenticate(ws, config, name="  ", password=PASSWORD)


def test_repeated_failures_lock_out_then_expire_with_backoff(ws, hashes):
    config = accounts.load_login_config({"studio_users": {"ana": hashes["ana"]}}, {})
    clock = Clock()
    limiter = accounts.limiter_for(ws, clock=clock)

    def attempt(password, client="10.0.0.1"):
        return accounts.authenticate(
            ws, config, name="ana", password=password, client=client, limiter=limiter
        )

    for _ in range(accounts.MAX_FAILURES - 1):
        with pytest.raises(accounts.LoginError) as caught:
            attempt("wrong password")
        assert not isinstance(caught.value, accounts.LockedOutError)
    with pytest.raises(accounts.LockedOutError) as caught:
        attempt("wrong password")
    assert caught.value.seconds == accounts.BASE_LOCK_S
    assert "paused for 30 s" in str(caught.value)
    # Locked: even the right password is refused, and from another process too.
    with pytest.raises(accounts.LockedOutError):
        attempt(ADMIN_PASSWORD)
    assert accounts.limiter_for(ws, clock=clock).locked_for("ana", "10.0.0.1") > 0
    # Another computer is not locked out by this one's failures.
    assert attempt(ADMIN_PASSWORD, client="10.0.0.2").name == "ana"
    # The pause ends; one more failure pauses twice as long.
    clock.now += accounts.BASE_LOCK_S + 1
    with pytest.raises(accounts.LockedOutError) as caught:
        attempt("wrong again")
    assert caught.value.seconds == 2 * accounts.BASE_LOCK_S
    clock.now += 2 * accounts.BASE_LOCK_S + 1
    assert attempt(ADMIN_PASSWORD).role == MEMBER  # a success forgets the failures
    assert limiter.failures("ana", "10.0.0.1") == 0
    outcomes = [r.get("reason") for r in audit.read(ws) if r["outcome"] == "refused"]
    assert "locked out" in outcomes


def test_failures_are_forgotten_after_a_quiet_hour(tmp_path):
    clock = Clock()
    limiter = accounts.LoginLimiter(tmp_path / "attempts.json", clock=clock)
    for _ in range(accounts.MAX_FAILURES - 1):
        limiter.failed("ana", "c")
    assert limiter.failures("ana", "c") == accounts.MAX_FAILURES - 1
    clock.now += accounts.RESET_AFTER_S + 1
    assert limiter.failures("ana", "c") == 0
    assert limiter.failed("ana", "c") == 0.0  # counting starts again: no lock-out


def test_many_names_from_one_client_are_locked_out_too(tmp_path):
    limiter = accounts.LoginLimiter(tmp_path / "attempts.json", clock=Clock())
    waits = [limiter.failed(f"user{i}", "c") for i in range(accounts.MAX_CLIENT_FAILURES)]
    assert waits[-2] == 0.0 and waits[-1] == accounts.BASE_LOCK_S
    assert limiter.locked_for("someone-else", "c") > 0
