"""The dataset catalog: the types of a stored dataset, and listing, opening, finding and
deleting datasets in a workspace.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import json
import logging
import os
import re
import shutil
import sqlite3
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlcore.data import fingerprints, images
from tlcore.fileio import atomic_write_json, read_json
from tlcore.store.access import LOCAL, Actor, audited
from tlcore.store.workspace import Workspace, is_dataset_id

MANIFEST_FILE = "dataset.json"
ITEMS_FILE = "items.jsonl"
REPORT_FILE = "report.json"
IMAGES_DIR = "images"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SOURCE_MODES = ("copy", "index")
SKIP_REASONS = (*images.REASONS, "outside_class_folder", "outside_server_roots")
MIN_CLASSES = 2
MIN_TRAIN_FRACTION = 0.1  # an import's validation and test shares leave at least this to train
TINY_IMAGE_SIDE = 32  # smaller than this, most pretrained backbones see mostly upsampling blur
HASH_CHUNK_BYTES = 1024 * 1024
PROBE_WORKERS = max(4, min(16, 2 * (os.cpu_count() or 2)))  # hashing waits on disk, not CPU
PROBE_CHUNK = 1024
ID_HASH_CHARS = 8
MAX_SLUG_CHARS = 40
MAX_NAME_CHARS = 100
MAX_FILE_NAME_CHARS = 120
STAGING_PREFIX = ".import-"
NAMING_LOCK_FILE = ".datasets.lock"  # in the workspace folder; see `_publish_folder`
STALE_STAGING_SECONDS = 24 * 3600
PROGRESS_STEPS = 200  # progress callbacks per stage, at most
_UNSAFE_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')  # not allowed in Windows file names
_DATASET_ID = re.compile(r"[a-z0-9][a-z0-9-]*")

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset could not be imported or opened because of something the user can fix."""


@dataclass(frozen=True)
class ImportOptions:
    """How an import splits and checks the images.

    Attributes:
        val_fraction: share of each class set aside for validation (default 0.15).
        test_fraction: share of each class set aside for testing (default 0.15). Together
            with ``val_fraction`` it leaves at least `MIN_TRAIN_FRACTION` (10%) for training.
        seed: seeds the split, so the same images always split the same way (default 42).
        min_images_per_class: fewer images than this in a class refuses the import
            (default 5).
        mode: 'copy' stores the images inside the workspace; 'index' (folder imports only)
            records the original paths and copies nothing (default 'copy').
        imbalance_ratio: the report flags the classes as imbalanced when the largest has more
            than this many times the images of the smallest (default 3.0).
        max_image_pixels: images with more pixels are skipped as 'too_large'
            (default ``images.MAX_PIXELS``).
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    min_images_per_class: int = 5
    mode: str = "copy"
    imbalance_ratio: float = 3.0
    max_image_pixels: int = images.MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise DatasetError(
                    f"{name} must be at least 0 and below 1. Received: {name}={value!r}"
                )
        if self.val_fraction + self.test_fraction > 1.0 - MIN_TRAIN_FRACTION:
            raise DatasetError(
                "val_fraction + test_fraction must leave at least "
                f"{MIN_TRAIN_FRACTION:.0%} for training. "
                f"Received: val_fraction={self.val_fraction}, test_fraction={self.test_fraction}"
            )
        if not isinstance(self.seed, int):
            raise DatasetError(f"seed must be an integer. Received: seed={self.seed!r}")
        if not isinstance(self.min_images_per_class, int) or self.min_images_per_class < 1:
            raise DatasetError(
                "min_images_per_class must be a positive integer. "
                f"Received: min_images_per_class={self.min_images_per_class!r}"
            )
        if self.mode not in SOURCE_MODES:
            raise DatasetError(f"mode must be one of {SOURCE_MODES}. Received: mode={self.mode!r}")
        if not self.imbalance_ratio >= 1.0:
            raise DatasetError(
                "imbalance_ratio must be at least 1. "
                f"Received: imbalance_ratio={self.imbalance_ratio!r}"
            )
        if not isinstance(self.max_image_pixels, int) or self.max_image_pixels < 1:
            raise DatasetError(
                "max_image_pixels must be a positive integer. "
                f"Received: max_image_pixels={self.max_image_pixels!r}"
            )


@dataclass(frozen=True)
class DatasetItem:
    """One image of a dataset. ``label`` is the index of ``class_name`` in the sorted classes."""

    path: Path
    label: int
    class_name: str
    split: str
    sha256: str
    width: int
    height: int
    mode: str = ""
    rel_path: str = ""  # as inside the dataset: ``<split>/<class folder>/<file>``
    fingerprint: str = ""  # the picture in brief (`tlcore.data.fingerprints`); "" if none
    plain: bool = False  # a single plain colour all over


@dataclass
class DatasetReport:
    """What the import found; stored as ``report.json`` and shown on the Dataset page.

    Attributes:
        classes: the sorted class names.
        counts: ``{split: {class: images}}`` for every split and class.
        num_images: images kept.
        image_sizes: ``{"width": {min, median, max}, "height": {...}, "smaller_than_px": n,
            "tiny_side": TINY_IMAGE_SIDE}``.
        modes: how many images had each stored Pillow mode (all are loaded as RGB).
        formats: how many images had each file format.
        skipped: ``[{"path", "reason", "message"}]`` for every file not imported.
        skipped_counts: ``{reason: files}``.
        duplicates: groups of identical files: ``{"sha256", "files": [{path, class, split}],
            "splits", "classes", "leakage", "conflicting_classes"}``.
        leakage: the duplicate groups that span more than one split.
        near_copies: groups of images that are the same picture edited (resized,
            recompressed, recoloured, cropped a little), in the form of ``duplicates``.
        plain_images: paths of images of a single plain colour (blank or placeholders).
        imbalance: ``{"ratio", "threshold", "flagged", "largest": {class, count},
            "smallest": {class, count}}``.
        warnings: sentences for the user, most important first.
    """

    classes: list[str]
    counts: dict[str, dict[str, int]]
    num_images: int
    image_sizes: dict[str, Any]
    modes: dict[str, int]
    formats: dict[str, int]
    skipped: list[dict[str, Any]]
    skipped_counts: dict[str, int]
    duplicates: list[dict[str, Any]]
    leakage: list[dict[str, Any]]
    imbalance: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    near_copies: list[dict[str, Any]] = field(default_factory=list)
    plain_images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Versioned:
    """The version facts of anything with a dataset ``manifest``."""

    manifest: dict[str, Any]

    @property
    def lineage(self) -> str:
        """The id of the first version: every version of one dataset shares it."""
        return lineage_of(self.manifest)

    @property
    def version(self) -> int:
        return version_of(self.manifest)


@dataclass(frozen=True)
class DatasetSummary(_Versioned):
    """A dataset as listed: its manifest, or the ``problem`` that keeps it from opening."""

    id: str
    name: str
    dir: Path
    manifest: dict[str, Any]
    problem: str = ""

    @property
    def is_broken(self) -> bool:
        return bool(self.problem)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes", []))

    @property
    def num_images(self) -> int:
        return int(self.manifest.get("num_images", 0))

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    @property
    def owner(self) -> str | None:
        """Who imported it (a user name), or None when nobody is recorded."""
        return _owner_of(self.manifest)


def lineage_of(manifest: dict[str, Any]) -> str:
    return str(manifest.get("lineage") or manifest.get("id", ""))


def version_of(manifest: dict[str, Any]) -> int:
    version = manifest.get("version")
    return version if isinstance(version, int) and version > 0 else 1


class Dataset(_Versioned):
    """An imported dataset, read from its folder. Immutable; open with `load_dataset`.

    Attributes:
        id: folder name: a slug of the name and a short content hash.
        name: the name shown to people.
        dir: the dataset folder.
        manifest: the parsed ``dataset.json``.
        classes: the sorted class names; an item's label is its index here.
        already_existed: True when an import found this dataset already in the workspace.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], *, already_existed: bool = False):
        self.dir = Path(folder)
        self.manifest = manifest
        self.id: str = manifest["id"]
        self.name: str = manifest["name"]
        self.classes: list[str] = list(manifest["classes"])
        self.already_existed = already_existed

    def __repr__(self) -> str:
        return f"Dataset(id={self.id!r}, name={self.name!r}, images={self.num_images})"

    @property
    def num_images(self) -> int:
        return int(self.manifest["num_images"])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def owner(self) -> str | None:
        """Who imported it (a user name), or None when nobody is recorded."""
        return _owner_of(self.manifest)

    @functools.cached_property
    def report(self) -> dict[str, Any]:
        """The parsed ``report.json`` (an empty dict if it is missing or unreadable)."""
        try:
            return read_json(self.dir / REPORT_FILE)
        except (OSError, ValueError):
            return {}

    def items(self, split: str | None = None) -> list[DatasetItem]:
        """The dataset's images, in stored order.

        Args:
            split: 'train', 'val' or 'test'; None (default) for all.

        Raises:
            ValueError: ``split`` is not one of ``SPLITS``.
            DatasetError: ``items.jsonl`` is missing or damaged.
        """
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None. Received: split={split!r}")
        label_of = {name: index for index, name in enumerate(self.classes)}
        return [
            self._to_item(record, label_of)
            for record in self._records()
            if split is None or record["split"] == split
        ]

    def split_sizes(self) -> dict[str, int]:
        """Images per split, e.g. ``{"train": 70, "val": 15, "test": 15}``."""
        counts = self.manifest.get("counts", {})
        return {split: sum(counts.get(split, {}).values()) for split in SPLITS}

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class, in one split or (default) all of them."""
        counts = self.manifest.get("counts", {})
        splits = SPLITS if split is None else (split,)
        return {c: sum(counts.get(s, {}).get(c, 0) for s in splits) for c in self.classes}

    @functools.cache  # noqa: B019 - one parse per Dataset object, which is immutable
    def _records(self) -> tuple[dict[str, Any], ...]:
        path = self.dir / ITEMS_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError(
                f"Dataset {self.name!r} is damaged: {path} cannot be read ({exc.strerror or exc}). "
                "Delete it and import it again."
            ) from exc
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"Dataset {self.name!r} is damaged: line {number} of {path} is not valid "
                    "JSON. Delete the dataset and import it again."
                ) from exc
        return tuple(records)

    def _to_item(self, record: dict[str, Any], label_of: dict[str, int]) -> DatasetItem:
        stored = Path(record["path"])
        if not stored.is_absolute() and stored.parts[:1] == (IMAGES_DIR,):
            rel_path = Path(*stored.parts[1:]).as_posix()
        else:  # index mode: the original file, wherever it is
            rel_path = f"{record['split']}/{record['class']}/{stored.name}"
        return DatasetItem(
            path=stored if stored.is_absolute() else self.dir / stored,
            label=label_of[record["class"]],
            class_name=record["class"],
            split=record["split"],
            sha256=record["sha256"],
            width=int(record["width"]),
            height=int(record["height"]),
            mode=record.get("mode", ""),
            rel_path=rel_path,
            fingerprint=_fingerprint_of(record),
            plain=record.get("plain") is True,
        )


def _fingerprint_of(record: dict[str, Any]) -> str:
    """An item record's fingerprint (`tlcore.data.fingerprints.encode`), or "" if what it
    holds cannot be one. Only the length is checked here, for every item of every load;
    `fingerprints.decode` refuses the rest where fingerprints are used."""
    value = record.get("fingerprint")
    if isinstance(value, str) and len(value) == fingerprints.ENCODED_CHARS:
        return value
    return ""


# ----------------------------------------------------------------------------------------
# Listing, opening and deleting


def list_datasets(ws: Workspace) -> list[DatasetSummary]:
    """Every dataset folder in the workspace, newest first; damaged ones last, with a problem.

    A folder whose ``dataset.json`` is missing or invalid is listed with ``problem`` saying
    why, so that the page can offer to delete it; it never makes the listing fail.
    """
    if not ws.datasets_dir.is_dir():
        return []
    summaries = [
        _read_summary(folder)
        for folder in sorted(ws.datasets_dir.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    ]
    good = sorted((s for s in summaries if not s.is_broken), key=lambda s: s.created_at)
    return list(reversed(good)) + [s for s in summaries if s.is_broken]


def manifests(ws: Workspace) -> list[dict]:
    """The ``dataset.json`` of every dataset folder that has a valid one."""
    out = []
    if ws.datasets_dir.is_dir():
        for folder in sorted(ws.datasets_dir.iterdir()):
            try:
                manifest = read_json(folder / MANIFEST_FILE)
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict) and "id" in manifest:
                out.append(manifest)
    return out


def load_dataset(ws: Workspace, name_or_id: str) -> Dataset:
    """Opens a dataset by id, or by name (exact, then ignoring case).

    Raises:
        DatasetError: no dataset has that id or name, several share the name, or the
            dataset is damaged.
    """
    summary = _resolve(ws, name_or_id)
    if summary.is_broken:
        raise DatasetError(f"Dataset {summary.id!r} cannot be opened: {summary.problem}")
    return Dataset(summary.dir, summary.manifest)


def delete_dataset(
    ws: Workspace, name_or_id: str, *, actor: Actor = LOCAL, override: bool = False
) -> None:
    """Deletes a dataset's folder (copied images included; indexed originals are untouched).

    Works on damaged datasets too. The folder is first renamed to a hidden name, so a
    half-deleted dataset is never listed. ``actor`` (default: the command line) must have
    imported it or be an admin; an admin deleting someone else's passes ``override=True``
    once they confirmed. The deletion, or its refusal, goes to the audit log.

    Raises:
        DatasetError: no dataset has that id or name, or several share the name.
        tlcore.store.access.NotAllowedError: ``actor`` may not delete it.
    """
    summary = _resolve(ws, name_or_id)
    target = f"dataset {summary.name} ({summary.id})"
    with audited(
        ws, actor, "delete_dataset", target, summary.owner, verb="delete", override=override
    ):
        doomed = summary.dir.with_name(f".deleting-{summary.dir.name}-{uuid.uuid4().hex[:8]}")
        os.replace(summary.dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        _update_index("forget_dataset", ws, summary.id)


# ----------------------------------------------------------------------------------------
# Internals: finding existing datasets


def _owner_of(manifest: dict[str, Any]) -> str | None:
    owner = manifest.get("owner")
    return owner if isinstance(owner, str) and owner else None


def _read_summary(folder: Path) -> DatasetSummary:
    manifest_path = folder / MANIFEST_FILE
    try:
        manifest = read_json(manifest_path)
    except FileNotFoundError:
        return _broken(folder, f"{MANIFEST_FILE} is missing: the import did not finish.")
    except (OSError, ValueError) as exc:
        return _broken(folder, f"{MANIFEST_FILE} cannot be read ({exc}).")
    problem = _manifest_problem(manifest, folder)
    if problem:
        return _broken(folder, problem, manifest if isinstance(manifest, dict) else {})
    return DatasetSummary(manifest["id"], manifest["name"], folder, manifest)


def _manifest_problem(manifest: Any, folder: Path) -> str:
    if not isinstance(manifest, dict):
        return f"{MANIFEST_FILE} does not hold a JSON object."
    missing = [
        k for k in ("id", "name", "classes", "num_images", "content_hash") if k not in manifest
    ]
    if missing:
        return f"{MANIFEST_FILE} lacks {', '.join(missing)}."
    if manifest["id"] != folder.name:
        return f"{MANIFEST_FILE} says id {manifest['id']!r} but the folder is {folder.name!r}."
    if not (folder / ITEMS_FILE).is_file():
        return f"{ITEMS_FILE} is missing."
    return ""


def _broken(folder: Path, problem: str, manifest: dict | None = None) -> DatasetSummary:
    manifest = manifest or {}
    name = manifest.get("name") if isinstance(manifest.get("name"), str) else folder.name
    return DatasetSummary(folder.name, name, folder, manifest, problem=f"{problem} Delete it.")


def _resolve(ws: Workspace, name_or_id: str) -> DatasetSummary:
    key = str(name_or_id).strip()
    if is_dataset_id(key) and ws.dataset_dir(key).is_dir():
        return _read_summary(ws.dataset_dir(key))
    summaries = list_datasets(ws)
    for matches in (
        [s for s in summaries if s.name == key],
        [s for s in summaries if s.name.casefold() == key.casefold()],
    ):
        if matches and len({s.lineage for s in matches}) == 1:  # a name means its newest version
            return max(matches, key=lambda s: (s.version, s.created_at))
        if len(matches) > 1:
            ids = ", ".join(s.id for s in matches)
            raise DatasetError(f"Several datasets are named {key!r} ({ids}); use the id instead.")
    raise DatasetError(
        f"No dataset named {key!r}. Import one on the Dataset page or with "
        "`python -m tlcore datasets import`."
    )


def _good_datasets(ws: Workspace) -> Iterable[DatasetSummary]:
    return (s for s in list_datasets(ws) if not s.is_broken)


def _find_by_content_hash(ws: Workspace, content_hash: str) -> Dataset | None:
    for summary in _good_datasets(ws):
        if summary.manifest.get("content_hash") == content_hash:
            return Dataset(summary.dir, summary.manifest, already_existed=True)
    return None


def _find_by_source(ws: Workspace, source: _Source) -> Dataset | None:
    """A dataset generated from the same built-in source (demo, Keras), if imported before."""
    wanted = source.to_manifest()
    for summary in _good_datasets(ws):
        if summary.manifest.get("source") == wanted:
            return Dataset(summary.dir, summary.manifest, already_existed=True)
    return None


def _unique_name(ws: Workspace, name: str, lineage: str = "") -> str:
    """``name``, or the first free "name (2)", … (versions of ``lineage`` share a name)."""
    taken = {s.name.casefold() for s in list_datasets(ws) if not lineage or s.lineage != lineage}
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate


@contextmanager
def _naming_lock(ws: Workspace) -> Iterator[None]:
    """Held while a new dataset takes its name and its folder appears (every process)."""
    with open(ws.root / NAMING_LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish_folder(
    ws: Workspace, building: Path, manifest: dict[str, Any], report: DatasetReport
) -> Dataset:
    """Gives a fully written dataset folder its name and renames it into place.

    ``building`` holds everything but ``report.json`` and ``dataset.json``, which are
    written here. The name is chosen here, under `_naming_lock`, and not when the import
    began: two imports that both found a name free, then spent seconds copying images,
    would otherwise both take it and leave two datasets answering to one name. Under the
    lock: the same images imported meanwhile by someone else are that dataset
    (``already_existed``); a name taken meanwhile becomes the first free "name (2)",
    "name (3)", … (the id follows the name, and the report says so).

    Args:
        manifest: the dataset's manifest, named as the person asked.
        report: its report; a renaming adds a warning to it.
    """
    with _naming_lock(ws):
        existing = _find_by_content_hash(ws, manifest["content_hash"])
        if existing is not None:
            return existing
        asked = manifest["name"]
        name = _unique_name(ws, asked, str(manifest.get("lineage") or ""))
        if name != asked:
            report.warnings.append(
                f"A dataset named {asked!r} already exists with different images; "
                f"this one is named {name!r}."
            )
            dataset_id = f"{_slugify(name)}-{manifest['content_hash'][:ID_HASH_CHARS]}"
            manifest = manifest | {"name": name, "id": dataset_id}
        atomic_write_json(building / REPORT_FILE, report.to_dict())
        atomic_write_json(building / MANIFEST_FILE, manifest)
        final = ws.dataset_dir(manifest["id"])
        os.rename(building, final)
    _update_index("record_dataset", ws, manifest)
    return Dataset(final, manifest)


def _slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:MAX_SLUG_CHARS].strip("-") or "dataset"


def _update_index(function_name: str, ws: Workspace, *args: Any) -> None:
    """Tells the workspace index (a cache for fast listing) about a change, if it exists."""
    try:
        index = importlib.import_module("tlcore.store.index")
    except ImportError:
        return
    try:
        getattr(index, function_name)(ws, *args)
    except (OSError, sqlite3.Error) as exc:
        # The folders are the truth and the index is rebuilt from them; a failed update
        # must not fail an import that has already succeeded.
        log.warning("Could not update the workspace index (%s): %s", function_name, exc)


def _scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    """Maps a stage's 0..1 progress into ``start..end`` of the caller's progress."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report


@dataclass(frozen=True)
class _Source:
    """Where the images come from, as recorded in the manifest."""

    kind: str  # 'folder' | 'zip' | 'upload' | 'demo' | 'keras'
    path: str | None
    mode: str  # 'copy' | 'index'
    owns_files: bool  # the files are our own extraction: move them instead of copying
    label: str  # how messages name the source
    extra: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "mode": self.mode, **self.extra}
