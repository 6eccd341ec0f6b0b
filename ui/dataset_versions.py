"""The Dataset page's "Versions" section: every version of the dataset, what each changed,
which runs trained on it; any one can be opened."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import streamlit as st

from tlcore.data import versions
from tlcore.data.datasets import Dataset, DatasetSummary
from tlcore.store import jobs, run_layout, runs
from tlcore.training import clone
from ui import auth
from ui.common import PAGES, flash


def runs_per_version(ws) -> Counter:
    """How many runs trained on each dataset id (as their ``classes.json`` records)."""
    return Counter(
        dataset_id
        for record in runs.list_runs(ws)
        if (dataset_id := run_layout.trained_dataset_id(record.dir))
    )


def render_versions(
    ws, dataset: Dataset, lineage: list[DatasetSummary], on_open: Callable[[str], None]
) -> None:
    trained = runs_per_version(ws)
    newest = lineage[-1].id if lineage else dataset.id
    for summary in reversed(lineage):
        is_shown = summary.id == dataset.id
        with st.container(border=True):
            with st.container(horizontal=True, vertical_alignment="center"):
                badges = [f"**Version {summary.version}**"]
                if summary.id == newest:
                    badges.append(":green-badge[newest: the name means this one]")
                if is_shown:
                    badges.append(":blue-badge[shown]")
                st.markdown(" ".join(badges), width="stretch")
                if not is_shown and st.button(
                    "Open", key=f"ver_open::{summary.id}", icon=":material/open_in_new:"
                ):
                    on_open(summary.id)
            created = summary.created_at.replace("T", " ")[:16]
            n_runs = trained.get(summary.id, 0)
            st.markdown(
                f"{versions.change_summary(summary.manifest)}  \n"
                f":small[:gray[{summary.num_images:,} images · {created} UTC"
                f"{' · by ' + summary.owner if summary.owner else ''} · "
                f"{n_runs} run{'s' if n_runs != 1 else ''} trained on it · `{summary.id}`]]"
            )
            changes = summary.manifest.get("changes")
            if isinstance(changes, dict) and any(changes.values()):
                with st.expander("What changed"):
                    st.markdown(_change_lines(changes))


def _change_lines(changes: dict, limit: int = 50) -> str:
    lines = [
        f"- moved `{m['path']}`: {m['from']} → **{m['to']}**" for m in changes.get("moved") or []
    ]
    lines += [f"- excluded `{path}`" for path in changes.get("excluded") or []]
    lines += [f"- added `{a['path']}` to **{a['class']}**" for a in changes.get("added") or []]
    more = f"\n\n…and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def render_retrain_offer(ws, dataset: Dataset, lineage: list[DatasetSummary]) -> None:
    """After a fix: retrain the runs of earlier versions on this one, each with its settings."""
    older = {s.id: s.version for s in lineage if s.id != dataset.id and s.version < dataset.version}
    if not older:
        return
    records = runs.list_runs(ws)
    retrained = {
        r.config.extra.get(clone.EXTRA_FROM_RUN)
        for r in records
        if r.config is not None and r.config.dataset == dataset.id
    }
    candidates = [
        (r, older[trained])
        for r in records
        if r.state == runs.FINISHED
        and r.id not in retrained
        and (trained := run_layout.trained_dataset_id(r.dir)) in older
    ][:3]
    if not candidates:
        return
    with st.container(border=True):
        st.markdown(
            f"**:material/replay: Retrain on version {dataset.version}** :gray[— each run with "
            "its own settings; its Evaluation page then compares it with the run before the "
            "fix on this version's test images]"
        )
        for record, version in candidates:
            if st.button(
                f"Retrain {record.title} (trained on version {version})",
                key=f"ver_retrain::{record.id}",
                icon=":material/replay:",
            ):
                retrain_on_version(ws, record, dataset)


def retrain_on_version(
    ws, record: runs.RunRecord, dataset: Dataset, before_leaving=lambda: None
) -> None:
    """Starts ``record``'s settings again on ``dataset`` (a fixed version) and opens the
    Training page on the new run; a refusal is shown here. ``before_leaving`` runs once the
    run has started (to forget page state)."""
    try:
        config = clone.config_for_version(ws, record.id, dataset.id)
        run_id = jobs.submit(ws, config, owner=auth.current_owner())
    except (ValueError, LookupError, OSError) as exc:  # QuotaError, CloneError: ValueErrors
        st.error(f"**The run did not start.** {exc}", icon=":material/error:")
        return
    before_leaving()
    flash(
        "training_flash",
        "success",
        f"Retraining {record.title} on version {dataset.version} of **{dataset.name}**. When it "
        "finishes, its Evaluation page compares it with the run before the fix.",
    )
    st.switch_page(PAGES["training"], query_params={"run": run_id})
