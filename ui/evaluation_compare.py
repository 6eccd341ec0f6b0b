"""The Evaluation page's Compare tab: did transfer help (the from-scratch twin), the strategy
sweep, and other runs on the same classes, each against this run by a paired test.

The baseline and the sweep queue ordinary runs (`tlcore.training.sweep`); their sections
refresh themselves while those runs are working.
"""

from __future__ import annotations

import streamlit as st

from tlcore.evaluation import compare as comparison
from tlcore.evaluation import evaluate, stats
from tlcore.store import runs
from tlcore.training import kept_model, sweep
from tlcore.training.progress import STRATEGY_LABELS, format_duration, strategy_label
from ui import evaluation_charts as charts
from ui.auth import current_owner
from ui.charts import CHART_CONFIG
from ui.common import PAGES, percent, state_badge, workspace

QUERY_PARAM = "run"  # the Training and Evaluation pages' run parameter
SWEEP_REFRESH_S = 5.0


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def run_option(record: runs.RunRecord) -> str:
    """A run in a dropdown: its title, strategy and kept model's headline figures (the
    strategy left out for a sweep's run or a baseline, whose name already says it)."""
    summary = (record.status.summary if record.status else {}) or {}
    headline = kept_model.headline(summary)
    tail = f" · {headline}" if headline else ""
    extra = record.config.extra or {}
    named_for_it = sweep.EXTRA_ROLE in extra or comparison.EXTRA_BASELINE_OF in extra
    strategy = "" if named_for_it else f" · {strategy_label(record.config.strategy)}"
    return f"{record.title}{strategy}{tail}"


def legend_labels(records: list[runs.RunRecord]) -> list[str]:
    """The runs' names for a chart legend, in full; a name two runs share gets the end of
    each one's id, so that every line can be told apart."""
    titles = [r.title for r in records]
    return [
        t if titles.count(t) == 1 else f"{t} ({r.id[-7:]})"
        for t, r in zip(titles, records, strict=True)
    ]


def _transfer_section(record: runs.RunRecord) -> None:
    ws = workspace()
    st.markdown("#### :material/science: Did transfer help?")
    if record.config.strategy == "from_scratch":
        st.caption(
            "This run trains from random weights: it *is* a baseline. Compare it with a run "
            "that starts from pretrained weights below."
        )
        return
    verdict = comparison.baseline_comparison(ws, record.id)
    if verdict is None:
        st.markdown(
            "Train the same network on the same images from random weights, with the "
            "epochs, schedule and augmentation a network learning from scratch needs. A "
            "paired test on the test images then says what the pretrained weights are worth."
        )
        if st.button("Train the from-scratch baseline", icon=":material/play_arrow:"):
            try:
                baseline_id = sweep.start_baseline(ws, record.id, owner=current_owner())
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
                percent(verdict.accuracy),
                border=True,
                help=stats.format_accuracy(verdict.accuracy, n),
            )
            tiles[1].metric(
                "From scratch",
                percent(verdict.baseline_accuracy),
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


def followed_run(rows: list[dict]) -> str | None:
    """The sweep run the Training page opens on: the one training, else the next to start,
    else the first still there (rows as `sweep.sweep_results` gives them); None: none is."""
    for state in (runs.RUNNING, runs.QUEUED):
        active = [r["run_id"] for r in rows if r["state"] == state]
        if active:
            return min(active)  # queued runs start oldest id first
    kept = [r["run_id"] for r in rows if r["state"] != "deleted"]
    return kept[0] if kept else None


def _sweep_section(record: runs.RunRecord) -> None:
    ws = workspace()
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
                started = sweep.start_sweep(ws, base, unfreeze=int(unfreeze), owner=current_owner())
            except (ValueError, OSError) as exc:
                st.error(f"**Could not start the sweep.** {exc}", icon=":material/error:")
                return
            st.toast(f"Sweep queued: {len(started.runs)} runs.", icon=":material/schedule:")
            st.rerun()
        return
    results = sweep.sweep_results(ws, mine[0].id)
    _sweep_results(results)


def _sweep_results(results: sweep.SweepResults) -> None:
    ws = workspace()

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
        followed = followed_run(fresh.rows)
        st.page_link(
            PAGES["training"],
            label="Follow the runs on the Training page",
            icon=":material/model_training:",
            query_params={QUERY_PARAM: followed} if followed else None,
        )
        if fresh.done != results.done:
            st.rerun()

    live()


def _compare_section(record: runs.RunRecord) -> None:
    ws = workspace()
    st.markdown("#### :material/compare_arrows: Compare runs")
    try:
        others = comparison.comparable_runs(ws, record.id)
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
        format_func=lambda run_id: run_option(by_id[run_id]),
        key=f"compare_{record.id}",
        placeholder="Choose runs trained on the same classes",
    )
    if finished > len(others):
        st.caption(
            f"{finished - len(others)} finished run(s) were trained on other classes and "
            "cannot be compared with this one."
        )
    try:
        rows = comparison.compare_runs(ws, [record.id, *chosen])
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    same_backbone = len({r["backbone"] for r in rows}) == 1
    table = []
    for r in rows:
        row = {
            "Run": ("▶ " if r["run_id"] == record.id else "")
            + runs.read_run(ws, r["run_id"]).title,
            "Strategy": STRATEGY_LABELS.get(r["strategy"], r["strategy"]),
            "Backbone": r["backbone"],
            "Test accuracy (95% CI, n)": stats.format_accuracy(r["accuracy"], r["num_samples"]),
            "Against this run (paired test)": r["vs_first_text"] or "",
            "Macro F1": _num(r["macro_f1"]),
            "ECE": _num(r["ece"]),
            "Val. acc. (kept model)": percent(r["best_val_accuracy"]),
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
    shown = [runs.read_run(ws, r["run_id"]) for r in rows]
    histories = {
        label: evaluate.run_history(ws, record.id)
        for label, record in zip(legend_labels(shown), shown, strict=True)
    }
    st.plotly_chart(
        charts.overlaid_curves_figure(histories, title="Validation accuracy per epoch"),
        config=CHART_CONFIG,
        key="compare_curves",
    )


def compare(record: runs.RunRecord) -> None:
    ws = workspace()
    baseline = comparison.find_baseline(ws, record.id)
    waiting = baseline is not None and baseline.state in runs.ACTIVE_STATES

    @st.fragment(run_every=SWEEP_REFRESH_S if waiting else None)
    def transfer() -> None:
        _transfer_section(record)
        now = comparison.find_baseline(ws, record.id)
        if waiting and now is not None and now.state not in runs.ACTIVE_STATES:
            st.rerun()  # the baseline ended: stop polling

    with st.container(border=True):
        transfer()
    with st.container(border=True):
        _sweep_section(record)
    with st.container(border=True):
        _compare_section(record)
