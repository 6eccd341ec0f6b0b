"""The Dataset page's import panel: options, then one tab per source (zip, class by class,
server folder, demo, Keras samples).

Each import runs in the page's script under a progress bar; the core
(`tlcore.data.datasets`) stages it in a hidden folder and renames it into place at the end,
so a failed import leaves nothing behind and the panel says why. After a successful import
the page's ``on_imported`` callback gets the dataset and a message to flash, and the page
reruns.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from tlcore.data import datasets
from tlcore.data.archives import ArchiveError
from tlcore.data.catalog import MIN_TRAIN_FRACTION
from tlcore.data.datasets import Dataset, DatasetError, ImportOptions
from tlcore.fileio import StorageError
from tlcore.store.quotas import QuotaError
from tlcore.store.workspace import Workspace
from ui import dataset_view as view
from ui import shared_folders
from ui.auth import current_owner
from ui.common import human_bytes
from ui.dataset_camera import capture_photos

GENERATION_KEY = "dataset_upload_generation"  # bumped after an import to empty the uploaders
CLASS_ROWS_KEY = "dataset_class_rows"
UPLOAD_LIMIT_ENV = "TLS_MAX_UPLOAD_MB"
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
KERAS_DEFAULT_PER_CLASS = 300
KERAS_MAX_PER_CLASS = 7000
DEFAULTS = ImportOptions()

Progress = Callable[[float, str], None]
Imported = Callable[[Dataset, str, str], None]  # (dataset, flash kind, flash message)


def _generation() -> int:
    return int(st.session_state.get(GENERATION_KEY, 0))


def _max_upload_mb() -> int:
    """The page's upload limit: ``$TLS_MAX_UPLOAD_MB``, default the server's maxUploadSize."""
    server = int(st.get_option("server.maxUploadSize"))
    raw = os.environ.get(UPLOAD_LIMIT_ENV, "").strip()
    try:
        value = int(float(raw)) if raw else server
    except ValueError:
        value = server
    return max(1, min(value, server))


def _options() -> tuple[ImportOptions | None, str | None]:
    """The import options panel; returns the options, or the reason they are invalid."""
    with st.expander("Import options: split and checks", icon=":material/tune:"):
        st.caption(
            "How each class is split into train, validation and test (unless the source has "
            "train/val/test folders), and what the import refuses. The demo dataset always "
            "uses the defaults."
        )
        cols = st.columns(4)
        val = cols[0].number_input(
            "Validation %",
            0,
            80,
            round(DEFAULTS.val_fraction * 100),
            step=5,
            key="ds_opt_val",
            help="Share of each class set aside to choose the best epoch.",
        )
        test = cols[1].number_input(
            "Test %",
            0,
            80,
            round(DEFAULTS.test_fraction * 100),
            step=5,
            key="ds_opt_test",
            help="Share of each class kept for the final, unbiased evaluation.",
        )
        seed = cols[2].number_input(
            "Seed",
            0,
            2**31 - 1,
            DEFAULTS.seed,
            key="ds_opt_seed",
            help="The same images and seed always give the same split.",
        )
        minimum = cols[3].number_input(
            "Min images per class",
            1,
            10_000,
            DEFAULTS.min_images_per_class,
            key="ds_opt_min",
            help="A class with fewer usable images refuses the import.",
        )
        try:
            options = ImportOptions(
                val_fraction=val / 100,
                test_fraction=test / 100,
                seed=int(seed),
                min_images_per_class=int(minimum),
            )
        except DatasetError:
            message = (
                f"Validation ({val}%) and test ({test}%) together leave "
                f"{100 - val - test}% for training; keep at least {MIN_TRAIN_FRACTION:.0%} for "
                "training."
            )
            st.error(message, icon=":material/error:")
            return None, message
        st.caption(
            f":material/check: Split {100 - val - test}% / {val}% / {test}% · seed {seed} · "
            f"at least {minimum} images per class"
        )
        return options, None


def _run_import(what: str, action: Callable[[Progress], Dataset], on_imported: Imported) -> None:
    """Runs one import under a progress bar; success tells the page, then reruns."""
    slot = st.container()
    bar = slot.progress(0.0, text=f"{what}…")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message or f"{what}…")

    try:
        dataset = action(progress)
    except (DatasetError, ArchiveError, QuotaError) as exc:
        bar.empty()
        slot.error(f"**Nothing was imported.** {exc}", icon=":material/error:")
        return
    except StorageError as exc:
        bar.empty()
        slot.error(f"**Nothing was imported.** {exc.strerror or exc}", icon=":material/error:")
        return
    except OSError as exc:
        bar.empty()
        where = f" ({exc.filename})" if exc.filename else ""
        slot.error(
            f"**Nothing was imported:** a file could not be read or written{where}: "
            f"{exc.strerror or exc}. Check that the path exists and is readable, and that the "
            "workspace disk has free space, then try again.",
            icon=":material/error:",
        )
        return
    if dataset.already_existed:
        kind, message = (
            "info",
            f"**Already imported** as **{dataset.name}**: identical images (same content, same "
            "split) are in the workspace already, so nothing new was added.",
        )
    else:
        report = dataset.report
        if report.get("leakage") or report.get("duplicates") or report.get("skipped"):
            checks = " The checks below flag files to look at."
        elif (report.get("imbalance") or {}).get("flagged") or report.get("warnings"):
            checks = " See the notes under Checks below."
        else:
            checks = ""
        kind, message = (
            "success",
            f"**Imported {dataset.name}**: {dataset.num_images:,} images in "
            f"{len(dataset.classes)} classes.{checks}",
        )
    on_imported(dataset, kind, message)
    st.session_state[GENERATION_KEY] = _generation() + 1  # new keys: empty uploaders
    st.session_state[CLASS_ROWS_KEY] = [0, 1]
    st.rerun()


def _refuse(message: str) -> None:
    st.error(message, icon=":material/error:")


def _zip_tab(ws: Workspace, options: ImportOptions | None, on_imported: Imported) -> None:
    limit = _max_upload_mb()
    upload = st.file_uploader(
        "Zip of class folders",
        type="zip",
        key=f"ds_zip_{_generation()}",
        max_upload_size=limit,
        help="One folder per class (cats/…, dogs/…), optionally inside train/, val/ and test/ "
        "folders. Files that are not images are skipped and listed.",
    )
    st.caption(
        f":material/info: Up to {limit:,} MB. The archive is checked before anything is "
        "extracted. For larger datasets, use **Folder on the server**."
    )
    too_big = upload is not None and upload.size > limit * 1024**2
    if too_big:
        _refuse(
            f"**{upload.name} is too large:** {human_bytes(upload.size)}, above this studio's "
            f"upload limit of {limit:,} MB. Copy the images to the server and import them with "
            "**Folder on the server** (index mode copies nothing), or split the zip."
        )
    name = st.text_input(
        "Dataset name", key="ds_zip_name", placeholder="Default: the zip's file name"
    )
    if st.button(
        "Import zip",
        type="primary",
        icon=":material/upload:",
        key="ds_import_zip",
        disabled=upload is None or too_big,
    ):
        if options is None:
            _refuse("Fix the import options first.")
            return
        _run_import(
            f"Importing {upload.name}",
            lambda progress: _import_upload(ws, upload, name.strip() or None, options, progress),
            on_imported,
        )


def _import_upload(
    ws: Workspace, upload, name: str | None, options: ImportOptions, progress: Progress
) -> Dataset:
    """Saves the uploaded zip in the workspace (same disk as the dataset), imports, removes."""
    uploads = ws.cache_dir / "uploads"
    try:
        uploads.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="zip-", dir=uploads))
    except OSError as exc:
        raise StorageError(exc.errno, f"Could not store the upload in {uploads}: {exc}") from exc
    try:
        target = folder / (Path(upload.name.replace("\\", "/")).name or "upload.zip")
        progress(0.0, f"Receiving {upload.name}")
        upload.seek(0)
        with open(target, "wb") as fh:
            shutil.copyfileobj(upload, fh, 1024 * 1024)
        return datasets.import_zip(
            ws, target, name=name, options=options, progress=progress, owner=current_owner()
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _add_class_row() -> None:
    rows = st.session_state.setdefault(CLASS_ROWS_KEY, [0, 1])
    rows.append(max(rows, default=-1) + 1)


def _remove_class_row(row: int) -> None:
    rows = st.session_state.setdefault(CLASS_ROWS_KEY, [0, 1])
    if row in rows and len(rows) > 2:
        rows.remove(row)


def _classes_tab(ws: Workspace, options: ImportOptions | None, on_imported: Imported) -> None:
    st.caption(
        "Name each class and drop its images. Add as many classes as you need; each needs "
        f"at least {options.min_images_per_class if options else DEFAULTS.min_images_per_class}"
        " images."
    )
    name = st.text_input("Dataset name", key="ds_classes_name", placeholder="e.g. My pets")
    rows = st.session_state.setdefault(CLASS_ROWS_KEY, [0, 1])
    gen = _generation()
    files: dict[str, list] = {}
    repeated: list[str] = []
    unnamed: list[int] = []
    for position, row in enumerate(rows, start=1):
        with st.container(border=True):
            left, middle, right = st.columns([3, 8, 1], vertical_alignment="top")
            class_name = left.text_input(
                f"Class {position}",
                key=f"ds_class_name_{gen}_{row}",
                placeholder="e.g. cats" if position == 1 else "e.g. dogs",
            )
            uploaded = middle.file_uploader(
                f"Images of class {position}",
                type=IMAGE_TYPES,
                accept_multiple_files=True,
                key=f"ds_class_files_{gen}_{row}",
            )
            photos = []
            with middle:
                if st.toggle(
                    "Take photos with the camera",
                    key=f"ds_class_camera_{gen}_{row}",
                    help="Each photo taken is added to this class; the camera is ready for "
                    "the next one at once.",
                ):
                    photos = capture_photos(
                        f"ds_cam_{gen}_{row}", f"A photo of {class_name or f'class {position}'}"
                    )
            right.space("small")
            right.button(
                "",
                key=f"ds_class_remove_{row}",
                icon=":material/delete:",
                type="tertiary",
                on_click=_remove_class_row,
                args=(row,),
                disabled=len(rows) <= 2,
                help="Remove this class" if len(rows) > 2 else "A classifier needs two classes",
            )
        class_name = class_name.strip()
        uploaded = [*(uploaded or []), *photos]
        if not class_name and uploaded:
            unnamed.append(position)
        elif class_name in files:
            repeated.append(class_name)
        elif class_name:
            files[class_name] = list(uploaded or [])
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button("Add a class", icon=":material/add:", key="ds_add_class", on_click=_add_class_row)
        clicked = st.button(
            "Import classes", type="primary", icon=":material/upload:", key="ds_import_classes"
        )
    if clicked:
        if options is None:
            _refuse("Fix the import options first.")
            return
        if unnamed:
            _refuse(f"Class {unnamed[0]} has images but no name. Name every class.")
            return
        if repeated:
            _refuse(
                f"The class name {repeated[0]!r} is used twice. Give each class its own name, "
                "or put all its images in one row."
            )
            return
        if sum(1 for entries in files.values() if entries) < 2:
            _refuse("Add images to at least two classes first: a classifier needs two.")
            return
        payload = {
            class_name: [(f.name, f.getvalue()) for f in entries]
            for class_name, entries in files.items()
        }
        _run_import(
            "Importing the uploaded images",
            lambda progress: datasets.import_class_files(
                ws, payload, name=name, options=options, progress=progress, owner=current_owner()
            ),
            on_imported,
        )


def _folder_tab(ws: Workspace, options: ImportOptions | None, on_imported: Imported) -> None:
    roots = shared_folders.shared_roots(ws)
    path = st.text_input(
        "Folder on this server",
        key="ds_folder_path",
        placeholder=f"{ws.incoming_dir / 'pets'} — one sub-folder per class",
        help=shared_folders.help_text(roots, "a folder"),
    )
    shared_folders.caption(roots, "the class folders")
    name = st.text_input(
        "Dataset name", key="ds_folder_name", placeholder="Default: the folder's name"
    )
    mode = st.radio(
        "Store the images",
        ["copy", "index"],
        key="ds_folder_mode",
        horizontal=True,
        format_func=lambda m: {"copy": "Copy into the workspace", "index": "Index in place"}[m],
        captions=[
            "Safe: the dataset keeps working if the folder changes or goes away.",
            "No copy, for large datasets: only the paths are recorded, so the folder must "
            "stay where it is, unchanged.",
        ],
    )
    if st.button(
        "Import folder",
        type="primary",
        icon=":material/drive_folder_upload:",
        key="ds_import_folder",
    ):
        if options is None:
            _refuse("Fix the import options first.")
            return
        if not path.strip():
            _refuse(
                "Type the path of a folder on this server first, e.g. "
                f"`{ws.incoming_dir / 'pets'}`."
            )
            return
        if roots is None:
            _refuse("**Nothing was imported:** no folder on this server can be read.")
            return
        chosen = dataclasses.replace(options, mode=mode)
        _run_import(
            f"Importing {path.strip()}",
            lambda progress: datasets.import_folder(
                ws,
                path.strip(),
                name=name.strip() or None,
                options=chosen,
                progress=progress,
                roots=roots,
                owner=current_owner(),
            ),
            on_imported,
        )


def _demo_tab(ws: Workspace, on_imported: Imported) -> None:
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.markdown(
        "**Demo shapes** — 400 small pictures of 5 shapes (circle, hexagon, square, star, "
        "triangle), drawn on this machine: no download, works offline. A quick way to try "
        "the whole studio."
    )
    clicked = right.button(
        "Import the demo dataset",
        type="primary",
        icon=":material/category:",
        key="ds_import_demo",
        width="stretch",
    )
    if clicked:
        _run_import(
            "Drawing the demo images",
            lambda progress: datasets.import_demo(ws, progress, owner=current_owner()),
            on_imported,
        )


def _keras_tab(ws: Workspace, options: ImportOptions | None, on_imported: Imported) -> None:
    st.caption(
        "Classic benchmark datasets from Keras. Each is downloaded once into the Keras cache; "
        "without internet access, the import says where to put the file by hand."
    )
    left, right = st.columns(2)
    which = left.selectbox(
        "Dataset",
        list(datasets.KERAS_DATASETS),
        key="ds_keras_which",
        format_func=lambda w: (
            f"{datasets.KERAS_DATASETS[w].title} · {len(datasets.KERAS_DATASETS[w].classes)} "
            "classes"
        ),
    )
    per_class = right.number_input(
        "Images per class",
        10,
        KERAS_MAX_PER_CLASS,
        KERAS_DEFAULT_PER_CLASS,
        step=50,
        key="ds_keras_per_class",
        help="Train and test together, in Keras' proportion. The full sets have 6,000 (CIFAR-10"
        ") to 7,000 (MNIST) per class; a few hundred is plenty to try transfer learning.",
    )
    spec = datasets.KERAS_DATASETS[which]
    cached = view.keras_cached(which)
    st.markdown(
        (
            ":green-badge[:material/download_done: In the local cache]"
            if cached
            else ":gray-badge[:material/cloud_download: Downloaded on first use]"
        )
        + f" :small[:gray[Classes: {', '.join(spec.classes)}]]"
    )
    if st.button(
        f"Import {spec.title}", type="primary", icon=":material/dataset:", key="ds_import_keras"
    ):
        if options is None:
            _refuse("Fix the import options first.")
            return
        _run_import(
            f"Loading {spec.title}" if cached else f"Downloading {spec.title} (first time only)",
            lambda progress: datasets.import_keras_dataset(
                ws,
                which,
                max_per_class=int(per_class),
                options=options,
                progress=progress,
                owner=current_owner(),
            ),
            on_imported,
        )


def render_import_panel(
    ws: Workspace,
    *,
    on_imported: Imported,
    on_cancel: Callable[[], None] | None = None,
) -> None:
    """The import panel: the options, then one tab per source.

    Args:
        ws: the workspace the datasets are imported into.
        on_imported: called with the new (or already present) dataset, a flash kind
            (``"success"`` or ``"info"``) and its message after a successful import; the
            page then reruns.
        on_cancel: when given, the panel has a Cancel button that calls it, then reruns
            (default None: no Cancel button).
    """
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown("**:material/add_photo_alternate: Import a dataset**", width="stretch")
            if on_cancel is not None and st.button(
                "Cancel", icon=":material/close:", key="ds_cancel_import", type="tertiary"
            ):
                on_cancel()
                st.rerun()
        options, _ = _options()
        zip_tab, classes_tab, folder_tab, demo_tab, keras_tab = st.tabs(
            [
                ":material/folder_zip: Zip file",
                ":material/upload: Images class by class",
                ":material/folder_open: Folder on the server",
                ":material/category: Demo dataset",
                ":material/dataset: Keras samples",
            ]
        )
        with zip_tab:
            _zip_tab(ws, options, on_imported)
        with classes_tab:
            _classes_tab(ws, options, on_imported)
        with folder_tab:
            _folder_tab(ws, options, on_imported)
        with demo_tab:
            _demo_tab(ws, on_imported)
        with keras_tab:
            _keras_tab(ws, options, on_imported)
