"""Importing datasets: from a folder, a zip, files per class or the demo set, through one
path that writes a staging folder and publishes it in one step.

`_staging_dir` and `_import_scanned` are that path; `tlcore.data.keras_datasets` (the Keras
built-in datasets) imports through them too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlcore.data import archives, demo_data, fingerprints
from tlcore.data.catalog import (
    _UNSAFE_NAME_CHARS,
    ID_HASH_CHARS,
    IMAGES_DIR,
    ITEMS_FILE,
    MAX_FILE_NAME_CHARS,
    PROGRESS_STEPS,
    STAGING_PREFIX,
    STALE_STAGING_SECONDS,
    Dataset,
    DatasetError,
    DatasetReport,
    ImportOptions,
    Progress,
    _find_by_content_hash,
    _find_by_source,
    _publish_folder,
    _scaled,
    _slugify,
    _Source,
)
from tlcore.data.checks import (
    _assign_splits,
    _check_classes,
    _check_name,
    _content_hash,
    _probe_all,
    _skip_record,
)
from tlcore.data.dataset_report import _build_manifest, _build_report
from tlcore.data.scan import _Candidate, _check_class_name, _Kept, _Scan, _scan_folder
from tlcore.fileio import StorageError, atomic_write_bytes
from tlcore.store import quotas
from tlcore.store.server_paths import ServerPathError, ServerRoots
from tlcore.store.workspace import Workspace

# ----------------------------------------------------------------------------------------
# Public import functions


def import_folder(
    ws: Workspace,
    src_path: str | os.PathLike,
    *,
    name: str | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
    roots: ServerRoots | None = None,
    owner: str | None = None,
) -> Dataset:
    """Imports a folder of class folders (``cats/*.jpg``, ``dogs/*.jpg``).

    The layout may be wrapped in one folder (``pets/cats/...``), images may sit at any depth
    inside a class folder, and ``train``/``val``/``test`` folders (also ``valid``,
    ``validation``) holding class folders are honoured as given: a missing val or test split
    is carved from train. Files that are not usable images are skipped and listed, and so
    are named pipes, devices, sockets and broken links, which are never opened.

    Args:
        ws: the workspace.
        src_path: the folder to import.
        name: the dataset's name; default: the folder's name.
        options: split and check settings; default `ImportOptions()`.
        progress: called as ``progress(fraction, message)``.
        roots: confines the import to these shared folders (the web UI): the folder and
            every link in it must lie under them, and the size caps apply; default None
            (full access: the command line).
        owner: who imports it (a user name), kept in the manifest; default None (nobody).

    Returns:
        The new dataset, or the existing one with the same content (``already_existed``).

    Raises:
        DatasetError: the folder is outside ``roots``, missing, has no class folders, fewer
            than two classes, a class with no or too few images, or a class with no
            training images; or its files exceed the total cap of ``roots``.
        tlcore.fileio.StorageError: the disk filled up while copying; the partial import
            is removed and nothing else is touched.
    """
    if roots is not None:
        try:
            src_path = roots.confine(src_path)
        except ServerPathError as exc:
            raise DatasetError(str(exc)) from None
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
        scan = _scan_folder(root, source.label, roots)
        return _import_scanned(
            ws, staging, scan, name or root.name, source, options, progress, owner
        )


def import_zip(
    ws: Workspace,
    zip_path: str | os.PathLike,
    *,
    name: str | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
    owner: str | None = None,
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
        owner: who imports it (a user name), kept in the manifest; default None (nobody).

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
            owner,
        )


def import_class_files(
    ws: Workspace,
    files: dict[str, list[tuple[str, bytes]]],
    *,
    name: str,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
    owner: str | None = None,
) -> Dataset:
    """Imports images uploaded per class, e.g. from the Dataset page.

    Args:
        ws: the workspace.
        files: ``{class_name: [(file_name, file_bytes), ...]}``.
        name: the dataset's name (required).
        options: split and check settings (``mode`` is ignored: uploads are copied).
        progress: called as ``progress(fraction, message)``.
        owner: who imports it (a user name), kept in the manifest; default None (nobody).

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
        return _import_scanned(ws, staging, scan, name, source, options, progress, owner)


def import_demo(
    ws: Workspace, progress: Progress | None = None, *, owner: str | None = None
) -> Dataset:
    """Imports the built-in demo dataset (see `tlcore.data.demo_data`): no download needed.

    Importing it again returns the existing dataset (``already_existed=True``) without
    drawing the images again. ``owner``: as for `import_folder`.
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
            owner,
        )


# ----------------------------------------------------------------------------------------
# Internals: writing


@contextmanager
def _staging_dir(ws: Workspace) -> Iterator[Path]:
    """A hidden folder for one import; removed at the end, whatever happens. Refused
    (`QuotaError`) when the disk or the workspace is too full to start one."""
    quotas.check_room(ws, "import")
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
    # The name is chosen as the folder goes into place, under a lock (`_publish_folder`):
    # two imports of one name at once end as two names, never two datasets answering to one.
    dataset = _publish_folder(ws, building, manifest, report)
    if progress is not None:
        progress(1.0, f"Imported {dataset.num_images} images")
    return dataset


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
            try:
                _transfer(k.candidate, building / folder / file_name, move=source.owns_files)
            except OSError as exc:
                raise _storage_error(exc, k.candidate.rel_path, source) from exc
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
        **(
            {"fingerprint": fingerprints.encode(k.info.fingerprint)}
            if k.info.fingerprint is not None
            else {}
        ),
        **({"plain": True} if k.info.plain else {}),
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


def _storage_error(exc: OSError, rel_path: str, source: _Source) -> OSError:
    """A failed copy as the user can act on it: a full disk says so; other errors pass."""
    if isinstance(exc, StorageError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return exc
    err = StorageError(
        exc.errno,
        f"The disk is full: the import of {source.label} stopped while storing {rel_path} "
        "and was undone (nothing was saved; other datasets are untouched). Free some space "
        "and import again.",
    )
    err.filename = rel_path
    return err


def _transfer(candidate: _Candidate, target: Path, *, move: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if candidate.data is not None:
        target.write_bytes(candidate.data)
    elif move:
        os.replace(candidate.path, target)
    else:
        shutil.copyfile(candidate.path, target)


def _import_scanned(
    ws: Workspace,
    staging: Path,
    scan: _Scan,
    name: str,
    source: _Source,
    options: ImportOptions,
    progress: Progress | None,
    owner: str | None = None,
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
    # The name as asked; `_publish_folder` makes it unique when the folder goes into place.
    dataset_id = f"{_slugify(name)}-{content_hash[:ID_HASH_CHARS]}"
    classes = sorted({k.candidate.class_name for k in kept})
    report = _build_report(classes, kept, skipped, warnings, options)
    manifest = _build_manifest(
        dataset_id, name, content_hash, classes, kept, source, options, scan.given_splits
    )
    manifest["owner"] = owner  # who imported it; None: nobody (the command line)
    return _publish(ws, staging, kept, manifest, report, source, _scaled(progress, 0.7, 1.0))
