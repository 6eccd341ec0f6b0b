"""Logins: who a server lets in and as what (the login settings), and the login itself.

Nothing here knows Streamlit. `ui.auth` hands `load_login_config` the app's secrets
(``.streamlit/secrets.toml``) and the environment; these settings are read:

.. code-block:: toml

    [studio_users]                       # one password per person (TLS_USERS: the same, JSON)
    ana = { password_hash = "scrypt$...", role = "admin" }
    ben = { password_hash = "scrypt$..." }            # role: member by default

    [studio]
    password_hash = "scrypt$..."         # one shared password; people give their name
    admin_password_hash = "scrypt$..."   # optional: the same form, logs in as admin
    admins = ["ana@lab.example"]         # OpenID Connect: these e-mails are admins
    require_login = true                 # also on loopback (behind a reverse proxy)

    [auth]                               # OpenID Connect through Streamlit's st.login
    redirect_uri = "https://studio.lab.example/oauth2callback"
    cookie_secret = "..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://idp.example/.well-known/openid-configuration"

Environment variables: ``TLS_USERS`` (JSON), ``TLS_PASSWORD_HASH``,
``TLS_ADMIN_PASSWORD_HASH``, ``TLS_ADMINS`` (comma-separated), ``TLS_REQUIRE_LOGIN``; each
overrides the secrets' value (``TLS_USERS`` adds to, and replaces same-named, users).

Passwords are stored as scrypt hashes (``scrypt$N$r$p$salt$hash``, made by
``python -m tlcore hash-password``) and compared in constant time (`tlcore.store.passwords`).
Failed logins are counted per name and client, and per client, and lock a name out for a
while (`tlcore.store.login_limiter`). What callers use of both is re-exported here, where
they have always imported it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tlcore.store import audit
from tlcore.store.access import ADMIN, LOCAL_NAME, MEMBER, ROLES, Actor

# Re-exported (``X as X``): callers and tests import these from here.
from tlcore.store.login_limiter import BASE_LOCK_S as BASE_LOCK_S
from tlcore.store.login_limiter import MAX_CLIENT_FAILURES as MAX_CLIENT_FAILURES
from tlcore.store.login_limiter import MAX_FAILURES as MAX_FAILURES
from tlcore.store.login_limiter import RESET_AFTER_S as RESET_AFTER_S
from tlcore.store.login_limiter import LoginLimiter as LoginLimiter
from tlcore.store.login_limiter import limiter_for as limiter_for
from tlcore.store.passwords import hash_password as hash_password
from tlcore.store.passwords import parse_password_hash as parse_password_hash
from tlcore.store.passwords import verify_nothing
from tlcore.store.passwords import verify_password as verify_password
from tlcore.store.workspace import Workspace

USERS_ENV = "TLS_USERS"
PASSWORD_HASH_ENV = "TLS_PASSWORD_HASH"
ADMIN_PASSWORD_HASH_ENV = "TLS_ADMIN_PASSWORD_HASH"
ADMINS_ENV = "TLS_ADMINS"
REQUIRE_LOGIN_ENV = "TLS_REQUIRE_LOGIN"
SECRETS_FILE = ".streamlit/secrets.toml"

MAX_NAME_CHARS = 64
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class LoginConfigError(ValueError):
    """The login settings are incomplete or invalid; the message names the setting."""


class LoginError(ValueError):
    """A login attempt failed (wrong name or password, no name given)."""


class LockedOutError(LoginError):
    """Too many failed attempts: logins for this name from this client pause for a while."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


# -- who a server lets in --------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    """A person with their own password."""

    name: str
    password_hash: str
    role: str = MEMBER


@dataclass(frozen=True)
class LoginConfig:
    """What `load_login_config` read.

    Attributes:
        users: people with their own password, by their name in lower case.
        shared_hash: the shared password's hash (people then give their name), or None.
        admin_hash: the shared admin password's hash, or None.
        oidc_providers: the OpenID Connect providers of ``[auth]`` ("default" when it is
            configured without a name); empty when there is none.
        admins: the e-mail addresses (lower case) that are admins with OpenID Connect.
        require_login: ask for a login also when the server listens on loopback only.
    """

    users: dict[str, User] = field(default_factory=dict)
    shared_hash: str | None = None
    admin_hash: str | None = None
    oidc_providers: tuple[str, ...] = ()
    admins: frozenset[str] = frozenset()
    require_login: bool = False

    @property
    def has_passwords(self) -> bool:
        return bool(self.users or self.shared_hash or self.admin_hash)

    @property
    def has_oidc(self) -> bool:
        return bool(self.oidc_providers)

    @property
    def configured(self) -> bool:
        """Whether any way to log in is set up."""
        return self.has_passwords or self.has_oidc

    @property
    def asks_for_name(self) -> bool:
        """With a shared password, people type their name (any name that is not a user's)."""
        return bool(self.shared_hash or self.admin_hash)


def load_login_config(secrets: Mapping[str, Any], env: Mapping[str, str]) -> LoginConfig:
    """Reads the login settings from the app's secrets and the environment (see the module).

    Raises:
        LoginConfigError: a setting is malformed; the message names it and what to do.
    """
    studio = _table(secrets, "studio")
    users = _parse_users(_table(secrets, "studio_users"), "[studio_users]")
    raw_env_users = env.get(USERS_ENV, "").strip()
    if raw_env_users:
        try:
            env_users = json.loads(raw_env_users)
        except ValueError as exc:
            raise LoginConfigError(
                f"{USERS_ENV} is not valid JSON ({exc.msg} at character {exc.pos}). Expected "
                '{"ana": {"password_hash": "scrypt$...", "role": "admin"}}.'
            ) from None
        if not isinstance(env_users, dict):
            raise LoginConfigError(
                f"{USERS_ENV} must be a JSON object of users. "
                f"Received: a JSON {type(env_users).__name__}."
            )
        users.update(_parse_users(env_users, USERS_ENV))
    shared = _env_or_secret_hash(env, PASSWORD_HASH_ENV, studio, "password_hash")
    admin = _env_or_secret_hash(env, ADMIN_PASSWORD_HASH_ENV, studio, "admin_password_hash")
    if shared and admin and shared == admin:
        raise LoginConfigError(
            "The shared password and the admin password are the same hash: everyone would "
            "be an admin. Make a separate admin password with `python -m tlcore hash-password`."
        )
    return LoginConfig(
        users=users,
        shared_hash=shared,
        admin_hash=admin,
        oidc_providers=_oidc_providers(secrets.get("auth")),
        admins=_admins(env.get(ADMINS_ENV), studio.get("admins")),
        require_login=_flag(env.get(REQUIRE_LOGIN_ENV), studio.get("require_login")),
    )


def _table(secrets: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = secrets.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LoginConfigError(
            f"[{name}] in {SECRETS_FILE} must be a table. Received: a {type(value).__name__}."
        )
    return value


def _parse_users(table: Mapping[str, Any], where: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for name, entry in table.items():
        label = f"{where} {name!r}"
        check_name(name, what=f"The user name in {where}")
        if isinstance(entry, str):
            entry = {"password_hash": entry}
        if not isinstance(entry, Mapping) or "password_hash" not in entry:
            raise LoginConfigError(
                f"{label} needs a password_hash, e.g. "
                f'{name} = {{ password_hash = "scrypt$...", role = "member" }}.'
            )
        role = entry.get("role", MEMBER)
        if role not in ROLES:
            raise LoginConfigError(
                f"{label} has an unknown role. Received: role={role!r}; "
                f"use {' or '.join(repr(r) for r in ROLES)}."
            )
        unknown = sorted(set(entry) - {"password_hash", "role"})
        if unknown:
            raise LoginConfigError(
                f"{label} has unknown settings {unknown}; only password_hash and role."
            )
        key = name.strip().casefold()
        if key in users:
            raise LoginConfigError(f"{label} is given twice (names ignore case).")
        users[key] = User(
            name.strip(), _hash_setting(entry["password_hash"], f"{label} password_hash"), role
        )
    return users


def _env_or_secret_hash(
    env: Mapping[str, str], env_name: str, studio: Mapping[str, Any], key: str
) -> str | None:
    if env.get(env_name, "").strip():
        return _hash_setting(env[env_name], env_name)
    return _hash_setting(studio.get(key), f"[studio] {key}")


def _hash_setting(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LoginConfigError(f"{where} must be a string. Received: a {type(value).__name__}.")
    try:
        parse_password_hash(value)
    except ValueError as exc:
        raise LoginConfigError(f"{where}: {exc}") from None
    return value.strip()


def _oidc_providers(auth: Any) -> tuple[str, ...]:
    if not auth:
        return ()
    where = f"[auth] in {SECRETS_FILE}"
    if not isinstance(auth, Mapping):
        raise LoginConfigError(f"{where} must be a table. Received: a {type(auth).__name__}.")
    missing = [k for k in ("redirect_uri", "cookie_secret") if not auth.get(k)]
    if missing:
        raise LoginConfigError(
            f"{where} lacks {' and '.join(missing)} (Streamlit's st.login needs both: "
            'redirect_uri = "https://<this server>/oauth2callback", and a long random '
            "cookie_secret)."
        )
    providers = []
    if any(k in auth for k in PROVIDER_KEYS):
        _check_provider(auth, where)
        providers.append("default")
    for name, section in auth.items():
        if isinstance(section, Mapping) and name != "client_kwargs":
            if "_" in name:
                raise LoginConfigError(
                    f"[auth.{name}]: provider names cannot contain '_' (Streamlit's rule)."
                )
            _check_provider(section, f"[auth.{name}]")
            providers.append(name)
    if not providers:
        raise LoginConfigError(
            f"{where} names no provider: add client_id, client_secret and server_metadata_url "
            "to it, or an [auth.<provider>] table with them."
        )
    return tuple(providers)


def _check_provider(section: Mapping[str, Any], where: str) -> None:
    missing = [k for k in PROVIDER_KEYS if not section.get(k)]
    if missing:
        raise LoginConfigError(f"{where} lacks {', '.join(missing)}.")


def _admins(env_value: str | None, secrets_value: Any) -> frozenset[str]:
    if env_value is not None and env_value.strip():
        items: Any = env_value.split(",")
    elif secrets_value is None:
        items = []
    elif isinstance(secrets_value, (list, tuple)):
        items = secrets_value
    else:
        raise LoginConfigError(
            '[studio] admins must be a list of e-mail addresses, e.g. admins = ["ana@lab.org"]. '
            f"Received: a {type(secrets_value).__name__}."
        )
    return frozenset(str(x).strip().casefold() for x in items if str(x).strip())


def _flag(env_value: str | None, secrets_value: Any) -> bool:
    if env_value is not None and env_value.strip():
        value = env_value.strip().lower()
        if value not in _TRUE + _FALSE:
            raise LoginConfigError(
                f"{REQUIRE_LOGIN_ENV} must be 1 or 0 (true/false). Received: {env_value!r}."
            )
        return value in _TRUE
    if secrets_value is None:
        return False
    if not isinstance(secrets_value, bool):
        raise LoginConfigError(
            f"[studio] require_login must be true or false. Received: {secrets_value!r}."
        )
    return secrets_value


def check_name(name: Any, *, what: str = "Your name") -> str:
    """A user name, stripped; refuses empty, overlong, control characters and "local".

    Raises:
        LoginConfigError: for names in the settings (``what`` says where).
    """
    text = name.strip() if isinstance(name, str) else ""
    problem = None
    if not text:
        problem = "is empty"
    elif len(text) > MAX_NAME_CHARS:
        problem = f"is longer than {MAX_NAME_CHARS} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "contains control characters"
    elif text.casefold() == LOCAL_NAME:
        problem = f"is {LOCAL_NAME!r}, the command line's name"
    if problem:
        raise LoginConfigError(f"{what} {problem}. Received: {name!r}.")
    return text


# -- where the server listens -----------------------------------------------------------------
def is_loopback(address: str | None) -> bool:
    """Whether a server listening on ``address`` (``server.address``) is reachable only from
    this machine. Unset or empty means every interface in Streamlit: not loopback. A Unix
    socket counts as shared (it is how a reverse proxy reaches the app)."""
    if not address or not str(address).strip():
        return False
    host = str(address).strip()
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def login_required(address: str | None, config: LoginConfig) -> bool:
    """Whether people must log in: on any address but loopback, or when settings say so."""
    return config.require_login or not is_loopback(address)


# -- logging in -------------------------------------------------------------------------------
def authenticate(
    ws: Workspace,
    config: LoginConfig,
    *,
    name: str,
    password: str,
    client: str = "unknown",
    limiter: LoginLimiter | None = None,
) -> Actor:
    """Checks a name and password; returns who logged in. Every attempt is audited.

    A person in ``users`` must give their own password. Anyone else, when a shared password
    is set, logs in under the name they give: as an admin with the admin password, as a
    member with the shared one.

    Args:
        ws: the workspace (audit log and failed-attempt counts).
        config: from `load_login_config`.
        name: the name typed.
        password: the password typed.
        client: where the attempt comes from (the browser's IP address).
        limiter: default `limiter_for(ws)`.

    Raises:
        LoginError: no name, or the name or password is wrong.
        LockedOutError: too many failed attempts for this name from this client.
    """
    limiter = limiter or limiter_for(ws)
    try:
        name = check_name(name)
    except LoginConfigError as exc:
        raise LoginError(str(exc)) from None
    target = f"user {name}"
    wait = limiter.locked_for(name, client)
    if wait > 0:
        audit.append(
            ws,
            actor=name,
            role="-",
            action="login",
            target=target,
            outcome=audit.REFUSED,
            reason="locked out",
            client=client,
        )
        raise LockedOutError(_locked_message(wait), wait)
    password = password if isinstance(password, str) else ""
    user = config.users.get(name.casefold())
    role = None
    if user is not None:
        if verify_password(password, user.password_hash):
            name, role = user.name, user.role
    elif config.asks_for_name:
        # Check both, whichever matches, so the time taken says nothing about which.
        as_admin = config.admin_hash is not None and verify_password(password, config.admin_hash)
        as_member = config.shared_hash is not None and verify_password(password, config.shared_hash)
        role = ADMIN if as_admin else MEMBER if as_member else None
    else:
        verify_nothing(password)
    if role is None:
        wait = limiter.failed(name, client)
        audit.append(
            ws,
            actor=name,
            role="-",
            action="login",
            target=target,
            outcome=audit.REFUSED,
            reason="wrong password",
            client=client,
            locked_for_s=math.ceil(wait) if wait > 0 else None,
        )
        if wait > 0:
            raise LockedOutError(_locked_message(wait), wait)
        raise LoginError("Wrong name or password.")
    limiter.succeeded(name, client)
    actor = Actor(name, role)
    record_login(ws, actor, method="password", client=client)
    return actor


def _locked_message(seconds: float) -> str:
    return (
        "Too many failed attempts: logins under this name from this computer are paused for "
        f"{_duration(seconds)}. Try again then, or ask an admin."
    )


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"


def oidc_actor(config: LoginConfig, claims: Mapping[str, Any]) -> Actor:
    """Who an OpenID Connect identity is: named by its e-mail (else its subject), an admin
    when the e-mail is in ``config.admins``.

    Raises:
        LoginError: the identity carries neither an e-mail nor a subject.
    """
    email = str(claims.get("email") or "").strip().casefold()
    name = email or str(claims.get("sub") or "").strip()
    if not name:
        raise LoginError(
            "The identity provider sent neither an e-mail address nor a subject; the studio "
            "cannot tell who you are. Ask an admin to request the 'email' scope."
        )
    return Actor(name[:200], ADMIN if email and email in config.admins else MEMBER)


def oidc_available() -> bool:
    """Whether Authlib, which Streamlit's ``st.login`` needs, is installed."""
    return importlib.util.find_spec("authlib") is not None


def record_login(ws: Workspace, actor: Actor, *, method: str, client: str = "unknown") -> None:
    """Audits a successful login (`authenticate` does it for passwords)."""
    audit.append(
        ws,
        actor=actor.name,
        role=actor.role,
        action="login",
        target=f"user {actor.name}",
        outcome=audit.DONE,
        method=method,
        client=client,
    )


def record_logout(ws: Workspace, actor: Actor) -> None:
    """Audits a logout."""
    audit.append(
        ws,
        actor=actor.name,
        role=actor.role,
        action="logout",
        target=f"user {actor.name}",
        outcome=audit.DONE,
    )
