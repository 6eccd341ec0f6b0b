"""The login in front of every page, who is acting, and the admin's view of the audit log.

`gate` runs in app.py before any page. On loopback without ``require_login`` it lets the
person at the machine in as `tlcore.store.access.LOCAL` (an admin); otherwise only someone
who logged in (a password, or OpenID Connect through ``st.login``) gets past it, and a
server on any other address with no login configured shows only how to configure one. The
rules and the checks live in `tlcore.store.accounts` and `tlcore.store.access`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from tlcore.store import access, accounts, audit
from tlcore.store.access import Actor
from tlcore.store.workspace import Workspace
from ui.common import workspace

ACTOR_KEY = "auth_actor"  # the Actor of this session, set by `gate` on every run
PASSWORD_ACTOR_KEY = "auth_password_actor"  # (name, role) after a password login
OIDC_RECORDED_KEY = "auth_oidc_recorded"  # the OIDC login of this session is audited
LAST_NAME_KEY = "auth_last_name"
AUDIT_ROWS = 500


# -- the gate -------------------------------------------------------------------------------
def gate() -> Actor | None:
    """Who is acting, or None when the studio stays locked (this drew the login page, or
    the page saying how to configure one). Call before ``st.navigation`` runs a page."""
    st.session_state.pop(ACTOR_KEY, None)
    address = st.get_option("server.address")
    try:
        config = accounts.load_login_config(_read_secrets(), os.environ)
    except accounts.LoginConfigError as exc:
        _settings_broken_page(str(exc))
        return None
    if not accounts.login_required(address, config):
        actor = access.LOCAL
    elif not config.configured:
        _configure_page(address)
        return None
    else:
        actor = _logged_in(config)
        if actor is None:
            _login_page(config)
            return None
    st.session_state[ACTOR_KEY] = actor
    return actor


def current_actor() -> Actor:
    """The person acting in this session (set by `gate`); stops the page if there is none."""
    actor = st.session_state.get(ACTOR_KEY)
    if not isinstance(actor, Actor):
        st.error("**You are not logged in.** Reload the page to log in.", icon=":material/lock:")
        st.stop()
    return actor


def _read_secrets() -> dict:
    """The app's secrets as a dict ({} when there are none).

    Raises:
        accounts.LoginConfigError: a secrets file exists but cannot be read.
    """
    try:
        return st.secrets.to_dict()
    except StreamlitSecretNotFoundError as exc:  # no file, or one that does not parse
        if str(exc).startswith("No secrets found"):
            return {}
        raise accounts.LoginConfigError(f"The secrets file cannot be read: {exc}") from None


def _logged_in(config: accounts.LoginConfig) -> Actor | None:
    saved = st.session_state.get(PASSWORD_ACTOR_KEY)
    if saved is not None and config.has_passwords:
        return Actor(*saved)
    if config.has_oidc and st.user.get("is_logged_in"):
        try:
            actor = accounts.oidc_actor(config, st.user.to_dict())
        except accounts.LoginError as exc:
            st.error(f"**You cannot use the studio yet.** {exc}", icon=":material/error:")
            st.button("Log out", on_click=st.logout)
            st.stop()
        if st.session_state.get(OIDC_RECORDED_KEY) != actor.name:
            accounts.record_login(workspace(), actor, method="oidc", client=_client())
            st.session_state[OIDC_RECORDED_KEY] = actor.name
        return actor
    return None


def _client() -> str:
    """Where this session's browser connects from (its IP address), for the lock-out."""
    try:
        address = st.context.ip_address
    except Exception:  # no browser connection to ask
        address = None
    return address if isinstance(address, str) and address else "unknown"


# -- the pages the gate draws ---------------------------------------------------------------
def _login_page(config: accounts.LoginConfig) -> None:
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("Log in")
        st.caption("Transfer Learning Studio is shared on this server: log in to use it.")
        if config.has_passwords:
            _password_form(config)
        if config.has_oidc:
            _oidc_buttons(config)


def _password_form(config: accounts.LoginConfig) -> None:
    with st.form("login", clear_on_submit=True, border=True):
        if config.asks_for_name:
            label, hint = "Your name", "Your runs and datasets are recorded under this name."
        else:
            label, hint = "User name", None
        name = st.text_input(
            label,
            value=st.session_state.get(LAST_NAME_KEY, ""),
            key="login_name",
            help=hint,
            autocomplete="username",
        )
        password = st.text_input(
            "Password", type="password", key="login_password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Log in", type="primary", icon=":material/login:")
    if not submitted:
        return
    st.session_state[LAST_NAME_KEY] = name
    try:
        actor = accounts.authenticate(
            workspace(), config, name=name, password=password, client=_client()
        )
    except accounts.LockedOutError as exc:
        st.error(f"**Logins paused.** {exc}", icon=":material/lock_clock:")
        return
    except accounts.LoginError as exc:
        st.error(f"**Not logged in.** {exc}", icon=":material/error:")
        return
    st.session_state[PASSWORD_ACTOR_KEY] = (actor.name, actor.role)
    st.rerun()


def _oidc_buttons(config: accounts.LoginConfig) -> None:
    if config.has_passwords:
        st.caption("Or")
    for provider in config.oidc_providers:
        label = "single sign-on" if provider == "default" else provider.capitalize()
        if st.button(f"Log in with {label}", icon=":material/key:", key=f"login_{provider}"):
            if not accounts.oidc_available():
                st.error(
                    "**Single sign-on needs Authlib**, which is not installed here: run "
                    "`.venv/bin/pip install -r requirements.txt` and restart the studio.",
                    icon=":material/error:",
                )
                return
            if provider == "default":
                st.login()
            else:
                st.login(provider)


def _configure_page(address: str | None) -> None:
    where = f"`{address}`" if address else "every network interface (no address is set)"
    st.title("Configure a login first")
    st.error(
        f"**This studio listens on {where}**, so anyone who can reach this machine could use "
        "it, stop other people's training and delete their data. It stays closed until a "
        "login is configured.",
        icon=":material/lock:",
    )
    st.markdown(
        f"""
**Passwords, one per person.** Make a hash for each person (the password is asked for and
not shown), paste the printed line under `[studio_users]` in `{accounts.SECRETS_FILE}` beside
`app.py`, then restart the studio:

```bash
.venv/bin/python -m tlcore hash-password --user ana --role admin
.venv/bin/python -m tlcore hash-password --user ben            # a member
```

Or one shared password: `hash-password` without `--user`, pasted as `password_hash` under
`[studio]` (people then type their name; an optional `admin_password_hash` logs in as admin).
Instead of the file, the environment variables `{accounts.USERS_ENV}` (the users as JSON) or
`{accounts.PASSWORD_HASH_ENV}` work too.

**Single sign-on (OpenID Connect).** Add an `[auth]` table to `{accounts.SECRETS_FILE}` with
`redirect_uri` (this server's address + `/oauth2callback`), a random `cookie_secret`,
`client_id`, `client_secret` and `server_metadata_url` from your identity provider, and list
the admins' e-mail addresses as `admins = [...]` under `[studio]`.

**Only this machine?** Start the studio on loopback — `--server.address 127.0.0.1`, the
default of `.streamlit/config.toml` — and no login is needed.

The README's section *Sharing the studio on a lab server* has the details.
"""
    )


def _settings_broken_page(problem: str) -> None:
    st.title("The login settings need fixing")
    st.error(
        f"**The studio stays closed until its login settings are fixed.** {problem}",
        icon=":material/lock:",
    )
    st.markdown(
        f"Fix the setting named above (in `{accounts.SECRETS_FILE}` or the environment), "
        "then reload this page. `python -m tlcore hash-password` makes password hashes."
    )


# -- in the sidebar -------------------------------------------------------------------------
def sidebar_account(actor: Actor) -> None:
    """The logged-in person's name and role, and Log out. Nothing for the local actor."""
    if not actor.authenticated:
        return
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f":material/person: **{actor.name}** :gray[· {actor.role}]", width="stretch")
        st.button("Log out", key="logout", type="tertiary", on_click=_log_out, args=(actor,))


def _log_out(actor: Actor) -> None:
    accounts.record_logout(workspace(), actor)
    if st.session_state.pop(PASSWORD_ACTOR_KEY, None) is None:
        st.session_state.pop(OIDC_RECORDED_KEY, None)
        st.logout()
    st.session_state.pop(ACTOR_KEY, None)


# -- owners on the pages ----------------------------------------------------------------------
def current_owner() -> str | None:
    """What to record as the owner of what this session makes (None without a login)."""
    return current_actor().owner


def owner_text(owner: str | None) -> str:
    """Markdown naming who made something: "you", a name, or nobody."""
    actor = st.session_state.get(ACTOR_KEY)
    if isinstance(actor, Actor) and access.owns(actor, owner):
        return "you"
    return f"**{owner}**" if owner else "nobody recorded"


def made_by(owner: str | None, verb: str) -> str | None:
    """Like "started by **ana**" for a page's header; None when there is nothing to say
    (no owner recorded, and nobody logs in here)."""
    actor = st.session_state.get(ACTOR_KEY)
    if owner is None and not (isinstance(actor, Actor) and actor.authenticated):
        return None
    if owner is None:  # made before logins, or from the command line
        return "owner not recorded (command line or before logins)"
    return f"{verb} by {owner_text(owner)}"


def may_change(
    owner: str | None, what: str, *, key: str, verbs: str = "stop, resume or delete"
) -> tuple[bool, bool, bool]:
    """Whether the current person may change a ``what`` that ``owner`` owns.

    A member who may not is told whose it is and who can. An admin acting on someone
    else's gets a confirmation box (keyed by ``key``) to tick first.

    Returns:
        ``(shown, enabled, override)``: show the buttons when ``shown``, enable them when
        ``enabled``, and pass ``override`` to the core call.
    """
    actor = current_actor()
    if not access.can_change(actor, owner):
        who = f"{owner} or an admin" if owner else "an admin"
        st.caption(
            f":material/lock: This {what} belongs to {owner_text(owner)}: only {who} can "
            f"{verbs} it."
        )
        return False, False, False
    if not access.needs_override(actor, owner):
        return True, True, False
    confirmed = st.checkbox(
        f"Act on {owner}'s {what} as an admin"
        if owner
        else f"Act on this {what} as an admin (it has no recorded owner)",
        key=key,
        help="Admins may change anyone's; it is recorded in the audit log.",
    )
    return True, confirmed, confirmed


# -- the audit log, for admins ------------------------------------------------------------------
def audit_log_panel(ws: Workspace) -> None:
    """An expander with the audit log, newest first, filterable. Admins only."""
    actor = current_actor()
    if not actor.is_admin:
        return
    with st.expander("Audit log", icon=":material/policy:"):
        records = audit.read(ws, limit=AUDIT_ROWS)
        if not records:
            st.caption(f"Nothing recorded yet. Kept in `{Path(ws.audit_path)}`.")
            return
        table = pd.DataFrame(
            {
                "Time": [r.get("time", "").replace("T", " ")[:19] for r in records],
                "Who": [r.get("actor", "") for r in records],
                "Role": [r.get("role", "") for r in records],
                "Action": [r.get("action", "") for r in records],
                "Target": [r.get("target", "") for r in records],
                "Owner": [r.get("owner") or "" for r in records],
                "Outcome": [
                    r.get("outcome", "") + (" (admin override)" if r.get("admin_override") else "")
                    for r in records
                ],
                "Detail": [r.get("reason") or r.get("error") or "" for r in records],
            }
        )
        who, what, text = st.columns([1, 1, 2])
        people = who.multiselect("Who", sorted(set(table["Who"])), key="audit_who")
        actions = what.multiselect("Action", sorted(set(table["Action"])), key="audit_action")
        search = text.text_input("Search", key="audit_search", placeholder="a run id, a name…")
        if people:
            table = table[table["Who"].isin(people)]
        if actions:
            table = table[table["Action"].isin(actions)]
        if search.strip():
            needle = search.strip().casefold()
            table = table[
                table.apply(lambda row: needle in " ".join(map(str, row)).casefold(), axis=1)
            ]
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(
            f"Newest first; the last {AUDIT_ROWS} entries. The whole log: `{ws.audit_path}` "
            "(one JSON object per line, append-only)."
        )
