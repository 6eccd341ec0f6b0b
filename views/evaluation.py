"""Evaluation: how good a finished run is, where it goes wrong, and how it compares.

Everything shown here is read from the evaluation a run stores as it finishes
(`tlcore.evaluation.evaluate`), so the page opens without loading TensorFlow. "Evaluate now"
(a run that finished before evaluations were stored, or another dataset) starts a background
task that predicts in its own process (`tlcore.store.tasks`); the page follows its progress.
The tabs' contents live in `ui.evaluation_results` and `ui.evaluation_compare`.
"""

from __future__ import annotations

import streamlit as st

from tlcore.evaluation import evaluate, run_report
from tlcore.store import run_layout, runs, tasks
from tlcore.training.progress import format_ago, format_duration, strategy_label
from ui import evaluation_compare as compare
from ui import evaluation_results as results
from ui.common import empty_state, fact, page_header, state_badge, workspace
from ui.evaluation_compare import QUERY_PARAM, run_option
from ui.evaluation_fix import fix_context, render_before_after, render_fix_bar
from ui.task_view import follow
from ui.train_again import train_again_button

SELECTED_KEY = "evaluation_run"  # the run this session looks at; other pages may set it
RUN_SELECT_KEY = "evaluation_run_select"
LAST_QUERY_KEY = "evaluation_last_query"


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
        format_func=lambda run_id: run_option(by_id[run_id]),
        help="Finished runs, newest first.",
    )
    st.session_state[SELECTED_KEY] = chosen
    st.session_state[LAST_QUERY_KEY] = chosen
    if st.query_params.get(QUERY_PARAM) != chosen:
        st.query_params[QUERY_PARAM] = chosen
    return by_id[chosen]


# -- header --------------------------------------------------------------------------
def _summary(record: runs.RunRecord) -> dict:
    return (record.status.summary if record.status else {}) or {}


def _header(record: runs.RunRecord) -> None:
    cfg, summary = record.config, _summary(record)
    with st.container(border=True):
        st.markdown(f"### {record.title}")
        finished = format_ago(record.status.finished_at) if record.status else "–"
        st.markdown(
            f"{state_badge(record.state)} &nbsp; :gray[Run `{record.id}` · finished {finished}]"
        )
        facts = st.columns(4)
        fact(facts[0], "Dataset", cfg.dataset, ":material/photo_library:")
        fact(facts[1], "Backbone", f"{cfg.backbone} · {cfg.weights}", ":material/account_tree:")
        fact(
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
        fact(facts[3], "Training", " · ".join(training), ":material/timer:")


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
        own = dataset_id == own_id or (own_id is None and name == record.config.dataset)
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
    """Offers to evaluate the run on the chosen dataset, in a background task (its own
    process), and follows a task already at it, started here or in another tab."""
    trained_on = run_layout.trained_dataset_id(record.dir)
    own = (
        dataset_id is None
        or dataset_id == trained_on
        or (trained_on is None and dataset_name == record.config.dataset)
    )
    key = "" if own else dataset_id
    task = tasks.latest(ws, record.id, "evaluate", key)
    failed = [e for e in runs.read_progress(record.dir) if e.get("event") == "evaluation_failed"]
    with st.container(border=True):
        if task is not None and task.active:
            where = "its test images" if own else f"*{dataset_name}*"
            st.markdown(f"**:material/pending: Evaluating the run on {where}…**")
            st.caption(
                "It runs in the background: you can leave this page and come back, or follow "
                "it from another tab."
            )
            follow(task)
            return
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
        if task is not None and task.failed:
            st.error(f"**Could not evaluate the run.** {task.message}", icon=":material/error:")
        elif failed and own:
            st.warning(
                f"Evaluation after training failed: {failed[-1].get('message', '')}",
                icon=":material/warning:",
            )
        if st.button(
            "Evaluate now", type="primary", icon=":material/play_arrow:", key="evaluate_now"
        ):
            args = ["evaluate", record.id, "--json"]
            if not own:
                args += ["--dataset", dataset_id]
            try:
                tasks.start(ws, record.id, "evaluate", args, key=key)
            except (ValueError, LookupError, OSError) as exc:
                st.error(f"**Could not start the evaluation.** {exc}", icon=":material/error:")
                return
            st.rerun()


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
        train_again_button(ws, selected, key="evaluation_train_again")
        _downloads(selected, stored)
    render_before_after(ws, selected)
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
            results.overview(stored)
        with errors:
            fixes = fix_context(ws, selected, stored.dataset_id)
            if fixes is not None and stored.metrics.accuracy < 1.0:
                render_fix_bar(fixes)
            results.errors(stored, fixes.controls if fixes is not None else None)
        with curves:
            results.curves(selected, stored)
    else:
        for tab in (overview, errors, curves):
            with tab:
                st.caption("Evaluate the run (above) to see its metrics, errors and curves.")
    with compare_tab:
        compare.compare(selected)
