"""Model: backbone, weights, head and freezing strategy for the next run.

The form (left, `ui.model_form`) keeps its values in session state and makes a `RunConfig`;
the summary (right) validates it, shows what trains in each phase, what it costs, and the
layers of the network (`ui.model_architecture`), and starts the run. The architecture comes
from a model built once per structure (`st.cache_resource`) with random weights: shapes and
parameter counts do not depend on the starting weights, which are loaded by the run itself,
never silently replaced.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from tlcore.config import RunConfig
from tlcore.data import datasets
from tlcore.fileio import StorageError
from tlcore.model import preview, strategies
from tlcore.model.registry import get_backbone
from tlcore.model.weights import imagenet_weights_status
from tlcore.store import jobs, runs
from tlcore.store.server_paths import ServerPathError
from tlcore.training import estimate
from tlcore.training.progress import format_duration, strategy_label
from ui import model_architecture as architecture
from ui import model_form as form
from ui import model_state as form_state
from ui import shared_folders
from ui.auth import current_owner
from ui.common import PAGES, empty_state, page_header, workspace

TRAINING_RUN_KEY = "training_run"  # the Training page shows this run
TRAINING_QUERY_PARAM = "run"  # ... and this deep link, so a reload keeps it
# What the network's structure depends on (the preview model is cached by these).
STRUCTURE_FIELDS = (
    "backbone",
    "alpha",
    "image_size",
    "pooling",
    "dense_units",
    "dense_activation",
    "dropout",
    "head_batchnorm",
    "fusion_stages",
    "flip",
    "rotation",
    "zoom",
    "translation",
    "contrast",
    "brightness",
    "seed",
)
# ... and what decides which of its weights train in each phase.
PHASE_FIELDS = ("strategy", "unfreeze", "unfreeze_unit", "train_batchnorm")
MAX_PREVIEW_HEAD_PARAMS = 150_000_000  # beyond this, building the preview would eat memory


# -- cached model facts ------------------------------------------------------------------
def _structure_config(config: RunConfig) -> RunConfig:
    """The config that fixes the network's structure and trainable flags, nothing else."""
    data = {name: getattr(config, name) for name in (*STRUCTURE_FIELDS, *PHASE_FIELDS)}
    data.update(
        dataset="preview",
        weights="none",
        fine_tune_epochs=1 if config.fine_tune_epochs else 0,
        image_size=strategies.image_size(config),
    )
    return RunConfig(**data)


def _weights_file(config: RunConfig) -> str | None:
    return str(Path(config.weights_ref).expanduser()) if config.weights_kind == "file" else None


def _preview(config: RunConfig, num_classes: int) -> dict | None:
    """The architecture preview, built in its own process; None while it is being built."""
    structure = _structure_config(config)
    data = preview.cached(ws, structure, num_classes, _weights_file(config))
    if data is None:
        preview.request(ws, structure, num_classes, _weights_file(config))
    return data


def _head_too_big(config: RunConfig) -> int:
    """A rough count of the first dense layer's weights when pooling is 'flatten'."""
    if config.pooling != "flatten" or not config.dense_units:
        return 0
    spec = get_backbone(config.backbone)
    side = -(-strategies.image_size(config) // 32)
    return spec.features_at(config.alpha) * side * side * config.dense_units[0]


# -- the summary column ----------------------------------------------------------------------
def _dataset(ws, name: str):
    try:
        return datasets.load_dataset(ws, name), None
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError
        return None, str(exc)


def _validate(ws, dataset) -> tuple[RunConfig | None, str | None]:
    """The config and, when it cannot run, why (field and value named)."""
    try:
        config = form_state.config_from_state(st.session_state)
        strategies.validate_model_config(config, len(dataset.classes))
    except ValueError as exc:
        return None, str(exc)
    if config.weights_kind == "file":
        # A typed path: confined to the shared folders (and the uploads' folder) before
        # anything reads it; nothing else about it is said (not even whether it exists).
        roots = shared_folders.shared_roots(ws)
        if roots is None:
            return None, "No weights file on this server can be read until its settings are fixed."
        try:
            path = roots.including(ws.root / form_state.WEIGHTS_DIR).confine_file(
                config.weights_ref,
                max_bytes=roots.max_weights_bytes,
                what="the weights file",
            )
        except ServerPathError as exc:
            return None, str(exc)
        if str(path) != config.weights_ref:  # the run reads the very file checked here
            config = dataclasses.replace(config, weights=f"file:{path}")
        checked = _preview(config, len(dataset.classes))
        problem = checked.get("weights_problem") if checked else None
        if problem:
            return config, problem.replace(path.name, form_state.weights_file_name(str(path)))
    return config, None


def _weights_text(config: RunConfig) -> str:
    kind = config.weights_kind
    if kind == "imagenet":
        return "ImageNet weights"
    if kind == "file":
        return f"weights from `{form_state.weights_file_name(config.weights_ref)}`"
    if kind == "run":
        return f"backbone of run `{config.weights_ref}`"
    return "random weights"


def _phase_text(phase) -> str:
    """What a phase trains (without where it stands or its learning rate)."""
    return phase.trains


def _summary(config: RunConfig, dataset, error: str | None, train_images: int) -> None:
    spec = get_backbone(config.backbone) if config else None
    with st.container(border=True):
        if config is None or spec is None:
            st.markdown("**:material/fact_check: Run summary**")
        else:
            title = config.name or f"{spec.display_name} on {dataset.name}"
            st.markdown(f"**:material/fact_check: {title}**")
            width = f" (alpha {config.alpha:g})" if spec.has_alpha else ""
            phases = strategies.training_phases(config)
            strategy = strategy_label(config.strategy, config.unfreeze, config.unfreeze_unit)
            lines = [
                f":material/photo_library: **{dataset.name}** · {len(dataset.classes)} classes · "
                f"{train_images:,} training images",
                f":material/account_tree: **{spec.display_name}{width}** · "
                f"{strategies.image_size(config)} px · {_weights_text(config)}",
                (
                    f":material/ac_unit: **{strategy}** · head chosen by 5-fold "
                    "cross-validation on cached features"
                    if config.searches_head
                    else f":material/ac_unit: **{strategy}** · {config.total_epochs} epochs · "
                    f"batch {config.batch_size} · {form.OPTIMIZER_LABELS[config.optimizer]}"
                ),
            ]
            st.markdown("  \n".join(lines))
            if len(phases) > 1:
                st.markdown(
                    "  \n".join(
                        f":small[:gray[{p.index}. {_phase_text(p)} — "
                        f"{p.epochs} epochs at learning rate {p.learning_rate:g}]]"
                        for p in phases
                    )
                )
        if error:
            st.error(f"**This configuration cannot run.** {error}", icon=":material/error:")
        elif config.weights_kind == "file":
            name = form_state.weights_file_name(config.weights_ref)
            st.caption(
                f":material/check_circle: `{name}` fits "
                f"{spec.display_name}{width}: its weights load into the backbone."
            )
        elif config.weights_kind == "imagenet":
            status = imagenet_weights_status(config.backbone, config.alpha, config.image_size)
            if not status.available:
                st.caption(
                    f":material/cloud_download: `{status.filename}` is not cached: the run "
                    "downloads it first, and fails if it cannot."
                )
        _actions(config if not error else None)


def _actions(config: RunConfig | None) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        start = st.button(
            "Start training",
            width="stretch",
            key="start_training",
            type="primary",
            icon=":material/play_arrow:",
            disabled=config is None,
            help="Queues the run; it trains in the background and the Training page follows it."
            if config
            else "Fix the configuration first.",
        )
        slug = "-".join((config.name or config.backbone).split()) if config else "run"
        st.download_button(
            "Save",
            data=config.to_json() if config else "",
            file_name=f"{slug}.config.json",
            mime="application/json",
            icon=":material/download:",
            disabled=config is None,
            on_click="ignore",
            help="Download this configuration as a JSON file: load it here again later, or "
            "train from the command line with `python -m tlcore train --config FILE`.",
        )
        with st.popover("Load", icon=":material/upload:", help="Load a saved configuration."):
            _load_configuration()
    if start and config is not None:
        _start(config)


def _load_configuration() -> None:
    uploaded = st.file_uploader("Configuration file (.json)", type=["json"], key="mf_load")
    if uploaded is not None and st.button("Apply", icon=":material/check:", key="mf_apply"):
        try:
            form_state.apply_loaded_config(uploaded.getvalue().decode("utf-8", errors="replace"))
        except ValueError as exc:
            st.error(f"**This file is not a run configuration.** {exc}", icon=":material/error:")
            return
        st.rerun()


def _start(config: RunConfig) -> None:
    try:
        run_id = jobs.submit(ws, config, owner=current_owner())
    except (StorageError, OSError, ValueError) as exc:
        st.error(f"**The run could not be started.** {exc}", icon=":material/error:")
        return
    st.session_state[TRAINING_RUN_KEY] = run_id
    st.switch_page(PAGES["training"], query_params={TRAINING_QUERY_PARAM: run_id})


def _duration(seconds: float) -> str:
    return "under 1 s" if seconds < 1 else format_duration(seconds)


def _run_estimate(config: RunConfig) -> dict | None:
    """The measured-speed estimate; starts measuring this machine when it has not yet."""
    try:
        planned = estimate.estimate_run(ws, config)
    except (ValueError, OSError):
        return None
    if not planned["measured"]:
        estimate.start_calibration(ws, config)
    return planned


def _cost(config: RunConfig, train_images: int) -> None:
    try:
        cost = strategies.estimate_cost(config, train_images)
    except ValueError as exc:
        st.caption(f"No estimate: {exc}")
        return
    phases = cost["phases"]
    per_epoch = max((p.get("seconds_per_epoch", 0.0) for p in phases), default=0.0)
    cached = any(p["uses_feature_cache"] for p in phases)
    with st.container(border=True):
        st.markdown("**:material/timer: Cost estimate**")
        cols = st.columns(2) + st.columns(2)
        cols[0].metric(
            "Peak memory",
            f"{cost['memory_mb'] / 1024:.1f} GB"
            if cost["memory_mb"] >= 1024
            else f"{cost['memory_mb']:.0f} MB",
            help="Weights, gradients and optimizer slots of what trains, one batch of "
            "activations, and TensorFlow itself.",
            border=True,
        )
        cols[1].metric(
            "Per image",
            f"{cost['train_seconds_per_image'] * 1000:.1f} ms",
            help="One training step per image in the slowest phase.",
            border=True,
        )
        cols[2].metric(
            "Per epoch",
            _duration(per_epoch),
            help=f"{train_images:,} training images, slowest phase.",
            border=True,
        )
        planned = _run_estimate(config)
        total = planned["total_seconds"] if planned else cost.get("total_seconds", 0.0)
        parts = planned["parts"] if planned else {}
        cols[3].metric(
            "Whole run",
            ("≈ " if planned and planned["measured"] else "~ ") + _duration(total),
            help="From the worker's start to the end of its evaluation: "
            + "; ".join(f"{name} {_duration(sec)}" for name, sec in parts.items() if sec >= 0.5)
            + ".",
            border=True,
        )
        if planned and planned["measured"]:
            note = f"Time {planned['basis']}."
        else:
            note = (
                "Time: measuring this machine's speed for this backbone in the background "
                "(10–60 s); until then a rough figure from another machine."
                if planned
                else cost["basis"]
            )
        if cached:
            note += " The frozen backbone's features are computed once and cached."
        st.caption(f":material/info: {note}")


def _frozen_phase() -> bool:
    state = st.session_state
    strategy = state.get(form.key("strategy"))
    return strategy in ("feature_extraction", "two_phase") or (
        strategy == "fine_tune_top" and not state.get(form.key("unfreeze"))
    )


def _right_column() -> None:
    name = st.session_state[form.key("dataset")]
    dataset, problem = _dataset(ws, name)
    if dataset is None:
        st.error(f"**The dataset cannot be opened.** {problem}", icon=":material/error:")
        return
    train_images = int(dataset.split_sizes().get("train", 0))
    config, error = _validate(ws, dataset)
    if config is not None and not error:
        st.session_state[form_state.RUN_CONFIG_KEY] = config.to_dict()
        st.session_state[form_state.APPLIED_KEY] = config.to_dict()
    _summary(config, dataset, error, train_images)
    if config is None:
        st.info(
            "Fix the configuration to see the parameters, the cost and the architecture.",
            icon=":material/schema:",
        )
        return
    too_big = _head_too_big(config)
    if too_big > MAX_PREVIEW_HEAD_PARAMS:
        st.warning(
            f"**The head alone would have about {form.count_text(too_big)} parameters** "
            "(flatten pooling feeds every position of the feature map into the first dense "
            "layer). Use average or max pooling, or fewer units; the preview is skipped.",
            icon=":material/warning:",
        )
        return
    arch = _preview(config, len(dataset.classes))
    if arch is None:
        _wait_for_preview(config, len(dataset.classes))
        _cost(config, train_images)
        return
    architecture.render_parameters(arch, config)
    _cost(config, train_images)
    architecture.render_architecture(
        arch, get_backbone(config.backbone).display_name, _weights_text(config)
    )


def _wait_for_preview(config: RunConfig, num_classes: int) -> None:
    """A note while the preview is built elsewhere; the page reruns once it is there."""
    structure = _structure_config(config)

    @st.fragment(run_every=1.0)
    def poll() -> None:
        if preview.cached(ws, structure, num_classes, _weights_file(config)) is not None:
            st.rerun()
        st.info(
            "Building the architecture preview (parameters per layer and phase) in the "
            "background; it appears here in a few seconds.",
            icon=":material/hourglass_top:",
        )

    poll()


def _prefilled_notice() -> None:
    """Once, after "Train again with these settings": whose settings the form shows."""
    prefilled = st.session_state.pop(form_state.PREFILLED_KEY, None)
    if not prefilled:
        return
    run_id, note = prefilled
    try:
        title = runs.read_run(ws, run_id).title
    except runs.RunNotFoundError:
        title = run_id
    text = (
        f"**The settings of run *{title}*** (`{run_id}`) are filled in below. Change what you "
        "like, then **Start training**: it trains as a new run."
    )
    st.info(f"{text}  \n{note}" if note else text, icon=":material/replay:")


# -- the page --------------------------------------------------------------------------------
ws = workspace()
page_header(
    "Model",
    "Pick a pretrained backbone, its weights, a new head, and what stays frozen.",
)
summaries = {s.name: s for s in datasets.list_datasets(ws) if not s.is_broken}
if not summaries:
    empty_state(
        "Import a dataset first: the model's output layer needs its classes.",
        action="Import a dataset",
        page="dataset",
        icon=":material/photo_library:",
    )
else:
    names = list(summaries)
    form_state.seed_state(st.session_state, names)
    form_state.normalize_state(st.session_state, names)
    _prefilled_notice()
    finished = [
        r
        for r in runs.list_runs(ws)
        if r.state == runs.FINISHED and r.config and (r.dir / runs.MODEL_FILE).exists()
    ]
    left, right = st.columns([5, 6], gap="medium")
    with left:
        spec = form.data_and_backbone_section(summaries)
        form.weights_section(ws, spec, finished)
        with form.section("Recipe", ":material/auto_awesome:"):
            form.recipe_picker()
        form.strategy_section(spec)
        form.head_section(spec)
        form.training_section()
        form.augmentation_section(frozen_phase=_frozen_phase())
        form.run_section()
    with right:
        _right_column()
