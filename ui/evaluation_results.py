"""The Evaluation page's results: overview tiles, confusion matrix and its image drill-down,
the most confident errors, and the ROC, precision-recall, calibration and training curves.

Everything is read from a run's stored evaluation (`tlcore.evaluation.evaluate`); nothing
here predicts.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import streamlit as st

from tlcore.data.images import ImageError, load_image
from tlcore.evaluation import evaluate, stats
from tlcore.evaluation.interpret import Interpretation
from tlcore.store import runs
from tlcore.training.progress import format_ago, summarize_progress
from ui import evaluation_charts as charts
from ui.charts import CHART_CONFIG, training_curve_figure
from ui.common import fact_tile, percent, workspace

CELL_TRUE_KEY, CELL_PRED_KEY, CELL_LAST_CLICK = "cm_true", "cm_pred", "cm_last_click"
CHART_KEY = "cm_chart"
GALLERY_SIZE = 10
GALLERY_COLUMNS = 5
THUMBNAIL_PX = 192
SELECTABLE_CHART = {**CHART_CONFIG, "scrollZoom": False}


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def _summary(record: runs.RunRecord) -> dict:
    return (record.status.summary if record.status else {}) or {}


@st.cache_data(max_entries=4000, show_spinner=False)
def _thumbnail(path: str) -> bytes | None:
    """A square PNG of an image for galleries (centre crop, so tiles line up)."""
    try:
        image = load_image(path)
    except (ImageError, OSError):
        return None
    from PIL import Image, ImageOps

    side = min(image.size)
    # Tiny images are enlarged without blurring; large ones shrunk smoothly.
    method = Image.Resampling.NEAREST if side < THUMBNAIL_PX // 2 else Image.Resampling.LANCZOS
    image = ImageOps.fit(image, (THUMBNAIL_PX, THUMBNAIL_PX), method=method)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@st.cache_resource(max_entries=6, show_spinner=False)
def _interpretation(folder: str, created_at: str, class_names: tuple[str, ...]) -> Interpretation:
    paths, y_true, probs = evaluate.read_predictions(folder)
    return Interpretation(y_true, probs, class_names, paths)


def _interp(result: evaluate.EvaluationResult) -> Interpretation:
    return _interpretation(str(result.folder), result.created_at, result.class_names)


# -- overview ------------------------------------------------------------------------
TILE_HELP = {
    "accuracy": "Share of the images whose most probable class is the true class. Under it: "
    "its 95% Wilson interval and n, the number of images it was measured on.",
    "top_k": "Share of the images whose true class is among the {k} most probable.",
    "auc": "Mean one-vs-rest ROC AUC over the classes: 1 separates every class perfectly, "
    "0.5 is guessing.",
    "f1": "F1 averaged over the classes with equal weight, so small classes count as much "
    "as big ones.",
    "log_loss": "Mean cross-entropy of the true class: lower is better; it punishes "
    "confident mistakes hard.",
    "ece": "Expected calibration error: how far the model's confidence is from how often it "
    "is right (0 is perfect).",
}


def _tiles(result: evaluate.EvaluationResult) -> None:
    m = result.metrics
    ks = sorted(k for k in m.top_k_accuracy if k > 1)
    tiles = [("Accuracy", percent(m.accuracy), TILE_HELP["accuracy"])]
    if ks:
        k = ks[0]
        tiles.append(
            (f"Top-{k} accuracy", percent(m.top_k_accuracy[k]), TILE_HELP["top_k"].format(k=k))
        )
    else:
        tiles.append(("Macro ROC AUC", _num(m.macro_roc_auc), TILE_HELP["auc"]))
    absent = result.absent_classes
    f1_help = TILE_HELP["f1"]
    if absent:
        f1_help += (
            f" Averaged over the {m.num_classes - len(absent)} classes that have images in "
            f"this dataset (all {m.num_classes}: {m.macro_avg.f1:.3f})."
        )
    tiles += [
        ("Macro F1", _num(result.present_macro_f1), f1_help),
        ("Log loss", _num(m.log_loss), TILE_HELP["log_loss"]),
        ("Calibration error", _num(m.ece), TILE_HELP["ece"]),
    ]
    low, high = stats.accuracy_interval(m.accuracy, m.num_samples)
    tile_values = [
        (label, value, help_text, f"CI {low * 100:.0f}–{high * 100:.0f}% · n {m.num_samples}")
        if label == "Accuracy"
        else (label, value, help_text, None)
        for label, value, help_text in tiles
    ]
    for column, (label, value, help_text, delta) in zip(
        st.columns(len(tiles)), tile_values, strict=True
    ):
        fact_tile(column, label, value, delta, help_text)
    about = [
        f"**{result.split_label.capitalize()}**: "
        f"{stats.format_accuracy(m.accuracy, m.num_samples)} on *{result.dataset_name}*"
    ]
    if result.validation is not None:
        shown = stats.format_accuracy(result.validation.accuracy, result.validation.num_samples)
        about.append(f"**validation split**: {shown}")
    summary = _summary(runs.read_run(workspace(), result.run_id))
    if result.validation is None and summary.get("validation_method"):
        shown = stats.format_accuracy(summary.get("val_accuracy"), summary.get("val_samples"))
        about.append(f"**validation** ({summary['validation_method']}): {shown}")
    about.append(f"evaluated {format_ago(result.created_at)}")
    st.caption(" · ".join(about))
    for split_metrics, label in ((m, result.split_label), (result.validation, "validation split")):
        found = split_metrics.collapse if split_metrics is not None else None
        if found:
            st.error(
                "**Collapsed to one class.** "
                + stats.collapse_message(found, result.class_names, label),
                icon=":material/warning:",
            )
    if summary.get("divergence"):
        st.warning(f"**Training diverged.** {summary['divergence']}", icon=":material/warning:")
    if result.note:
        st.info(result.note, icon=":material/info:")


def _per_class_table(result: evaluate.EvaluationResult) -> None:
    m = result.metrics
    rows = [
        {
            "Class": c.name,
            "Precision": 100 * c.precision,
            "Recall": 100 * c.recall,
            "F1": 100 * c.f1,
            "Support": c.support,
        }
        for c in m.per_class
        if c.support > 0
    ]

    def bar(help_text: str | None = None):
        return st.column_config.ProgressColumn(
            format="%.0f%%", min_value=0, max_value=100, help=help_text, width="small"
        )

    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            "Class": st.column_config.TextColumn(width="small"),
            "Precision": bar("Of the images predicted as this class, the share that are."),
            "Recall": bar("Of the images of this class, the share found."),
            "F1": bar("The harmonic mean of precision and recall."),
            "Support": st.column_config.NumberColumn(
                help="Images of this class evaluated.", width="small"
            ),
        },
        height=min(35 * (len(rows) + 1) + 3, 460),
    )
    st.caption(
        f"Macro average F1 {result.present_macro_f1:.3f} · weighted F1 "
        f"{m.weighted_avg.f1:.3f} · macro ROC AUC {_num(m.macro_roc_auc)}"
    )
    absent = result.absent_classes
    if absent:
        predicted = [sum(row[i] for row in m.confusion_matrix) for i in range(m.num_classes)]
        counts = {name: predicted[m.class_names.index(name)] for name in absent}
        st.caption(
            "Not in this dataset (the model still predicted them): "
            + ", ".join(f"*{name}* {n}×" for name, n in counts.items())
            + "."
        )


def _confusion_section(result: evaluate.EvaluationResult) -> None:
    m = result.metrics
    names = list(m.class_names)
    _default_cell(result)
    _take_chart_click(names)
    cell = (st.session_state[CELL_TRUE_KEY], st.session_state[CELL_PRED_KEY])
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown("#### Confusion matrix", width="stretch")
        mode = st.segmented_control(
            "Show",
            ["Counts", "Row %"],
            default="Counts",
            key="cm_mode",
            label_visibility="collapsed",
            help="Row %: each row divided by its total, so the diagonal is each class's recall.",
        )
    fig = charts.confusion_matrix_figure(m, normalized=mode == "Row %", selected=cell)
    st.plotly_chart(
        fig,
        key=CHART_KEY,
        on_select="rerun",
        selection_mode="points",
        config=SELECTABLE_CHART,
    )
    st.caption(
        "Rows are the **true** class, columns the **predicted** class; colour is the share of "
        "the row. **Click a cell** to see its images below."
    )


def _true_classes(result: evaluate.EvaluationResult) -> list[str]:
    """The classes that have images in the evaluated set (the rows of the matrix)."""
    present = [c.name for c in result.metrics.per_class if c.support > 0]
    return present or list(result.metrics.class_names)


def _default_cell(result: evaluate.EvaluationResult) -> None:
    names, rows = list(result.metrics.class_names), _true_classes(result)
    if st.session_state.get(CELL_TRUE_KEY) in rows and st.session_state.get(CELL_PRED_KEY) in (
        names
    ):
        return
    confused = _interp(result).most_confused()
    t, p = (confused[0][0], confused[0][1]) if confused else (rows[0], rows[0])
    st.session_state[CELL_TRUE_KEY], st.session_state[CELL_PRED_KEY] = t, p


def _take_chart_click(names: list[str]) -> None:
    """Moves the drill-down to the cell clicked in the heatmap (on the rerun it causes)."""
    state = st.session_state.get(CHART_KEY)
    try:
        points = state["selection"]["points"] if state else []
    except (KeyError, TypeError):
        points = []
    if not points:
        return
    point = points[0]
    cell = (point.get("y"), point.get("x"))
    if cell[0] in names and cell[1] in names and cell != st.session_state.get(CELL_LAST_CLICK):
        st.session_state[CELL_LAST_CLICK] = cell
        st.session_state[CELL_TRUE_KEY], st.session_state[CELL_PRED_KEY] = cell


def _cell_gallery(result: evaluate.EvaluationResult) -> None:
    names = list(result.metrics.class_names)
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.markdown("#### Images in a cell", width="stretch")
        st.selectbox("True class", _true_classes(result), key=CELL_TRUE_KEY, width=220)
        st.selectbox("Predicted as", names, key=CELL_PRED_KEY, width=220)
    t, p = st.session_state[CELL_TRUE_KEY], st.session_state[CELL_PRED_KEY]
    rows = _interp(result).cell(t, p)
    total = sum(result.metrics.confusion_matrix[names.index(t)])
    if t == p:
        what = f"**{len(rows):,}** of {total:,} *{t}* images were recognised; least sure first."
    else:
        what = (
            f"**{len(rows):,}** of {total:,} *{t}* images were taken for *{p}*; most "
            "confidently wrong first."
        )
    st.caption(what + (f" Showing the first {GALLERY_SIZE}." if len(rows) > GALLERY_SIZE else ""))
    if not rows:
        st.markdown(":gray[No images in this cell.]")
        return
    _gallery(rows[:GALLERY_SIZE])


def _gallery(rows, under_each: Callable[[object], None] | None = None) -> None:
    """Tiles of images with what the model said; ``under_each(row)`` adds controls below."""
    for start in range(0, len(rows), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, row in zip(columns, rows[start : start + GALLERY_COLUMNS], strict=False):
            with column, st.container(border=True, gap="xsmall"):
                _tile(row)
                if under_each is not None:
                    under_each(row)


def _tile(row) -> None:
    data = _thumbnail(row.path)
    if data is None:
        st.markdown(":gray[:material/broken_image: image unavailable]")
    else:
        st.image(data, width="stretch")
    if row.correct:
        st.markdown(f":green[**{row.true}**] :gray[{row.confidence:.0%}]")
    else:
        st.markdown(
            f":red[**{row.predicted}**] :gray[{row.confidence:.0%}]  \n"
            f":small[:gray[true] :green[**{row.true}**] :gray[{row.true_probability:.0%}]]"
        )
    top = sorted(row.probabilities.items(), key=lambda kv: -kv[1])[:3]
    st.caption(" · ".join(f"{name} {p:.0%}" for name, p in top), help=row.path)


def _show_cell(true_class: str, predicted_class: str) -> None:
    st.session_state[CELL_TRUE_KEY], st.session_state[CELL_PRED_KEY] = true_class, predicted_class


def _confused_shortcuts(result: evaluate.EvaluationResult) -> None:
    """The most confused pairs as links that open their cell in the gallery below."""
    pairs = _interp(result).most_confused()[:4]
    if not pairs:
        return
    st.markdown("**Most confused**")
    shortcuts = st.container(gap="xxsmall")
    for t, p, n in pairs:
        shortcuts.button(
            f"{t} → {p} · {_images(n)}",
            key=f"confused_{t}_{p}",
            type="tertiary",
            icon=":material/swap_horiz:",
            on_click=_show_cell,
            args=(t, p),
            help=f"Show the {t} images taken for {p}",
        )


def overview(result: evaluate.EvaluationResult) -> None:
    _tiles(result)
    left, right = st.columns([1, 1], gap="medium")
    with left, st.container(border=True, height="stretch"):
        _confusion_section(result)
    with right, st.container(border=True, height="stretch"):
        st.markdown("#### Per class")
        _per_class_table(result)
        _confused_shortcuts(result)
    with st.container(border=True):
        _cell_gallery(result)


# -- errors --------------------------------------------------------------------------
def errors(result: evaluate.EvaluationResult, fix: Callable[[object], None] | None = None) -> None:
    """The most confidently wrong images (``fix(row)`` draws a fix choice under each) and the
    most confused pairs."""
    interp = _interp(result)
    worst = interp.top_losses(GALLERY_SIZE)
    with st.container(border=True):
        st.markdown("#### Most confidently wrong")
        if not worst:
            st.success("Every image was classified correctly.", icon=":material/check_circle:")
        else:
            wrong = int((interp.predicted != interp.y_true).sum())
            st.caption(
                f"{wrong:,} of {len(interp):,} images are misclassified. These are the ones the "
                "model gave the least probability to the true class: look for mislabelled "
                "images, and for classes that are genuinely hard to tell apart."
            )
            _gallery(worst, fix)
    pairs = interp.most_confused()
    with st.container(border=True):
        st.markdown("#### Most confused pairs")
        if not pairs:
            st.caption("No class was taken for another.")
        else:
            st.caption("True class → what it was taken for, most frequent first.")
            st.plotly_chart(
                charts.most_confused_figure(pairs[:10]), config=CHART_CONFIG, key="confused_bars"
            )


# -- curves --------------------------------------------------------------------------
def curves(record: runs.RunRecord, result: evaluate.EvaluationResult) -> None:
    m = result.metrics
    roc_col, pr_col = st.columns(2, gap="medium")
    with roc_col, st.container(border=True):
        st.plotly_chart(charts.curves_figure(m.roc_curves, kind="roc"), config=CHART_CONFIG)
    with pr_col, st.container(border=True):
        st.plotly_chart(charts.curves_figure(m.pr_curves, kind="pr"), config=CHART_CONFIG)
    skipped = [c for c in m.roc_curves if c.skipped_reason]
    if skipped:
        st.caption(
            "No curve for "
            + "; ".join(f"*{c.class_name}* ({c.skipped_reason})" for c in skipped)
            + "."
        )
    cal_col, text_col = st.columns([3, 2], gap="medium")
    with cal_col, st.container(border=True):
        st.plotly_chart(charts.reliability_figure(m.calibration), config=CHART_CONFIG)
    with text_col, st.container(border=True):
        st.markdown("#### Can its confidence be trusted?")
        over = sum(
            b.count
            for b in m.calibration.bins
            if b.count and (b.mean_confidence or 0) > (b.accuracy or 0) + 0.05
        )
        under = sum(
            b.count
            for b in m.calibration.bins
            if b.count and (b.accuracy or 0) > (b.mean_confidence or 0) + 0.05
        )
        verdict = (
            "well calibrated"
            if m.ece < 0.05
            else "somewhat off"
            if m.ece < 0.15
            else "poorly calibrated"
        )
        st.markdown(
            f"The expected calibration error is **{m.ece:.3f}**: {verdict}. When the model "
            "says it is 90% sure, it should be right about 90% of the time. Each bar is the "
            "accuracy of the images in one confidence range; the orange tick is their mean "
            "confidence."
        )
        st.caption(
            f"Of {m.num_samples:,} images, {_images(over)} fall where the model is "
            f"over-confident (bar well below its tick) and {_images(under)} where it is "
            "under-confident (bar well above it)."
        )
    history = summarize_progress(
        runs.read_progress(record.dir), total_epochs=record.config.total_epochs
    )
    if history.has_metrics:
        descriptions = {i: info.description for i, info in history.phases.items()}
        columns = st.columns(2, gap="medium")
        for column, metric in zip(columns, ("loss", "accuracy"), strict=True):
            with column, st.container(border=True):
                st.plotly_chart(
                    training_curve_figure(
                        history.history,
                        metric,
                        total_epochs=history.total_epochs,
                        phase_starts=history.phase_starts,
                        phase_descriptions=descriptions,
                    ),
                    config=CHART_CONFIG,
                    key=f"training_{metric}",
                )
