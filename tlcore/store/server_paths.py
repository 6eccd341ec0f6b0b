"""Which paths on the server a browser user may read, and reading only regular files.

A path typed into a page (a folder to import, a folder to predict, a weights file) is
resolved (``os.path.realpath``: every link and ``..`` followed) and must then lie under
one of the folders this server shares, `ServerRoots`: ``$TLS_SERVER_ROOTS``
(``os.pathsep``-separated), by default the workspace's ``incoming/`` folder. Inside them a
link that leads out is refused, only regular files are read, and a file or an import may
not exceed the size caps. The command line, run by someone with a shell, passes no roots
and keeps full access; it still reads regular files only (`open_regular_file`), since a
named pipe or ``/dev/zero`` among images hangs any reader.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tlcore.store.workspace import Workspace

SERVER_ROOTS_ENV = "TLS_SERVER_ROOTS"
MAX_FILE_MB_ENV = "TLS_MAX_FILE_MB"
MAX_IMPORT_GB_ENV = "TLS_MAX_IMPORT_GB"
MAX_WEIGHTS_MB_ENV = "TLS_MAX_WEIGHTS_MB"
DEFAULT_MAX_FILE_MB = 100  # an uncompressed 24-megapixel TIFF is ~72 MB
DEFAULT_MAX_IMPORT_GB = 20  # one import or one batch prediction, all files together
DEFAULT_MAX_WEIGHTS_MB = 1024  # VGG19 with its top, Keras' largest here, is ~550 MB
MB = 1024**2
GB = 1024**3

# Why a file was not read (the ``reason`` of a dataset's skipped file or a prediction's error).
NOT_REGULAR = "not_a_regular_file"
OUTSIDE_ROOTS = "outside_server_roots"
TOO_LARGE = "too_large"
UNREADABLE = "unreadable"


class ServerPathError(ValueError):
    """A typed path was refused: outside the shared folders, missing, not a file, too big."""


class NotRegularFileError(OSError):
    """A named pipe, a device, a socket or a folder where a regular file was expected."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", str(path))
        self.kind = kind


@dataclass(frozen=True)
class Refusal:
    """Why one file was not read: a ``reason`` code and a sentence naming the file."""

    reason: str
    message: str


@dataclass(frozen=True)
class FileCheck:
    """A file about to be read: its size, or why it is refused (``refusal`` set)."""

    size: int = 0
    refusal: Refusal | None = None


def file_kind(mode: int) -> str:
    """What a file is, in words, from its ``st_mode``: 'a named pipe (FIFO)', 'a device', …"""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Opens ``path`` for reading in binary, refusing anything but a regular file.

    The type is checked before opening (so a device is never opened) and again on the open
    file (so a file swapped for a pipe in between is still refused); the open itself does not
    block, even on a pipe nobody writes to.

    Raises:
        NotRegularFileError: ``path`` is a pipe, a device, a socket or a folder.
        OSError: it does not exist (``FileNotFoundError``, also for a broken link) or cannot
            be opened.
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFileError(path, file_kind(before.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, file_kind(mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def check_file(
    path: str | os.PathLike,
    name: str,
    roots: ServerRoots | None = None,
    *,
    max_bytes: int | None = None,
    cap_setting: str = MAX_FILE_MB_ENV,
) -> FileCheck:
    """Whether a file found in a folder may be read, without opening it.

    Args:
        path: the file (a link is followed).
        name: how the user knows it (a path relative to the folder they gave).
        roots: the shared folders in confined mode: the file's real path must lie under one,
            and it may not exceed ``max_bytes``; default None (full access, any regular file).
        max_bytes: the size cap in confined mode; default ``roots.max_file_bytes``.
        cap_setting: the setting that cap comes from, for the message (default
            ``TLS_MAX_FILE_MB``).

    Returns:
        A `FileCheck`: its size, or the `Refusal` (pipe, device, socket, broken link, a link
        out of the shared folders, too large).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return FileCheck(refusal=Refusal(UNREADABLE, f"{name} is a broken link; it was not read."))
    except OSError as exc:
        return FileCheck(
            refusal=Refusal(UNREADABLE, f"{name} could not be read ({exc.strerror or exc}).")
        )
    if roots is not None and not roots.contains(path):
        return FileCheck(
            refusal=Refusal(
                OUTSIDE_ROOTS,
                f"{name} is a link to a file outside the folders this server shares; it was "
                "not read.",
            )
        )
    if not stat.S_ISREG(info.st_mode):
        kind = file_kind(info.st_mode)
        return FileCheck(
            refusal=Refusal(NOT_REGULAR, f"{name} is {kind}, not a regular file; it was not read.")
        )
    cap = max_bytes if max_bytes is not None else roots.max_file_bytes if roots else None
    if cap is not None and info.st_size > cap:
        return FileCheck(
            refusal=Refusal(
                TOO_LARGE,
                f"{name} is {_mb(info.st_size)}, above the {_mb(cap)} a file may have here "
                f"({cap_setting}); it was not read.",
            )
        )
    return FileCheck(size=info.st_size)


@dataclass(frozen=True)
class ServerRoots:
    """The folders on this server a browser user may read from, and the size caps.

    Make one with `ServerRoots.from_env`. Every check resolves links first, so a link inside
    a root that leads out of every root is refused like the path it leads to.

    Attributes:
        roots: the shared folders, resolved.
        max_file_bytes: the largest image file read (``$TLS_MAX_FILE_MB``, default 100 MB).
        max_total_bytes: the most one import or batch prediction reads in all
            (``$TLS_MAX_IMPORT_GB``, default 20 GB).
        max_weights_bytes: the largest weights file (``$TLS_MAX_WEIGHTS_MB``, default 1 GB).
    """

    roots: tuple[Path, ...]
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * MB
    max_total_bytes: int = DEFAULT_MAX_IMPORT_GB * GB
    max_weights_bytes: int = DEFAULT_MAX_WEIGHTS_MB * MB

    def __post_init__(self) -> None:
        resolved = tuple(Path(os.path.realpath(os.path.expanduser(r))) for r in self.roots)
        object.__setattr__(self, "roots", tuple(dict.fromkeys(resolved)))

    @classmethod
    def from_env(cls, ws: Workspace, environ: Mapping[str, str] | None = None) -> ServerRoots:
        """The shared folders and caps this server is configured with.

        Args:
            ws: the workspace; its ``incoming/`` folder is the root when
                ``$TLS_SERVER_ROOTS`` is unset or empty.
            environ: where to read the settings; default ``os.environ``.

        Raises:
            ServerPathError: a cap is not a positive number (naming the variable and value).
        """
        env = os.environ if environ is None else environ
        listed = [p.strip() for p in env.get(SERVER_ROOTS_ENV, "").split(os.pathsep)]
        roots = tuple(p for p in listed if p) or (str(ws.incoming_dir),)
        return cls(
            roots=tuple(Path(p) for p in roots),
            max_file_bytes=_cap(env, MAX_FILE_MB_ENV, DEFAULT_MAX_FILE_MB, MB),
            max_total_bytes=_cap(env, MAX_IMPORT_GB_ENV, DEFAULT_MAX_IMPORT_GB, GB),
            max_weights_bytes=_cap(env, MAX_WEIGHTS_MB_ENV, DEFAULT_MAX_WEIGHTS_MB, MB),
        )

    def including(self, *folders: str | os.PathLike) -> ServerRoots:
        """These roots and ``folders`` (e.g. the workspace's own folder of uploaded weights)."""
        return replace(self, roots=(*self.roots, *(Path(f) for f in folders)))

    def describe(self) -> str:
        """The shared folders, for a caption: ``/srv/incoming, /data/photos``."""
        return ", ".join(str(r) for r in self.roots)

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path``, once every link in it is followed, lies under one of the roots."""
        real = os.path.realpath(path)
        return any(_is_within(real, str(root)) for root in self.roots)

    def confine(self, typed: str | os.PathLike, *, what: str = "the images") -> Path:
        """The real path of a path a user typed, if it lies under one of the roots.

        A relative path is taken inside the first root. The refusal is the same whether the
        path exists or not, so it tells nothing about the rest of the machine.

        Args:
            typed: the path as typed.
            what: what to copy into a shared folder, for the message (default 'the images').

        Raises:
            ServerPathError: outside every root (after following links and ``..``).
        """
        text = str(typed).strip()
        candidate = os.path.expanduser(text)
        if not os.path.isabs(candidate) and self.roots:
            candidate = os.path.join(self.roots[0], candidate)
        real = os.path.realpath(candidate)
        if text and any(_is_within(real, str(root)) for root in self.roots):
            return Path(real)
        raise ServerPathError(
            f"{text or 'An empty path'} is outside the folders this server shares "
            f"({self.describe() or 'none'}). Copy {what} into "
            f"{self.roots[0] if self.roots else 'a shared folder'}, or ask the administrator "
            f"to add the folder to {SERVER_ROOTS_ENV}."
        )

    def confine_file(
        self,
        typed: str | os.PathLike,
        *,
        max_bytes: int,
        what: str,
        cap_setting: str = MAX_WEIGHTS_MB_ENV,
    ) -> Path:
        """`confine`, then the path must be an existing regular file of at most ``max_bytes``.

        Args:
            typed: the path as typed.
            max_bytes: the largest file accepted.
            what: what to copy into a shared folder, for the messages ('the weights file').
            cap_setting: the setting ``max_bytes`` comes from (default ``TLS_MAX_WEIGHTS_MB``).

        Raises:
            ServerPathError: outside the roots, missing, not a regular file, or too large.
        """
        path = self.confine(typed, what=what)
        check = check_file(
            path, str(typed).strip(), self, max_bytes=max_bytes, cap_setting=cap_setting
        )
        if check.refusal is None:
            return path
        if not path.exists():
            raise ServerPathError(
                f"The file {str(typed).strip()} does not exist on this server. Check the path, "
                f"or copy {what} into {self.roots[0]}."
            )
        raise ServerPathError(check.refusal.message)

    def check_total(self, total_bytes: int, label: str) -> None:
        """Refuses an import or batch whose files add up to more than ``max_total_bytes``.

        Raises:
            ServerPathError: naming the folder, the size and the cap.
        """
        if total_bytes > self.max_total_bytes:
            raise ServerPathError(
                f"{label} holds more than {_mb(self.max_total_bytes)} of files, above what one "
                f"import or batch may read here ({MAX_IMPORT_GB_ENV}); nothing was read. Pick a "
                "smaller folder, or split it."
            )


def _is_within(real: str, root: str) -> bool:
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:  # different drives (Windows) or a relative path
        return False


def _cap(env: Mapping[str, str], name: str, default: float, unit: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return int(default * unit)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ServerPathError(f"{name} must be a positive number. Received: {name}={raw!r}")
    return int(value * unit)


def _mb(size: int) -> str:
    if size >= GB:
        return f"{size / GB:.1f} GB"
    return f"{size / MB:.1f} MB" if size >= MB / 10 else f"{size:,} bytes"
