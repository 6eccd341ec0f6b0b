"""The Model page's form: widgets whose values live in session state, and the RunConfig they make.

Every widget has a key ``mf_<field>`` (for most, the `RunConfig` field it sets) and
``persist_state="session"``, so choices survive hidden sections and page switches. The page
runs in this order:

1. `seed_state` fills missing keys (from ``st.session_state["run_config"]`` when another page
   or an earlier visit left a config there, else from sensible defaults), and `normalize_state`
   repairs values the current backbone cannot take (an alpha it has no weights for, an image
   size below its minimum, ...). Both run before any widget is drawn.
2. The ``*_section`` functions draw the widgets.
3. `config_from_state` turns the values into a validated `RunConfig` or raises ``ValueError``
   naming the field and the bad value. It is a plain function of a mapping, so tests and
   other pages can use it without Streamlit.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Mapping, MutableMapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import streamlit as st

from tlcore.config import (
    ACTIVATIONS,
    DISTRIBUTIONS,
    FLIP_MODES,
    LR_SCHEDULES,
    MAX_IMAGE_SIZE,
    MIXED_PRECISION,
    OPTIMIZERS,
    POOLINGS,
    STRATEGIES,
    UNFREEZE_UNITS,
    RunConfig,
)
from tlcore.fileio import atomic_write_bytes
from tlcore.model.registry import BACKBONES, BackboneSpec, get_backbone
from tlcore.model.strategies import STRATEGY_TABLE
from tlcore.model.weights import imagenet_weights_status
from tlcore.store.workspace import Workspace
from tlcore.training import kept_model, presets

RUN_CONFIG_KEY = "run_config"  # the last valid config; other pages may put one here to prefill
APPLIED_KEY = "_mf_applied"  # the config the widgets were last seeded from or produced
BEFORE_SCRATCH_KEY = "_mf_weights_before_scratch"
UPLOAD_NAMES_KEY = "_mf_upload_names"  # stored path → the name the file was uploaded as
UPLOAD_ERROR_KEY = "_mf_upload_error"
PREFIX = "mf_"
PERSIST = "session"

# Keys that do not map one-to-one onto a RunConfig field.
WEIGHTS_SOURCE = "mf_weights_source"  # imagenet | file | run | none
WEIGHTS_PATH = "mf_weights_path"
WEIGHTS_RUN = "mf_weights_run"
WEIGHTS_UPLOAD = "mf_weights_upload"
DENSE_UNITS = "mf_dense_units"  # "256,128"
EARLY_STOPPING = "mf_early_stopping"
PATIENCE = "mf_patience"
BALANCED = "mf_balanced"
RECIPE = "mf_recipe"  # a preset name, or CUSTOM_RECIPE when the settings match none
CUSTOM_RECIPE = "custom"
# Fields whose widget key is simply PREFIX + field name.
DIRECT_FIELDS = (
    "dataset",
    "name",
    "backbone",
    "alpha",
    "image_size",
    "pooling",
    "dense_activation",
    "dropout",
    "head_batchnorm",
    "head_search",
    "fusion_stages",
    "strategy",
    "unfreeze",
    "unfreeze_unit",
    "train_batchnorm",
    "optimizer",
    "learning_rate",
    "fine_tune_learning_rate",
    "weight_decay",
    "momentum",
    "lr_schedule",
    "epochs",
    "fine_tune_epochs",
    "batch_size",
    "label_smoothing",
    "flip",
    "rotation",
    "zoom",
    "translation",
    "contrast",
    "brightness",
    "seed",
    "feature_cache",
    "mixed_precision",
    "distribution",
)
DEFAULT_PATIENCE = 5
FALLBACK_BACKBONE = "MobileNetV2"
PREFERRED_BACKBONES = ("MobileNetV2", "MobileNet", "MobileNetV3Small", "EfficientNetB0")
WEIGHTS_DIR = "weights"  # under the workspace root: uploaded weights files, by content hash
WEIGHTS_SUFFIXES = (".weights.h5", ".hdf5", ".h5")  # longest first: ".weights.h5" ends in ".h5"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

WEIGHTS_LABELS = {
    "imagenet": "ImageNet",
    "file": "File",
    "run": "Earlier run",
    "none": "None",
}
STRATEGY_TITLES = {name: s.title for name, s in STRATEGY_TABLE.items()}
STRATEGY_CAPTIONS = {name: s.caption for name, s in STRATEGY_TABLE.items()}
POOLING_LABELS = {"avg": "Average", "max": "Max", "flatten": "Flatten"}
FLIP_LABELS = {
    "none": "No flips",
    "horizontal": "Horizontal",
    "vertical": "Vertical",
    "horizontal_and_vertical": "Both",
}
OPTIMIZER_LABELS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (Nesterov)", "rmsprop": "RMSprop"}
SCHEDULE_LABELS = {
    "constant": "Constant",
    "cosine": "Cosine decay",
    "plateau": "Reduce on plateau",
}
MIXED_PRECISION_LABELS = {"auto": "Auto (GPU only)", "off": "Off", "on": "On"}
DISTRIBUTION_LABELS = {
    "auto": "Auto",
    "one_device": "One device",
    "mirrored": "Mirrored (all GPUs)",
    "multi_worker": "Multi-worker",
}
BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256, 512)
FINE_TUNE_STRATEGIES = ("fine_tune_top", "two_phase")
UNFROZEN_STRATEGIES = ("fine_tune_top", "full_fine_tune", "two_phase")
LR_FORMAT = "%.1e"  # learning rates read best as 1.0e-03, 1.0e-05
HIGH_LEARNING_RATE = 1e-3  # at or above this, fine-tuning pretrained layers is risky


def key(field_name: str) -> str:
    return PREFIX + field_name


# -- facts about backbones ---------------------------------------------------------------
def count_text(n: float) -> str:
    """A parameter count for people: 771, 219.3K, 2.26M."""
    if n < 1_000:
        return f"{n:,.0f}"
    if n < 1_000_000:
        return f"{n / 1_000:.1f}K"
    return f"{n / 1_000_000:.2f}M"


def speed_hint(spec: BackboneSpec) -> str:
    """How fast the backbone runs, in a word (from its measured CPU speed at 224 px)."""
    if spec.speed_224 >= 100:
        return "fast"
    if spec.speed_224 >= 40:
        return "medium"
    if spec.speed_224 >= 15:
        return "slow"
    return "very slow"


def backbone_label(name: str) -> str:
    spec = BACKBONES[name]
    return (
        f"{spec.display_name} · {count_text(spec.params)} params · {spec.default_size} px · "
        f"{speed_hint(spec)}"
    )


def cached_alphas(spec: BackboneSpec, image_size: int = 0) -> list[float]:
    """The widths whose ImageNet weights are in the Keras cache (``[1.0]`` style for others)."""
    if not spec.has_imagenet_weights:
        return []
    alphas = spec.alphas or (1.0,)
    return [a for a in alphas if imagenet_weights_status(spec.name, a, image_size).available]


def default_alpha(spec: BackboneSpec) -> float:
    """A cached width if there is one (the widest), else 1.0."""
    if not spec.has_alpha:
        return 1.0
    cached = cached_alphas(spec)
    return float(max(cached)) if cached else 1.0


def default_backbone() -> tuple[str, float]:
    """The backbone (and alpha) to start with: one whose ImageNet weights are on this
    machine, small ones first, else MobileNetV2."""
    order = [*PREFERRED_BACKBONES, *(n for n in BACKBONES if n not in PREFERRED_BACKBONES)]
    for name in order:
        spec = BACKBONES.get(name)
        if spec is not None and cached_alphas(spec):
            return name, default_alpha(spec)
    return FALLBACK_BACKBONE, 1.0


def weights_overview() -> list[dict]:
    """One row per backbone: whether its ImageNet weights are in the Keras cache."""
    rows = []
    for spec in BACKBONES.values():
        if not spec.has_imagenet_weights:
            state, files = "– none exist", ""
        else:
            cached = cached_alphas(spec)
            alphas = spec.alphas or (1.0,)
            if spec.has_alpha and cached:
                state = "✓ alpha " + ", ".join(f"{a:g}" for a in cached)
            elif cached:
                state = "✓ on this machine"
            else:
                state = "✗ missing"
            shown = cached[-1] if cached else (1.0 if 1.0 in alphas else alphas[-1])
            files = imagenet_weights_status(spec.name, shown).filename
        rows.append(
            {
                "backbone": spec.display_name.split(" (", 1)[0],
                "imagenet": state,
                "params": spec.params,
                "size": spec.default_size,
                "speed": speed_hint(spec),
                "alphas": ", ".join(f"{a:g}" for a in spec.alphas) or "–",
                "file": files,
            }
        )
    return rows


# -- state <-> config ----------------------------------------------------------------------
_FIELD_TYPES = typing.get_type_hints(RunConfig)


def _field_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(RunConfig) if f.name not in ("dataset", "extra")}


def _typed(name: str, value: Any) -> Any:
    """``value`` as the widget for field ``name`` holds it (JSON may give 1 for 1.0)."""
    kind = _FIELD_TYPES.get(name)
    try:
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is int and not isinstance(value, bool):
            return int(value)
    except (TypeError, ValueError):
        return value
    return value


def state_from_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """The widget values that show ``data`` (a `RunConfig` dict, possibly partial)."""
    values = {**_field_defaults(), **{k: v for k, v in data.items() if k != "extra"}}
    spec = BACKBONES.get(values["backbone"]) or BACKBONES[FALLBACK_BACKBONE]
    values["backbone"] = spec.name
    state = {key(name): _typed(name, values.get(name)) for name in DIRECT_FIELDS}
    state[key("image_size")] = int(values["image_size"] or spec.default_size)
    state[key("alpha")] = float(values["alpha"])
    weights = str(values["weights"])
    kind, _, ref = weights.partition(":")
    state[WEIGHTS_SOURCE] = kind if kind in WEIGHTS_LABELS else "imagenet"
    state[WEIGHTS_PATH] = ref if kind == "file" else ""
    state[WEIGHTS_RUN] = ref if kind == "run" else None
    state[DENSE_UNITS] = ",".join(str(u) for u in values["dense_units"])
    patience = int(values["early_stopping_patience"])
    state[EARLY_STOPPING] = patience > 0
    state[PATIENCE] = patience or DEFAULT_PATIENCE
    state[BALANCED] = values["class_weights"] == "balanced"
    return state


def default_state(dataset: str) -> dict[str, Any]:
    backbone, alpha = default_backbone()
    return state_from_config({"dataset": dataset, "backbone": backbone, "alpha": alpha})


def parse_dense_units(text: str) -> tuple[int, ...]:
    """``"256, 128"`` → ``(256, 128)``; empty text → ``()``.

    Raises:
        ValueError: a part is not a whole number (names the field and quotes the text).
    """
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",")]
    parts = [p for p in parts if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            "dense_units must be whole numbers separated by commas, e.g. 256,128 (or empty for "
            f"no hidden layer). Received: dense_units={text!r}"
        ) from None


def weights_value(state: Mapping[str, Any]) -> str:
    """The ``weights`` string of the config the form describes."""
    if state.get(key("strategy")) == "from_scratch":
        return "none"
    source = state.get(WEIGHTS_SOURCE) or "imagenet"
    if source == "file":
        path = str(state.get(WEIGHTS_PATH) or "").strip()
        if not path:
            raise ValueError(
                "Choose a weights file: upload one, or enter the path of a .h5 / .weights.h5 "
                "file on the server. Received: weights='file:'"
            )
        return f"file:{path}"
    if source == "run":
        run_id = state.get(WEIGHTS_RUN)
        if not run_id:
            raise ValueError(
                f"Choose a finished run with the {state.get(key('backbone'))} backbone to take "
                "the weights from, or another weights source. Received: weights='run:'"
            )
        return f"run:{run_id}"
    return source


def config_from_state(state: Mapping[str, Any]) -> RunConfig:
    """The validated `RunConfig` the widget values describe.

    Raises:
        ValueError: naming the field and quoting the bad value.
    """
    data = {name: state.get(key(name)) for name in DIRECT_FIELDS}
    spec = BACKBONES.get(data["backbone"])
    if spec is not None and not spec.has_alpha:
        data["alpha"] = 1.0
    data["name"] = str(data.get("name") or "").strip()
    data["weights"] = weights_value(state)
    data["dense_units"] = parse_dense_units(state.get(DENSE_UNITS, ""))
    data["early_stopping_patience"] = (
        int(state.get(PATIENCE) or 0) if state.get(EARLY_STOPPING) else 0
    )
    data["class_weights"] = "balanced" if state.get(BALANCED) else "none"
    for name in ("alpha", "dropout", "learning_rate", "fine_tune_learning_rate", "label_smoothing"):
        if isinstance(data.get(name), int) and not isinstance(data.get(name), bool):
            data[name] = float(data[name])
    return RunConfig.from_dict(data)


# -- seeding and repairing state -----------------------------------------------------------
def seed_state(session: MutableMapping, dataset_names: list[str]) -> None:
    """Fills the form's keys before any widget is drawn.

    A config in ``session["run_config"]`` that the form has not shown yet (left by another
    page, or restored by "Load") overwrites the widgets; otherwise only missing keys are
    filled, from defaults.
    """
    incoming = session.get(RUN_CONFIG_KEY)
    if isinstance(incoming, Mapping) and incoming != session.get(APPLIED_KEY):
        session.update(state_from_config(incoming))
        session[APPLIED_KEY] = dict(incoming)
    expected = [key(name) for name in DIRECT_FIELDS] + [
        WEIGHTS_SOURCE,
        WEIGHTS_PATH,
        WEIGHTS_RUN,
        DENSE_UNITS,
        EARLY_STOPPING,
        PATIENCE,
        BALANCED,
    ]
    if all(name in session for name in expected):
        return
    defaults = default_state(dataset_names[0] if dataset_names else "")
    for name, value in defaults.items():
        if name not in session:
            session[name] = value


def normalize_state(session: MutableMapping, dataset_names: list[str]) -> None:
    """Repairs values the current choices cannot take, before the widgets are drawn."""
    if dataset_names and session.get(key("dataset")) not in dataset_names:
        session[key("dataset")] = dataset_names[0]
    if session.get(key("backbone")) not in BACKBONES:
        session[key("backbone")] = default_backbone()[0]
    spec = BACKBONES[session[key("backbone")]]
    if spec.has_alpha and float(session.get(key("alpha")) or 0) not in spec.alphas:
        session[key("alpha")] = default_alpha(spec)
    size = session.get(key("image_size"))
    if not isinstance(size, int) or not spec.min_size <= size <= MAX_IMAGE_SIZE:
        session[key("image_size")] = spec.default_size
    if session.get(WEIGHTS_SOURCE) not in weights_sources(spec):
        session[WEIGHTS_SOURCE] = "none"
    if session.get(key("strategy")) == "from_scratch":
        session[WEIGHTS_SOURCE] = "none"
    session[key("fusion_stages")] = min(
        max(int(session.get(key("fusion_stages")) or 1), 1), spec.max_fusion_stages
    )
    if session.get(key("unfreeze_unit")) == "blocks":
        session[key("unfreeze")] = min(int(session.get(key("unfreeze")) or 0), spec.num_blocks)
    batch = session.get(key("batch_size"))
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 4096:
        session[key("batch_size")] = 32


def weights_sources(spec: BackboneSpec) -> list[str]:
    sources = ["imagenet", "file", "run", "none"]
    return sources if spec.has_imagenet_weights else sources[1:]


# -- callbacks -----------------------------------------------------------------------------
def _on_backbone_change() -> None:
    state = st.session_state
    spec = BACKBONES[state[key("backbone")]]
    state[key("image_size")] = spec.default_size
    state[key("alpha")] = default_alpha(spec)
    state[WEIGHTS_RUN] = None
    if not spec.has_imagenet_weights and state.get(WEIGHTS_SOURCE) == "imagenet":
        state[WEIGHTS_SOURCE] = "none"
    elif (
        spec.has_imagenet_weights
        and state.get(WEIGHTS_SOURCE) == "none"
        and state.get(key("strategy")) != "from_scratch"
    ):
        state[WEIGHTS_SOURCE] = "imagenet"
    state[key("fusion_stages")] = min(state.get(key("fusion_stages")) or 1, spec.max_fusion_stages)


def _on_strategy_change() -> None:
    state = st.session_state
    if state[key("strategy")] == "from_scratch":
        if state.get(WEIGHTS_SOURCE) != "none":
            state[BEFORE_SCRATCH_KEY] = state.get(WEIGHTS_SOURCE)
        state[WEIGHTS_SOURCE] = "none"
    else:
        before = state.pop(BEFORE_SCRATCH_KEY, None)
        if before and state.get(WEIGHTS_SOURCE) == "none":
            state[WEIGHTS_SOURCE] = before


def save_uploaded_weights(ws: Workspace, name: str, data: bytes) -> Path:
    """Stores an uploaded weights file as ``<ws>/weights/<sha256><suffix>``.

    The suffix of the upload is kept (``.weights.h5`` is Keras' native layout, ``.h5`` the
    legacy one; Keras picks the reader by it). Only the HDF5 signature is checked here;
    whether the arrays fit the backbone is checked by building with it.

    Raises:
        ValueError: not a ``.h5`` / ``.weights.h5`` / ``.hdf5`` name, or not an HDF5 file.
    """
    lowered = name.lower()
    suffix = next((s for s in WEIGHTS_SUFFIXES if lowered.endswith(s)), None)
    if suffix is None:
        raise ValueError(
            f"A weights file must end in .weights.h5, .h5 or .hdf5 (Keras weights). "
            f"Received: {name!r}"
        )
    if not data.startswith(HDF5_SIGNATURE):
        raise ValueError(
            f"{name} is not an HDF5 file (whatever its name says), so it cannot hold Keras "
            "weights. Upload a .h5 or .weights.h5 file saved by Keras."
        )
    digest = hashlib.sha256(data).hexdigest()
    path = ws.root / WEIGHTS_DIR / f"{digest}{suffix}"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path


def _on_upload(ws: Workspace) -> None:
    uploaded = st.session_state.get(WEIGHTS_UPLOAD)
    if uploaded is None:
        return
    try:
        path = save_uploaded_weights(ws, uploaded.name, uploaded.getvalue())
    except (ValueError, OSError) as exc:
        st.session_state[UPLOAD_ERROR_KEY] = str(exc)
        return
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
    st.session_state[UPLOAD_NAMES_KEY] = {
        **st.session_state.get(UPLOAD_NAMES_KEY, {}),
        str(path): uploaded.name,
    }
    st.session_state[WEIGHTS_PATH] = str(path)


def weights_file_name(path: str) -> str:
    """The name to show for a weights file: its upload name when it was uploaded here."""
    return st.session_state.get(UPLOAD_NAMES_KEY, {}).get(path) or Path(path).name


def apply_loaded_config(text: str) -> None:
    """Puts a saved configuration's values into the form (the Load button's callback).

    Raises:
        ValueError: not a valid configuration (unknown field, bad value, not JSON).
    """
    config = RunConfig.from_json(text)
    st.session_state[RUN_CONFIG_KEY] = config.to_dict()


# -- sections -------------------------------------------------------------------------------
def section(title: str, icon: str, caption: str | None = None):
    """A bordered container with a heading; use as ``with section(...):``."""
    box = st.container(border=True)
    box.markdown(f"**{icon} {title}**")
    if caption:
        box.caption(caption)
    return box


def data_and_backbone_section(summaries: dict[str, Any]) -> BackboneSpec:
    """Dataset, backbone, alpha and input size. Returns the chosen backbone."""
    names = list(summaries)
    with section("Data and backbone", ":material/account_tree:"):
        st.selectbox(
            "Dataset",
            names,
            key=key("dataset"),
            format_func=lambda n: (
                f"{n} · {len(summaries[n].classes)} classes · {summaries[n].num_images:,} images"
            ),
            help="The imported dataset to train on. Its classes set the size of the output layer.",
            persist_state=PERSIST,
        )
        st.selectbox(
            "Backbone",
            list(BACKBONES),
            key=key("backbone"),
            format_func=backbone_label,
            on_change=_on_backbone_change,
            help="The pretrained network whose features the new head learns from. Smaller "
            "backbones train faster; bigger ones usually reach higher accuracy.",
            persist_state=PERSIST,
        )
        spec = BACKBONES[st.session_state[key("backbone")]]
        _backbone_facts(spec, float(st.session_state.get(key("alpha"), 1.0) or 1.0))
        cols = st.columns(2)
        with cols[0]:
            if spec.has_alpha:
                cached = set(cached_alphas(spec, st.session_state[key("image_size")]))
                st.selectbox(
                    "Width (alpha)",
                    [float(a) for a in spec.alphas],
                    key=key("alpha"),
                    format_func=lambda a: f"{a:g}" + ("  ✓ weights cached" if a in cached else ""),
                    help="MobileNet's width multiplier: 1.0 is the full network; smaller "
                    "values shrink every layer (fewer parameters, faster, a little less "
                    "accurate). Keras ships ImageNet weights for these widths.",
                    persist_state=PERSIST,
                )
            else:
                st.text_input(
                    "Width (alpha)",
                    "1.0 (MobileNets only)",
                    disabled=True,
                    help="Only the MobileNet family has a width multiplier.",
                )
        with cols[1]:
            st.number_input(
                "Input size (px)",
                min_value=spec.min_size,
                max_value=MAX_IMAGE_SIZE,
                step=16,
                key=key("image_size"),
                help=f"Images are resized to this square side. {spec.display_name} was "
                f"pretrained at {spec.default_size} px (the default); smaller is faster, "
                f"at least {spec.min_size}.",
                persist_state=PERSIST,
            )
        with st.expander("ImageNet weights of every backbone", icon=":material/download_done:"):
            _weights_overview_table()
    return spec


def _backbone_facts(spec: BackboneSpec, alpha: float = 1.0) -> None:
    facts = [
        f"{count_text(spec.params_at(alpha))} parameters"
        + (f" at width {alpha:g}" if spec.has_alpha else ""),
        f"{spec.num_blocks} blocks",
        f"{spec.features_at(alpha):,} features",
        (
            f"pretrained at {spec.default_size} px"
            if spec.has_imagenet_weights
            else f"default {spec.default_size} px"
        ),
        f"~{spec.speed_224:g} images/s on 2 CPU cores",
    ]
    st.caption(" · ".join(facts) + (f"  \n{spec.notes}" if spec.notes else ""))


def _weights_overview_table() -> None:
    import pandas as pd

    from tlcore.model.weights import keras_home

    table = pd.DataFrame(weights_overview())
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "backbone": st.column_config.TextColumn("Backbone", width=130),
            "imagenet": st.column_config.TextColumn(
                "ImageNet weights",
                width=130,
                help="✓ in the Keras cache of this machine · ✗ missing (downloaded when a run "
                "starts, if there is internet) · – Keras has none for this backbone",
            ),
            "params": st.column_config.NumberColumn("Params", format="compact", width=60),
            "size": st.column_config.NumberColumn("Size", help="Default input side (px)"),
            "speed": st.column_config.TextColumn("Speed", help="On a CPU, at 224 px"),
            "alphas": st.column_config.TextColumn("Widths", help="Widths (alpha) with weights"),
            "file": st.column_config.TextColumn(
                "File Keras looks for", help="For alpha 1.0 (or the cached width) at 224 px"
            ),
        },
    )
    st.caption(
        f"Keras looks for these files in `{keras_home() / 'models'}` and downloads missing ones "
        "when a run starts (if this machine can reach the internet). To use a backbone "
        "offline, copy its file there."
    )


def weights_section(ws: Workspace, spec: BackboneSpec, finished_runs: list) -> None:
    """Where the backbone's starting weights come from, and whether they are there."""
    state = st.session_state
    scratch = state.get(key("strategy")) == "from_scratch"
    with section("Starting weights", ":material/download:"):
        source = st.radio(
            "Starting weights",
            weights_sources(spec),
            key=WEIGHTS_SOURCE,
            format_func=WEIGHTS_LABELS.get,
            horizontal=True,
            disabled=scratch,
            label_visibility="collapsed",
            help="ImageNet: Keras' pretrained weights. File: a .h5 / .weights.h5 file for the "
            "same architecture. Earlier run: the backbone a finished run trained here. "
            "None: random weights.",
            persist_state=PERSIST,
        )
        if scratch:
            st.caption(
                ":material/info: **From scratch** trains from random weights, so the weights "
                "source is *None*. Pick another strategy to use pretrained weights."
            )
        elif source == "imagenet":
            _imagenet_status(spec)
        elif source == "file":
            _weights_file(ws)
        elif source == "run":
            _weights_run(spec, finished_runs)
        else:
            if state.get(key("strategy")) == "feature_extraction":
                st.warning(
                    "**A frozen random backbone.** Feature extraction with random weights trains "
                    "the head on random features; expect poor accuracy. Use pretrained weights, "
                    "or the *From scratch* strategy for a baseline.",
                    icon=":material/warning:",
                )
            else:
                st.caption(
                    ":material/casino: Random initial weights: the backbone starts knowing "
                    "nothing, so expect much lower accuracy than pretrained weights on a small "
                    "dataset."
                )


def _imagenet_status(spec: BackboneSpec) -> None:
    state = st.session_state
    alpha = float(state[key("alpha")]) if spec.has_alpha else 1.0
    size = int(state[key("image_size")])
    label = f"{spec.display_name}" + (f" (alpha {alpha:g})" if spec.has_alpha else "")
    try:
        status = imagenet_weights_status(spec.name, alpha, size)
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if status.available:
        st.markdown(
            f":green-badge[:material/check_circle: {label} ImageNet weights on this machine]"
        )
        st.caption(f":material/folder: `{status.path}`")
    else:
        st.warning(
            f"**ImageNet weights for {label} are not on this machine** (`{status.filename}`). "
            "When the run starts Keras tries to download them; without internet the run "
            "**fails** rather than silently training from random weights.",
            icon=":material/cloud_off:",
        )
        st.caption(
            f":material/download: Offline? [Download the file]({status.url}) elsewhere and copy "
            f"it to `{status.path.parent}/`."
        )
    if status.note:
        st.caption(f":material/info: {status.note}")


def _weights_file(ws: Workspace) -> None:
    state = st.session_state
    st.file_uploader(
        "Upload a weights file",
        type=["h5", "hdf5"],
        key=WEIGHTS_UPLOAD,
        on_change=_on_upload,
        args=(ws,),
        help="Keras weights (.weights.h5 or .h5) saved from the same architecture without its "
        "classifier top. The file is stored in the workspace; nothing in it is executed.",
    )
    if state.get(UPLOAD_ERROR_KEY):
        st.error(state[UPLOAD_ERROR_KEY], icon=":material/error:")
    st.text_input(
        "Weights file on the server",
        key=WEIGHTS_PATH,
        placeholder="/data/weights/my_backbone.weights.h5",
        help="The path of a weights file this server can read. An upload fills this in.",
        persist_state=PERSIST,
    )
    path = str(state.get(WEIGHTS_PATH) or "")
    original = state.get(UPLOAD_NAMES_KEY, {}).get(path)
    if original:
        st.caption(f":material/upload_file: Uploaded `{original}`, stored in the workspace.")


def _weights_run(spec: BackboneSpec, finished_runs: list) -> None:
    alpha = float(st.session_state[key("alpha")]) if spec.has_alpha else 1.0
    matching = [
        r
        for r in finished_runs
        if r.config.backbone == spec.name and float(r.config.alpha) == alpha
    ]
    label = spec.display_name + (f" (alpha {alpha:g})" if spec.has_alpha else "")
    if not matching:
        st.info(
            f"No finished run uses {label} yet. Train one first, or pick other weights.",
            icon=":material/history:",
        )
        st.session_state[WEIGHTS_RUN] = None
        return
    by_id = {r.id: r for r in matching}
    if st.session_state.get(WEIGHTS_RUN) not in by_id:
        st.session_state[WEIGHTS_RUN] = matching[0].id

    def describe(run_id: str) -> str:
        record = by_id[run_id]
        cfg = record.config
        headline = kept_model.headline(record.status.summary if record.status else {})
        title = cfg.name.strip() or f"{cfg.backbone} on {cfg.dataset}"
        extra = f" · {headline}" if headline else ""
        return f"{title} · {cfg.dataset}{extra} · {run_id}"

    st.selectbox(
        "Run",
        list(by_id),
        key=WEIGHTS_RUN,
        format_func=describe,
        help=f"Finished runs with {label}: the new run starts from the backbone they trained "
        "(the head is new).",
    )


def _current_recipe(state: Mapping[str, Any]) -> str:
    try:
        return presets.matching_preset(config_from_state(state)) or CUSTOM_RECIPE
    except ValueError:
        return CUSTOM_RECIPE


def _on_recipe_change() -> None:
    state = st.session_state
    name = state.get(RECIPE)
    if name not in presets.PRESETS:
        return
    for field_name, value in presets.get_preset(name).settings.items():
        if field_name == "dense_units":
            state[DENSE_UNITS] = ",".join(str(u) for u in value)
        elif field_name in DIRECT_FIELDS:
            state[key(field_name)] = _typed(field_name, value)


def recipe_picker() -> None:
    """Named recipes (`tlcore.training.presets`): one choice sets the head, optimiser and epochs."""
    state = st.session_state
    state[RECIPE] = _current_recipe(state)
    options = [*presets.PRESETS, CUSTOM_RECIPE]
    labels = {n: p.label for n, p in presets.PRESETS.items()} | {CUSTOM_RECIPE: "Custom"}
    st.segmented_control(
        "Recipe",
        options,
        key=RECIPE,
        format_func=labels.get,
        on_change=_on_recipe_change,
        help="Start from a named recipe; changing any setting below makes it Custom.",
    )
    chosen = state.get(RECIPE)
    if chosen in presets.PRESETS:
        st.caption(presets.get_preset(chosen).description)
    else:
        st.caption("Your own settings. Pick a recipe above to start again from one.")


def head_section(spec: BackboneSpec) -> None:
    with section(
        "Classifier head",
        ":material/hub:",
        "New layers on top of the backbone's features; they always train.",
    ):
        st.toggle(
            "Choose the head by cross-validation (recommended)",
            key=key("head_search"),
            help="With a frozen backbone and no hidden layers: fit the output layer exactly "
            "for several regularisation strengths, keep the one with the best 5-fold "
            "cross-validated accuracy, and refit it on train + validation. Epochs, "
            "optimiser and dropout then do not apply.",
            persist_state=PERSIST,
        )
        cols = st.columns(3)
        cols[0].selectbox(
            "Pooling",
            POOLINGS,
            key=key("pooling"),
            format_func=POOLING_LABELS.get,
            help="How the backbone's last feature map becomes one vector: global average "
            "(the usual choice), global max, or flatten (keeps positions; many more "
            "parameters).",
            persist_state=PERSIST,
        )
        cols[1].text_input(
            "Hidden layers",
            key=DENSE_UNITS,
            placeholder="none",
            help="Units of the dense layers between the features and the output, comma "
            "separated: e.g. 256,128. Empty: the output layer sits directly on the features.",
            persist_state=PERSIST,
        )
        cols[2].selectbox(
            "Activation",
            ACTIVATIONS,
            key=key("dense_activation"),
            help="Activation of the hidden layers.",
            persist_state=PERSIST,
        )
        cols = st.columns([3, 2])
        cols[0].slider(
            "Dropout",
            0.0,
            0.95,
            step=0.05,
            key=key("dropout"),
            help="Fraction of features dropped at random while training, before each dense "
            "layer. Fights overfitting on small datasets.",
            persist_state=PERSIST,
        )
        cols[1].number_input(
            "Fusion stages",
            min_value=1,
            max_value=spec.max_fusion_stages,
            key=key("fusion_stages"),
            help="1: the backbone's last feature map only. 2 or more: the pooled features of "
            "the last N stages are concatenated (multi-scale features). Needs average or max "
            "pooling.",
            persist_state=PERSIST,
        )
        st.toggle(
            "Batch normalization in the head",
            key=key("head_batchnorm"),
            help="Normalizes the features before each dense layer. Can help with unusual "
            "feature scales; usually not needed.",
            persist_state=PERSIST,
        )


def strategy_section(spec: BackboneSpec) -> None:
    state = st.session_state
    with section("What trains", ":material/ac_unit:"):
        strategy = st.radio(
            "Freezing strategy",
            STRATEGIES,
            key=key("strategy"),
            format_func=STRATEGY_TITLES.get,
            captions=[STRATEGY_CAPTIONS[s] for s in STRATEGIES],
            on_change=_on_strategy_change,
            help="Which parts of the pretrained backbone may change while training.",
            persist_state=PERSIST,
        )
        if strategy in FINE_TUNE_STRATEGIES:
            unit = state.get(key("unfreeze_unit"))
            cols = st.columns([1, 1])
            cols[0].number_input(
                "Unfreeze the top",
                min_value=0,
                max_value=spec.num_blocks if unit == "blocks" else 10_000,
                key=key("unfreeze"),
                help=f"How many of the backbone's last {unit} train. {spec.display_name} has "
                f"{spec.num_blocks} blocks. 0 keeps the backbone frozen.",
                persist_state=PERSIST,
            )
            cols[1].radio(
                "Counted in",
                UNFREEZE_UNITS,
                key=key("unfreeze_unit"),
                horizontal=True,
                help="Blocks: the architecture's building blocks (e.g. an inverted residual "
                "block). Layers: individual layers with weights, counted from the end.",
                persist_state=PERSIST,
            )
        if strategy in (*UNFROZEN_STRATEGIES, "bias_only"):
            st.toggle(
                "Train batch-norm statistics",
                key=key("train_batchnorm"),
                help="Off (recommended): the backbone's batch-norm layers keep the statistics "
                "learned on ImageNet and run in inference mode. Updating them from small "
                "batches of new images makes them noisy and often wrecks the pretrained "
                "features. Turn on only with large batches and plenty of data.",
                persist_state=PERSIST,
            )
            if state.get(key("train_batchnorm")):
                st.caption(
                    ":material/warning: Batch-norm statistics will follow your batches; keep "
                    "the batch size at 32 or more."
                )
            else:
                st.caption(
                    "Off (recommended): batch-norm layers keep their pretrained statistics. "
                    "Re-estimating them from small batches of new images makes them noisy and "
                    "can wreck the pretrained features."
                )
        elif strategy == "from_scratch":
            st.caption(
                ":material/info: From scratch always trains the batch-norm statistics: there "
                "are no pretrained ones to keep."
            )


def _searches_head(state: Mapping[str, Any]) -> bool:
    try:
        return config_from_state(state).searches_head
    except ValueError:
        return False


def training_section() -> None:
    state = st.session_state
    strategy = state.get(key("strategy"))
    two_phase = strategy == "two_phase"
    optimizer = state.get(key("optimizer"))
    with section("Training", ":material/tune:"):
        if _searches_head(state):
            st.info(
                "The head is chosen by cross-validation, fitted exactly: the optimizer, "
                "schedule, learning rate, epochs and dropout below do not apply to this run "
                "(batch size still sets how many images go through the backbone at once).",
                icon=":material/auto_awesome:",
            )
        cols = st.columns(3)
        cols[0].selectbox(
            "Optimizer",
            OPTIMIZERS,
            key=key("optimizer"),
            format_func=OPTIMIZER_LABELS.get,
            help="Adam is a safe default. AdamW adds decoupled weight decay; SGD with momentum "
            "can generalize better with a tuned schedule.",
            persist_state=PERSIST,
        )
        cols[1].selectbox(
            "Schedule",
            LR_SCHEDULES,
            key=key("lr_schedule"),
            format_func=SCHEDULE_LABELS.get,
            help="How the learning rate changes: constant; cosine decay to zero over each "
            "phase; or divided by 10 when the validation loss stops improving.",
            persist_state=PERSIST,
        )
        cols[2].selectbox(
            "Batch size",
            sorted({*BATCH_SIZES, int(state.get(key("batch_size")) or 32)}),
            key=key("batch_size"),
            help="Images per step. Larger is faster per epoch but needs more memory.",
            persist_state=PERSIST,
        )
        cols = st.columns(2)
        cols[0].number_input(
            "Head learning rate" if two_phase else "Learning rate",
            min_value=1e-7,
            max_value=10.0,
            step=1e-4,
            format=LR_FORMAT,
            key=key("learning_rate"),
            help="Step size"
            + (" of phase 1, while the backbone is frozen" if two_phase else "")
            + ". 1e-3 suits a new head with Adam; pretrained layers usually want 1e-4 to 1e-5.",
            persist_state=PERSIST,
        )
        if two_phase:
            cols[1].number_input(
                "Fine-tune learning rate",
                min_value=1e-7,
                max_value=10.0,
                step=1e-5,
                format=LR_FORMAT,
                key=key("fine_tune_learning_rate"),
                help="Learning rate of phase 2, when the top blocks are unfrozen. Keep it "
                "10–100× lower than the head's.",
                persist_state=PERSIST,
            )
        if not two_phase:
            _epochs(cols[1], two_phase)
        if optimizer in ("adamw", "sgd", "rmsprop"):
            column = st.columns(2)[0]
            if optimizer == "adamw":
                column.number_input(
                    "Weight decay",
                    min_value=0.0,
                    max_value=1.0,
                    step=1e-4,
                    format=LR_FORMAT,
                    key=key("weight_decay"),
                    help="AdamW's decoupled weight decay.",
                    persist_state=PERSIST,
                )
            else:
                column.number_input(
                    "Momentum",
                    min_value=0.0,
                    max_value=0.999,
                    step=0.05,
                    key=key("momentum"),
                    help="Momentum of SGD (Nesterov) and RMSprop.",
                    persist_state=PERSIST,
                )
        if two_phase:
            cols = st.columns(2)
            _epochs(cols[0], two_phase)
            cols[1].number_input(
                "Fine-tune epochs",
                min_value=0,
                max_value=10_000,
                key=key("fine_tune_epochs"),
                help="Epochs of phase 2, with the top blocks unfrozen. 0 skips phase 2.",
                persist_state=PERSIST,
            )
        _learning_rate_hint(strategy)
        cols = st.columns(2, vertical_alignment="center")
        with cols[0]:
            st.toggle(
                "Early stopping",
                key=EARLY_STOPPING,
                help="Stop when the validation loss has not improved for a number of epochs, "
                "and keep the best weights.",
                persist_state=PERSIST,
            )
            st.toggle(
                "Balance classes",
                key=BALANCED,
                help="Weight each class's loss by the inverse of its frequency, so rare classes "
                "count as much as common ones.",
                persist_state=PERSIST,
            )
        cols[1].slider(
            "Label smoothing",
            0.0,
            0.5,
            step=0.05,
            key=key("label_smoothing"),
            help="Softens the targets (e.g. 0.1): the model is less over-confident.",
            persist_state=PERSIST,
        )
        if state.get(EARLY_STOPPING):
            st.number_input(
                "Early-stopping patience (epochs)",
                min_value=1,
                max_value=1000,
                key=PATIENCE,
                help="Epochs without a better validation loss before training stops.",
                persist_state=PERSIST,
            )


def _epochs(column, two_phase: bool) -> None:
    column.number_input(
        "Head epochs" if two_phase else "Epochs",
        min_value=1,
        max_value=10_000,
        key=key("epochs"),
        help="Passes over the training images"
        + (" in phase 1, while the backbone is frozen." if two_phase else "."),
        persist_state=PERSIST,
    )


def _learning_rate_hint(strategy: str | None) -> None:
    state = st.session_state
    if strategy in ("fine_tune_top", "full_fine_tune"):
        lr = state.get(key("learning_rate"))
    elif strategy == "two_phase":
        lr = state.get(key("fine_tune_learning_rate"))
    else:
        return
    if isinstance(lr, (int, float)) and lr >= HIGH_LEARNING_RATE:
        st.caption(
            f":material/warning: A learning rate of {lr:g} on pretrained layers often destroys "
            "their features in the first epoch; 1e-4 to 1e-5 is safer."
        )


def augmentation_section(frozen_phase: bool) -> None:
    state = st.session_state
    with section(
        "Augmentation",
        ":material/auto_fix_high:",
        "Random changes to training images, inside the model (off at evaluation).",
    ):
        st.segmented_control(
            "Flip",
            FLIP_MODES,
            key=key("flip"),
            format_func=FLIP_LABELS.get,
            required=True,
            help="Mirror images at random. Horizontal suits most photos; avoid flips when "
            "orientation matters (text, digits).",
            persist_state=PERSIST,
        )
        cols = st.columns(3)
        sliders = (
            ("rotation", "Rotation", 1.0, "Fraction of a full turn, either way (0.1 = ±36°)."),
            ("zoom", "Zoom", 0.9, "Zoom in or out by up to this fraction."),
            ("translation", "Translation", 1.0, "Shift by up to this fraction of the side."),
            ("contrast", "Contrast", 1.0, "Change contrast by up to this factor."),
            ("brightness", "Brightness", 1.0, "Change brightness by up to this fraction."),
        )
        for i, (name, label, top, text) in enumerate(sliders):
            cols[i % 3].slider(
                label,
                0.0,
                top,
                step=0.05,
                key=key(name),
                help=text + " 0 = off.",
                persist_state=PERSIST,
            )
        on = state.get(key("flip")) != "none" or any(
            (state.get(key(n)) or 0) > 0 for n, *_ in sliders
        )
        if on and frozen_phase and state.get(key("feature_cache")):
            st.caption(
                ":material/speed: Augmentation turns off the cached-feature fast path: with a "
                "frozen backbone, features could be computed once and reused every epoch, but "
                "augmented images differ each epoch, so the whole backbone runs every time."
            )
        elif not on and frozen_phase and state.get(key("feature_cache")):
            st.caption(
                ":material/bolt: No augmentation: while the backbone is frozen its features "
                "are computed once and cached, so epochs only train the head (much faster)."
            )


def run_section() -> None:
    with section("Run", ":material/badge:"):
        cols = st.columns([3, 1])
        cols[0].text_input(
            "Run name",
            key=key("name"),
            max_chars=120,
            placeholder="e.g. flowers · MobileNet two-phase",
            help="Optional. Shown in the run lists; the backbone and dataset are used otherwise.",
            persist_state=PERSIST,
        )
        cols[1].number_input(
            "Seed",
            min_value=0,
            max_value=2**31 - 1,
            key=key("seed"),
            help="Fixes the random initialization, shuffling and augmentation, so a run can "
            "be repeated.",
            persist_state=PERSIST,
        )
        with st.expander("Execution", icon=":material/memory:"):
            st.toggle(
                "Cache backbone features when frozen",
                key=key("feature_cache"),
                help="With a frozen backbone and no augmentation, compute its features once and "
                "train the head on them. Same result, much faster.",
                persist_state=PERSIST,
            )
            cols = st.columns(2)
            cols[0].selectbox(
                "Mixed precision",
                MIXED_PRECISION,
                key=key("mixed_precision"),
                format_func=MIXED_PRECISION_LABELS.get,
                help="float16 compute on GPUs that support it: faster, less memory.",
                persist_state=PERSIST,
            )
            cols[1].selectbox(
                "Devices",
                DISTRIBUTIONS,
                key=key("distribution"),
                format_func=DISTRIBUTION_LABELS.get,
                help="Auto uses all GPUs of this machine when there are several.",
                persist_state=PERSIST,
            )


def spec_of(state: Mapping[str, Any]) -> BackboneSpec:
    return get_backbone(state[key("backbone")])
