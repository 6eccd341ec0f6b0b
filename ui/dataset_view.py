"""The Dataset page's pieces: summary, validation report, charts and the thumbnail grid.

Everything here reads a finished `tlcore.data.datasets.Dataset` (its manifest, ``report.json``
and ``items.jsonl``) and draws it; nothing imports or changes a dataset. The figure builders
are plain functions from data to a Plotly figure, like `ui.charts`.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageOps

from tlcore.data.datasets import KERAS_DATASETS, SPLITS, Dataset, DatasetError
from tlcore.data.images import ImageError, load_image
from ui.charts import CHART_CONFIG, GRID_COLOR, TRAIN_COLOR, VAL_COLOR

TEST_COLOR = "#2F9E44"
SPLIT_LABELS = {"train": "Train", "val": "Validation", "test": "Test"}
SHORT_SPLIT_LABELS = {"train": "Train", "val": "Val.", "test": "Test"}
SPLIT_COLORS = {"train": TRAIN_COLOR, "val": VAL_COLOR, "test": TEST_COLOR}
SAMPLES_PER_CLASS = 8
MAX_SAMPLE_CLASSES = 12  # more classes: the user picks which to show
THUMB_SIDE = 120  # shown size in px; stored at twice that for sharp high-DPI screens
THUMB_BACKGROUND = (244, 245, 251)  # the theme's secondary background
LISTED_GROUPS = 5  # duplicate groups spelled out in a warning; the tab has them all
MAX_SIZE_POINTS = 3000  # distinct (width, height) points before the chart rounds sizes
SIZE_BIN_PX = 16
SOURCE_LABELS = {
    "demo": ("Demo", ":material/category:"),
    "zip": ("Zip", ":material/folder_zip:"),
    "upload": ("Upload", ":material/upload:"),
    "folder": ("Server folder", ":material/folder_open:"),
    "keras": ("Keras", ":material/dataset:"),
}
REASON_LABELS = {
    "not_an_image": "Not an image",
    "unreadable": "Unreadable",
    "truncated": "Truncated",
    "too_large": "Too large",
    "unsupported_format": "Unsupported format",
    "outside_class_folder": "Outside a class folder",
    "not_a_regular_file": "Not a regular file",
    "outside_server_roots": "Outside the shared folders",
}
# The report's own sentences about the things shown below with their files; the others
# (split notes, ignored folders, renamed dataset, tiny images...) are shown as notes.
_STRUCTURED_WARNINGS = (
    "Not every file was imported",
    "(leakage)",
    "appear in more than one class",
    "are exact copies",
    "look like one photo edited",
    "The classes are imbalanced",
)


# -- facts -----------------------------------------------------------------------------------
def source_text(manifest: Mapping[str, Any], *, short: bool = False) -> str:
    """Where a dataset's images came from, e.g. ``:material/folder_zip: Zip · `pets.zip```.

    With ``short``, only the kind of source, without icon or markup (e.g. ``Zip``).
    """
    source = manifest.get("source") or {}
    kind = source.get("kind", "")
    label, icon = SOURCE_LABELS.get(kind, (kind or "unknown", ":material/help:"))
    if short:
        return label
    path = source.get("path")
    if kind == "zip" and path:
        detail = f"`{Path(path).name}`"
    elif kind == "folder" and path:
        detail = f"`{path}`"
    elif kind == "keras":
        spec = KERAS_DATASETS.get(source.get("which", ""))
        detail = spec.title if spec else source.get("which", "")
        if source.get("max_per_class"):
            detail += f" · {source['max_per_class']} per class"
    elif kind == "demo":
        detail = "built-in shapes"
    elif kind == "upload":
        detail = "class by class"
    else:
        detail = ""
    return f"{icon} {label}" + (f" · {detail}" if detail else "")


def split_text(manifest: Mapping[str, Any]) -> str:
    """How the split was made: from the source's folders, or carved here with which seed."""
    given = manifest.get("splits_given") or []
    fractions = manifest.get("fractions") or {}
    carved = [
        f"{SPLIT_LABELS[s].lower()} {fractions[s]:.0%}"
        for s in ("val", "test")
        if s not in given and fractions.get(s)
    ]
    if given:
        text = "From the source's folders (" + ", ".join(SHORT_SPLIT_LABELS[s] for s in given)
        text += ")" + (f"; {' and '.join(carved)} carved from train" if carved else "")
    elif carved:
        text = f"Carved here: {' and '.join(carved)} of each class"
    else:
        text = "Everything in train"
    if carved and "seed" in manifest:
        text += f" · seed {manifest['seed']}"
    return text


def is_indexed(manifest: Mapping[str, Any]) -> bool:
    return (manifest.get("source") or {}).get("mode") == "index"


def keras_cached(which: str) -> bool:
    """Whether Keras' cache already holds a dataset's files (then no download is needed)."""
    spec = KERAS_DATASETS[which]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return all((home / "datasets" / name).exists() for name in spec.cache_files)


# -- tables and figures ----------------------------------------------------------------------
def counts_table(classes: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """One row per class: images per split, the total, and the class's share of all images."""
    rows = []
    for name in classes:
        row = {"Class": name}
        for split in SPLITS:
            row[SHORT_SPLIT_LABELS[split]] = int(counts.get(split, {}).get(name, 0))
        row["Total"] = sum(row[SHORT_SPLIT_LABELS[s]] for s in SPLITS)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["Class", *SHORT_SPLIT_LABELS.values(), "Total"])
    total = max(int(table["Total"].sum()), 1)
    table["Share"] = table["Total"] / total
    return table


def class_counts_figure(
    classes: Sequence[str], counts: Mapping[str, Mapping[str, int]], *, height: int = 320
) -> go.Figure:
    """Images per class as grouped bars, one colour per split."""
    fig = go.Figure()
    for split in SPLITS:
        values = [int(counts.get(split, {}).get(c, 0)) for c in classes]
        if not any(values):
            continue
        fig.add_trace(
            go.Bar(
                x=list(classes),
                y=values,
                name=SPLIT_LABELS[split],
                marker={"color": SPLIT_COLORS[split]},
                hovertemplate="%{x}: %{y} images<extra>" + SPLIT_LABELS[split] + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        bargap=0.25,
        bargroupgap=0.06,
        height=height,
        margin={"l": 8, "r": 8, "t": 32, "b": 8},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(showgrid=False, type="category", automargin=True)
    fig.update_yaxes(gridcolor=GRID_COLOR, zeroline=False, title={"text": "Images"})
    return fig


def size_figure(sizes: Sequence[tuple[int, int, int]], *, height: int = 320) -> go.Figure:
    """Width against height, one bubble per size, its area the number of images that size."""
    points = list(sizes)
    rounded = len(points) > MAX_SIZE_POINTS
    if rounded:
        merged: Counter[tuple[int, int]] = Counter()
        for w, h, n in points:
            merged[
                (round(w / SIZE_BIN_PX) * SIZE_BIN_PX, round(h / SIZE_BIN_PX) * SIZE_BIN_PX)
            ] += n
        points = [(w, h, n) for (w, h), n in merged.items()]
    counts = [n for _, _, n in points]
    biggest = max(counts, default=1)
    fig = go.Figure(
        go.Scatter(
            x=[w for w, _, _ in points],
            y=[h for _, h, _ in points],
            mode="markers",
            marker={
                "size": counts,
                "sizemode": "area",
                "sizeref": 2.0 * biggest / 30**2,
                "sizemin": 4,
                "color": TRAIN_COLOR,
                "opacity": 0.55,
                "line": {"width": 0},
            },
            customdata=counts,
            hovertemplate=(
                ("about " if rounded else "")
                + "%{x} × %{y} px: %{customdata} images<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title={
            "text": f"Sizes rounded to {SIZE_BIN_PX} px" if rounded else "",
            "x": 0,
            "xanchor": "left",
            "font": {"size": 12},
        },
        height=height,
        margin={"l": 8, "r": 8, "t": 32 if rounded else 12, "b": 8},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        showlegend=False,
    )
    fig.update_xaxes(title={"text": "Width (px)"}, gridcolor=GRID_COLOR, zeroline=False)
    fig.update_yaxes(title={"text": "Height (px)"}, gridcolor=GRID_COLOR, zeroline=False)
    return fig


def skipped_table(skipped: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "File": s.get("path", ""),
                "Class": s.get("class") or "—",
                "Reason": REASON_LABELS.get(s.get("reason", ""), s.get("reason", "")),
                "Details": s.get("message", ""),
            }
            for s in skipped
        ],
        columns=["File", "Class", "Reason", "Details"],
    )


def duplicates_table(groups: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per file of every group of identical files; leaking groups first."""
    rows = []
    ordered = sorted(groups, key=lambda g: (not g.get("leakage"), not g.get("conflicting_classes")))
    for number, group in enumerate(ordered, start=1):
        for f in group.get("files", []):
            rows.append(
                {
                    "Group": number,
                    "File": f.get("path", ""),
                    "Class": f.get("class", ""),
                    "Split": SPLIT_LABELS.get(f.get("split", ""), f.get("split", "")),
                    "Across splits": bool(group.get("leakage")),
                    "Different classes": bool(group.get("conflicting_classes")),
                }
            )
    columns = ["Group", "File", "Class", "Split", "Across splits", "Different classes"]
    return pd.DataFrame(rows, columns=columns)


# -- cached reads ----------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def image_stats(dataset_dir: str, content_hash: str, _dataset: Dataset) -> dict[str, Any]:
    """Sizes and a deterministic sample per class, read once per dataset (it never changes).

    The sample is the first images by content hash: it looks random, but is the same on
    every visit and every machine.
    """
    items = _dataset.items()
    sizes = Counter((item.width, item.height) for item in items)
    by_class = defaultdict(list)
    for item in items:
        by_class[item.class_name].append(item)
    samples = {
        name: [
            (str(item.path), item.split, item.path.name)
            for item in sorted(group, key=lambda i: i.sha256)[:SAMPLES_PER_CLASS]
        ]
        for name, group in by_class.items()
    }
    return {"sizes": [(w, h, n) for (w, h), n in sorted(sizes.items())], "samples": samples}


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(path: str, side: int = THUMB_SIDE) -> bytes | None:
    """A square JPEG thumbnail of the image at ``path`` (whole image, padded); None if unreadable.

    Uses the studio's one image loader, so it shows what the model sees (EXIF orientation
    applied, every mode as RGB). Small images are enlarged with hard pixel edges.
    """
    try:
        image = load_image(path)
    except (ImageError, OSError):
        return None
    target = (2 * side, 2 * side)
    enlarge = max(image.size) < target[0]
    resample = Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS
    image = ImageOps.pad(image, target, method=resample, color=THUMB_BACKGROUND)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# -- sections --------------------------------------------------------------------------------
def render_checks(report: Mapping[str, Any]) -> None:
    """What needs a look, most important first: leakage, duplicates, imbalance, skipped files."""
    leakage = list(report.get("leakage") or [])
    duplicates = [g for g in report.get("duplicates") or [] if not g.get("leakage")]
    imbalance = report.get("imbalance") or {}
    skipped = list(report.get("skipped") or [])
    near_copies = list(report.get("near_copies") or [])
    notes = [
        w
        for w in report.get("warnings") or []
        if not any(marker in w for marker in _STRUCTURED_WARNINGS)
    ]
    if leakage:
        mislabelled = sum(1 for g in leakage if g.get("conflicting_classes"))
        extra = " Some copies also carry a different class label." if mislabelled else ""
        st.warning(
            f"**Leakage: {len(leakage)} image(s) appear in more than one split.** The model "
            "would be tested on images it trained on, so its scores would look better than "
            f"they are.{extra} Keep one copy of each and import again.\n\n" + _group_lines(leakage),
            icon=":material/call_split:",
        )
    if duplicates:
        copies = sum(len(g.get("files", [])) - 1 for g in duplicates)
        conflicting = sum(1 for g in duplicates if g.get("conflicting_classes"))
        extra = (
            f" {conflicting} of them carry different class labels, which teaches the model "
            "contradictions."
            if conflicting
            else ""
        )
        st.warning(
            f"**Duplicates: {copies} file(s) are exact copies of another image.** Copies "
            f"weigh those images more in training.{extra} Keep one of each and import "
            "again.\n\n" + _group_lines(duplicates),
            icon=":material/content_copy:",
        )
    if near_copies:
        across = sum(1 for g in near_copies if g.get("leakage"))
        extra = (
            f" {across} of them span splits, so the test scores would look better than they are."
            if across
            else ""
        )
        st.warning(
            f"**Near-copies: {len(near_copies)} group(s) of images look like one photo "
            f"edited** (resized, recompressed, recoloured or cropped a little).{extra} Look at "
            "them (**Images** shows them under *Near-copies*) and keep one of each.\n\n"
            + _group_lines(near_copies, joiner=" ≈ ", more="."),
            icon=":material/filter_none:",
        )
    if imbalance.get("flagged"):
        big, small = imbalance["largest"], imbalance["smallest"]
        st.warning(
            f"**The classes are imbalanced:** `{big['class']}` has {big['count']} images and "
            f"`{small['class']}` only {small['count']} (ratio {imbalance['ratio']:.1f}, above "
            f"{imbalance['threshold']:g}). The model will favour the big classes: add images "
            "of the small ones, or turn on **balanced class weights** on the Model page.",
            icon=":material/balance:",
        )
    if skipped:
        reasons = Counter(s.get("reason", "") for s in skipped)
        described = ", ".join(
            f"{n} {REASON_LABELS.get(r, r).lower()}" for r, n in reasons.most_common()
        )
        st.warning(
            f"**{len(skipped)} file(s) were not imported** ({described}). They are listed, "
            "with the reason, under **Skipped files** below.",
            icon=":material/block:",
        )
    if notes:
        st.info("\n".join(f"- {n}" for n in notes), icon=":material/info:")
    if not (leakage or duplicates or near_copies or imbalance.get("flagged") or skipped or notes):
        st.success(
            "**All checks passed:** every file was imported, no image appears twice or in two "
            "splits, and the classes are balanced.",
            icon=":material/verified:",
        )


def _group_lines(
    groups: Sequence[Mapping[str, Any]],
    *,
    joiner: str = " = ",
    more: str = " under **Duplicates** below.",
) -> str:
    lines = []
    for group in groups[:LISTED_GROUPS]:
        files = joiner.join(
            f"`{f.get('path', '')}` ({f.get('class', '?')}, "
            f"{SPLIT_LABELS.get(f.get('split'), f.get('split'))})"
            for f in group.get("files", [])
        )
        lines.append(f"- {files}")
    if len(groups) > LISTED_GROUPS:
        lines.append(f"- … and {len(groups) - LISTED_GROUPS} more{more}")
    return "\n".join(lines)


def render_report_tabs(dataset: Dataset) -> None:
    """The report in tabs: classes, sample images, image sizes, skipped files, duplicates."""
    report = dataset.report
    classes = dataset.classes
    counts = report.get("counts") or dataset.manifest.get("counts") or {}
    skipped = report.get("skipped") or []
    duplicates = report.get("duplicates") or []
    try:
        stats = image_stats(str(dataset.dir), dataset.content_hash, dataset)
        stats_error = None
    except DatasetError as exc:
        stats, stats_error = None, str(exc)
    tabs = st.tabs(
        [
            ":material/bar_chart: Classes",
            ":material/grid_view: Sample images",
            ":material/aspect_ratio: Image sizes",
            f":material/block: Skipped files ({len(skipped)})",
            f":material/content_copy: Duplicates ({len(duplicates)})",
        ]
    )
    with tabs[0]:
        _classes_tab(classes, counts)
    with tabs[1]:
        if stats is None:
            st.error(f"**The images cannot be listed.** {stats_error}", icon=":material/error:")
        else:
            _samples_tab(stats["samples"], dataset.class_counts(), dataset.id)
    with tabs[2]:
        _sizes_tab(report, stats)
    with tabs[3]:
        _skipped_tab(skipped)
    with tabs[4]:
        _duplicates_tab(duplicates)


def _classes_tab(classes: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> None:
    st.plotly_chart(
        class_counts_figure(classes, counts, height=300 if len(classes) <= 20 else 380),
        config=CHART_CONFIG,
        key="ds_counts_chart",
    )
    st.dataframe(
        counts_table(classes, counts),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(classes), 400) if classes else "auto",
        column_config={
            "Share": st.column_config.ProgressColumn(
                "Share",
                min_value=0.0,
                max_value=1.0,
                format="percent",
                help="The class's share of all images",
            ),
        },
    )


def _samples_tab(
    samples: Mapping[str, list[tuple[str, str, str]]], totals: dict, dataset_id: str
) -> None:
    st.caption(
        f"Up to {SAMPLES_PER_CLASS} images per class, the same ones on every visit, "
        "as the model sees them (upright, in RGB). The caption is the image's split."
    )
    names = sorted(samples)
    if len(names) > MAX_SAMPLE_CLASSES:
        names = st.multiselect(
            "Classes to show",
            names,
            default=names[:MAX_SAMPLE_CLASSES],
            key=f"ds_sample_classes_{dataset_id}",
            help=f"This dataset has {len(names)} classes; pick the ones to look at.",
        )
    missing = 0
    for name in names:
        picked = [(thumbnail(path), split) for path, split, _ in samples[name]]
        shown = [(data, split) for data, split in picked if data is not None]
        missing += len(picked) - len(shown)
        st.markdown(f"**{name}** :gray[· {totals.get(name, len(picked)):,} images]")
        cells = st.columns(SAMPLES_PER_CLASS, gap="small")
        for cell, (data, split) in zip(cells, shown, strict=False):
            cell.image(data, caption=SHORT_SPLIT_LABELS.get(split, split), width="stretch")
    if missing:
        st.warning(
            f"{missing} sample image(s) could not be opened. For a dataset imported as an "
            "index, check that the original files are still in place.",
            icon=":material/broken_image:",
        )


def _sizes_tab(report: Mapping[str, Any], stats: Mapping[str, Any] | None) -> None:
    sizes = report.get("image_sizes") or {}
    if sizes:
        cols = st.columns(3)
        for col, axis in zip(cols[:2], ("width", "height"), strict=True):
            s = sizes.get(axis) or {}
            low, high = s.get("min", "?"), s.get("max", "?")
            col.metric(
                f"{axis.capitalize()} · median {s.get('median', '?')} px",
                f"{low} px" if low == high else f"{low}–{high} px",
                border=True,
                help=f"Smallest and largest {axis} among the images, as displayed (upright).",
            )
        tiny = int(sizes.get("smaller_than_px", 0))
        cols[2].metric(
            f"Smaller than {sizes.get('tiny_side', 32)} px",
            f"{tiny:,} images",
            border=True,
            help="Such images are enlarged to the model's input size and look blurry to it.",
        )
    chart, tables = st.columns([3, 2], gap="medium")
    if stats is not None and stats["sizes"]:
        with chart:
            st.markdown("**Width × height** :gray[— one bubble per size, its area the images]")
            st.plotly_chart(size_figure(stats["sizes"]), config=CHART_CONFIG, key="ds_size_chart")
    with tables:
        for title, values, help_text in (
            ("Colour mode", report.get("modes") or {}, "Every image is loaded as RGB."),
            ("File format", report.get("formats") or {}, "Detected from the content."),
        ):
            st.markdown(f"**{title}** :gray[— {help_text}]")
            st.dataframe(
                pd.DataFrame(list(values.items()), columns=[title, "Images"]),
                hide_index=True,
                width="stretch",
            )


def _skipped_tab(skipped: Sequence[Mapping[str, Any]]) -> None:
    if not skipped:
        st.success("Every file found was imported.", icon=":material/check_circle:")
        return
    st.caption(
        "These files were found but not imported. Fix or remove them and import again if "
        "you need them; the dataset works without them."
    )
    st.dataframe(
        skipped_table(skipped),
        hide_index=True,
        width="stretch",
        column_config={"Details": st.column_config.TextColumn("Details", width="large")},
    )


def _duplicates_tab(groups: Sequence[Mapping[str, Any]]) -> None:
    if not groups:
        st.success("No two images are identical.", icon=":material/check_circle:")
        return
    st.caption(
        "Files with identical content (same bytes), grouped. Groups across splits leak test "
        "images into training; groups across classes contradict each other."
    )
    st.dataframe(
        duplicates_table(groups),
        hide_index=True,
        width="stretch",
        column_config={
            "Group": st.column_config.NumberColumn("Group", width="small"),
            "Across splits": st.column_config.CheckboxColumn("Across splits"),
            "Different classes": st.column_config.CheckboxColumn("Different classes"),
        },
    )
