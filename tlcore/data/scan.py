"""Finding the files of an import: what it works on, class and split layouts, and which
files lie outside any class.

Only regular files become candidates: a named pipe, a device, a socket or a broken link is
skipped with its reason before anything is opened (reading one would hang or never end).
In confined mode (`tlcore.store.server_paths.ServerRoots`, the web UI) a link whose target
lies outside the shared folders is skipped too, as is a file above the size cap, and a
source holding more than the total cap is refused before any file is read.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.data import archives, images
from tlcore.data.catalog import SPLIT_ALIASES, SPLITS, DatasetError
from tlcore.store import server_paths
from tlcore.store.server_paths import ServerPathError, ServerRoots

# ----------------------------------------------------------------------------------------
# Internals: what an import works on


@dataclass(frozen=True)
class _Candidate:
    """A file that may become an item: from disk (``path``) or uploaded (``data``)."""

    rel_path: str  # relative to the source root, as the report shows it
    class_name: str
    given_split: str | None
    path: Path | None
    data: bytes | None = None


@dataclass(frozen=True)
class _Scan:
    """What the layout of a source says, before any file is opened."""

    candidates: list[_Candidate]
    skipped: list[dict[str, Any]]
    warnings: list[str]
    class_names: set[str]  # every class folder seen, even if it turns out to be empty
    given_splits: tuple[str, ...]


@dataclass(frozen=True)
class _Probed:
    candidate: _Candidate
    sha256: str = ""
    info: images.ImageInfo | None = None
    error: images.ImageError | None = None


@dataclass(frozen=True)
class _Kept:
    """An image that passed every check, with its final split."""

    candidate: _Candidate
    sha256: str
    info: images.ImageInfo
    split: str


@dataclass
class _Walk:
    """What one scan may read: every file checked before it becomes a candidate.

    ``roots`` None is full access (the CLI): any regular file, links followed.
    """

    label: str
    roots: ServerRoots | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int = 0

    def folders(self, folder: Path, root: Path) -> list[Path]:
        """The visible sub-folders of ``folder``; in confined mode, links out are refused."""
        found = []
        for entry in (e for e in _visible_entries(folder) if e.is_dir()):
            if self.roots is None or self.roots.contains(entry):
                found.append(entry)
            else:
                self.skipped.append(_refused_folder(entry, root))
        return found

    def files(self, folder: Path, root: Path, class_name: str) -> Iterator[Path]:
        """The readable files at any depth of a class folder; the others go to ``skipped``.

        Raises:
            DatasetError: in confined mode, the files add up to more than the total cap.
        """
        for path in _walk_files(folder):
            name = _rel(path, root)
            check = server_paths.check_file(path, name, self.roots)
            if check.refusal is not None:
                self.skipped.append(
                    {
                        "path": name,
                        "class": class_name,
                        "reason": check.refusal.reason,
                        "message": check.refusal.message,
                    }
                )
                continue
            self.total_bytes += check.size
            if self.roots is not None:
                try:
                    self.roots.check_total(self.total_bytes, self.label)
                except ServerPathError as exc:
                    raise DatasetError(str(exc)) from None
            yield path


# ----------------------------------------------------------------------------------------
# Internals: finding the files


def _scan_folder(root: Path, label: str, roots: ServerRoots | None = None) -> _Scan:
    """The candidates of a folder; ``roots`` confines what is read (default: full access)."""
    walk = _Walk(label, roots)
    root = _unwrap(root, walk)
    subdirs = walk.folders(root, root)
    split_dirs = _split_folders(subdirs, label)
    if "train" in split_dirs:
        return _scan_split_layout(root, subdirs, split_dirs, walk)
    return _scan_class_layout(root, subdirs, walk)


def _unwrap(root: Path, walk: _Walk) -> Path:
    """Steps into a single wrapping folder (``pets/cats/*.jpg`` -> ``pets``), repeatedly.

    A single folder holding only files is a lone class, not a wrapper: it is kept, so that
    the error can say there is only one class. A link out of the shared folders is not
    stepped into (it is refused as a class folder).
    """
    while True:
        entries = _visible_entries(root)
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        inner = entries[0]
        if walk.roots is not None and not walk.roots.contains(inner):
            return root
        if not any(e.is_dir() for e in _visible_entries(inner)):
            return root
        root = inner


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(e for e in folder.iterdir() if not archives.is_junk_path((e.name,)))


def _split_folders(subdirs: list[Path], label: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in subdirs:
        split = SPLIT_ALIASES.get(folder.name.strip().lower())
        if split is None:
            continue
        if split in found:
            raise DatasetError(
                f"{label} has both {found[split].name!r} and {folder.name!r} folders, which "
                f"both mean the {split} split. Merge them into one."
            )
        found[split] = folder
    return found


def _scan_class_layout(root: Path, subdirs: list[Path], walk: _Walk) -> _Scan:
    if not subdirs:
        raise DatasetError(
            f"No class folders found in {walk.label}: put each class's images in its own "
            "folder, e.g. cats/*.jpg and dogs/*.jpg (optionally inside train/, val/ and test/)."
        )
    candidates, class_names = [], set()
    for folder in subdirs:
        class_name = _class_name_from_folder(folder.name)
        class_names.add(class_name)
        candidates += [
            _Candidate(_rel(path, root), class_name, None, path)
            for path in walk.files(folder, root, class_name)
        ]
    skipped = walk.skipped + [_outside_class(path, root) for path in _files_directly_in(root)]
    return _Scan(candidates, skipped, [], class_names, given_splits=())


def _scan_split_layout(
    root: Path, subdirs: list[Path], split_dirs: dict[str, Path], walk: _Walk
) -> _Scan:
    label = walk.label
    candidates, class_names, skipped, warnings = [], set(), [], []
    for split, split_dir in split_dirs.items():
        for folder in walk.folders(split_dir, root):
            class_name = _class_name_from_folder(folder.name)
            class_names.add(class_name)
            candidates += [
                _Candidate(_rel(path, root), class_name, split, path)
                for path in walk.files(folder, root, class_name)
            ]
        skipped += [_outside_class(path, root) for path in _files_directly_in(split_dir)]
    skipped = walk.skipped + skipped
    skipped += [_outside_class(path, root) for path in _files_directly_in(root)]
    ignored = [d.name for d in subdirs if d not in split_dirs.values()]
    if ignored:
        warnings.append(
            f"Ignored the folder(s) {', '.join(map(repr, ignored))} next to the split folders "
            f"in {label}: only train, val and test are read."
        )
    given = tuple(s for s in SPLITS if s in split_dirs)
    return _Scan(candidates, skipped, warnings, class_names, given_splits=given)


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not archives.is_junk_path((d,)))
        for filename in sorted(filenames):
            if not archives.is_junk_path((filename,)):
                yield Path(dirpath) / filename


def _files_directly_in(folder: Path) -> list[Path]:
    return [e for e in _visible_entries(folder) if e.is_file()]


def _refused_folder(folder: Path, root: Path) -> dict[str, Any]:
    name = _rel(folder, root)
    return {
        "path": f"{name}/",
        "class": None,
        "reason": server_paths.OUTSIDE_ROOTS,
        "message": f"{name} is a link to a folder outside the folders this server shares; "
        "nothing in it was read.",
    }


def _outside_class(path: Path, root: Path) -> dict[str, Any]:
    return {
        "path": _rel(path, root),
        "class": None,
        "reason": "outside_class_folder",
        "message": f"{_rel(path, root)} is not inside a class folder, so it has no label.",
    }


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _class_name_from_folder(folder_name: str) -> str:
    # macOS writes decomposed Unicode (NFD) names: "é" as "e" + accent. Compose them, so the
    # same class typed on two systems is one class.
    return unicodedata.normalize("NFC", folder_name).strip()


def _check_class_name(raw: str) -> str:
    class_name = unicodedata.normalize("NFC", str(raw)).strip()
    if not class_name:
        raise DatasetError("A class has no name. Name every class.")
    if "/" in class_name or "\\" in class_name or class_name in (".", ".."):
        raise DatasetError(
            f"The class name {class_name!r} contains a slash; use letters, digits and spaces."
        )
    if any(unicodedata.category(ch) == "Cc" for ch in class_name):
        raise DatasetError(f"The class name {class_name!r} contains control characters.")
    return class_name
