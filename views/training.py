"""Training: the queue, the selected run's live progress and curves, stop and resume.

Runs train in their own process (`tlcore.store.jobs`); this page only reads their folders. Two
fragments poll while something is active: the queue every few seconds and the selected run's
live area every 1.5 s. A fragment's ``run_every`` is fixed when the page runs in full, so when
a run's state changes the fragment asks for a full rerun, which redraws the header and turns
polling off once nothing is active.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tlcore.evaluation import stats
from tlcore.fileio import StorageError
from tlcore.store import jobs, runs
from tlcore.store.access import NotAllowedError
from tlcore.store.scheduler import TIME_LIMIT_EVENT
from tlcore.training import kept_model
from tlcore.training.progress import (
    ENDED,
    TRAINING,
    WAITING,
    RunProgress,
    format_ago,
    format_duration,
    format_metric,
    schedule_label,
    seconds_between,
    strategy_label,
    summarize_progress,
)
from ui import auth
from ui.charts import CHART_CONFIG, shared_training_curve_figure
from ui.common import (
    PAGES,
    empty_state,
    fact,
    flash,
    page_header,
    remember_selection,
    show_flash,
    state_badge,
    workspace,
)
from ui.train_again import train_again_button

LIVE_REFRESH_S = 1.5
QUEUE_REFRESH_S = 4.0
RECENT_RUNS = 6
SELECTED_KEY = "training_run"  # the run this session looks at; other pages may set it
QUERY_PARAM = "run"
FLASH_KEY = "training_flash"
WORKER_LOG_LINES = 40

STATE_ICONS = {
    runs.QUEUED: ":material/schedule:",
    runs.RUNNING: ":material/directions_run:",
    runs.FINISHED: ":material/check_circle:",
    runs.FAILED: ":material/error:",
    runs.CANCELLED: ":material/stop_circle:",
    runs.INTERRUPTED: ":material/pause_circle:",
    runs.UNREADABLE: ":material/broken_image:",
}
TILES = (
    ("loss", "Train loss"),
    ("accuracy", "Train accuracy"),
    ("val_loss", "Val. loss"),
    ("val_accuracy", "Val. accuracy"),
)


# -- small helpers -----------------------------------------------------------------
def _queued_in_order(records: list[runs.RunRecord]) -> list[runs.RunRecord]:
    # The scheduler starts queued runs oldest id first.
    return sorted((r for r in records if r.state == runs.QUEUED), key=lambda r: r.id)


def _default_run(records: list[runs.RunRecord]) -> str:
    running = [r for r in records if r.state == runs.RUNNING]
    return (running or records)[0].id


def _selected_run(records: list[runs.RunRecord]) -> runs.RunRecord:
    """The run to show: the URL's ``?run=``, else this session's choice, else a default."""
    by_id = {r.id: r for r in records}
    wanted = st.query_params.get(QUERY_PARAM)
    if wanted in by_id:
        chosen = wanted
    else:
        if wanted:
            st.warning(
                f"There is no run `{wanted}` in this workspace (it may have been deleted). "
                "Showing another run instead; pick one from the queue.",
                icon=":material/link_off:",
            )
        remembered = st.session_state.get(SELECTED_KEY)
        chosen = remembered if remembered in by_id else _default_run(records)
    if st.session_state.get(SELECTED_KEY) != chosen or wanted != chosen:
        remember_selection(SELECTED_KEY, QUERY_PARAM, chosen)
    return by_id[chosen]


def _run_caption(record: runs.RunRecord) -> str:
    cfg, status = record.config, record.status
    if cfg is None or status is None:
        return record.problem or "unreadable run folder"
    summary = status.summary or {}
    if record.state == runs.FINISHED and kept_model.headline(summary):
        detail = kept_model.headline(summary)
    elif record.state == runs.QUEUED:
        detail = f"{cfg.total_epochs} epochs"
    else:
        detail = format_ago(status.finished_at or status.updated_at)
    return f"{cfg.backbone} · {cfg.dataset} · {detail}"


# -- the queue -------------------------------------------------------------------------
def _queue_row(record: runs.RunRecord, selected: str, *, prefix: str = "") -> None:
    """One run in the queue panel: its name (click to open), state and a one-line summary."""
    is_selected = record.id == selected
    with st.container(border=is_selected, gap="xxsmall"):
        clicked = st.button(
            f"{prefix}{record.short_title}",  # the caption below names the dataset
            key=f"pick_{record.id}",
            icon=STATE_ICONS.get(record.state, ":material/circle:"),
            type="tertiary",
            help=f"{record.title} · run `{record.id}`",
            wrap=False,  # long names end in an ellipsis; the tooltip has them in full
        )
        if record.state == runs.RUNNING:
            progress = summarize_progress(
                runs.read_progress(record.dir),
                total_epochs=record.config.total_epochs if record.config else None,
            )
            st.progress(
                progress.overall_fraction,
                text=f":small[:gray[{_run_caption_running(record, progress)}]]",
            )
        else:
            st.markdown(f"{state_badge(record.state)} :small[:gray[{_run_caption(record)}]]")
    if clicked and not is_selected:
        remember_selection(SELECTED_KEY, QUERY_PARAM, record.id)
        st.rerun()


def _run_caption_running(record: runs.RunRecord, progress: RunProgress) -> str:
    cfg = record.config
    where = f"epoch {progress.epochs_done} of {progress.total_epochs}"
    return f"{cfg.backbone} · {where}" if cfg else where


def _queue_panel(selected: str, polling: bool) -> None:
    @st.fragment(run_every=QUEUE_REFRESH_S if polling else None)
    def queue() -> None:
        records = runs.list_runs(ws)
        active = any(r.state in runs.ACTIVE_STATES for r in records)
        if active != polling:
            st.rerun()  # start or stop polling: only a full run can change run_every
        running = [r for r in records if r.state == runs.RUNNING]
        queued = _queued_in_order(records)
        ended = [r for r in records if r.state not in runs.ACTIVE_STATES]
        with st.container(border=True, gap="small"):
            st.markdown("**:material/directions_run: Running**")
            for record in running:
                _queue_row(record, selected)
            if not running:
                st.caption("Nothing is running right now.")
            st.markdown(f"**:material/schedule: Queued** :gray[({len(queued)})]")
            for position, record in enumerate(queued, start=1):
                _queue_row(record, selected, prefix=f"{position}. ")
            if not queued:
                st.caption("The queue is empty.")
            st.markdown("**:material/history: Recent**")
            for record in ended[:RECENT_RUNS]:
                _queue_row(record, selected)
            if not ended:
                st.caption("No run has ended yet.")
            if len(ended) > RECENT_RUNS:
                with st.expander(f"Older runs ({len(ended) - RECENT_RUNS})"):
                    for record in ended[RECENT_RUNS:]:
                        _queue_row(record, selected)
            st.page_link(PAGES["model"], label="Start a new run", icon=":material/add:")

    queue()


# -- the selected run: header and actions ----------------------------------------------
def _header(record: runs.RunRecord) -> None:
    cfg, status = record.config, record.status
    with st.container(border=True):
        st.markdown(f"### {record.title}")
        with st.container(horizontal=True, vertical_alignment="center"):
            about = [f"Run `{record.id}`"]
            if status is not None:
                if started_by := auth.made_by(record.owner, "started"):
                    about.append(started_by)
                about.append(f"created {format_ago(status.created_at)}")
                if status.resumes:
                    about.append(f"resumed {status.resumes}×")
            st.markdown(
                f"{state_badge(record.state)} &nbsp; :gray[{' · '.join(about)}]", width="stretch"
            )
            _actions(record)
        if cfg is not None:
            facts = st.columns(4)
            fact(facts[0], "Dataset", cfg.dataset, ":material/photo_library:")
            fact(facts[1], "Backbone", cfg.backbone, ":material/account_tree:")
            fact(
                facts[2],
                "Strategy",
                strategy_label(cfg.strategy, cfg.unfreeze, cfg.unfreeze_unit),
                ":material/ac_unit:",
            )
            # A non-breaking hyphen: "1e-05" wraps as one word in the narrow column.
            schedule = schedule_label(cfg).replace("e-", "e\u2011")
            fact(facts[3], "Schedule", schedule, ":material/tune:")


def _actions(record: runs.RunRecord) -> None:
    state = record.state
    shown = enabled = override = False
    if state in (*runs.ACTIVE_STATES, runs.INTERRUPTED, runs.CANCELLED):
        shown, enabled, override = auth.may_change(record.owner, "run", key=f"override_{record.id}")
    if state in runs.ACTIVE_STATES and shown:
        queued = state == runs.QUEUED
        stopping = not queued and runs.cancel_requested(record.dir)
        if st.button(
            "Remove from queue" if queued else "Stopping…" if stopping else "Stop",
            key="stop_run",
            icon=":material/cancel:" if queued else ":material/stop_circle:",
            disabled=stopping or not enabled,
            help="The run will not start; you can resume it later."
            if queued
            else "Stops at the next batch and keeps the best model so far; you can resume later.",
        ):
            _cancel(record, override)
    if (
        state in (runs.INTERRUPTED, runs.CANCELLED)
        and shown
        and st.button(
            "Resume",
            key="resume_run",
            icon=":material/play_arrow:",
            type="primary",
            disabled=not enabled,
            help="Queues the run again; it continues from its last completed epoch.",
        )
    ):
        _resume(record, override)
    if state == runs.FINISHED:
        st.page_link(
            PAGES["evaluation"],
            label="Evaluate",
            icon=":material/insights:",
            query_params={QUERY_PARAM: record.id},
        )
    train_again_button(ws, record, key="train_again")


def _cancel(record: runs.RunRecord, override: bool) -> None:
    try:
        state = jobs.cancel(ws, record.id, actor=auth.current_actor(), override=override)
    except (
        runs.RunNotFoundError,
        runs.InvalidTransitionError,
        StorageError,
        NotAllowedError,
    ) as exc:
        st.error(f"**Could not stop the run.** {exc}", icon=":material/error:")
        return
    if state == runs.CANCELLED:
        flash(
            FLASH_KEY,
            "info",
            "Removed from the queue. **Resume** puts it back at the end of the queue.",
        )
    st.rerun()


def _resume(record: runs.RunRecord, override: bool) -> None:
    try:
        jobs.resume(ws, record.id, actor=auth.current_actor(), override=override)
    except runs.InvalidTransitionError as exc:
        st.error(
            f"**This run cannot be resumed.** {exc} Reload the page to see its current state.",
            icon=":material/error:",
        )
        return
    except (runs.RunNotFoundError, StorageError, ValueError, NotAllowedError) as exc:
        st.error(f"**Could not resume the run.** {exc}", icon=":material/error:")
        return
    flash(
        FLASH_KEY,
        "success",
        "Resumed: the run is queued and continues from its last completed epoch.",
    )
    st.rerun()


# -- the selected run: the live area ---------------------------------------------------
def _live_area(run_id: str, shown_state: str, polling: bool) -> None:
    @st.fragment(run_every=LIVE_REFRESH_S if polling else None)
    def live() -> None:
        try:
            record = runs.read_run(ws, run_id)
        except runs.RunNotFoundError:
            st.rerun()  # deleted meanwhile: the full run picks another
        if record.state == runs.RUNNING and not jobs.worker_alive(record.status):
            try:
                jobs.schedule(ws)  # the worker died: mark the run interrupted, start the next
            except (ValueError, StorageError) as exc:
                st.error(f"**Could not check the training process.** {exc}")
            record = runs.read_run(ws, run_id)
        if record.state != shown_state:
            st.rerun()  # header, buttons and polling follow the new state
        if record.status is None:
            st.error(
                f"**This run folder cannot be read:** {record.problem}. "
                f"Check the files in `{record.dir}`, or delete the folder.",
                icon=":material/broken_image:",
            )
            return
        total = record.config.total_epochs if record.config else None
        progress = summarize_progress(runs.read_progress(record.dir), total_epochs=total)
        _notice(record, progress)
        if record.state == runs.QUEUED and not progress.has_metrics:
            return  # nothing to draw yet: the notice says where it stands in the queue
        _progress_bars(record, progress)
        if progress.has_metrics:
            _tiles(progress)
        if progress.has_metrics or record.state == runs.RUNNING:
            _charts(progress)

    live()


def _notice(record: runs.RunRecord, progress: RunProgress) -> None:
    """What is going on, and for an ended run what happened and what to do."""
    state, status = record.state, record.status
    done, total = progress.epochs_done, progress.total_epochs
    if state == runs.RUNNING and runs.cancel_requested(record.dir):
        st.info(
            "**Stopping at the next batch…** The best model so far is kept; "
            "you can resume the run later.",
            icon=":material/hourglass_top:",
        )
    elif state == runs.RUNNING and progress.stage != TRAINING:
        st.info(
            "**Starting…** Loading TensorFlow, the dataset and the pretrained weights. "
            "The first batch appears here in a moment.",
            icon=":material/hourglass_top:",
        )
    elif state == runs.QUEUED:
        queued = _queued_in_order(runs.list_runs(ws))
        ids = [r.id for r in queued]
        position = ids.index(record.id) + 1 if record.id in ids else 1
        st.info(
            f"**Waiting in the queue** — position {position} of {len(ids)}. "
            "It starts by itself when the run ahead of it ends.",
            icon=":material/schedule:",
        )
    elif state == runs.FAILED:
        reason = (status.error if status else None) or progress.error or "No reason was recorded."
        st.error(
            f"**Training failed after {done} of {total} epochs.** {reason}\n\n"
            "**What to do:** fix the cause above (on the Dataset or Model page), then start a "
            "new run: **Train again with these settings** fills the Model page with this run's. "
            "A failed run cannot be resumed; the best model it saved, if any, is kept in its "
            "folder.",
            icon=":material/error:",
        )
        _worker_log(record.dir)
    elif state == runs.INTERRUPTED:
        reason = (status.error if status else None) or "The training process stopped."
        st.warning(
            f"**Interrupted after {done} of {total} epochs.** {reason} "
            f"**Resume** picks up at epoch {done + 1}.",
            icon=":material/pause_circle:",
        )
    elif state == runs.CANCELLED:
        limit = [e for e in runs.read_progress(record.dir) if e.get("event") == TIME_LIMIT_EVENT]
        minutes = limit[-1].get("minutes") if limit else None
        why = (
            f" It reached this server's time limit of {minutes:g} minutes per run (set by "
            "the administrator)."
            if isinstance(minutes, int | float)
            else ""
        )
        st.info(
            f"**Stopped after {done} of {total} epochs.**{why} The best model so far is kept. "
            f"Press **Resume** to continue from epoch {done + 1}.",
            icon=":material/stop_circle:",
        )
    elif state == runs.FINISHED:
        took = seconds_between(status.started_at, status.finished_at) if status else None
        summary = (status.summary if status else {}) or {}
        st.success(_finished_text(summary, done, took), icon=":material/check_circle:")
        if summary.get("collapse"):
            st.error(
                f"**Collapsed to one class.** {summary['collapse']}", icon=":material/warning:"
            )
        if summary.get("divergence"):
            st.warning(f"**Training diverged.** {summary['divergence']}", icon=":material/warning:")
    for notice in progress.notices:
        st.info(notice, icon=":material/restore:")


def _finished_text(summary: dict, done: int, took: float | None) -> str:
    """What a finished run kept: its epoch (and why), validation and test with intervals."""
    search = summary.get("head_search")
    text = "**Finished**" + (f" in {format_duration(took)}" if took else "")
    if search:
        text += f": {search['description']}, refitted on all of them."
    else:
        text += f": {done} epochs."
    if summary.get("kept_epoch") and not search:
        rule = summary.get("keep_rule")  # runs from before the rule was recorded have none
        text += f" The kept model is epoch {summary['kept_epoch']}" + (
            f": {rule}." if rule else "."
        )
    val = summary.get("val_accuracy")
    if isinstance(val, (int, float)):
        method = summary.get("validation_method") or "validation split"
        text += (
            f"\n\n**Validation** ({method}): "
            f"{stats.format_accuracy(val, summary.get('val_samples'))}"
        )
    test = summary.get("test_accuracy")
    if isinstance(test, (int, float)):
        label = "Test" if summary.get("evaluated_split", "test") == "test" else "Evaluated"
        text += (
            f"\n\n**{label}** (held out): "
            f"{stats.format_accuracy(test, summary.get('test_samples'))}"
        )
    return text


def _worker_log(run_dir: Path) -> None:
    path = Path(run_dir) / jobs.WORKER_LOG
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    if lines:
        with st.expander("Technical details (end of the training process's log)"):
            st.code("\n".join(lines[-WORKER_LOG_LINES:]), language=None)


def _progress_bars(record: runs.RunRecord, progress: RunProgress) -> None:
    total, done = progress.total_epochs, progress.epochs_done
    live = record.state == runs.RUNNING and progress.stage not in (WAITING, ENDED)
    with st.container(border=True):
        if record.state == runs.FINISHED:
            count = len(progress.phases)
            phase = f"All {count} phases complete" if count > 1 else "Training complete"
        else:
            phase = progress.phase_text or ("Training" if live else "Not started yet")
        if live and progress.eta_s is not None:
            timing = f"about **{format_duration(progress.eta_s)}** left"
        elif not live and progress.history:
            timing = f"{format_duration(sum(r.seconds or 0 for r in progress.history))} of training"
        else:
            timing = ""
        with st.container(horizontal=True, vertical_alignment="top", wrap=False):
            st.markdown(f"**:material/layers: {phase}**", width="stretch")
            if timing:
                st.markdown(f":material/timer: :gray[{timing}]", width="content")
        epoch_text = f"Epoch {done} of {total}" if total else f"{done} epochs"
        if live and progress.current_epoch:
            epoch_text = f"Epoch {progress.current_epoch} of {total}"
        st.progress(
            progress.overall_fraction, text=f"{epoch_text} · {progress.overall_fraction:.0%}"
        )
        if live and progress.current_epoch and progress.batches:
            parts = [f"Batch {progress.batch} of {progress.batches}"]
            if progress.images_per_sec is not None:
                parts.append(f"{progress.images_per_sec:,.0f} images/s")
            if progress.epoch_eta_s is not None:
                parts.append(f"{format_duration(progress.epoch_eta_s)} left in this epoch")
            st.progress(progress.epoch_fraction, text=" · ".join(parts))
        elif live:
            st.progress(0.0, text="Between epochs: validating and saving the best model…")


def _tiles(progress: RunProgress) -> None:
    latest = progress.latest
    previous = progress.previous
    st.markdown(
        f"**Epoch {latest.epoch}** :gray[— latest completed epoch"
        + (f", compared with epoch {previous.epoch}]" if previous else "]")
    )
    columns = st.columns(len(TILES))
    for column, (key, label) in zip(columns, TILES, strict=True):
        value = latest.metric(key)
        delta = progress.metric_delta(key)
        if delta is None:
            delta_text = None
        elif "accuracy" in key:
            delta_text = f"{delta * 100:+.1f} pp"
        else:
            delta_text = f"{delta:+.4f}"
        column.metric(
            label,
            format_metric(key, value),
            delta_text,
            delta_color="inverse" if "loss" in key else "normal",
            border=True,
            help="Change since the previous epoch" if delta_text else None,
        )


def _charts(progress: RunProgress) -> None:
    descriptions = tuple(sorted((i, info.description) for i, info in progress.phases.items()))
    starts = tuple(sorted(progress.phase_starts.items()))
    columns = st.columns(2)
    for column, metric in zip(columns, ("loss", "accuracy"), strict=True):
        # Built once per epoch, not at every poll of every tab (see the function).
        fig = shared_training_curve_figure(
            tuple(progress.history), metric, progress.total_epochs, starts, descriptions
        )
        with column, st.container(border=True):
            st.plotly_chart(fig, config=CHART_CONFIG, key=f"curve_{metric}")


# -- the page ---------------------------------------------------------------------------
ws = workspace()
page_header("Training", "Runs train in the background; this page follows them live.")
records = runs.list_runs(ws)
if not records:
    empty_state(
        "**Nothing is training.** Configure a model, then start a run: it trains in the "
        "background, and this page follows it live — you can close the browser meanwhile.",
        action="Choose a model",
        page="model",
        icon=":material/model_training:",
    )
else:
    show_flash(FLASH_KEY)
    selected = _selected_run(records)
    anything_active = any(r.state in runs.ACTIVE_STATES for r in records)
    queue_column, detail_column = st.columns([1, 3], gap="medium")
    with queue_column:
        _queue_panel(selected.id, anything_active)
    with detail_column:
        _header(selected)
        _live_area(selected.id, selected.state, selected.state in runs.ACTIVE_STATES)
