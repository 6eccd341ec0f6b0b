"""Dataset: import images, read the validation report, choose a dataset to train on, delete.

The page is a list of the workspace's datasets beside the one selected (``?dataset=<id>``,
remembered in ``st.session_state["dataset"]`` for the other pages). Imports run in
this script with a progress bar (the panel is `ui.dataset_import`); the core
(`tlcore.data.datasets`) stages every import in a hidden folder and renames it into place
at the end, so a failed import leaves nothing behind. After an import the page reruns with
the new dataset selected and a flash message.
"""

from __future__ import annotations

import streamlit as st

from tlcore.data import datasets, versions
from tlcore.data.datasets import Dataset, DatasetError, DatasetSummary
from tlcore.store import runs
from tlcore.store.access import NotAllowedError
from ui import auth
from ui import dataset_view as view
from ui.common import (
    PAGES,
    empty_state,
    flash,
    page_header,
    remember_selection,
    show_flash,
    workspace,
)
from ui.dataset_camera import render_add_photos
from ui.dataset_fix import render_gallery, render_label_check
from ui.dataset_import import render_import_panel
from ui.dataset_versions import render_retrain_offer, render_versions

SELECTED_KEY = "dataset"  # the dataset this session works on (its id); other pages read it
QUERY_PARAM = "dataset"
FLASH_KEY = "dataset_flash"
IMPORTING_KEY = "dataset_importing"  # the import panel replaces the selected dataset
MODEL_DATASET_KEY = "mf_dataset"  # the Model page's dataset box (ui.model_form.key("dataset"))
SECTION_KEY = "ds_section"
SECTIONS = {
    "overview": ":material/analytics: Report",
    "images": ":material/photo_library: Images",
    "labels": ":material/manage_search: Likely mislabelled",
    "versions": ":material/history: Versions",
    "camera": ":material/photo_camera: Camera",
}


# -- state ---------------------------------------------------------------------------------
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


def _imported(dataset: Dataset, kind: str, message: str) -> None:
    """After an import: the flash message, and the new dataset selected in place of the panel."""
    flash(FLASH_KEY, kind, message)
    st.session_state[IMPORTING_KEY] = False
    remember_selection(SELECTED_KEY, QUERY_PARAM, dataset.id)


def _stop_importing() -> None:
    st.session_state[IMPORTING_KEY] = False


def _new_version(dataset: Dataset, message: str) -> None:
    """After a fix: the flash message, and the new version selected."""
    flash(FLASH_KEY, "success", message)
    remember_selection(SELECTED_KEY, QUERY_PARAM, dataset.id)
    st.rerun()


def _open_version(dataset_id: str) -> None:
    remember_selection(SELECTED_KEY, QUERY_PARAM, dataset_id)
    st.rerun()


def _newest_versions(summaries: list[DatasetSummary]) -> list[DatasetSummary]:
    """One row per dataset: its newest version (older ones are under Versions)."""
    newest: dict[str, DatasetSummary] = {}
    for s in summaries:
        if s.is_broken:
            continue
        held = newest.get(s.lineage)
        if held is None or (s.version, s.created_at) > (held.version, held.created_at):
            newest[s.lineage] = s
    return [s for s in summaries if not s.is_broken and newest.get(s.lineage) is s]


# -- the list ------------------------------------------------------------------------------
def _list_panel(summaries: list[DatasetSummary], selected: str | None, importing: bool) -> None:
    good = _newest_versions(summaries)
    broken = [s for s in summaries if s.is_broken]
    shown_lineage = next((s.lineage for s in summaries if s.id == selected), None)
    with st.container(border=True, gap="small"):
        st.markdown(f"**:material/photo_library: Datasets** :gray[({len(good)})]")
        for summary in good:
            # An older version shown marks its dataset's row as selected.
            mark = summary.id if summary.lineage == shown_lineage else selected
            _list_row(summary, mark if not importing else None)
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
            version = f"v{summary.version} · " if summary.version > 1 else ""
            st.markdown(
                f":small[:gray[{version}{summary.num_images:,} images · "
                f"{len(summary.classes)} classes · "
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
        made = "imported" if dataset.version == 1 else "made"
        imported = f":gray[`{dataset.id}` · {made} {created} UTC]"
        lineage = versions.versions(ws, dataset.id)
        if len(lineage) > 1:
            newest = lineage[-1].version
            tag = "newest" if newest == dataset.version else f"older; the newest is v{newest}"
            badges.append(f":blue-badge[:material/history: version {dataset.version} · {tag}]")
            if dataset.version > 1:
                badges.append(f":gray-badge[{versions.change_summary(manifest)}]")
        if imported_by := auth.made_by(dataset.owner, made):
            imported += f" :gray[· {imported_by}]"
        st.markdown(" ".join([*badges, imported]))
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
        shown, enabled, override = auth.may_change(
            summary.owner, "dataset", key=f"ds_override_delete_{summary.id}"
        )
        if not shown:
            return
        confirm = st.checkbox(
            f"Yes, delete **{summary.name}**", key=f"ds_confirm_delete_{summary.id}"
        )
        if st.button(
            "Delete dataset",
            icon=":material/delete_forever:",
            key=f"ds_delete_{summary.id}",
            disabled=not (confirm and enabled),
        ):
            try:
                datasets.delete_dataset(
                    ws, summary.id, actor=auth.current_actor(), override=override
                )
            except (DatasetError, NotAllowedError, OSError) as exc:
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
    lineage = versions.versions(ws, dataset.id)
    render_retrain_offer(ws, dataset, lineage)
    labels = dict(SECTIONS)
    if len(lineage) > 1:
        labels["versions"] += f" ({len(lineage)})"
    section = (
        st.segmented_control(
            "Section",
            list(SECTIONS),
            format_func=labels.get,
            default="overview",
            key=SECTION_KEY,
            label_visibility="collapsed",
        )
        or "overview"
    )
    if section == "images":
        render_gallery(ws, dataset, _new_version)
    elif section == "labels":
        render_label_check(ws, dataset, _new_version)
    elif section == "versions":
        render_versions(ws, dataset, lineage, _open_version)
    elif section == "camera":
        render_add_photos(ws, dataset, _new_version)
    else:
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
    render_import_panel(ws, on_imported=_imported)
else:
    importing = bool(st.session_state.get(IMPORTING_KEY))
    selected = None if importing else _selected(summaries)
    list_column, detail_column = st.columns([1, 3], gap="medium")
    with list_column:
        _list_panel(summaries, selected.id if selected else None, importing)
    with detail_column:
        if importing:
            render_import_panel(ws, on_imported=_imported, on_cancel=_stop_importing)
        else:
            _detail(selected)
