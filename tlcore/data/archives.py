"""Checked zip extraction: an uploaded archive is hostile until every member has been checked.

`safe_extract_zip` refuses the *whole* archive if any member could escape the destination
(``..``, absolute paths, drive letters, backslash tricks), is a link or device, is
password-protected, or if the archive could exhaust the disk (too many members, too large a
declared total, an extreme compression ratio of one member or of the archive as a whole).
The total cap is ``$TLS_MAX_EXTRACT_GB`` (default 8) and is also checked against the free
disk space, all before the first byte is written. Declared sizes can lie, so the bytes actually
decompressed are counted while streaming and extraction stops at the first byte over.

Everything is extracted into a temporary folder beside the destination and renamed into
place only when complete, so a refused or failed extraction leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tlcore.fileio import StorageError

CHUNK_BYTES = 1024 * 1024
MAX_EXTRACT_GB_ENV = "TLS_MAX_EXTRACT_GB"
DEFAULT_MAX_EXTRACT_GB = 8.0
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ZIP_ENCRYPTED_FLAG = 0x1

Progress = Callable[[float, str], None]


class ArchiveError(ValueError):
    """An archive was refused or could not be read; the message names the entry and the limit.

    Attributes:
        entry: the member name that caused the refusal, or ``None`` for the whole archive.
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


def max_extract_bytes() -> int:
    """The most an archive may expand to: ``$TLS_MAX_EXTRACT_GB`` GiB (default 8).

    Raises:
        ArchiveError: the variable is not a positive number; the message quotes it.
    """
    raw = os.environ.get(MAX_EXTRACT_GB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_EXTRACT_GB * 1024**3)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ArchiveError(
            f"{MAX_EXTRACT_GB_ENV} must be a positive number of gigabytes. "
            f"Received: {MAX_EXTRACT_GB_ENV}={raw!r}"
        )
    return max(1, int(value * 1024**3))


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may contain before it is refused as a likely zip bomb.

    Attributes:
        max_members: entries in the archive, directories included (default 100,000).
        max_total_bytes: sum of the extracted files' sizes (default ``$TLS_MAX_EXTRACT_GB``
            GiB, 8 when unset).
        max_member_bytes: size of any one extracted file (default 1 GiB).
        max_ratio: uncompressed / compressed size of one member, and of all the members
            together (default 200); deflate reaches ~1000 only on degenerate data, while
            photos compress barely at all.
        ratio_min_bytes: the ratio is only checked for members, and archives, at least this
            large uncompressed (default 1 MiB), so a small blank image that compresses well
            is not refused; a bomb split into many small members is caught by the
            archive-wide ratio.
    """

    max_members: int = 100_000
    max_total_bytes: int = field(default_factory=max_extract_bytes)
    max_member_bytes: int = 1024**3
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1024**2

    def __post_init__(self) -> None:
        for field_name in ("max_members", "max_total_bytes", "max_member_bytes", "max_ratio"):
            value = getattr(self, field_name)
            if value <= 0:
                raise ValueError(f"{field_name} must be positive. Received: {field_name}={value}")


@dataclass(frozen=True)
class _Member:
    """A checked archive entry to extract: its zip record and safe relative path."""

    info: zipfile.ZipInfo
    parts: tuple[str, ...]


def safe_extract_zip(
    zip_path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    *,
    limits: ArchiveLimits | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Extracts a zip archive after checking every member, or refuses the whole archive.

    Hidden files, ``__MACOSX/`` folders, ``.DS_Store``, ``Thumbs.db`` and ``desktop.ini``
    are checked like every member but not extracted. Backslashes in member names are read
    as folder separators (old Windows tools write them) and then checked like slashes.

    Args:
        zip_path: the archive.
        dest_dir: the folder to create; it must not exist yet, or be empty.
        limits: the size, count and ratio limits; default `ArchiveLimits()`, read at each
            call (so ``$TLS_MAX_EXTRACT_GB`` applies without a restart).
        progress: called as ``progress(fraction, message)`` while extracting.

    Returns:
        The extracted files' paths under ``dest_dir``, in archive order.

    Raises:
        ArchiveError: the file is not a zip, is empty, is corrupt, or a member breaks a
            rule or limit; nothing is left on disk.
        FileExistsError: ``dest_dir`` exists and is not empty.
        tlcore.fileio.StorageError: the disk filled up while extracting; nothing is left.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    limits = ArchiveLimits() if limits is None else limits
    _check_destination(dest_dir)
    with _open_zip(zip_path) as archive:
        members, folders = _check_members(archive, zip_path, limits)
        _check_disk_space(members, dest_dir.parent, zip_path)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{dest_dir.name}.extracting-", dir=dest_dir.parent)
        )
        try:
            _make_folders(folders, staging, zip_path)
            relative = _extract_members(archive, members, staging, limits, zip_path, progress)
            _move_into_place(staging, dest_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return [dest_dir.joinpath(*parts) for parts in relative]


def is_junk_path(parts: tuple[str, ...] | list[str]) -> bool:
    """True for files a user never meant as content: hidden files, macOS and Windows litter."""
    return any(part.startswith(".") or part in JUNK_NAMES for part in parts)


def _check_destination(dest_dir: Path) -> None:
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise FileExistsError(
            f"Cannot extract into {dest_dir}: it already exists and is not empty."
        )
    dest_dir.parent.mkdir(parents=True, exist_ok=True)


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise ArchiveError(f"{zip_path} does not exist or is not a file.")
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(
            f"{zip_path.name} is not a zip archive (or it is damaged): {exc}. "
            "Create it with your system's 'Compress' / 'Send to > Compressed folder'."
        ) from exc
    except OSError as exc:
        raise ArchiveError(f"Could not read {zip_path}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        # The entry says its name is UTF-8 (flag 0x800) and it is not: zipfile gives up on
        # the whole archive with a bare codec error. Name the entry, its bad bytes escaped.
        raw = exc.object if isinstance(exc.object, bytes) else b""
        shown = raw.decode("utf-8", "backslashreplace")
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry '{shown}' has a name marked as UTF-8 "
            "that is not valid UTF-8 (a damaged archive, or one written by a faulty tool). "
            "Rename the file and zip the folder again. Nothing was extracted.",
            entry=shown,
        ) from exc


def _check_members(
    archive: zipfile.ZipFile, zip_path: Path, limits: ArchiveLimits
) -> tuple[list[_Member], list[tuple[str, ...]]]:
    """Checks every entry from the central directory, before anything is written.

    Returns the files to extract and the folder entries' paths: a folder stored empty (an
    empty class) is created too, so a zip reads exactly like the folder it was made from.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveError(
            f"{zip_path.name} has {len(infos):,} entries, more than the limit of "
            f"{limits.max_members:,}. Split it into smaller archives."
        )
    members: list[_Member] = []
    folders: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    declared_total = compressed_total = 0
    for info in infos:
        parts = _safe_parts(info.filename, zip_path)
        _check_entry_type(info, zip_path)
        if not parts or is_junk_path(parts):
            continue
        if info.is_dir():
            folders.append(parts)
            continue
        if parts in seen:
            raise ArchiveError(
                f"{zip_path.name} contains {info.filename!r} twice; the archive is refused "
                "because one copy would silently replace the other.",
                entry=info.filename,
            )
        seen.add(parts)
        _check_member_size(info, zip_path, limits)
        declared_total += info.file_size
        compressed_total += info.compress_size
        members.append(_Member(info, parts))
    if declared_total > limits.max_total_bytes:
        raise ArchiveError(
            f"{zip_path.name} would expand to {_fmt_bytes(declared_total)}, more than the "
            f"limit of {_fmt_bytes(limits.max_total_bytes)} ({MAX_EXTRACT_GB_ENV}). Import a "
            "smaller archive, or extract it yourself and import the folder."
        )
    ratio = declared_total / max(compressed_total, 1)
    if declared_total >= limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise ArchiveError(
            f"{zip_path.name} was refused: its {len(members):,} files would expand "
            f"{ratio:,.0f} times ({_fmt_bytes(compressed_total)} to "
            f"{_fmt_bytes(declared_total)}), more than the limit of {limits.max_ratio:,.0f}; "
            "this is how zip bombs look. Nothing was extracted. If the archive is genuine, "
            "extract it yourself and import the folder."
        )
    if not members:
        raise ArchiveError(
            f"The zip {zip_path.name} is empty: it contains no files"
            + (" apart from hidden or system files." if infos else ".")
        )
    return members, folders


def _safe_parts(name: str, zip_path: Path) -> tuple[str, ...]:
    """The member's path as safe relative components, or ArchiveError naming the entry."""

    def refuse(why: str) -> ArchiveError:
        return ArchiveError(
            f"{zip_path.name} was refused: the entry {name!r} {why}. Nothing was extracted.",
            entry=name,
        )

    if "\x00" in name:
        raise refuse("contains a NUL character")
    normalised = name.replace("\\", "/")
    if normalised.startswith("/"):
        raise refuse("has an absolute path")
    if _DRIVE_LETTER.match(normalised):
        raise refuse("starts with a drive letter")
    parts = tuple(p for p in PurePosixPath(normalised).parts if p not in ("", "."))
    if ".." in parts:
        raise refuse("points outside the archive's folder ('..')")
    if any(_DRIVE_LETTER.match(p) for p in parts):
        raise refuse("contains a drive letter")
    return parts


def _check_entry_type(info: zipfile.ZipInfo, zip_path: Path) -> None:
    mode = info.external_attr >> 16  # Unix mode bits, when the archiver stored them
    file_type = stat.S_IFMT(mode)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a special file (device or pipe)"
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry {info.filename!r} is {what}. "
            "Archives with links are not accepted; zip the files themselves.",
            entry=info.filename,
        )
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
        raise ArchiveError(
            f"{zip_path.name} is password-protected (entry {info.filename!r}). "
            "Create the zip without a password.",
            entry=info.filename,
        )


def _check_member_size(info: zipfile.ZipInfo, zip_path: Path, limits: ArchiveLimits) -> None:
    if info.file_size > limits.max_member_bytes:
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry {info.filename!r} would expand to "
            f"{_fmt_bytes(info.file_size)}, more than the per-file limit of "
            f"{_fmt_bytes(limits.max_member_bytes)}.",
            entry=info.filename,
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry {info.filename!r} would expand "
            f"{ratio:,.0f} times ({_fmt_bytes(info.compress_size)} to "
            f"{_fmt_bytes(info.file_size)}), more than the limit of {limits.max_ratio:,.0f}; "
            "this is how zip bombs look. If the archive is genuine, extract it yourself "
            "and import the folder.",
            entry=info.filename,
        )


def _check_disk_space(members: list[_Member], folder: Path, zip_path: Path) -> None:
    needed = sum(m.info.file_size for m in members)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell; the write itself will report a full disk
    if needed > free:
        raise ArchiveError(
            f"Not enough disk space to extract {zip_path.name}: it needs "
            f"{_fmt_bytes(needed)} and {_fmt_bytes(free)} is free. Free some space first."
        )


def _make_folders(folders: list[tuple[str, ...]], staging: Path, zip_path: Path) -> None:
    for parts in folders:
        target = staging.joinpath(*parts)
        name = "/".join(parts) + "/"
        _ensure_inside(target, staging, name, zip_path)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(
                f"{zip_path.name} was refused: the folder entry {name!r} could not be "
                f"created ({exc.strerror or exc}).",
                entry=name,
            ) from exc


def _extract_members(
    archive: zipfile.ZipFile,
    members: list[_Member],
    staging: Path,
    limits: ArchiveLimits,
    zip_path: Path,
    progress: Progress | None,
) -> list[tuple[str, ...]]:
    written_total = 0
    for index, member in enumerate(members):
        target = staging.joinpath(*member.parts)
        _ensure_inside(target, staging, member.info.filename, zip_path)
        budget = min(member.info.file_size, limits.max_total_bytes - written_total)
        written_total += _stream_member(archive, member.info, target, budget, zip_path)
        if progress is not None:
            progress((index + 1) / len(members), f"Extracted {member.info.filename}")
    return [m.parts for m in members]


def _ensure_inside(target: Path, root: Path, name: str, zip_path: Path) -> None:
    # Belt and braces: _safe_parts already makes escaping impossible.
    if not target.resolve().is_relative_to(root.resolve()):
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry {name!r} resolves outside the "
            "destination. Nothing was extracted.",
            entry=name,
        )


def _stream_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, zip_path: Path
) -> int:
    """Copies one member in chunks, stopping at the first byte beyond ``budget``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(info) as src, open(target, "xb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                written += len(chunk)
                if written > budget:
                    raise ArchiveError(
                        f"{zip_path.name} was refused: the entry {info.filename!r} holds more "
                        f"data than it declares ({_fmt_bytes(info.file_size)}) or than the "
                        "size limits allow; the archive was crafted to hide its real size.",
                        entry=info.filename,
                    )
                dst.write(chunk)
        return written
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        # zipfile stops at the declared size and then fails the CRC check: a lying size ends here.
        raise ArchiveError(
            f"{zip_path.name} is corrupt: the entry {info.filename!r} could not be "
            f"extracted ({exc}); its content does not match its declared size or checksum.",
            entry=info.filename,
        ) from exc
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise ArchiveError(
            f"{zip_path.name} was refused: the entry {info.filename!r} clashes with another "
            "entry of the same name (a file and a folder, or names differing only by case).",
            entry=info.filename,
        ) from exc
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StorageError(
            exc.errno,
            f"The disk is full: extracting {zip_path.name} stopped at the entry "
            f"{info.filename!r} and was undone (nothing was kept). Free some space and "
            "import again.",
        ) from exc


def _move_into_place(staging: Path, dest_dir: Path) -> None:
    if dest_dir.exists():
        dest_dir.rmdir()  # empty, checked by _check_destination
    os.replace(staging, dest_dir)


def _fmt_bytes(n: int) -> str:
    units = ("bytes", "KB", "MB", "GB", "TB")
    size, unit = float(n), 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    return f"{n:,} bytes" if unit == 0 else f"{size:,.1f} {units[unit]}"
