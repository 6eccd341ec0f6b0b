"""The Predict page's export tab: choose formats, export in a background task, download.

The export runs in its own process (`tlcore.store.tasks`); the tab follows it, then shows
each format's check against the Keras model (the rule it had to meet, and whether it did)
and the bundles made earlier.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from tlcore.serving import export
from tlcore.store import runs, tasks
from tlcore.store.workspace import Workspace
from ui.common import human_bytes
from ui.task_view import follow

KEY = "predict_"  # the Predict page's session-key prefix
DEFAULT_FORMATS = ["keras", "tflite"]
RECENT_BUNDLES = 5


def render_export_tab(ws: Workspace, record: runs.RunRecord) -> None:
    available = export.available_formats()
    chosen = st.multiselect(
        "Formats",
        [f for f in export.FORMATS if available[f] is None],
        default=DEFAULT_FORMATS,
        format_func=lambda f: export.FORMATS[f],
        key=f"{KEY}formats_{record.id}",
        help="Every format is reloaded with its own runtime and compared with the Keras "
        "model on sample images before it goes into the bundle.",
    )
    for fmt, reason in available.items():
        if reason:
            st.caption(f":material/block: {export.FORMATS[fmt]} is not available: {reason}")
    st.caption(
        "The bundle is a zip with the chosen formats, a model card (`model_card.md`, "
        "`model_card.json`), the class names and `usage.py`. Every format takes raw RGB "
        "pixels 0–255; the preprocessing is inside the model."
    )
    task = tasks.latest(ws, record.id, "export")
    if task is not None and task.active:
        with st.container(border=True):
            st.markdown("**:material/package_2: Exporting…**")
            st.caption(
                "Every format is converted, reloaded with its own runtime and checked, in the "
                "background: you can leave this page and come back."
            )
            follow(task)
        return
    if st.button(
        "Build export bundle",
        type="primary",
        icon=":material/package_2:",
        disabled=not chosen,
        key=f"{KEY}export",
    ):
        args = ["export", record.id, "--format", ",".join(chosen)]
        try:
            tasks.start(ws, record.id, "export", args)
        except (ValueError, LookupError, OSError) as exc:
            st.error(f"**Could not start the export.** {exc}", icon=":material/error:")
        else:
            st.rerun()
    just_made = None
    if task is not None and task.failed:
        st.error(f"**Export failed.** {task.message}", icon=":material/error:")
    elif task is not None and task.result.get("bundle"):
        bundle = Path(task.result["bundle"])
        if bundle.exists():
            just_made = bundle
            _export_result(bundle, task.result)
    _earlier_bundles(record, just_made)


def _rule(f: dict) -> str:
    """The pass rule of an exported format, as recorded (or, for older exports, today's)."""
    recorded = (f.get("agreement") or {}).get("rule")
    fmt = export.EXPORT_FORMATS.get(f["format"])
    return recorded or (fmt.check.rule if fmt else "")


def _failed(f: dict) -> bool:
    """Made, but its agreement with the Keras model fell short of its check."""
    return not f.get("error") and (f.get("agreement") or {}).get("passed") is False


def _check_text(agreement: dict) -> str:
    if "passed" not in agreement:
        return "–"  # exported before checks had thresholds
    return "✓ passed" if agreement["passed"] else "✗ did not pass"


def _check_rules(formats: list[dict]) -> str:
    """The thresholds each format had to reach, in one sentence."""
    by_rule: dict[str, list[str]] = {}
    for f in formats:
        by_rule.setdefault(_rule(f), []).append(f.get("label") or f["format"])
    if not by_rule:
        return ""
    parts = "; ".join(f"{', '.join(labels)}: {rule}" for rule, labels in by_rule.items() if rule)
    return (
        "A format passes when its top class is the Keras model's on enough of these images "
        f"and no probability differs by more than its limit — {parts}."
    )


def _failed_checks(formats: list[dict]) -> None:
    """A warning for each format whose agreement fell short, with the measures and limits."""
    for f in formats:
        if not _failed(f):
            continue
        agreement = f["agreement"]
        top1, worst = agreement["top1_match_rate"], agreement["max_abs_prob_diff"]
        st.warning(
            f"**{f.get('label') or f['format']} did not pass its check:** top-1 agreement "
            f"{top1:.1%} (needs ≥ {agreement['min_top1_match_rate']:.0%}), max. probability "
            f"difference {worst:.2g} (allowed ≤ {agreement['max_abs_prob_diff_allowed']:g}). "
            "It is in the bundle: check it on your own images before relying on it, or use a "
            "format that passed.",
            icon=":material/rule:",
        )


def _export_result(bundle: Path, result: dict) -> None:
    """The newest bundle and how each of its formats agreed with the Keras model."""
    formats = result.get("formats") or []
    with st.container(border=True):
        made = sum(1 for f in formats if not f.get("error"))
        st.markdown(
            f"**:material/package_2: {bundle.name}** :gray[· {made} of {len(formats)} formats]"
        )
        problems = any(f.get("error") for f in formats)
        rows = []
        for f in formats:
            agreement = f.get("agreement") or {}
            ok = not f.get("error")
            row = {
                "Format": f.get("label") or export.FORMATS.get(f["format"], f["format"]),
                "Files": ", ".join(f.get("files") or []) if ok else "—",
                "Size": human_bytes(f.get("size_bytes") or 0) if ok else "—",
                "Top-1 agreement": agreement.get("top1_match_rate"),
                "Max. probability difference": agreement.get("max_abs_prob_diff"),
                "Check": _check_text(agreement) if ok else "",
            }
            if problems:
                row["Problem"] = f.get("error") or ""
            rows.append(row)
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={
                "Top-1 agreement": st.column_config.NumberColumn(format="percent"),
                "Max. probability difference": st.column_config.NumberColumn(format="%.2g"),
                "Check": st.column_config.TextColumn(
                    help="Whether the format's agreement with the Keras model reaches its "
                    "thresholds (below the table)."
                ),
                "Problem": st.column_config.TextColumn(width="large"),
            },
        )
        made_formats = [f for f in formats if not f.get("error")]
        _failed_checks(made_formats)
        st.caption(
            f"Agreement with the Keras model, measured on {result.get('agreement_measured_on')}. "
            + _check_rules(made_formats)
        )
        st.download_button(
            "Download bundle",
            bundle.read_bytes(),
            file_name=bundle.name,
            mime="application/zip",
            type="primary",
            icon=":material/download:",
            key=f"{KEY}download_new",
        )


def _earlier_bundles(record: runs.RunRecord, just_made: Path | None) -> None:
    bundles = [b for b in export.list_exports(record.dir) if b != just_made]
    if not bundles:
        return
    with st.expander(f"Earlier exports ({len(bundles)})", icon=":material/history:"):
        for bundle in bundles[:RECENT_BUNDLES]:
            card = export.bundle_summary(bundle)
            formats = ", ".join(
                f["label"] + (" (did not pass its check)" if _failed(f) else "")
                for f in card.get("formats", [])
                if not f["error"]
            )
            name_col, button_col = st.columns([4, 1], vertical_alignment="center")
            name_col.markdown(
                f"`{bundle.name}` :gray[· {human_bytes(bundle.stat().st_size)} · {formats}]"
            )
            button_col.download_button(
                "Download",
                bundle.read_bytes(),
                file_name=bundle.name,
                mime="application/zip",
                icon=":material/download:",
                key=f"{KEY}download_{bundle.name}",
            )
