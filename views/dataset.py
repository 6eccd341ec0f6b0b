"""Dataset: import images, read the validation report, choose a dataset to train on, delete.

The page is a list of the workspace's datasets beside the one selected (``?dataset=<id>``,
remembered in ``st.session_state["dataset"]`` for the other pages). Imports run in
this script with a progress bar; the core (`tlcore.data.datasets`) stages every import in a
hidden folder and renames it into place at the end, so a failed import leaves nothing
behind. After an import the page reruns with the new dataset selected and a flash message.
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
from tlcore.data.datasets import Dataset, DatasetError, DatasetSummary, ImportOptions
from tlcore.fileio import StorageError
from tlcore.store import runs
from ui import dataset_view as view
from ui.common import (
    PAGES,
    empty_state,
    flash,
    human_bytes,
    page_header,
    remember_selection,
    show_flash,
    workspace,
)

SELECTED_KEY = "dataset"  # the dataset this session works on (its id); other pages read it
QUERY_PARAM = "dataset"
FLASH_KEY = "dataset_flash"
IMPORTING_KEY = "dataset_importing"  # the import panel replaces the selected dataset
GENERATION_KEY = "dataset_upload_generation"  # bumped after an import to empty the uploaders
CLASS_ROWS_KEY = "dataset_class_rows"
MODEL_DATASET_KEY = "mf_dataset"  # the Model page's dataset box (ui.model_form.key("dataset"))
UPLOAD_LIMIT_ENV = "TLS_MAX_UPLOAD_MB"
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
KERAS_DEFAULT_PER_CLASS = 300
KERAS_MAX_PER_CLASS = 7000
DEFAULTS = ImportOptions()

Progress = Callable[[float, str], None]


# -- state ---------------------------------------------------------------------------------
def _generation() -> int:
    return int(st.session_state.get(GENERATION_KEY, 0))


def _selected(summaries: list[DatasetSummary]) -> DatasetSummary:
    """The URL's ``?dataset=``, else this session's choice (id or name), else the newest."""
    by_id = {s.id: s for s in summaries}
    by_name = {s.name: s for s in summaries}
    wanted = st.query_params.get(QUERY_PARAM)
    if wanted in by_id:
        chosen = wanted
    else:
        if wanted:
            st.warning(
                f"There is no dataset `{wanted}` in this workspace (it may have been deleted). "
                "Showing another one instead; pick one from the list.",
                icon=":material/link_off:",
            )
        remembered = st.session_state.get(SELECTED_KEY)
        if remembered in by_id:
            chosen = remembered
        elif remembered in by_name:
            chosen = by_name[remembered].id
        else:
            chosen = summaries[0].id
    if st.session_state.get(SELECTED_KEY) != chosen or wanted != chosen:
        remember_selection(SELECTED_KEY, QUERY_PARAM, chosen)
    return by_id[chosen]


def _max_upload_mb() -> int:
    """The page's upload limit: ``$TLS_MAX_UPLOAD_MB``, default the server's maxUploadSize."""
    server = int(st.get_option("server.maxUploadSize"))
    raw = os.environ.get(UPLOAD_LIMIT_ENV, "").strip()
    try:
        value = int(float(raw)) if raw else server
    except ValueError:
        value = server
    return max(1, min(value, server))


# -- importing -----------------------------------------------------------------------------
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
                f"{100 - val - test}% for training; keep at least 10% for training."
            )
            st.error(message, icon=":material/error:")
            return None, message
        st.caption(
            f":material/check: Split {100 - val - test}% / {val}% / {test}% · seed {seed} · "
            f"at least {minimum} images per class"
        )
        return options, None


def _run_import(what: str, action: Callable[[Progress], Dataset]) -> None:
    """Runs one import under a progress bar; success reruns with the dataset selected."""
    slot = st.container()
    bar = slot.progress(0.0, text=f"{what}…")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message or f"{what}…")

    try:
        dataset = action(progress)
    except (DatasetError, ArchiveError) as exc:
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
        flash(
            FLASH_KEY,
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
        flash(
            FLASH_KEY,
            "success",
            f"**Imported {dataset.name}**: {dataset.num_images:,} images in "
            f"{len(dataset.classes)} classes.{checks}",
        )
    st.session_state[IMPORTING_KEY] = False
    st.session_state[GENERATION_KEY] = _generation() + 1  # new keys: empty uploaders
    st.session_state[CLASS_ROWS_KEY] = [0, 1]
    remember_selection(SELECTED_KEY, QUERY_PARAM, dataset.id)
    st.rerun()


def _refuse(message: str) -> None:
    st.error(message, icon=":material/error:")


def _zip_tab(options: ImportOptions | None) -> None:
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
            lambda progress: _import_upload(upload, name.strip() or None, options, progress),
        )


def _import_upload(upload, name: str | None, options: ImportOptions, progress: Progress):
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
        return datasets.import_zip(ws, target, name=name, options=options, progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _add_class_row() -> None:
    rows = st.session_state.setdefault(CLASS_ROWS_KEY, [0, 1])
    rows.append(max(rows, default=-1) + 1)


def _remove_class_row(row: int) -> None:
    rows = st.session_state.setdefault(CLASS_ROWS_KEY, [0, 1])
    if row in rows and len(rows) > 2:
        rows.remove(row)


def _classes_tab(options: ImportOptions | None) -> None:
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
                ws, payload, name=name, options=options, progress=progress
            ),
        )


def _folder_tab(options: ImportOptions | None) -> None:
    path = st.text_input(
        "Folder on this server",
        key="ds_folder_path",
        placeholder="/data/pets — one sub-folder per class",
        help="A path on the machine running the studio, not on your computer.",
    )
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
            _refuse("Type the path of a folder on this server first, e.g. `/data/pets`.")
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
            ),
        )


def _demo_tab() -> None:
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
        _run_import("Drawing the demo images", lambda progress: datasets.import_demo(ws, progress))


def _keras_tab(options: ImportOptions | None) -> None:
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
            ),
        )


def _import_panel(*, cancellable: bool = False) -> None:
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown("**:material/add_photo_alternate: Import a dataset**", width="stretch")
            if cancellable and st.button(
                "Cancel", icon=":material/close:", key="ds_cancel_import", type="tertiary"
            ):
                st.session_state[IMPORTING_KEY] = False
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
            _zip_tab(options)
        with classes_tab:
            _classes_tab(options)
        with folder_tab:
            _folder_tab(options)
        with demo_tab:
            _demo_tab()
        with keras_tab:
            _keras_tab(options)


# -- the list ------------------------------------------------------------------------------
def _list_panel(summaries: list[DatasetSummary], selected: str | None, importing: bool) -> None:
    good = [s for s in summaries if not s.is_broken]
    broken = [s for s in summaries if s.is_broken]
    with st.container(border=True, gap="small"):
        st.markdown(f"**:material/photo_library: Datasets** :gray[({len(good)})]")
        for summary in good:
            _list_row(summary, selected if not importing else None)
        if not good:
            st.caption("No usable dataset yet.")
        if broken:
            st.markdown(f"**:material/broken_image: Damaged** :gray[({len(broken)})]")
            for summary in broken:
                _list_row(summary, selected if not importing else None)
        if st.button(
            "Import a dataset",
            icon=":material/add:",
            key="ds_new",
            width="stretch",
            type="primary" if not importing else "secondary",
            disabled=importing,
        ):
            st.session_state[IMPORTING_KEY] = True
            st.rerun()


def _list_row(summary: DatasetSummary, selected: str | None) -> None:
    is_selected = summary.id == selected
    with st.container(border=is_selected, gap="xxsmall"):
        clicked = st.button(
            summary.name,
            key=f"ds_pick_{summary.id}",
            icon=":material/broken_image:" if summary.is_broken else ":material/photo_library:",
            type="tertiary",
            help=f"{summary.name} · `{summary.id}`",
            wrap=False,
        )
        if summary.is_broken:
            st.markdown(f":red-badge[damaged] :small[:gray[{_short_problem(summary)}]]")
        else:
            st.markdown(
                f":small[:gray[{summary.num_images:,} images · {len(summary.classes)} classes · "
                f"{view.source_text(summary.manifest, short=True)}]]"
            )
    if clicked and (not is_selected or st.session_state.get(IMPORTING_KEY)):
        st.session_state[IMPORTING_KEY] = False
        remember_selection(SELECTED_KEY, QUERY_PARAM, summary.id)
        st.rerun()


def _problem(summary: DatasetSummary) -> str:
    # The core's sentence ends in "Delete it."; the page offers the delete button instead.
    return summary.problem.removesuffix(" Delete it.")


def _short_problem(summary: DatasetSummary) -> str:
    """The problem without its technical detail in brackets, for the narrow list."""
    text = _problem(summary)
    head, bracket, _ = text.partition(" (")
    return f"{head}." if bracket else text


# -- the selected dataset ------------------------------------------------------------------
def _fact(column, label: str, value: str, icon: str) -> None:
    column.caption(f"{icon} {label}")
    column.markdown(value)


def _runs_using(summary: DatasetSummary) -> list[runs.RunRecord]:
    return [
        r
        for r in runs.list_runs(ws)
        if r.config is not None and r.config.dataset in (summary.name, summary.id)
    ]


def _train_on(dataset: Dataset) -> None:
    st.session_state[SELECTED_KEY] = dataset.id
    st.session_state[MODEL_DATASET_KEY] = dataset.name
    st.switch_page(PAGES["model"])


def _header(dataset: Dataset) -> None:
    manifest = dataset.manifest
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"### {dataset.name}", width="stretch")
            if st.button(
                "Train a model on this dataset",
                type="primary",
                icon=":material/account_tree:",
                key="ds_train",
            ):
                _train_on(dataset)
        badges = []
        if view.is_indexed(manifest):
            badges.append(":orange-badge[:material/link: indexed in place]")
        if manifest.get("splits_given"):
            badges.append(":violet-badge[:material/call_split: splits from the source]")
        created = str(manifest.get("created_at", "")).replace("T", " ")[:16]
        st.markdown(" ".join([*badges, f":gray[`{dataset.id}` · imported {created} UTC]"]))
        sizes = dataset.split_sizes()
        total = max(dataset.num_images, 1)
        tiles = st.columns(5)
        tiles[0].metric("Images", f"{dataset.num_images:,}", border=True)
        tiles[1].metric("Classes", len(dataset.classes), border=True)
        for column, split in zip(tiles[2:], datasets.SPLITS, strict=True):
            column.metric(
                f"{view.SHORT_SPLIT_LABELS[split]} · {sizes[split] / total:.0%}",
                f"{sizes[split]:,}",
                border=True,
            )
        facts = st.columns([2, 2, 1])
        stored = (
            "Indexed in place: the originals are read from their folder."
            if view.is_indexed(manifest)
            else "Copied into the workspace."
        )
        _fact(
            facts[0],
            "Source",
            f"{view.source_text(manifest)}  \n:small[:gray[{stored}]]",
            ":material/input:",
        )
        _fact(facts[1], "Split", view.split_text(manifest), ":material/call_split:")
        _fact(
            facts[2],
            "Content hash",
            f"`{dataset.content_hash[:12]}`",
            ":material/fingerprint:",
        )


def _delete_zone(summary: DatasetSummary) -> None:
    with st.expander("Delete this dataset", icon=":material/delete:"):
        used_by = _runs_using(summary)
        lines = []
        if view.is_indexed(summary.manifest):
            lines.append("Removes the dataset's record; your original files are **not** touched.")
        else:
            lines.append("Removes the dataset and its copies of the images from the workspace.")
        if used_by:
            lines.append(
                f"{len(used_by)} run(s) trained on it. **They keep their records, metrics and "
                "models**, but cannot be resumed or evaluated on it again unless you import "
                "the same images again."
            )
        else:
            lines.append("No run has used it. Runs that use a dataset keep their records.")
        st.markdown("  \n".join(lines))
        confirm = st.checkbox(
            f"Yes, delete **{summary.name}**", key=f"ds_confirm_delete_{summary.id}"
        )
        if st.button(
            "Delete dataset",
            icon=":material/delete_forever:",
            key=f"ds_delete_{summary.id}",
            disabled=not confirm,
        ):
            try:
                datasets.delete_dataset(ws, summary.id)
            except (DatasetError, OSError) as exc:
                st.error(f"**Could not delete the dataset.** {exc}", icon=":material/error:")
                return
            flash(
                FLASH_KEY,
                "success",
                f"Deleted **{summary.name}**."
                + (" Runs that used it keep their records." if used_by else ""),
            )
            st.session_state.pop(SELECTED_KEY, None)
            st.query_params.pop(QUERY_PARAM, None)
            st.rerun()


def _detail(summary: DatasetSummary) -> None:
    if summary.is_broken:
        with st.container(border=True):
            st.markdown(f"### {summary.name}")
            st.error(
                f"**This dataset cannot be opened.** {_problem(summary)}\n\n"
                f"Folder: `{summary.dir}`. Delete it below and import the images again.",
                icon=":material/broken_image:",
            )
        _delete_zone(summary)
        return
    try:
        dataset = datasets.load_dataset(ws, summary.id)
    except DatasetError as exc:
        st.error(f"**This dataset cannot be opened.** {exc}", icon=":material/broken_image:")
        _delete_zone(summary)
        return
    _header(dataset)
    if not dataset.report:
        st.warning(
            "The validation report of this dataset (report.json) cannot be read; the counts "
            "below come from its manifest. Import the images again to get the full report.",
            icon=":material/warning:",
        )
    st.markdown("##### :material/fact_check: Checks")
    view.render_checks(dataset.report)
    st.markdown("##### :material/analytics: Report")
    view.render_report_tabs(dataset)
    _delete_zone(summary)


# -- the page ------------------------------------------------------------------------------
ws = workspace()
page_header(
    "Dataset",
    "Bring your own images: a zip of class folders, images per class, a folder on the server, "
    "or a ready-made dataset. Every import is checked and split once, the same for every run.",
)
show_flash(FLASH_KEY)
summaries = datasets.list_datasets(ws)
if not summaries:
    empty_state(
        "**No datasets yet.** Import a zip of class folders or the built-in demo dataset to "
        "begin: the studio checks every image, splits them into train, validation and test, "
        "and shows a report here.",
        icon=":material/photo_library:",
    )
    _import_panel()
else:
    importing = bool(st.session_state.get(IMPORTING_KEY))
    selected = None if importing else _selected(summaries)
    list_column, detail_column = st.columns([1, 3], gap="medium")
    with list_column:
        _list_panel(summaries, selected.id if selected else None, importing)
    with detail_column:
        if importing:
            _import_panel(cancellable=True)
        else:
            _detail(selected)
