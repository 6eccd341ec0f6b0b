"""The Dataset page's "Images" and "Likely mislabelled" sections: browse, select, fix.

A paged gallery of one version's images, filtered by split, class and flag; the images
selected (kept across pages, per version) can be excluded or moved to another class, which
makes a new version (`tlcore.data.versions`). The label check runs as a background task
(`python -m tlcore datasets suspects ID --task …`); its list is read from the workspace.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from tlcore.data import image_flags, label_check, versions
from tlcore.data.datasets import SPLITS, Dataset, DatasetError, DatasetItem
from tlcore.data.versions import VersionChanges
from tlcore.store import quotas, tasks
from tlcore.store.access import NotAllowedError
from ui import auth
from ui.dataset_view import thumbnail
from ui.task_view import follow

PAGE_SIZE = 24
COLUMNS = 6
ALL = "All"
SHOW_ALL, SHOW_FLAGGED = "All images", "Flagged"
SHOW_LABELS = {
    image_flags.SUSPECTED: "Likely mislabelled",
    image_flags.DUPLICATE: "Duplicates",
    image_flags.NEAR_COPY: "Near-copies",
    image_flags.ODD_SIZE: "Odd sizes",
    image_flags.PLAIN: "Plain colour",
}
SPLIT_LABELS = {"train": "Training", "val": "Validation", "test": "Test"}

OnNewVersion = Callable[[Dataset, str], None]


# -- selection, kept per version across pages and reruns ------------------------------------
def _selection(dataset: Dataset) -> set[str]:
    return st.session_state.setdefault(f"fix_selected::{dataset.id}", set())


def _pick_key(dataset: Dataset, path: str) -> str:
    return f"fix_pick::{dataset.id}::{path}"


def _toggle(dataset: Dataset, path: str) -> None:
    chosen = _selection(dataset)
    if st.session_state.get(_pick_key(dataset, path)):
        chosen.add(path)
    else:
        chosen.discard(path)


def _set_selection(dataset: Dataset, paths: set[str]) -> None:
    chosen = _selection(dataset)
    for path in chosen | paths:
        st.session_state[_pick_key(dataset, path)] = path in paths
    chosen.clear()
    chosen.update(paths)


# -- applying a change -----------------------------------------------------------------------
def make_version_or_explain(
    ws, dataset: Dataset, changes: VersionChanges, override: bool
) -> Dataset | None:
    """The new version, or None after showing why none was made (nothing is lost)."""
    try:
        return versions.make_version(
            ws, dataset.id, changes, actor=auth.current_actor(), override=override
        )
    except (DatasetError, NotAllowedError, quotas.QuotaError, OSError) as exc:
        st.error(f"**No new version was made.** {exc}", icon=":material/error:")
        return None


def announce(dataset: Dataset, made: Dataset, on_new_version: OnNewVersion) -> None:
    """Hands the new version to the page with a sentence saying what happened."""
    _set_selection(dataset, set())
    if made.already_existed:
        message = (
            f"These changes give back version {made.version} of **{made.name}**, which already "
            "exists: it is selected."
        )
    else:
        message = (
            f"Made version {made.version} of **{made.name}** "
            f"({versions.change_summary(made.manifest)}). Version {dataset.version} is kept as "
            "it was, with every run trained on it."
        )
    on_new_version(made, message)


def apply_changes(
    ws, dataset: Dataset, changes: VersionChanges, on_new_version: OnNewVersion, override: bool
) -> None:
    made = make_version_or_explain(ws, dataset, changes, override)
    if made is not None:
        announce(dataset, made, on_new_version)


def _actions(ws, dataset: Dataset, on_new_version: OnNewVersion, suggested: dict[str, str]):
    chosen = _selection(dataset)
    with st.container(border=True):
        shown, enabled, override = auth.may_change(
            dataset.owner, "dataset", key=f"fix_override::{dataset.id}", verbs="change"
        )
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.markdown(
                f"**{len(chosen)} selected**" if chosen else ":gray[Select images below]",
                width=130,
            )
            if st.button("Clear", key="fix_clear", icon=":material/deselect:", disabled=not chosen):
                _set_selection(dataset, set())
                st.rerun()
            note = st.text_input(
                "Why (kept with the version)",
                key=f"fix_note::{dataset.id}",
                placeholder="e.g. mislabelled daisies",
                width=240,
            )
            disabled = not (chosen and shown and enabled)
            if st.button(
                "Exclude", key="fix_exclude", icon=":material/hide_image:", disabled=disabled
            ):
                changes = VersionChanges(excluded=tuple(sorted(chosen)), note=note)
                apply_changes(ws, dataset, changes, on_new_version, override)
            target = st.selectbox(
                "Move to class", dataset.classes, key=f"fix_target::{dataset.id}", width=180
            )
            if st.button(
                f"Move to {target}",
                key="fix_move",
                icon=":material/drive_file_move:",
                disabled=disabled,
            ):
                changes = VersionChanges(
                    moved=tuple((p, target) for p in sorted(chosen)), note=note
                )
                apply_changes(ws, dataset, changes, on_new_version, override)
            with_suggestion = sorted(p for p in chosen if p in suggested)
            if suggested and st.button(
                "Accept the suggested classes",
                key="fix_accept",
                icon=":material/auto_fix_high:",
                disabled=disabled or not with_suggestion,
                help="Moves each selected image to the class the check suggests for it.",
            ):
                changes = VersionChanges(
                    moved=tuple((p, suggested[p]) for p in with_suggestion), note=note
                )
                apply_changes(ws, dataset, changes, on_new_version, override)


# -- the gallery -----------------------------------------------------------------------------
def render_gallery(ws, dataset: Dataset, on_new_version: OnNewVersion, *, show: str = "") -> None:
    """Filters, the paged grid with a checkbox per image, and the actions on the selection."""
    check = label_check.stored(ws, dataset.id)
    flags = image_flags.image_flags(dataset, check)
    counts = image_flags.flag_counts(flags)
    suspects = {s.path: s for s in check.suspects} if check else {}
    checked = check is not None and check.dataset_id == dataset.id
    shown_counts = {f: str(counts[f]) for f in image_flags.FLAGS}
    if not checked:
        shown_counts[image_flags.SUSPECTED] = "not checked"
    options = [SHOW_ALL, f"{SHOW_FLAGGED} ({len(flags)})"] + [
        f"{SHOW_LABELS[f]} ({shown_counts[f]})" for f in image_flags.FLAGS
    ]
    default = next((i for i, o in enumerate(options) if show and o.startswith(show)), 0)
    with st.container(horizontal=True):
        # A select box, not a segmented control: seven choices do not fit in one row.
        wanted = st.selectbox("Show", options, index=default, key=f"fix_show::{show}", width=250)
        split = st.selectbox(
            "Split",
            [ALL, *SPLITS],
            format_func=lambda s: SPLIT_LABELS.get(s, s),
            key="fix_split",
            width=170,
        )
        cls = st.selectbox("Class", [ALL, *dataset.classes], key="fix_class", width=200)
    items = _filtered(dataset.items(), split, cls, wanted or SHOW_ALL, flags)
    if wanted and wanted.startswith(SHOW_LABELS[image_flags.SUSPECTED]):
        items.sort(key=lambda i: -suspects[i.rel_path].score if i.rel_path in suspects else 0)
    elif wanted and wanted.startswith(SHOW_LABELS[image_flags.NEAR_COPY]):
        group_of = {
            path: n
            for n, group in enumerate(image_flags.near_copy_groups(dataset))
            for path in group
        }
        items.sort(key=lambda i: group_of.get(i.rel_path, len(group_of)))  # side by side
    _actions(ws, dataset, on_new_version, {p: s.suggested for p, s in suspects.items()})
    if not items:
        st.info("No image matches these filters.", icon=":material/filter_alt_off:")
        return
    pages = max(1, -(-len(items) // PAGE_SIZE))
    with st.container(horizontal=True, vertical_alignment="center"):
        page = st.number_input(
            "Page", min_value=1, max_value=pages, value=1, key="fix_page", width=120
        )
        st.caption(f"of {pages} · {len(items):,} images")
        on_page = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        if st.button("Select this page", key="fix_select_page", icon=":material/select_all:"):
            _set_selection(dataset, _selection(dataset) | {i.rel_path for i in on_page})
            st.rerun()
    _grid(dataset, on_page, flags, suspects)


def _filtered(
    items: list[DatasetItem], split: str, cls: str, wanted: str, flags: dict[str, list[str]]
) -> list[DatasetItem]:
    chosen = [
        i
        for i in items
        if (split == ALL or i.split == split) and (cls == ALL or i.class_name == cls)
    ]
    if wanted.startswith(SHOW_FLAGGED):
        return [i for i in chosen if i.rel_path in flags]
    for flag, label in SHOW_LABELS.items():
        if wanted.startswith(label):
            return [i for i in chosen if flag in flags.get(i.rel_path, ())]
    return chosen


def _grid(dataset: Dataset, items: list[DatasetItem], flags, suspects) -> None:
    chosen = _selection(dataset)
    for start in range(0, len(items), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, item in zip(columns, items[start : start + COLUMNS], strict=False):
            with column.container(border=True, gap="xxsmall"):
                data = thumbnail(str(item.path))
                if data is None:
                    st.warning("Unreadable", icon=":material/broken_image:")
                else:
                    st.image(data, width="stretch")
                key = _pick_key(dataset, item.rel_path)
                st.session_state.setdefault(key, item.rel_path in chosen)
                st.checkbox(
                    _short(item.path.name),
                    key=key,
                    on_change=_toggle,
                    args=(dataset, item.rel_path),
                )
                line = f":small[:gray[{item.class_name} · {SPLIT_LABELS[item.split]}]]"
                suspect = suspects.get(item.rel_path)
                if suspect is not None:
                    line += f"  \n:orange-badge[→ {suspect.suggested} · {suspect.score:.2f}]"
                for flag in flags.get(item.rel_path, ()):
                    if flag != image_flags.SUSPECTED:
                        line += f" :gray-badge[{flag}]"
                st.markdown(line)


def _short(name: str, keep: int = 12) -> str:
    """A file name that fits under a thumbnail: ``10080576_f5…jpg``."""
    stem, dot, suffix = name.rpartition(".")
    if len(name) <= keep + 4 or not dot:
        return name if len(name) <= keep + 4 else name[:keep] + "…"
    return f"{stem[:keep]}…{suffix}"


# -- the label check -------------------------------------------------------------------------
def render_label_check(ws, dataset: Dataset, on_new_version: OnNewVersion) -> None:
    """The check's state (never run, running, failed, done) and its list as a gallery."""
    subject = tasks.dataset_subject(dataset.id)
    task = tasks.latest(ws, subject, "suspects")
    check = label_check.stored(ws, dataset.id)
    st.markdown(
        "The studio predicts every image's class with a model that never saw that image "
        "(5-fold cross-validation on a pretrained network's features) and lists the images "
        "whose label the rest of the dataset disagrees with (*confident learning*). Look at "
        "each one: accept the suggested class, move it, exclude it, or leave it."
    )
    if task is not None and task.active:
        follow(task)
        return
    if task is not None and task.failed:
        st.error(f"**The check did not finish.** {task.message}", icon=":material/error:")
    if check is None:
        if st.button(
            "Find likely mislabelled images",
            type="primary",
            icon=":material/manage_search:",
            key="fix_check",
        ):
            _start_check(ws, dataset)
        return
    st.caption(
        f"Checked {check.images:,} images with {check.backbone} α {check.alpha:g} "
        f"({check.folds}-fold cross-validated accuracy {check.cv_accuracy:.1%}, "
        f"n = {check.images:,}): **{len(check.suspects)} likely mislabelled**."
    )
    if st.button("Check again", icon=":material/refresh:", key="fix_recheck"):
        _start_check(ws, dataset)
    if not check.suspects:
        st.success("No image looks mislabelled.", icon=":material/check_circle:")
        return
    render_gallery(ws, dataset, on_new_version, show=SHOW_LABELS[image_flags.SUSPECTED])


def _start_check(ws, dataset: Dataset) -> None:
    tasks.start(
        ws,
        tasks.dataset_subject(dataset.id),
        "suspects",
        ["datasets", "suspects", dataset.id],
    )
    st.rerun()
