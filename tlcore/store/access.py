"""Who may change what: the person acting, their role, and the one rule the studio applies.

The rule: an **admin** may change anything; a **member** only what they own (the runs they
started, the datasets they imported). Something with no recorded owner (made before owners
were recorded, or from the command line) is changed by admins only.

`LOCAL` is the actor of the command line and of the app on loopback without a login: the
person at the machine, an admin. What it makes has no owner.

An admin changing someone else's run or dataset must confirm it: the page asks, then passes
``override=True``; without it the core refuses. `audited` checks the rule and writes the
action, refused or done, to the audit log (`tlcore.store.audit`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tlcore.store import audit
from tlcore.store.workspace import Workspace

ADMIN, MEMBER = "admin", "member"
ROLES = (ADMIN, MEMBER)
LOCAL_NAME = "local"


class NotAllowedError(PermissionError):
    """The person acting may not do this (not the owner, or an admin who did not confirm)."""


@dataclass(frozen=True)
class Actor:
    """Someone acting in the studio.

    Attributes:
        name: the user name (an e-mail address with OpenID Connect).
        role: `ADMIN` or `MEMBER` (default member).
        authenticated: False only for `LOCAL`, who logged in as nobody.
    """

    name: str
    role: str = MEMBER
    authenticated: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}. Received: role={self.role!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"An actor needs a name. Received: name={self.name!r}")

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def owner(self) -> str | None:
        """What to record as the owner of what this actor makes (None for `LOCAL`)."""
        return self.name if self.authenticated else None


LOCAL = Actor(LOCAL_NAME, ADMIN, authenticated=False)


def same_name(a: str | None, b: str | None) -> bool:
    """Whether two user names are the same person's (case does not matter)."""
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def owns(actor: Actor, owner: str | None) -> bool:
    """Whether ``actor`` is the recorded ``owner`` (nobody owns an ownerless thing)."""
    return actor.authenticated and same_name(actor.name, owner)


def can_change(actor: Actor, owner: str | None) -> bool:
    """The rule: admins change anything, members only what they own."""
    return actor.is_admin or owns(actor, owner)


def needs_override(actor: Actor, owner: str | None) -> bool:
    """Whether ``actor`` may change it only as an admin acting on someone else's (confirm)."""
    return actor.authenticated and actor.is_admin and not owns(actor, owner)


def owner_label(owner: str | None) -> str:
    """How pages and messages name an owner."""
    return owner if owner else "nobody (made from the command line or before owners were kept)"


def refusal(actor: Actor, owner: str | None, verb: str, target: str) -> str:
    """The message for a member who may not ``verb`` ``target``: whose it is, who can."""
    if owner:
        return (
            f"You ({actor.name}, {actor.role}) cannot {verb} {target}: it belongs to {owner}. "
            f"Only {owner} or an admin can."
        )
    return (
        f"You ({actor.name}, {actor.role}) cannot {verb} {target}: it has no recorded owner, "
        "so only an admin can."
    )


@contextmanager
def audited(
    ws: Workspace,
    actor: Actor,
    action: str,
    target: str,
    owner: str | None,
    *,
    verb: str | None = None,
    override: bool = False,
) -> Iterator[None]:
    """Checks that ``actor`` may act on something ``owner`` owns, then audits the outcome.

    Use as ``with audited(ws, actor, "cancel", f"run {run_id}", record.owner): ...``; the
    body is the action. One audit line is written: refused, failed (the body raised) or done
    (with ``admin_override`` when an admin acted on someone else's).

    Args:
        ws: the workspace (its audit log).
        actor: who acts.
        action: the audit log's name for the action ("cancel", "resume", "delete_dataset").
        target: what it is done to ("run <id>", "dataset <name>").
        owner: the target's recorded owner, or None.
        verb: the action in words for messages (default ``action``).
        override: the admin confirmed acting on someone else's (default False).

    Raises:
        NotAllowedError: a member who is not the owner (audited as refused), or an admin
            acting on someone else's without ``override``.
    """
    verb = verb or action
    line = {
        "actor": actor.name,
        "role": actor.role,
        "action": action,
        "target": target,
        "owner": owner,
    }
    if not can_change(actor, owner):
        audit.append(ws, **line, outcome=audit.REFUSED, reason="not the owner")
        raise NotAllowedError(refusal(actor, owner, verb, target))
    admin_override = needs_override(actor, owner)
    if admin_override and not override:
        raise NotAllowedError(
            f"{target} belongs to {owner_label(owner)}. As an admin you can {verb} it, but "
            "confirm first (the page asks; in code pass override=True)."
        )
    try:
        yield
    except Exception as exc:
        audit.append(
            ws, **line, outcome=audit.FAILED, error=str(exc), admin_override=admin_override or None
        )
        raise
    audit.append(ws, **line, outcome=audit.DONE, admin_override=admin_override or None)
