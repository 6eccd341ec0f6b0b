"""Evaluation: how good a finished run is, where it goes wrong, and how it compares.

Everything shown here is read from the evaluation a run stores as it finishes
(`tlcore.evaluation.evaluate`), so the page opens without loading TensorFlow; only "Evaluate now"
(a run that finished before evaluations were stored, or another dataset) predicts, in this
process, with a progress bar. The baseline and the strategy sweep queue ordinary runs
(`tlcore.training.sweep`) and show their comparison as they finish.
"""

from __future__ import annotations

import io

import streamlit as st

from tlcore.data.images import ImageError, load_image
from tlcore.evaluation import compare, evaluate, run_report, stats
from tlcore.evaluation.interpret import Interpretation
from tlcore.store import runs
from tlcore.training import kept_model, sweep
from tlcore.training.progress import (
    STRATEGY_LABELS,
    format_ago,
    format_duration,
    strategy_label,
    summarize_progress,
)
from ui import evaluation_charts as charts
from ui.charts import CHART_CONFIG, training_curve_figure
from ui.common import PAGES, empty_state, fact_tile, page_header, state_badge, workspace

SELECTED_KEY = "evaluation_run"  # the run this session looks at; other pages may set it
QUERY_PARAM = "run"
RUN_SELECT_KEY = "evaluation_run_select"
LAST_QUERY_KEY = "evaluation_last_query"
CELL_TRUE_KEY, CELL_PRED_KEY, CELL_LAST_CLICK = "cm_true", "cm_pred", "cm_last_click"
CHART_KEY = "cm_chart"
GALLERY_SIZE = 10
GALLERY_COLUMNS = 5
THUMBNAIL_PX = 192
SWEEP_REFRESH_S = 5.0
SELECTABLE_CHART = {**CHART_CONFIG, "scrollZoom": False}


# -- small helpers -------------------------------------------------------------------
def _title(record: runs.RunRecord) -> str:
    cfg = record.config
    return (cfg.name.strip() or f"{cfg.backbone} on {cfg.dataset}") if cfg else record.id


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def _summary(record: runs.RunRecord) -> dict:
    return (record.status.summary if record.status else {}) or {}


def _run_option(record: runs.RunRecord) -> str:
    headline = kept_model.headline(_summary(record))
    tail = f" · {headline}" if headline else ""
    return f"{_title(record)} · {strategy_label(record.config.strategy)}{tail}"


def _selected_run(finished: list[runs.RunRecord], all_records: list[runs.RunRecord]):
    """The run to show: the URL's ``?run=``, else this session's choice, else the newest."""
    ids = [r.id for r in finished]
    by_id = {r.id: r for r in finished}
    wanted = st.query_params.get(QUERY_PARAM)
    if wanted and wanted not in by_id:
        other = next((r for r in all_records if r.id == wanted), None)
        if other is not None:
            st.warning(
                f"Run `{wanted}` is **{other.state}**; only finished runs can be evaluated. "
                "Showing another run; follow it on the Training page.",
                icon=":material/hourglass_top:",
            )
        else:
            st.warning(
                f"There is no run `{wanted}` in this workspace (it may have been deleted). "
                "Showing another run instead.",
                icon=":material/link_off:",
            )
    if wanted in by_id and wanted != st.session_state.get(LAST_QUERY_KEY):
        st.session_state[RUN_SELECT_KEY] = wanted  # a link from another page wins
    elif st.session_state.get(RUN_SELECT_KEY) not in by_id:
        remembered = st.session_state.get(SELECTED_KEY)
        st.session_state[RUN_SELECT_KEY] = remembered if remembered in by_id else ids[0]
    chosen = st.selectbox(
        "Run",
        ids,
        key=RUN_SELECT_KEY,
        format_func=lambda run_id: _run_option(by_id[run_id]),
        help="Finished runs, newest first.",
    )
    st.session_state[SELECTED_KEY] = chosen
    st.session_state[LAST_QUERY_KEY] = chosen
    if st.query_params.get(QUERY_PARAM) != chosen:
        st.query_params[QUERY_PARAM] = chosen
    return by_id[chosen]


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


# -- header --------------------------------------------------------------------------
def _fact(column, label: str, value: str, icon: str) -> None:
    column.caption(f"{icon} {label}")
    column.markdown(f"**{value}**")


def _header(record: runs.RunRecord) -> None:
    cfg, summary = record.config, _summary(record)
    with st.container(border=True):
        st.markdown(f"### {_title(record)}")
        finished = format_ago(record.status.finished_at) if record.status else "–"
        st.markdown(
            f"{state_badge(record.state)} &nbsp; :gray[Run `{record.id}` · finished {finished}]"
        )
        facts = st.columns(4)
        _fact(facts[0], "Dataset", cfg.dataset, ":material/photo_library:")
        _fact(facts[1], "Backbone", f"{cfg.backbone} · {cfg.weights}", ":material/account_tree:")
        _fact(
            facts[2],
            "Strategy",
            strategy_label(cfg.strategy, cfg.unfreeze, cfg.unfreeze_unit),
            ":material/ac_unit:",
        )
        params = summary.get("trainable_params")
        training = [
            "cross-validated head"
            if cfg.searches_head
            else f"{summary.get('epochs_completed', cfg.total_epochs)} epochs"
        ]
        if summary.get("train_seconds") is not None:
            training.append(format_duration(summary["train_seconds"]))
        if params is not None:
            training.append(f"{params:,} trainable")
        _fact(facts[3], "Training", " · ".join(training), ":material/timer:")


def _dataset_choice(record: runs.RunRecord) -> tuple[str | None, str, list[str]]:
    """The dataset to show the evaluation of: ``(dataset id or None = own, label, refused)``."""
    try:
        options = evaluate.compatible_datasets(ws, record.id)
    except (evaluate.EvaluationError, OSError, ValueError):
        options = []
    usable = [(s, reason) for s, reason in options if reason is None]
    refused = [s.name for s, reason in options if reason is not None]
    stored = {m["dataset_id"]: m for m in evaluate.list_evaluations(ws, record.id)}
    own_id = next((m["dataset_id"] for m in stored.values() if m.get("own_dataset")), None)
    ids = [s.id for s, _ in usable]
    if own_id and own_id not in ids:
        ids.insert(0, own_id)
    names = {s.id: s.name for s, _ in usable}

    def label(dataset_id: str) -> str:
        manifest = stored.get(dataset_id)
        name = names.get(dataset_id) or (manifest or {}).get("dataset_name", dataset_id)
        if manifest is not None:
            what = evaluate.SPLIT_LABELS.get(manifest["split"], manifest["split"])
            own = " (trained on)" if manifest.get("own_dataset") else ""
            return f"{name}{own} · {what} · {manifest['summary']['accuracy']:.1%}"
        own = dataset_id == own_id or name == record.config.dataset
        return f"{name}{' (trained on)' if own else ''} · not evaluated yet"

    if not ids:
        return None, record.config.dataset, refused
    choice_key = f"evaluation_dataset_choice_{record.id}"
    saved = st.session_state.get(choice_key)
    chosen = st.selectbox(
        "Evaluated on",
        ids,
        index=ids.index(saved) if saved in ids else 0,
        format_func=label,
        # The labels say which datasets are evaluated: a new widget when that changes, so
        # the browser shows the new labels (the choice itself is kept in choice_key).
        key=f"evaluation_dataset_{record.id}_{len(stored)}",
        help="The run's own test split, or another imported dataset with the same classes "
        "(or a subset of them): a new test set the model has never seen.",
    )
    st.session_state[choice_key] = chosen
    return chosen, names.get(chosen, chosen), refused


def _downloads(record: runs.RunRecord, result: evaluate.EvaluationResult | None) -> None:
    with st.popover("Download", icon=":material/download:", disabled=result is None):
        if result is None:
            return
        stem = f"{record.id}-{result.dataset_id}"
        st.download_button(
            "HTML report",
            data=lambda: _report_html(record.id, result.dataset_id, result.created_at),
            file_name=f"{stem}-report.html",
            mime="text/html",
            icon=":material/description:",
            on_click="ignore",
            width="stretch",
            help="One self-contained page: setup, curves, metrics, confusion matrix, worst "
            "errors with thumbnails. Opens offline.",
        )
        files = result.files()
        st.download_button(
            "Metrics (JSON)",
            data=files["metrics"].read_bytes(),
            file_name=f"{stem}-metrics.json",
            mime="application/json",
            icon=":material/data_object:",
            on_click="ignore",
            width="stretch",
        )
        st.download_button(
            "Per-class metrics (CSV)",
            data=files["per_class"].read_bytes(),
            file_name=f"{stem}-per-class.csv",
            mime="text/csv",
            icon=":material/table:",
            on_click="ignore",
            width="stretch",
        )


@st.cache_data(max_entries=8, show_spinner=False)
def _report_html(run_id: str, dataset_id: str, created_at: str) -> str:
    return run_report.render_report(ws, run_id, dataset_id)


# -- evaluate now --------------------------------------------------------------------
def _evaluate_now(record: runs.RunRecord, dataset_id: str | None, dataset_name: str) -> None:
    own = dataset_id is None or dataset_name == record.config.dataset
    failed = [e for e in runs.read_progress(record.dir) if e.get("event") == "evaluation_failed"]
    with st.container(border=True):
        if own:
            st.markdown(
                "**:material/pending: This run has no stored evaluation yet.** It probably "
                "finished before runs were evaluated automatically. Evaluating predicts its "
                "test images once and stores the results, so this page opens instantly from "
                "then on."
            )
        else:
            st.markdown(
                f"**:material/pending: Not evaluated on *{dataset_name}* yet.** Every image of "
                "that dataset is predicted once; the results are stored with the run."
            )
        if failed and own:
            st.warning(
                f"Evaluation after training failed: {failed[-1].get('message', '')}",
                icon=":material/warning:",
            )
        if st.button(
            "Evaluate now", type="primary", icon=":material/play_arrow:", key="evaluate_now"
        ):
            bar = st.progress(0.0, text="Loading the model…")
            try:
                evaluate.evaluate_run(
                    ws,
                    record.id,
                    dataset=None if own else dataset_id,
                    progress=lambda fraction, message: bar.progress(
                        min(max(fraction, 0.0), 1.0), text=message
                    ),
                )
            except (ValueError, OSError, runs.RunNotFoundError) as exc:
                bar.empty()
                st.error(f"**Could not evaluate the run.** {exc}", icon=":material/error:")
                return
            st.rerun()


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
    tiles = [("Accuracy", _pct(m.accuracy), TILE_HELP["accuracy"])]
    if ks:
        k = ks[0]
        tiles.append(
            (f"Top-{k} accuracy", _pct(m.top_k_accuracy[k]), TILE_HELP["top_k"].format(k=k))
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
    summary = _summary(runs.read_run(ws, result.run_id))
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


def _gallery(rows) -> None:
    for start in range(0, len(rows), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, row in zip(columns, rows[start : start + GALLERY_COLUMNS], strict=False):
            with column, st.container(border=True, gap="xsmall"):
                _tile(row)


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


def _overview(result: evaluate.EvaluationResult) -> None:
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
def _errors(result: evaluate.EvaluationResult) -> None:
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
            _gallery(worst)
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
def _curves(record: runs.RunRecord, result: evaluate.EvaluationResult) -> None:
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


# -- compare -------------------------------------------------------------------------
def _transfer_section(record: runs.RunRecord) -> None:
    st.markdown("#### :material/science: Did transfer help?")
    if record.config.strategy == "from_scratch":
        st.caption(
            "This run trains from random weights: it *is* a baseline. Compare it with a run "
            "that starts from pretrained weights below."
        )
        return
    verdict = compare.baseline_comparison(ws, record.id)
    if verdict is None:
        st.markdown(
            "Train the same network on the same images from random weights, with the "
            "epochs, schedule and augmentation a network learning from scratch needs. A "
            "paired test on the test images then says what the pretrained weights are worth."
        )
        if st.button("Train the from-scratch baseline", icon=":material/play_arrow:"):
            try:
                baseline_id = sweep.start_baseline(ws, record.id)
            except (ValueError, OSError) as exc:
                st.error(f"**Could not queue the baseline.** {exc}", icon=":material/error:")
                return
            st.toast(f"Baseline `{baseline_id}` queued.", icon=":material/schedule:")
            st.rerun()
        return
    baseline = runs.read_run(ws, verdict.baseline_id)
    if verdict.baseline_state != runs.FINISHED:
        st.markdown(f"{state_badge(verdict.baseline_state)} {verdict.reason}")
        st.page_link(
            PAGES["training"],
            label="Follow the baseline",
            icon=":material/model_training:",
            query_params={QUERY_PARAM: verdict.baseline_id},
        )
    else:
        if verdict.comparison:
            n = verdict.num_samples
            tiles = st.columns(3)
            tiles[0].metric(
                f"This run · {verdict.metric}",
                _pct(verdict.accuracy),
                border=True,
                help=stats.format_accuracy(verdict.accuracy, n),
            )
            tiles[1].metric(
                "From scratch",
                _pct(verdict.baseline_accuracy),
                border=True,
                help=stats.format_accuracy(verdict.baseline_accuracy, n),
            )
            tiles[2].metric(
                "Paired test (McNemar)",
                stats.format_p(verdict.p_value),
                border=True,
                help="Exact McNemar test on the images where exactly one of the two is right: "
                "below 0.05, the difference is unlikely to be luck.",
            )
            st.caption(
                f"Intervals (95%, n = {n}): this run {stats.format_accuracy(verdict.accuracy, n)}"
                f"; from scratch {stats.format_accuracy(verdict.baseline_accuracy, n)}."
            )
        show = {
            "transfer_helped": st.success,
            "no_clear_difference": st.info,
            "transfer_hurt": st.warning,
        }.get(verdict.verdict, st.warning)
        show(verdict.reason, icon=":material/lightbulb:")
        if verdict.train_seconds and verdict.baseline_train_seconds:
            st.caption(
                f"Training time: {format_duration(verdict.train_seconds)} with transfer, "
                f"{format_duration(verdict.baseline_train_seconds)} from scratch."
            )
    histories = {
        "This run": evaluate.run_history(ws, record.id),
        "From scratch": evaluate.run_history(ws, baseline.id),
    }
    st.plotly_chart(
        charts.overlaid_curves_figure(histories, title="Validation accuracy per epoch"),
        config=CHART_CONFIG,
        key="baseline_curves",
    )


def _sweep_section(record: runs.RunRecord) -> None:
    st.markdown("#### :material/stacked_bar_chart: Strategy sweep")
    mine = [
        s
        for s in sweep.list_sweeps(ws)
        if record.id in s.runs.values()
        or (s.base_config.get("extra") or {}).get("sweep_source") == record.id
    ]
    if not mine:
        st.markdown(
            "Which freezing strategy suits this data best? Queue five runs with this run's "
            "backbone, data and epoch budget: **feature extraction**, **fine-tune top N**, "
            "**bias-only**, **two-phase** and **from scratch**. The winner is chosen on the "
            "validation split by paired tests (a tie when none is clearly better), and only "
            "its test accuracy is reported, with what each run cost."
        )
        with st.container(horizontal=True, vertical_alignment="bottom"):
            unfreeze = st.number_input(
                "Blocks to unfreeze (fine-tune top N, two-phase)",
                min_value=1,
                max_value=50,
                value=max(record.config.unfreeze, 1),
                width=300,
            )
            start = st.button("Start the sweep", icon=":material/play_arrow:")
        if start:
            base = record.config.replace(extra={"sweep_source": record.id})
            try:
                started = sweep.start_sweep(ws, base, unfreeze=int(unfreeze))
            except (ValueError, OSError) as exc:
                st.error(f"**Could not start the sweep.** {exc}", icon=":material/error:")
                return
            st.toast(f"Sweep queued: {len(started.runs)} runs.", icon=":material/schedule:")
            st.rerun()
        return
    results = sweep.sweep_results(ws, mine[0].id)
    _sweep_results(results)


def _sweep_results(results: sweep.SweepResults) -> None:
    @st.fragment(run_every=None if results.done else SWEEP_REFRESH_S)
    def live() -> None:
        fresh = sweep.sweep_results(ws, results.sweep.id)
        (st.success if fresh.winner and fresh.done else st.info)(
            fresh.message,
            icon=":material/emoji_events:"
            if fresh.winner
            else ":material/balance:"
            if fresh.tied
            else ":material/schedule:",
        )
        if fresh.note:
            st.warning(fresh.note, icon=":material/straighten:")
        st.progress(
            fresh.finished / max(len(fresh.rows), 1),
            text=f"{fresh.finished} of {len(fresh.rows)} runs finished",
        )
        table = [
            {
                "Strategy": ("★ " if r["winner"] else "= " if r.get("tied") else "")
                + STRATEGY_LABELS.get(r["role"], r["role"]),
                "State": r["state"],
                "Validation accuracy (chosen on)": stats.format_accuracy(
                    r["val_accuracy"], r["val_samples"]
                ),
                "Against the best": r.get("vs_best_text") or "",
                "Test accuracy": stats.format_accuracy(r["test_accuracy"], r["test_samples"]),
                "Macro F1": _num(r["macro_f1"]),
                "Training time": format_duration(r["train_seconds"])
                if r["train_seconds"] is not None
                else "–",
                "Trainable params": f"{r['trainable_params']:,}"
                if r["trainable_params"] is not None
                else "–",
            }
            for r in fresh.rows
        ]
        if any(r["val_accuracy"] is not None for r in fresh.rows):
            st.plotly_chart(
                charts.sweep_figure(fresh.rows, STRATEGY_LABELS),
                config=CHART_CONFIG,
                key="sweep_bars",
            )
        st.dataframe(table, hide_index=True)
        st.page_link(
            PAGES["training"],
            label="Follow the runs on the Training page",
            icon=":material/model_training:",
        )
        if fresh.done != results.done:
            st.rerun()

    live()


def _compare_section(record: runs.RunRecord) -> None:
    st.markdown("#### :material/compare_arrows: Compare runs")
    try:
        others = compare.comparable_runs(ws, record.id)
    except (evaluate.EvaluationError, OSError, ValueError) as exc:
        st.caption(f"Runs cannot be compared: {exc}")
        return
    finished = sum(1 for r in runs.list_runs(ws) if r.state == runs.FINISHED and r.id != record.id)
    if not others:
        st.caption(
            "No other finished run was trained on the same classes yet."
            + (f" ({finished} finished run(s) have other classes.)" if finished else "")
        )
        return
    by_id = {r.id: r for r in others}
    chosen = st.multiselect(
        "Compare with",
        list(by_id),
        default=list(by_id)[:2],
        format_func=lambda run_id: _run_option(by_id[run_id]),
        key=f"compare_{record.id}",
        placeholder="Choose runs trained on the same classes",
    )
    if finished > len(others):
        st.caption(
            f"{finished - len(others)} finished run(s) were trained on other classes and "
            "cannot be compared with this one."
        )
    try:
        rows = compare.compare_runs(ws, [record.id, *chosen])
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    same_backbone = len({r["backbone"] for r in rows}) == 1
    table = []
    for r in rows:
        row = {
            "Run": ("▶ " if r["run_id"] == record.id else "")
            + _title(runs.read_run(ws, r["run_id"])),
            "Strategy": STRATEGY_LABELS.get(r["strategy"], r["strategy"]),
            "Backbone": r["backbone"],
            "Test accuracy (95% CI, n)": stats.format_accuracy(r["accuracy"], r["num_samples"]),
            "Against this run (paired test)": r["vs_first_text"] or "",
            "Macro F1": _num(r["macro_f1"]),
            "ECE": _num(r["ece"]),
            "Val. acc. (kept model)": _pct(r["best_val_accuracy"]),
            "Training": format_duration(r["train_seconds"])
            if r["train_seconds"] is not None
            else "–",
            "Trainable params": f"{r['trainable_params']:,}"
            if r["trainable_params"] is not None
            else "–",
        }
        if same_backbone:
            del row["Backbone"]
        table.append(row)
    st.dataframe(
        table, hide_index=True, column_config={"Run": st.column_config.TextColumn(width="medium")}
    )
    st.caption(
        "Each other run is compared with this one on the same test images by an exact "
        "McNemar test: only the images on which exactly one of the two is right count."
    )
    if any(r["accuracy"] is None for r in rows):
        st.caption("A test accuracy of – means that run has no stored evaluation yet.")
    histories = {
        _title(runs.read_run(ws, r["run_id"]))[:40]
        + f" ({r['run_id'][-6:]})": evaluate.run_history(ws, r["run_id"])
        for r in rows
    }
    st.plotly_chart(
        charts.overlaid_curves_figure(histories, title="Validation accuracy per epoch"),
        config=CHART_CONFIG,
        key="compare_curves",
    )


def _compare(record: runs.RunRecord) -> None:
    baseline = compare.find_baseline(ws, record.id)
    waiting = baseline is not None and baseline.state in runs.ACTIVE_STATES

    @st.fragment(run_every=SWEEP_REFRESH_S if waiting else None)
    def transfer() -> None:
        _transfer_section(record)
        now = compare.find_baseline(ws, record.id)
        if waiting and now is not None and now.state not in runs.ACTIVE_STATES:
            st.rerun()  # the baseline ended: stop polling

    with st.container(border=True):
        transfer()
    with st.container(border=True):
        _sweep_section(record)
    with st.container(border=True):
        _compare_section(record)


# -- the page --------------------------------------------------------------------------
ws = workspace()
page_header("Evaluation", "How good a finished run is, where it goes wrong, and how it compares.")
all_records = runs.list_runs(ws)
finished_runs = [r for r in all_records if r.state == runs.FINISHED and r.config is not None]
if not finished_runs:
    empty_state(
        "**No finished runs** to evaluate yet. Train a model first: when a run finishes, it "
        "is evaluated on its test images and the results appear here.",
        action="Go to Training",
        page="training",
        icon=":material/insights:",
    )
else:
    with st.container(horizontal=True, vertical_alignment="bottom"):
        with st.container(width="stretch"):
            selected = _selected_run(finished_runs, all_records)
        with st.container(width=420):
            dataset_id, dataset_name, refused = _dataset_choice(selected)
    try:
        stored = evaluate.load_evaluation(ws, selected.id, dataset_id)
    except evaluate.EvaluationError as exc:
        st.warning(str(exc), icon=":material/warning:")
        stored = None
    _header(selected)
    with st.container(horizontal=True, vertical_alignment="center"):
        if refused:
            st.caption(
                f":material/block: Not offered as test sets (other classes): {', '.join(refused)}",
                width="stretch",
            )
        else:
            st.space("stretch")
        _downloads(selected, stored)
    if stored is None:
        _evaluate_now(selected, dataset_id, dataset_name)
    overview, errors, curves, compare_tab = st.tabs(
        [
            ":material/dashboard: Overview",
            ":material/report: Errors",
            ":material/show_chart: Curves",
            ":material/compare_arrows: Compare",
        ]
    )
    if stored is not None:
        with overview:
            _overview(stored)
        with errors:
            _errors(stored)
        with curves:
            _curves(selected, stored)
    else:
        for tab in (overview, errors, curves):
            with tab:
                st.caption("Evaluate the run (above) to see its metrics, errors and curves.")
    with compare_tab:
        _compare(selected)
