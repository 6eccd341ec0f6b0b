"""Datasets: import labelled images, check them, split them once, store them, read them back.

A dataset is a folder ``<workspace>/datasets/<id>/`` holding:

* ``dataset.json``: the manifest (id, name, classes, counts per split, source, content hash);
* ``items.jsonl``: one line per kept image (path, class, split, sha256, size, mode);
* ``report.json``: the `DatasetReport` (counts, sizes, skipped files and why, duplicates,
  leakage across splits, class imbalance, warnings);
* ``images/<split>/<class>/<file>`` in copy mode; in index mode items point at the
  original files instead.

Imports work the same whatever the source (a folder, a zip, files uploaded per class, the
built-in demo set, a Keras dataset): find the candidate files and their classes, hash and
probe them in a thread pool (content decides what is an image, never the extension), drop
what cannot be used and say why, check the classes, split stratified and seeded (unless
the source brings its own splits), then write everything into a hidden staging folder that
is renamed into place in one step. A dataset is never modified after that, and its split
is stored, so every run trains and evaluates on the same images.

Identity is by content: the hash over every kept image's (class, split, sha256). Importing
the same content again returns the existing dataset with ``already_existed=True``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import math
import os
import random
import re
import shutil
import sqlite3
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlcore.data import archives, demo_data, images
from tlcore.fileio import atomic_write_bytes, atomic_write_json, read_json
from tlcore.store.workspace import Workspace

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
SKIP_REASONS = (*images.REASONS, "outside_class_folder")
MIN_CLASSES = 2
TINY_IMAGE_SIDE = 32  # smaller than this, most pretrained backbones see mostly upsampling blur
HASH_CHUNK_BYTES = 1024 * 1024
PROBE_WORKERS = max(4, min(16, 2 * (os.cpu_count() or 2)))  # hashing waits on disk, not CPU
PROBE_CHUNK = 1024
ID_HASH_CHARS = 8
MAX_SLUG_CHARS = 40
MAX_NAME_CHARS = 100
MAX_FILE_NAME_CHARS = 120
STAGING_PREFIX = ".import-"
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
        test_fraction: share of each class set aside for testing (default 0.15).
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
        if self.val_fraction + self.test_fraction > 0.9:
            raise DatasetError(
                "val_fraction + test_fraction must leave at least 10% for training. "
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetSummary:
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


class Dataset:
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
        return DatasetItem(
            path=stored if stored.is_absolute() else self.dir / stored,
            label=label_of[record["class"]],
            class_name=record["class"],
            split=record["split"],
            sha256=record["sha256"],
            width=int(record["width"]),
            height=int(record["height"]),
            mode=record.get("mode", ""),
        )


# ----------------------------------------------------------------------------------------
# Public import functions


def import_folder(
    ws: Workspace,
    src_path: str | os.PathLike,
    *,
    name: str | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
) -> Dataset:
    """Imports a folder of class folders (``cats/*.jpg``, ``dogs/*.jpg``).

    The layout may be wrapped in one folder (``pets/cats/...``), images may sit at any depth
    inside a class folder, and ``train``/``val``/``test`` folders (also ``valid``,
    ``validation``) holding class folders are honoured as given: a missing val or test split
    is carved from train. Files that are not usable images are skipped and listed.

    Args:
        ws: the workspace.
        src_path: the folder to import.
        name: the dataset's name; default: the folder's name.
        options: split and check settings; default `ImportOptions()`.
        progress: called as ``progress(fraction, message)``.

    Returns:
        The new dataset, or the existing one with the same content (``already_existed``).

    Raises:
        DatasetError: the folder is missing, has no class folders, fewer than two classes,
            a class with no or too few images, or a class with no training images.
    """
    root = Path(src_path).expanduser()
    if not root.exists():
        raise DatasetError(f"The folder {root} does not exist. Check the path.")
    if not root.is_dir():
        raise DatasetError(
            f"{root} is a file, not a folder. To import a zip, use the zip import instead."
        )
    root = root.resolve()
    source = _Source(
        kind="folder", path=str(root), mode=options.mode, owns_files=False, label=str(root)
    )
    with _staging_dir(ws) as staging:
        scan = _scan_folder(root, source.label)
        return _import_scanned(ws, staging, scan, name or root.name, source, options, progress)


def import_zip(
    ws: Workspace,
    zip_path: str | os.PathLike,
    *,
    name: str | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
) -> Dataset:
    """Imports a zip of class folders, extracted with every member checked first.

    Accepts the layouts of `import_folder`. The images are always copied (``options.mode``
    is ignored): the zip's extraction is removed afterwards.

    Args:
        ws: the workspace.
        zip_path: the archive.
        name: the dataset's name; default: the zip's file name without ``.zip``.
        options: split and check settings; default `ImportOptions()`.
        progress: called as ``progress(fraction, message)``.

    Returns:
        The new dataset, or the existing one with the same content (``already_existed``).

    Raises:
        DatasetError: the file is not a zip, is empty, is refused as unsafe, or its images do
            not form a valid dataset (see `import_folder`).
    """
    zip_path = Path(zip_path).expanduser()
    if not zip_path.is_file():
        raise DatasetError(f"The zip {zip_path} does not exist. Check the path.")
    source = _Source(
        kind="zip", path=str(zip_path.resolve()), mode="copy", owns_files=True, label=zip_path.name
    )
    with _staging_dir(ws) as staging:
        extracted = staging / "source"
        try:
            archives.safe_extract_zip(zip_path, extracted, progress=_scaled(progress, 0.0, 0.3))
        except archives.ArchiveError as exc:
            raise DatasetError(str(exc)) from exc
        scan = _scan_folder(extracted, zip_path.name)
        return _import_scanned(
            ws,
            staging,
            scan,
            name or zip_path.stem,
            source,
            options,
            _scaled(progress, 0.3, 1.0),
        )


def import_class_files(
    ws: Workspace,
    files: dict[str, list[tuple[str, bytes]]],
    *,
    name: str,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
) -> Dataset:
    """Imports images uploaded per class, e.g. from the Dataset page.

    Args:
        ws: the workspace.
        files: ``{class_name: [(file_name, file_bytes), ...]}``.
        name: the dataset's name (required).
        options: split and check settings (``mode`` is ignored: uploads are copied).
        progress: called as ``progress(fraction, message)``.

    Returns:
        The new dataset, or the existing one with the same content (``already_existed``).

    Raises:
        DatasetError: a class name is empty, repeated or contains a slash; a class has no or
            too few images; fewer than two classes.
    """
    if not name or not str(name).strip():
        raise DatasetError("Give the dataset a name.")
    candidates: list[_Candidate] = []
    class_names: set[str] = set()
    for raw_class, entries in files.items():
        class_name = _check_class_name(raw_class)
        if class_name in class_names:
            raise DatasetError(f"The class {class_name!r} is given twice; merge its images.")
        class_names.add(class_name)
        for file_name, data in entries:
            base = Path(str(file_name).replace("\\", "/")).name or "image"
            candidates.append(_Candidate(f"{class_name}/{base}", class_name, None, None, data))
    source = _Source(kind="upload", path=None, mode="copy", owns_files=False, label="the upload")
    scan = _Scan(candidates, [], [], class_names, given_splits=())
    with _staging_dir(ws) as staging:
        return _import_scanned(ws, staging, scan, name, source, options, progress)


def import_demo(ws: Workspace, progress: Progress | None = None) -> Dataset:
    """Imports the built-in demo dataset (see `tlcore.data.demo_data`): no download needed.

    Importing it again returns the existing dataset (``already_existed=True``) without
    drawing the images again.
    """
    source = _Source(
        kind="demo",
        path=None,
        mode="copy",
        owns_files=True,
        label="the demo dataset",
        extra={"demo_version": demo_data.DEMO_VERSION},
    )
    existing = _find_by_source(ws, source)
    if existing is not None:
        return existing
    with _staging_dir(ws) as staging:
        drawn = staging / "source"
        demo_data.write_demo_images(drawn, progress=_scaled(progress, 0.0, 0.4))
        scan = _scan_folder(drawn, source.label)
        return _import_scanned(
            ws,
            staging,
            scan,
            demo_data.DEMO_NAME,
            source,
            ImportOptions(),
            _scaled(progress, 0.4, 1.0),
        )


@dataclass(frozen=True)
class _KerasDataset:
    title: str
    classes: tuple[str, ...]
    cache_files: tuple[str, ...]  # where Keras looks, relative to ~/.keras/datasets
    url: str


KERAS_DATASETS: dict[str, _KerasDataset] = {
    "cifar10": _KerasDataset(
        "CIFAR-10",
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        ("cifar-10-batches-py-target_archive",),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "mnist": _KerasDataset(
        "MNIST",
        tuple(str(d) for d in range(10)),
        ("mnist.npz",),
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    ),
    "fashion_mnist": _KerasDataset(
        "Fashion-MNIST",
        (
            "T-shirt_top",  # Keras calls it "T-shirt/top"; a slash cannot name a folder
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        tuple(
            f"fashion-mnist/{f}"
            for f in (
                "train-labels-idx1-ubyte.gz",
                "train-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
            )
        ),
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
}


def import_keras_dataset(
    ws: Workspace,
    which: str,
    *,
    max_per_class: int | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
) -> Dataset:
    """Imports CIFAR-10, MNIST or Fashion-MNIST through ``keras.datasets`` (downloads once).

    The Keras train and test sets become the train and test splits; val is carved from
    train. Class names are sorted, so label numbers may differ from Keras' own.

    Args:
        ws: the workspace.
        which: 'cifar10', 'mnist' or 'fashion_mnist'.
        max_per_class: keep at most this many images per class (train and test together,
            in their original proportion); default all.
        options: split and check settings (``mode`` is ignored).
        progress: called as ``progress(fraction, message)``.

    Raises:
        DatasetError: ``which`` is unknown, ``max_per_class`` is not positive, or the data
            cannot be downloaded (with where to put the file by hand).
    """
    spec = KERAS_DATASETS.get(which)
    if spec is None:
        raise DatasetError(
            f"Unknown Keras dataset {which!r}. Choose one of: {', '.join(KERAS_DATASETS)}."
        )
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise DatasetError(
            f"max_per_class must be a positive integer. Received: max_per_class={max_per_class!r}"
        )
    source = _Source(
        kind="keras",
        path=None,
        mode="copy",
        owns_files=True,
        label=spec.title,
        extra={"which": which, "max_per_class": max_per_class},
    )
    existing = _find_by_source(ws, source)
    if existing is not None:
        return existing
    report = _scaled(progress, 0.0, 0.4)
    if report is not None:
        report(0.0, f"Loading {spec.title}")
    (x_train, y_train), (x_test, y_test) = _load_keras_arrays(which, spec)
    title = spec.title if max_per_class is None else f"{spec.title} ({max_per_class} per class)"
    with _staging_dir(ws) as staging:
        written = staging / "source"
        train_cap, test_cap = _keras_caps(max_per_class, len(y_train), len(y_test))
        _write_keras_split(
            written / "train", x_train, y_train, spec, train_cap, _scaled(report, 0.0, 0.8)
        )
        _write_keras_split(
            written / "test", x_test, y_test, spec, test_cap, _scaled(report, 0.8, 1.0)
        )
        scan = _scan_folder(written, spec.title)
        return _import_scanned(
            ws, staging, scan, title, source, options, _scaled(progress, 0.4, 1.0)
        )


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


def delete_dataset(ws: Workspace, name_or_id: str) -> None:
    """Deletes a dataset's folder (copied images included; indexed originals are untouched).

    Works on damaged datasets too. The folder is first renamed to a hidden name, so a
    half-deleted dataset is never listed.

    Raises:
        DatasetError: no dataset has that id or name, or several share the name.
    """
    summary = _resolve(ws, name_or_id)
    doomed = summary.dir.with_name(f".deleting-{summary.dir.name}-{uuid.uuid4().hex[:8]}")
    os.replace(summary.dir, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    _update_index("forget_dataset", ws, summary.id)


# ----------------------------------------------------------------------------------------
# Internals: what an import works on


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


# ----------------------------------------------------------------------------------------
# Internals: finding the files


def _scan_folder(root: Path, label: str) -> _Scan:
    root = _unwrap(root)
    subdirs = [d for d in _visible_entries(root) if d.is_dir()]
    split_dirs = _split_folders(subdirs, label)
    if "train" in split_dirs:
        return _scan_split_layout(root, subdirs, split_dirs, label)
    return _scan_class_layout(root, subdirs, label)


def _unwrap(root: Path) -> Path:
    """Steps into a single wrapping folder (``pets/cats/*.jpg`` -> ``pets``), repeatedly.

    A single folder holding only files is a lone class, not a wrapper: it is kept, so that
    the error can say there is only one class.
    """
    while True:
        entries = _visible_entries(root)
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        inner = entries[0]
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


def _scan_class_layout(root: Path, subdirs: list[Path], label: str) -> _Scan:
    if not subdirs:
        raise DatasetError(
            f"No class folders found in {label}: put each class's images in its own folder, "
            "e.g. cats/*.jpg and dogs/*.jpg (optionally inside train/, val/ and test/)."
        )
    candidates, class_names = [], set()
    for folder in subdirs:
        class_name = _class_name_from_folder(folder.name)
        class_names.add(class_name)
        candidates += [
            _Candidate(_rel(path, root), class_name, None, path) for path in _walk_files(folder)
        ]
    skipped = [_outside_class(path, root) for path in _files_directly_in(root)]
    return _Scan(candidates, skipped, [], class_names, given_splits=())


def _scan_split_layout(
    root: Path, subdirs: list[Path], split_dirs: dict[str, Path], label: str
) -> _Scan:
    candidates, class_names, skipped, warnings = [], set(), [], []
    for split, split_dir in split_dirs.items():
        for folder in (d for d in _visible_entries(split_dir) if d.is_dir()):
            class_name = _class_name_from_folder(folder.name)
            class_names.add(class_name)
            candidates += [
                _Candidate(_rel(path, root), class_name, split, path)
                for path in _walk_files(folder)
            ]
        skipped += [_outside_class(path, root) for path in _files_directly_in(split_dir)]
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


# ----------------------------------------------------------------------------------------
# Internals: probing, checking and splitting


def _import_scanned(
    ws: Workspace,
    staging: Path,
    scan: _Scan,
    name: str,
    source: _Source,
    options: ImportOptions,
    progress: Progress | None,
) -> Dataset:
    name = _check_name(name)
    probed = _probe_all(scan.candidates, options.max_image_pixels, _scaled(progress, 0.0, 0.7))
    usable = [p for p in probed if p.error is None]
    skipped = scan.skipped + [_skip_record(p) for p in probed if p.error is not None]
    _check_classes(scan, usable, skipped, options, source.label)
    kept, split_notes = _assign_splits(usable, scan.given_splits, options)
    content_hash = _content_hash(kept)
    existing = _find_by_content_hash(ws, content_hash)
    if existing is not None:
        if progress is not None:
            progress(1.0, f"These images are already imported as {existing.name!r}")
        return existing
    warnings = list(scan.warnings) + split_notes
    final_name = _unique_name(ws, name)
    if final_name != name:
        warnings.append(
            f"A dataset named {name!r} already exists with different images; "
            f"this one is named {final_name!r}."
        )
    dataset_id = f"{_slugify(final_name)}-{content_hash[:ID_HASH_CHARS]}"
    classes = sorted({k.candidate.class_name for k in kept})
    report = _build_report(classes, kept, skipped, warnings, options)
    manifest = _build_manifest(
        dataset_id, final_name, content_hash, classes, kept, source, options, scan.given_splits
    )
    return _publish(ws, staging, kept, manifest, report, source, _scaled(progress, 0.7, 1.0))


def _check_name(name: str) -> str:
    name = unicodedata.normalize("NFC", str(name)).strip()
    if not name:
        raise DatasetError("Give the dataset a name.")
    if len(name) > MAX_NAME_CHARS:
        raise DatasetError(
            f"The dataset name is {len(name)} characters long; keep it under {MAX_NAME_CHARS}."
        )
    return name


def _probe_all(
    candidates: list[_Candidate], max_pixels: int, progress: Progress | None
) -> list[_Probed]:
    """Hashes and probes every candidate in a thread pool, keeping the candidates' order.

    Work is handed to the pool a chunk at a time, so a folder of 100,000 files does not
    create 100,000 pending futures at once.
    """
    results: list[_Probed] = []
    every = max(1, len(candidates) // PROGRESS_STEPS)
    probe = functools.partial(_probe_one, max_pixels=max_pixels)
    with ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="probe") as pool:
        for start in range(0, len(candidates), PROBE_CHUNK):
            for result in pool.map(probe, candidates[start : start + PROBE_CHUNK]):
                results.append(result)
                if progress is not None and len(results) % every == 0:
                    progress(len(results) / len(candidates), f"Checked {result.candidate.rel_path}")
    return results


def _probe_one(candidate: _Candidate, *, max_pixels: int) -> _Probed:
    source: Any = candidate.data if candidate.data is not None else candidate.path
    try:
        digest = _sha256(candidate)
        info = images.probe_image(source, max_pixels=max_pixels, name=candidate.rel_path)
    except images.ImageError as exc:
        return _Probed(candidate, error=exc)
    except OSError as exc:
        error = images.ImageError(
            "unreadable",
            f"{candidate.rel_path} could not be read ({exc.strerror or exc}).",
            source=candidate.rel_path,
        )
        return _Probed(candidate, error=error)
    return _Probed(candidate, sha256=digest, info=info)


def _sha256(candidate: _Candidate) -> str:
    if candidate.data is not None:
        return hashlib.sha256(candidate.data).hexdigest()
    digest = hashlib.sha256()
    with open(candidate.path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _skip_record(probed: _Probed) -> dict[str, Any]:
    error = probed.error
    return {
        "path": probed.candidate.rel_path,
        "class": probed.candidate.class_name,
        "reason": error.reason,
        "message": str(error),
    }


def _check_classes(
    scan: _Scan,
    usable: list[_Probed],
    skipped: list[dict[str, Any]],
    options: ImportOptions,
    label: str,
) -> None:
    """Refuses images that cannot train a classifier, naming the class that falls short."""
    counts = Counter(p.candidate.class_name for p in usable)
    if not usable:
        raise DatasetError(f"No usable images found in {label}{_skipped_summary(skipped)}.")
    _refuse_empty_classes(scan.class_names, counts, skipped)
    if len(counts) < MIN_CLASSES:
        raise DatasetError(
            f"Found 1 class ({next(iter(counts))!r}); a classifier needs at least "
            f"{MIN_CLASSES}. Put each class's images in its own folder."
        )
    _refuse_small_classes(counts, options.min_images_per_class)
    if scan.given_splits:
        _refuse_classes_without_training_images(usable, counts)


def _refuse_empty_classes(
    class_names: set[str], counts: Counter, skipped: list[dict[str, Any]]
) -> None:
    empty = sorted(c for c in class_names if counts[c] == 0)
    if empty:
        its_skipped = [s for s in skipped if s.get("class") == empty[0]]
        raise DatasetError(
            f"The class {empty[0]!r} has no usable images{_skipped_summary(its_skipped)}. "
            "Add images to it or remove it."
        )


def _refuse_small_classes(counts: Counter, minimum: int) -> None:
    short = sorted((c, n) for c, n in counts.items() if n < minimum)
    if short:
        described = ", ".join(f"class {c!r} has {n} image{'s' if n != 1 else ''}" for c, n in short)
        raise DatasetError(
            f"{described[0].upper()}{described[1:]}; each class needs at least {minimum} "
            "(setting min_images_per_class)."
        )


def _refuse_classes_without_training_images(usable: list[_Probed], counts: Counter) -> None:
    in_train = {p.candidate.class_name for p in usable if p.candidate.given_split == "train"}
    missing = sorted(set(counts) - in_train)
    if missing:
        raise DatasetError(
            f"Class {missing[0]!r} has images in val or test but none in train. "
            "Add training images for it or remove its folders."
        )


def _skipped_summary(skipped: list[dict[str, Any]]) -> str:
    """Like ' (3 files skipped: 2 not an image, 1 truncated)'; empty if nothing was skipped."""
    if not skipped:
        return ""
    reasons = Counter(s["reason"] for s in skipped)
    parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(reasons.items()))
    return f" ({len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: {parts})"


def _assign_splits(
    usable: list[_Probed], given_splits: tuple[str, ...], options: ImportOptions
) -> tuple[list[_Kept], list[str]]:
    """Gives every image its split: as given, or carved from train, stratified and seeded.

    Identical files within a class are kept together (grouped by hash), so a split made here
    never leaks an image into two splits.
    """
    carve = {
        "val": options.val_fraction if "val" not in given_splits else 0.0,
        "test": options.test_fraction if "test" not in given_splits else 0.0,
    }
    pool = defaultdict(list)  # class -> images that may be carved
    kept: list[_Kept] = []
    for p in usable:
        if p.candidate.given_split in (None, "train"):
            pool[p.candidate.class_name].append(p)
        else:
            kept.append(_Kept(p.candidate, p.sha256, p.info, p.candidate.given_split))
    for class_name in sorted(pool):
        split_of_hash = _carve_class(pool[class_name], class_name, carve, options.seed)
        kept += [
            _Kept(p.candidate, p.sha256, p.info, split_of_hash[p.sha256]) for p in pool[class_name]
        ]
    kept.sort(key=lambda k: (SPLITS.index(k.split), k.candidate.class_name, k.candidate.rel_path))
    return kept, _carve_notes(given_splits, carve)


def _carve_class(
    group: list[_Probed], class_name: str, fractions: dict[str, float], seed: int
) -> dict[str, str]:
    # Sorting by hash, not file name, makes the split depend only on the content: the same
    # images under other names split the same way.
    hashes = sorted({p.sha256 for p in group})
    random.Random(f"{seed}:{class_name}").shuffle(hashes)
    n = len(hashes)
    n_test = _carved_count(n, fractions["test"])
    n_val = _carved_count(n, fractions["val"])
    while n_test + n_val >= n and (n_test or n_val):  # always leave one for training
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    split_of = {h: "test" for h in hashes[:n_test]}
    split_of.update({h: "val" for h in hashes[n_test : n_test + n_val]})
    split_of.update({h: "train" for h in hashes[n_test + n_val :]})
    return split_of


def _carved_count(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    count = math.floor(n * fraction + 0.5)
    return max(count, 1) if n >= 3 else count


def _carve_notes(given_splits: tuple[str, ...], carve: dict[str, float]) -> list[str]:
    if not given_splits:
        return []
    return [
        f"No {split} folder was given: {fraction:.0%} of each class's training images "
        f"were set aside as {split}."
        for split, fraction in carve.items()
        if fraction > 0
    ]


def _content_hash(kept: list[_Kept]) -> str:
    lines = sorted(f"{k.candidate.class_name}\t{k.split}\t{k.sha256}\n" for k in kept)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------
# Internals: the report and the manifest


def _build_report(
    classes: list[str],
    kept: list[_Kept],
    skipped: list[dict[str, Any]],
    warnings: list[str],
    options: ImportOptions,
) -> DatasetReport:
    counts = _split_counts(classes, kept)
    duplicates = _duplicate_groups(kept)
    leakage = [g for g in duplicates if g["leakage"]]
    imbalance = _imbalance(classes, kept, options.imbalance_ratio)
    sizes = _size_summary(kept)
    report = DatasetReport(
        classes=classes,
        counts=counts,
        num_images=len(kept),
        image_sizes=sizes,
        modes=dict(Counter(k.info.mode for k in kept).most_common()),
        formats=dict(Counter(k.info.format for k in kept).most_common()),
        skipped=skipped,
        skipped_counts=dict(Counter(s["reason"] for s in skipped).most_common()),
        duplicates=duplicates,
        leakage=leakage,
        imbalance=imbalance,
    )
    report.warnings = _warnings(report, counts) + warnings
    return report


def _split_counts(classes: list[str], kept: list[_Kept]) -> dict[str, dict[str, int]]:
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for k in kept:
        counts[k.split][k.candidate.class_name] += 1
    return counts


def _duplicate_groups(kept: list[_Kept]) -> list[dict[str, Any]]:
    by_hash: dict[str, list[_Kept]] = defaultdict(list)
    for k in kept:
        by_hash[k.sha256].append(k)
    groups = []
    for sha256, copies in sorted(by_hash.items()):
        if len(copies) < 2:
            continue
        splits = sorted({c.split for c in copies}, key=SPLITS.index)
        group_classes = sorted({c.candidate.class_name for c in copies})
        groups.append(
            {
                "sha256": sha256,
                "files": [
                    {
                        "path": c.candidate.rel_path,
                        "class": c.candidate.class_name,
                        "split": c.split,
                    }
                    for c in copies
                ],
                "splits": splits,
                "classes": group_classes,
                "leakage": len(splits) > 1,
                "conflicting_classes": len(group_classes) > 1,
            }
        )
    return groups


def _imbalance(classes: list[str], kept: list[_Kept], threshold: float) -> dict[str, Any]:
    totals = Counter(k.candidate.class_name for k in kept)
    largest = max(classes, key=lambda c: (totals[c], c))
    smallest = min(classes, key=lambda c: (totals[c], c))
    ratio = totals[largest] / max(totals[smallest], 1)
    return {
        "ratio": round(ratio, 3),
        "threshold": threshold,
        "flagged": ratio > threshold,
        "largest": {"class": largest, "count": totals[largest]},
        "smallest": {"class": smallest, "count": totals[smallest]},
    }


def _size_summary(kept: list[_Kept]) -> dict[str, Any]:
    widths = np.array([k.info.width for k in kept])
    heights = np.array([k.info.height for k in kept])

    def stats(values: np.ndarray) -> dict[str, int]:
        return {
            "min": int(values.min()),
            "median": int(np.median(values)),
            "max": int(values.max()),
        }

    tiny = int(np.sum(np.minimum(widths, heights) < TINY_IMAGE_SIDE))
    return {
        "width": stats(widths),
        "height": stats(heights),
        "smaller_than_px": tiny,
        "tiny_side": TINY_IMAGE_SIDE,
    }


def _warnings(report: DatasetReport, counts: dict[str, dict[str, int]]) -> list[str]:
    notes = []
    if report.skipped:
        notes.append(
            f"Not every file was imported{_skipped_summary(report.skipped)}; "
            "see the list of skipped files."
        )
    if report.leakage:
        notes.append(
            f"{len(report.leakage)} image(s) appear in more than one split (leakage): the model "
            "would be evaluated on images it trained on. Remove the copies from val/test."
        )
    conflicting = sum(g["conflicting_classes"] for g in report.duplicates)
    if conflicting:
        notes.append(f"{conflicting} image(s) appear in more than one class with different labels.")
    copies = sum(len(g["files"]) - 1 for g in report.duplicates)
    if copies:
        notes.append(f"{copies} image(s) are exact copies of another image in the dataset.")
    if report.imbalance["flagged"]:
        big, small = report.imbalance["largest"], report.imbalance["smallest"]
        notes.append(
            f"The classes are imbalanced: {big['class']!r} has {big['count']} images and "
            f"{small['class']!r} has {small['count']} (ratio {report.imbalance['ratio']:.1f}, "
            f"above {report.imbalance['threshold']:g}). Consider balanced class weights or "
            "more images of the small classes."
        )
    for split in ("val", "test"):
        if any(counts[split].values()):
            missing = [c for c, n in counts[split].items() if n == 0]
            if missing:
                notes.append(f"No {split} images for class(es) {', '.join(map(repr, missing))}.")
    if report.image_sizes["smaller_than_px"]:
        notes.append(
            f"{report.image_sizes['smaller_than_px']} image(s) are smaller than "
            f"{TINY_IMAGE_SIDE} px on a side; they will be enlarged and look blurry to the model."
        )
    return notes


def _build_manifest(
    dataset_id: str,
    name: str,
    content_hash: str,
    classes: list[str],
    kept: list[_Kept],
    source: _Source,
    options: ImportOptions,
    given_splits: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "id": dataset_id,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "content_hash": content_hash,
        "classes": classes,
        "num_images": len(kept),
        "counts": _split_counts(classes, kept),
        "source": source.to_manifest(),
        "fractions": {"val": options.val_fraction, "test": options.test_fraction},
        "seed": options.seed,
        "splits_given": list(given_splits),
        "items_file": ITEMS_FILE,
    }


# ----------------------------------------------------------------------------------------
# Internals: writing


@contextmanager
def _staging_dir(ws: Workspace) -> Iterator[Path]:
    """A hidden folder for one import; removed at the end, whatever happens."""
    ws.datasets_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(ws)
    staging = ws.datasets_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(ws: Workspace) -> None:
    # An import killed mid-way leaves its staging folder; nobody else will ever remove it.
    cutoff = time.time() - STALE_STAGING_SECONDS
    for folder in ws.datasets_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _publish(
    ws: Workspace,
    staging: Path,
    kept: list[_Kept],
    manifest: dict[str, Any],
    report: DatasetReport,
    source: _Source,
    progress: Progress | None,
) -> Dataset:
    """Writes the dataset into ``staging/dataset`` and renames it into place in one step."""
    building = staging / "dataset"
    building.mkdir()
    records = _store_images(building, kept, source, progress)
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    atomic_write_bytes(building / ITEMS_FILE, lines.encode("utf-8"))
    atomic_write_json(building / REPORT_FILE, report.to_dict())
    atomic_write_json(building / MANIFEST_FILE, manifest)
    final = ws.dataset_dir(manifest["id"])
    try:
        os.rename(building, final)
    except OSError:
        if final.exists():  # the same content was imported meanwhile by someone else
            return Dataset(final, read_json(final / MANIFEST_FILE), already_existed=True)
        raise
    _update_index("record_dataset", ws, manifest)
    if progress is not None:
        progress(1.0, f"Imported {manifest['num_images']} images")
    return Dataset(final, manifest)


def _store_images(
    building: Path, kept: list[_Kept], source: _Source, progress: Progress | None
) -> list[dict[str, Any]]:
    folders = _class_folders(sorted({k.candidate.class_name for k in kept}))
    used_names: dict[Path, set[str]] = defaultdict(set)
    every = max(1, len(kept) // PROGRESS_STEPS)
    records = []
    for index, k in enumerate(kept):
        if source.mode == "index":
            stored = str(k.candidate.path)
        else:
            folder = Path(IMAGES_DIR, k.split, folders[k.candidate.class_name])
            file_name = _unique_file_name(k.candidate.rel_path, used_names[folder])
            _transfer(k.candidate, building / folder / file_name, move=source.owns_files)
            stored = (folder / file_name).as_posix()
        records.append(_item_record(k, stored))
        if progress is not None and (index % every == 0 or index + 1 == len(kept)):
            progress((index + 1) / len(kept), f"Stored {k.candidate.rel_path}")
    return records


def _item_record(k: _Kept, stored_path: str) -> dict[str, Any]:
    return {
        "path": stored_path,
        "class": k.candidate.class_name,
        "split": k.split,
        "sha256": k.sha256,
        "width": k.info.width,
        "height": k.info.height,
        "mode": k.info.mode,
        "format": k.info.format,
    }


def _class_folders(classes: list[str]) -> dict[str, str]:
    """A distinct, portable folder name for each class (the class name where possible)."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for class_name in classes:
        base = _safe_file_name(class_name) or "class"
        folder, n = base, 1
        while folder.casefold() in taken:
            n += 1
            folder = f"{base}-{n}"
        taken.add(folder.casefold())
        folders[class_name] = folder
    return folders


def _unique_file_name(rel_path: str, used: set[str]) -> str:
    """The file's own name, made portable and distinct within its folder (``a-2.jpg``)."""
    name = _safe_file_name(rel_path.rsplit("/", 1)[-1]) or "image"
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    suffix = f".{suffix}" if suffix else ""
    stem = stem[: MAX_FILE_NAME_CHARS - len(suffix)]
    candidate, n = stem + suffix, 1
    while candidate.casefold() in used:  # casefold: the workspace may move to macOS/Windows
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    used.add(candidate.casefold())
    return candidate


def _safe_file_name(name: str) -> str:
    cleaned = _UNSAFE_NAME_CHARS.sub("_", unicodedata.normalize("NFC", name)).strip().rstrip(".")
    return cleaned.lstrip(".")


def _transfer(candidate: _Candidate, target: Path, *, move: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if candidate.data is not None:
        target.write_bytes(candidate.data)
    elif move:
        os.replace(candidate.path, target)
    else:
        shutil.copyfile(candidate.path, target)


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


# ----------------------------------------------------------------------------------------
# Internals: finding existing datasets


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
    if _DATASET_ID.fullmatch(key) and ws.dataset_dir(key).is_dir():
        return _read_summary(ws.dataset_dir(key))
    summaries = list_datasets(ws)
    for matches in (
        [s for s in summaries if s.name == key],
        [s for s in summaries if s.name.casefold() == key.casefold()],
    ):
        if len(matches) == 1:
            return matches[0]
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


def _unique_name(ws: Workspace, name: str) -> str:
    taken = {s.name.casefold() for s in list_datasets(ws)}
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate


def _slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:MAX_SLUG_CHARS].strip("-") or "dataset"


# ----------------------------------------------------------------------------------------
# Internals: Keras datasets


def _keras_datasets_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _load_keras_arrays(which: str, spec: _KerasDataset):
    module = importlib.import_module(f"keras.datasets.{which}")
    try:
        return module.load_data()
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        folder = _keras_datasets_dir()
        files = ", ".join(str(folder / f) for f in spec.cache_files)
        raise DatasetError(
            f"Could not download {spec.title}: this machine has no internet access or the "
            f"download failed ({exc}). Download it elsewhere from {spec.url} and put the "
            f"file(s) at {files}, or import a zip of class folders instead."
        ) from exc


def _keras_caps(
    max_per_class: int | None, n_train: int, n_test: int
) -> tuple[int | None, int | None]:
    """Per-class caps for train and test that keep Keras' train/test proportion."""
    if max_per_class is None:
        return None, None
    test_cap = max(1, round(max_per_class * n_test / max(n_train + n_test, 1)))
    return max(1, max_per_class - test_cap), test_cap


def _write_keras_split(
    folder: Path,
    x: np.ndarray,
    y: np.ndarray,
    spec: _KerasDataset,
    cap: int | None,
    progress: Progress | None,
) -> None:
    """Writes ``folder/<class>/<index>.png`` for the first ``cap`` images of each class."""
    labels = np.asarray(y).reshape(-1)
    written: Counter[int] = Counter()
    every = max(1, len(labels) // PROGRESS_STEPS)
    for index, (pixels, label) in enumerate(zip(x, labels, strict=True)):
        label = int(label)
        if cap is None or written[label] < cap:
            class_dir = folder / spec.classes[label]
            class_dir.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
            image.save(class_dir / f"{index:05d}.png")
            written[label] += 1
        if progress is not None and (index + 1) % every == 0:
            progress((index + 1) / len(labels), f"Wrote {folder.name} image {index + 1}")


def _scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    """Maps a stage's 0..1 progress into ``start..end`` of the caller's progress."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
