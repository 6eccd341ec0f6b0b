"""From Evaluation's errors straight to a fix, a retrain, and the comparison before/after.

Under each misclassified image: keep it, move it to another class, or exclude it. The fixes
collect (per run, across reruns) until "Make a new version", which writes a new version of
the dataset evaluated (`tlcore.data.versions`); "Retrain with these settings" then starts a
run with this run's settings on it (`tlcore.training.clone`). The retrained run's Evaluation
page opens on the comparison of the two on the fixed version's test images
(`tlcore.evaluation.fix_compare`), with the earlier run evaluated there in a background task.
"""

from __future__ import annotations

import streamlit as st

from tlcore.data import datasets, versions
from tlcore.data.datasets import Dataset, DatasetError
from tlcore.data.versions import VersionChanges
from tlcore.evaluation import fix_compare, stats
from tlcore.store import quotas, runs, tasks
from tlcore.store.access import NotAllowedError
from ui import auth
from ui.common import PAGES, percent
from ui.dataset_versions import retrain_on_version
from ui.task_view import follow

KEEP, EXCLUDE = "Keep", "Exclude"
FLASH_KEY = "evaluation_flash"


class FixContext:
    """The run and dataset the fixes of one errors gallery go to."""

    def __init__(self, ws, record: runs.RunRecord, dataset: Dataset):
        self.ws, self.record, self.dataset = ws, record, dataset
        self.rel_path = {str(item.path): item.rel_path for item in dataset.items()}

    @property
    def pending(self) -> dict[str, str]:
        return st.session_state.setdefault(f"evfix::{self.record.id}::{self.dataset.id}", {})

    def controls(self, row) -> None:
        """The fix choice under one image of the gallery."""
        path = self.rel_path.get(row.path)
        if path is None:  # a file not of this version (evaluated before a change)
            return
        options = [KEEP, *(f"Move to {c}" for c in self.dataset.classes if c != row.true), EXCLUDE]
        key = f"evfix_pick::{self.record.id}::{path}"
        if key not in st.session_state:
            chosen = self.pending.get(path)
            st.session_state[key] = (
                KEEP if chosen is None else EXCLUDE if chosen == EXCLUDE else f"Move to {chosen}"
            )
        st.selectbox(
            "Fix",
            options,
            key=key,
            on_change=self._picked,
            args=(path, key),
            label_visibility="collapsed",
            help="Move the image to the class it really is, or exclude it (a blurred photo, "
            "an image of neither class). Nothing changes until you make a new version.",
        )

    def _picked(self, path: str, key: str) -> None:
        choice = st.session_state[key]
        if choice == KEEP:
            self.pending.pop(path, None)
        else:
            self.pending[path] = EXCLUDE if choice == EXCLUDE else choice.removeprefix("Move to ")

    def clear(self) -> None:
        for path in list(self.pending):
            st.session_state.pop(f"evfix_pick::{self.record.id}::{path}", None)
        self.pending.clear()


def fix_context(ws, record: runs.RunRecord, dataset_id: str) -> FixContext | None:
    try:
        return FixContext(ws, record, datasets.load_dataset(ws, dataset_id))
    except DatasetError:  # deleted since: the gallery shows the images, without fixes
        return None


def render_fix_bar(ctx: FixContext) -> None:
    """What is pending, the button that makes the version, then the retrain buttons."""
    made_key = f"evfix_made::{ctx.record.id}"
    made_id = st.session_state.get(made_key)
    with st.container(border=True):
        pending = ctx.pending
        if made_id and not pending:
            _retrain_offer(ctx, made_id)
            return
        with st.container(horizontal=True, vertical_alignment="center"):
            moved = sum(1 for v in pending.values() if v != EXCLUDE)
            excluded = len(pending) - moved
            st.markdown(
                f"**:material/build: {len(pending)} fix{'es' if len(pending) != 1 else ''} "
                f"chosen** :gray[({moved} to move, {excluded} to exclude)]"
                if pending
                else ":material/build: Choose a fix under any image that is labelled wrong: "
                "move it to its real class, or exclude it.",
                width="stretch",
            )
            shown, enabled, override = auth.may_change(
                ctx.dataset.owner, "dataset", key=f"evfix_override::{ctx.record.id}", verbs="change"
            )
            if pending and st.button("Forget them", key="evfix_clear", type="tertiary"):
                ctx.clear()
                st.rerun()
            if st.button(
                "Make a new version with these fixes",
                type="primary",
                icon=":material/library_add:",
                key="evfix_make",
                disabled=not (pending and shown and enabled),
            ):
                _make_version(ctx, override, made_key)


def _make_version(ctx: FixContext, override: bool, made_key: str) -> None:
    changes = VersionChanges(
        excluded=tuple(sorted(p for p, v in ctx.pending.items() if v == EXCLUDE)),
        moved=tuple(sorted((p, v) for p, v in ctx.pending.items() if v != EXCLUDE)),
        note=f"fixed from the errors of run {ctx.record.id}",
    )
    try:
        made = versions.make_version(
            ctx.ws, ctx.dataset.id, changes, actor=auth.current_actor(), override=override
        )
    except (DatasetError, NotAllowedError, quotas.QuotaError, OSError) as exc:
        st.error(f"**No new version was made.** {exc}", icon=":material/error:")
        return
    ctx.clear()
    st.session_state[made_key] = made.id
    st.rerun()


def _retrain_offer(ctx: FixContext, made_id: str) -> None:
    try:
        made = datasets.load_dataset(ctx.ws, made_id)
    except DatasetError:
        st.session_state.pop(f"evfix_made::{ctx.record.id}", None)
        return
    st.markdown(
        f"**:material/check_circle: Made version {made.version} of {made.name}** "
        f"({versions.change_summary(made.manifest)}); version {ctx.dataset.version} is kept."
    )
    st.caption(
        "Retrain with exactly this run's settings on the new version: when it finishes, its "
        "Evaluation page compares the two runs on the new version's test images with an "
        "exact McNemar test."
    )
    with st.container(horizontal=True):
        if st.button(
            "Retrain with these settings",
            type="primary",
            icon=":material/replay:",
            key="evfix_retrain",
        ):
            retrain_on_version(
                ctx.ws,
                ctx.record,
                made,
                lambda: st.session_state.pop(f"evfix_made::{ctx.record.id}", None),
            )
        if st.button("Change settings first", icon=":material/tune:", key="evfix_edit"):
            from ui import model_state

            model_state.prefill_from_run(ctx.ws, ctx.record.id, dataset=made.id)
            st.switch_page(PAGES["model"])


# -- before and after ------------------------------------------------------------------------
def render_before_after(ws, record: runs.RunRecord) -> None:
    """For a run retrained after a fix: both runs on the fixed version's test images."""
    try:
        pair = fix_compare.before_after(ws, record.id)
    except (LookupError, ValueError, OSError):
        return
    if pair is None:
        return
    with st.container(border=True):
        st.markdown(
            f"#### :material/compare_arrows: Before and after the fix · version "
            f"{pair.dataset_version}'s test images"
        )
        if _evaluate_missing(ws, pair):
            return
        if pair.paired is None:
            st.caption(pair.verdict())
            return
        p = pair.paired
        columns = st.columns(3)
        for column, label, correct in (
            (columns[0], f"Before · {pair.before.title}", p.a_correct),
            (columns[1], f"After · {pair.after.title}", p.b_correct),
        ):
            low, high = stats.wilson_interval(correct, p.n)
            column.metric(
                label,
                percent(correct / p.n),
                help=f"{correct} of {p.n} right; 95% interval {percent(low)} to {percent(high)}",
                border=True,
            )
            column.caption(f"n = {p.n} · 95% CI {percent(low)}–{percent(high)}")
        columns[2].metric(
            "Paired test",
            stats.format_p(p.p_value),
            help="Exact McNemar test on the images exactly one of the two got right.",
            border=True,
        )
        columns[2].caption(f"right only after: {p.only_b} · only before: {p.only_a}")
        st.markdown(f"**{pair.verdict()[0].upper()}{pair.verdict()[1:]}.**")


def _evaluate_missing(ws, pair: fix_compare.BeforeAfter) -> bool:
    """Starts (or follows) the evaluations the comparison still needs. True while it waits."""
    waiting = [r for r in (pair.before, pair.after) if r.state != runs.FINISHED]
    if waiting:
        st.caption(f"Waiting for {', '.join(r.id for r in waiting)} to finish training.")
        return True
    for run_id in pair.needs_evaluation:
        key = "" if run_id == pair.after.id else pair.dataset_id
        task = tasks.latest(ws, run_id, "evaluate", key)
        if task is None or task.failed:
            if task is not None and task.failed:
                st.error(f"**Could not evaluate {run_id}.** {task.message}")
                return True
            args = ["evaluate", run_id, "--json"]
            if key:
                args += ["--dataset", pair.dataset_id]
            task = tasks.start(ws, run_id, "evaluate", args, key=key)
        st.caption(f"Evaluating {run_id} on version {pair.dataset_version}'s test images…")
        follow(task)
        return True
    return False
