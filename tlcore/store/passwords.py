"""Password hashes: scrypt hashing, constant-time checking and reading the hash line.

A hash is one line, ``scrypt$N$r$p$salt$hash`` (base64 salt and hash), made by
`hash_password` (``python -m tlcore hash-password``) and pasted into the login settings
(`tlcore.store.accounts`). `verify_password` compares in constant time, and
`verify_nothing` spends the time of one check, so an unknown name answers as slowly as a
known one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

HASH_SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MB and ~50 ms per check
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Hashes a password with scrypt and a fresh random salt.

    Returns:
        One line, ``scrypt$N$r$p$<salt>$<hash>`` (base64), to paste into the settings.

    Raises:
        ValueError: the password is shorter than `MIN_PASSWORD_CHARS` (8) characters.
    """
    _check_password(password)
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(
            f"A password needs at least {MIN_PASSWORD_CHARS} characters. "
            f"Received: {len(password)} characters."
        )
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return "$".join((HASH_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash from `hash_password` (compared in constant time).

    Raises:
        ValueError: ``stored`` is not such a hash.
    """
    n, r, p, salt, digest = parse_password_hash(stored)
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
        return False
    candidate = _scrypt(password, salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest)


def parse_password_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """Splits ``scrypt$N$r$p$salt$hash`` into its parts, checking each.

    Raises:
        ValueError: it is not such a hash, or its cost parameters are out of range.
    """
    expected = "expected scrypt$N$r$p$salt$hash, as `python -m tlcore hash-password` prints"
    parts = stored.strip().split("$") if isinstance(stored, str) else []
    if len(parts) != 6 or parts[0] != HASH_SCHEME:
        raise ValueError(f"This is not a password hash the studio made ({expected}).")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"This password hash is damaged ({expected}).") from None
    if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError(
            f"This password hash has cost parameters out of range. Received: N={n}, r={r}, p={p}."
        )
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError(f"This password hash is too short to be real ({expected}).")
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=128 * n * r * p + 128 * r * 1024 + 2**20,
        dklen=length,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_password(password: Any) -> None:
    if not isinstance(password, str) or not password:
        raise ValueError("The password is empty.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"A password has at most {MAX_PASSWORD_CHARS} characters.")


_dummy_hash: str | None = None


def verify_nothing(password: str) -> None:
    """Spends the time of one check, so an unknown name answers as slowly as a known one."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(password, _dummy_hash)
