"""Failed logins: counting them, locking a name out, and the file that keeps the counts.

Failed logins are counted per name and client, and per client, in
``<workspace>/login-attempts.json`` (under a file lock, so every server process and session
shares them): after `MAX_FAILURES` the name is locked out from that client for
`BASE_LOCK_S`, doubling with each further failure up to `MAX_LOCK_S`; a client is locked out
whatever the name after `MAX_CLIENT_FAILURES`; `RESET_AFTER_S` without a failure forgets
them. `tlcore.store.accounts.authenticate` consults and feeds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tlcore.fileio import atomic_write_json
from tlcore.store.workspace import Workspace

MAX_FAILURES = 5  # per name and client, then a lock-out
MAX_CLIENT_FAILURES = 20  # per client, whatever the names tried
BASE_LOCK_S = 30.0
MAX_LOCK_S = 15 * 60.0
RESET_AFTER_S = 3600.0


class LoginLimiter:
    """Counts failed logins per (name, client) and per client in a JSON file, shared by every
    process (under a file lock). See the module for the policy.

    Args:
        path: the file (`Workspace.login_attempts_path`).
        clock: the time in seconds (default ``time.time``; tests pass their own).
    """

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock

    def locked_for(self, name: str, client: str) -> float:
        """Seconds until ``name`` may try again from ``client`` (0: now)."""
        now = self.clock()
        entries = self._read()
        waits = [
            float(entries.get(key, {}).get("locked_until", 0.0)) - now
            for key in self._keys(name, client)
        ]
        return max(0.0, *waits)

    def failed(self, name: str, client: str) -> float:
        """Records a failed attempt; returns the lock-out it starts in seconds (0: none)."""
        now = self.clock()
        with self._locked() as entries:
            longest = 0.0
            for key, limit in zip(
                self._keys(name, client), (MAX_FAILURES, MAX_CLIENT_FAILURES), strict=True
            ):
                entry = entries.get(key, {})
                count = int(entry.get("failures", 0)) + 1
                locked_until = float(entry.get("locked_until", 0.0))
                if count >= limit:
                    lock = min(BASE_LOCK_S * 2 ** min(count - limit, 20), MAX_LOCK_S)
                    locked_until = max(locked_until, now + lock)
                entries[key] = {"failures": count, "last": now, "locked_until": locked_until}
                longest = max(longest, locked_until - now)
        return longest

    def succeeded(self, name: str, client: str) -> None:
        """Forgets the failures of ``name`` from ``client`` (not the client's own count)."""
        with self._locked() as entries:
            entries.pop(self._keys(name, client)[0], None)

    def failures(self, name: str, client: str) -> int:
        """Failed attempts of ``name`` from ``client`` that still count."""
        return int(self._read().get(self._keys(name, client)[0], {}).get("failures", 0))

    @staticmethod
    def _keys(name: str, client: str) -> tuple[str, str]:
        return f"{name.strip().casefold()}|{client}", f"*|{client}"

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return self._fresh(data if isinstance(data, dict) else {})

    def _fresh(self, entries: dict) -> dict[str, dict]:
        now = self.clock()
        return {
            k: v
            for k, v in entries.items()
            if isinstance(v, dict)
            and (now - float(v.get("last", 0.0)) < RESET_AFTER_S or v.get("locked_until", 0) > now)
        }

    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict]]:
        """The entries, read under the file lock and written back when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = self._read()
                yield entries
                atomic_write_json(self.path, entries)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def limiter_for(ws: Workspace, *, clock: Callable[[], float] = time.time) -> LoginLimiter:
    """The workspace's login limiter."""
    return LoginLimiter(ws.login_attempts_path, clock=clock)
