"""Dataset versions: excluding images, moving them to another class or adding new ones makes
a new version; the one it came from stays as it was.

A dataset folder is never modified (every run records the id it trained on and may be
evaluated on it again), so a change is written as a new dataset folder with its own content
hash and id. Its manifest names the version it came from (``parent``), the first version's id
(``lineage``, shared by all), its number (``version``) and what changed (``changes``). The
images are hard links to the parent's files (no copy, and deleting the parent loses none of
them), falling back to a copy across file systems; index-mode datasets keep pointing at the
original files. Versions of one dataset share its name: the name opens the newest version, an
id any version.

Images keep their split when they change class, so a run of an earlier version never saw the
test images of a later one; added images are split with the dataset's own fractions, decided
by their content hash, so the same photo always lands in the same split.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlcore.data import fingerprints, images
from tlcore.data.catalog import (
    ID_HASH_CHARS,
    IMAGES_DIR,
    ITEMS_FILE,
    MIN_CLASSES,
    Dataset,
    DatasetError,
    DatasetItem,
    DatasetSummary,
    ImportOptions,
    _find_by_content_hash,
    _publish_folder,
    _slugify,
    _Source,
    list_datasets,
    load_dataset,
)
from tlcore.data.checks import _content_hash
from tlcore.data.dataset_report import _build_manifest, _build_report
from tlcore.data.scan import _Candidate, _Kept
from tlcore.data.sources import (
    _class_folders,
    _item_record,
    _staging_dir,
    _storage_error,
    _unique_file_name,
)
from tlcore.fileio import atomic_write_bytes
from tlcore.store.access import LOCAL, Actor, audited
from tlcore.store.workspace import Workspace

MAX_ADDED_BYTES = 50 * 1024 * 1024  # one photo added from the browser


@dataclass(frozen=True)
class NewImage:
    """An image to add: its file name, bytes, class, and split (None: chosen by its hash)."""

    name: str
    data: bytes
    class_name: str
    split: str | None = None


@dataclass(frozen=True)
class VersionChanges:
    """What one version changed, as ``rel_path`` values (see `DatasetItem.rel_path`)."""

    excluded: tuple[str, ...] = ()
    moved: tuple[tuple[str, str], ...] = ()  # (path, new class)
    added: tuple[NewImage, ...] = ()
    note: str = ""

    @property
    def is_empty(self) -> bool:
        return not (self.excluded or self.moved or self.added)


def versions(ws: Workspace, name_or_id: str) -> list[DatasetSummary]:
    """Every readable version of a dataset (given by name or by any version's id), oldest
    first."""
    return _lineage(ws, load_dataset(ws, name_or_id).lineage)


def _lineage(ws: Workspace, lineage: str) -> list[DatasetSummary]:
    found = [s for s in list_datasets(ws) if not s.is_broken and s.lineage == lineage]
    return sorted(found, key=lambda s: (s.version, s.created_at))


def change_summary(manifest: Mapping[str, Any]) -> str:
    """Like "3 moved, 2 excluded, 4 added" ("imported" for a first version)."""
    changes = manifest.get("changes")
    if not isinstance(changes, dict):
        return "imported"
    parts = [
        f"{len(changes.get(key) or [])} {key}"
        for key in ("moved", "excluded", "added")
        if changes.get(key)
    ]
    text = ", ".join(parts) or "no change"
    note = manifest.get("change_note")
    return f"{text} — {note}" if note else text


def make_version(
    ws: Workspace,
    name_or_id: str,
    changes: VersionChanges,
    *,
    actor: Actor = LOCAL,
    override: bool = False,
) -> Dataset:
    """Writes a new version of a dataset with ``changes`` applied.

    Args:
        ws: the workspace.
        name_or_id: the version changed (a name means its newest version).
        changes: what to exclude, move and add.
        actor: who makes it (recorded as the new version's owner; audited). As the new
            version takes over the dataset's name, only its owner or an admin (with
            ``override`` for someone else's) may make one.
        override: an admin confirmed changing someone else's dataset.

    Returns:
        The new version; or, when the result has the same content as a dataset already in
        the workspace (e.g. a change undone), that dataset with ``already_existed``.

    Raises:
        DatasetError: nothing would change; a path is not in the dataset or named twice; a
            class is unknown; the result would leave a class without training images or
            fewer than two classes; an added file is not a usable image.
        tlcore.store.quotas.QuotaError: the disk or the workspace is too full.
        tlcore.store.access.NotAllowedError: ``actor`` may not change this dataset.
    """
    base = load_dataset(ws, name_or_id)
    if changes.is_empty:
        raise DatasetError("Nothing to change: select images to exclude, move or add.")
    target = f"dataset {base.name} ({base.id})"
    with audited(
        ws, actor, "new_dataset_version", target, base.owner, verb="change", override=override
    ):
        return _write_version(ws, base, changes, owner=None if actor is LOCAL else actor.name)


# ----------------------------------------------------------------------------------------


def _write_version(
    ws: Workspace, base: Dataset, changes: VersionChanges, *, owner: str | None
) -> Dataset:
    items = {item.rel_path: item for item in base.items()}
    formats = {
        item.rel_path: str(record.get("format") or "")
        for item, record in zip(items.values(), base._records(), strict=True)
    }
    moved = _check_paths(base, items, changes)
    excluded = set(changes.excluded)
    kept_items = [item for path, item in items.items() if path not in excluded]
    with _staging_dir(ws) as staging:
        building = staging / "dataset"
        building.mkdir()
        classes = sorted(base.classes)
        folders = _class_folders(classes)
        used: dict[Path, set[str]] = defaultdict(set)
        kept: list[_Kept] = []
        records: list[dict[str, Any]] = []
        moves: list[dict[str, str]] = []
        for item in kept_items:
            new_class = moved.get(item.rel_path, item.class_name)
            k, record = _carry(
                base, building, item, new_class, formats[item.rel_path], folders, used
            )
            kept.append(k)
            records.append(record)
            if new_class != item.class_name:
                moves.append(
                    {
                        "path": item.rel_path,
                        "from": item.class_name,
                        "to": new_class,
                        "new_path": _rel(record),
                    }
                )
        added = []
        for new in changes.added:
            k, record = _add(base, building, new, folders, used)
            kept.append(k)
            records.append(record)
            added.append({"path": _rel(record), "class": new.class_name, "split": k.split})
        _check_result(classes, kept)
        content_hash = _content_hash(kept)
        existing = _find_by_content_hash(ws, content_hash)
        if existing is not None:
            return existing
        lines = "".join(_json_line(r) for r in records)
        atomic_write_bytes(building / ITEMS_FILE, lines.encode("utf-8"))
        options = _options_of(base)
        present = sorted({k.candidate.class_name for k in kept})
        report = _build_report(present, kept, [], [], options)
        manifest = _version_manifest(ws, base, content_hash, present, kept, options, owner)
        manifest["changes"] = {
            "excluded": list(changes.excluded),
            "moved": moves,
            "added": added,
        }
        if changes.note.strip():
            manifest["change_note"] = changes.note.strip()[:200]
        return _publish_folder(ws, building, manifest, report)


def _check_paths(
    base: Dataset, items: dict[str, DatasetItem], changes: VersionChanges
) -> dict[str, str]:
    named = [*changes.excluded, *(path for path, _ in changes.moved)]
    unknown = [path for path in named if path not in items]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} image(s) are not in dataset {base.name!r} "
            f"(version {base.version}): {', '.join(map(repr, unknown[:3]))}. "
            "Reload the page and select them again."
        )
    twice = [path for path, n in Counter(named).items() if n > 1]
    if twice:
        raise DatasetError(
            f"{twice[0]!r} is both excluded and moved, or named twice. Choose one change."
        )
    moved = dict(changes.moved)
    for path, new_class in moved.items():
        if new_class not in base.classes:
            raise DatasetError(
                f"Cannot move {path!r} to {new_class!r}: the classes are {', '.join(base.classes)}."
            )
    for new in changes.added:
        if new.class_name not in base.classes:
            raise DatasetError(
                f"Cannot add {new.name!r} to {new.class_name!r}: the classes are "
                f"{', '.join(base.classes)}."
            )
    return {path: cls for path, cls in moved.items() if cls != items[path].class_name}


def _check_result(classes: list[str], kept: list[_Kept]) -> None:
    train = Counter(k.candidate.class_name for k in kept if k.split == "train")
    present = {k.candidate.class_name for k in kept}
    if len(present) < MIN_CLASSES:
        raise DatasetError(
            f"The new version would keep {len(present)} class(es); a classifier needs at "
            f"least {MIN_CLASSES}. Exclude fewer images."
        )
    empty = [c for c in classes if c in present and not train[c]]
    if empty:
        raise DatasetError(
            f"Class {empty[0]!r} would have no training images left. Exclude fewer of its "
            "images, or move some to it."
        )


def _carry(
    base: Dataset,
    building: Path,
    item: DatasetItem,
    class_name: str,
    image_format: str,
    folders: dict[str, str],
    used: dict[Path, set[str]],
) -> tuple[_Kept, dict[str, Any]]:
    """One image of ``base`` in the new version: linked into place (or, indexed, pointed at)."""
    candidate = _Candidate(item.rel_path, class_name, item.split, item.path)
    info = images.ImageInfo(
        item.width,
        item.height,
        item.mode,
        image_format,
        fingerprint=fingerprints.decode(item.fingerprint),  # None when it has none
        plain=item.plain,
    )
    k = _Kept(candidate, item.sha256, info, item.split)
    if base.manifest.get("source", {}).get("mode") == "index":
        return k, _item_record(k, str(item.path))
    folder = Path(IMAGES_DIR, item.split, folders[class_name])
    name = _unique_file_name(item.path.name, used[folder])
    _link_or_copy(item.path, building / folder / name, item.rel_path)
    return k, _item_record(k, (folder / name).as_posix())


def _add(
    base: Dataset,
    building: Path,
    new: NewImage,
    folders: dict[str, str],
    used: dict[Path, set[str]],
) -> tuple[_Kept, dict[str, Any]]:
    if len(new.data) > MAX_ADDED_BYTES:
        raise DatasetError(f"{new.name!r} is larger than {MAX_ADDED_BYTES // 2**20} MB.")
    try:
        info = images.probe_image(new.data, name=new.name)
    except images.ImageError as exc:
        raise DatasetError(f"{new.name!r} was not added: {exc}") from None
    sha256 = hashlib.sha256(new.data).hexdigest()
    split = new.split or _split_by_hash(base, sha256)
    candidate = _Candidate(f"{split}/{new.class_name}/{new.name}", new.class_name, split, None)
    k = _Kept(candidate, sha256, info, split)
    folder = Path(IMAGES_DIR, split, folders[new.class_name])
    name = _unique_file_name(new.name, used[folder])
    target = building / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.write_bytes(new.data)
    except OSError as exc:
        raise _storage_error(exc, new.name, _version_source(base)) from exc
    return k, _item_record(k, (folder / name).as_posix())


def _split_by_hash(base: Dataset, sha256: str) -> str:
    """The dataset's own split fractions, applied by content: the same photo, the same split."""
    fractions = base.manifest.get("fractions") or {}
    u = int(sha256[:12], 16) / 16**12
    test, val = float(fractions.get("test", 0.15)), float(fractions.get("val", 0.15))
    return "test" if u < test else "val" if u < test + val else "train"


def _link_or_copy(source: Path, target: Path, rel_path: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise DatasetError(
                f"{rel_path} of the dataset cannot be read ({exc.strerror}). The dataset "
                "may be damaged; import it again."
            ) from None
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise _storage_error(exc, rel_path, _Source("version", None, "copy", False, "")) from exc


def _options_of(base: Dataset) -> ImportOptions:
    fractions = base.manifest.get("fractions") or {}
    return ImportOptions(
        val_fraction=float(fractions.get("val", 0.15)),
        test_fraction=float(fractions.get("test", 0.15)),
        seed=int(base.manifest.get("seed", 42)),
        min_images_per_class=1,
    )


def _version_source(base: Dataset) -> _Source:
    return _Source("version", None, "copy", False, f"a new version of {base.name!r}")


def _version_manifest(
    ws: Workspace,
    base: Dataset,
    content_hash: str,
    classes: list[str],
    kept: list[_Kept],
    options: ImportOptions,
    owner: str | None,
) -> dict[str, Any]:
    lineage = base.lineage
    number = 1 + max(s.version for s in _lineage(ws, lineage))
    dataset_id = f"{_slugify(base.name)}-{content_hash[:ID_HASH_CHARS]}"
    manifest = _build_manifest(
        dataset_id,
        base.name,
        content_hash,
        classes,
        kept,
        _version_source(base),
        options,
        tuple(base.manifest.get("splits_given") or ()),
    )
    manifest["source"] = dict(base.manifest.get("source") or {}) | {"parent": base.id}
    manifest.update(
        lineage=lineage,
        version=number,
        parent=base.id,
        owner=owner or base.owner,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return manifest


def _rel(record: Mapping[str, Any]) -> str:
    path = Path(record["path"])
    if path.parts[:1] == (IMAGES_DIR,):
        return Path(*path.parts[1:]).as_posix()
    return f"{record['split']}/{record['class']}/{path.name}"


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def summarize_changes(datasets: Sequence[DatasetSummary]) -> list[dict[str, Any]]:
    """Rows for a versions table: version, id, images, created, by, what changed."""
    return [
        {
            "version": s.version,
            "id": s.id,
            "images": s.num_images,
            "created": s.created_at,
            "by": s.owner or "",
            "changes": change_summary(s.manifest),
        }
        for s in datasets
    ]
