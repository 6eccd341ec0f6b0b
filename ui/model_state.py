"""The Model page's form state: widget keys, state <-> RunConfig, seeding and repairing it,
its callbacks, the uploaded-weights store, and facts about backbones for the widgets.

No widgets here (they are in `ui.model_form`); the page script and tests use both.
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
    MAX_IMAGE_SIZE,
    RunConfig,
)
from tlcore.data import datasets
from tlcore.fileio import atomic_write_bytes
from tlcore.model.registry import BACKBONES, BackboneSpec
from tlcore.model.strategies import STRATEGY_TABLE
from tlcore.model.weights import imagenet_weights_status
from tlcore.store import runs
from tlcore.store.workspace import Workspace
from tlcore.training import clone, presets

RUN_CONFIG_KEY = "run_config"  # the last valid config; other pages may put one here to prefill
APPLIED_KEY = "_mf_applied"  # the config the widgets were last seeded from or produced
PREFILLED_KEY = "_mf_prefilled"  # (run id, note or None): the form was just filled from a run
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


def prefill_from_run(
    ws: Workspace,
    run_id: str,
    dataset: str | None = None,
    *,
    session: MutableMapping | None = None,
) -> RunConfig:
    """Fills the Model page's form with run ``run_id``'s settings ("Train again with these
    settings"); the form shows them, editable, the next time the Model page runs.

    The settings are `tlcore.training.clone.config_from_run`'s: every setting of the run,
    with a new name ("... (again)"), outside the run's sweep or baseline, the same seed.
    When the run's own dataset is no longer in the workspace (and no ``dataset`` is
    given), the newest dataset is filled in instead and the page says so.

    Args:
        ws: the workspace.
        run_id: the run to copy; any state.
        dataset: train on this dataset instead (a name or an id); default None, the run's.
        session: the session state to fill; default ``st.session_state``.

    Returns:
        The configuration put into the form.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no such run.
        ValueError: its ``config.json`` cannot be read (`clone.CloneError`), or ``dataset``
            names no dataset (`tlcore.data.datasets.DatasetError`); each says what to do.
    """
    session = st.session_state if session is None else session
    note = None
    try:
        config = clone.config_from_run(ws, run_id, dataset=dataset)
    except datasets.DatasetError:
        available = [s.name for s in datasets.list_datasets(ws) if not s.is_broken]
        if dataset is not None or not available:
            raise
        gone = runs.read_run(ws, run_id).config.dataset
        config = clone.config_from_run(ws, run_id, dataset=available[0])
        note = (
            f"Its dataset *{gone}* is no longer in this workspace, so *{available[0]}* is "
            "filled in: choose the dataset to train on."
        )
    data = config.to_dict() | {"dataset": _form_dataset(ws, config.dataset)}
    session[RUN_CONFIG_KEY] = data
    session.pop(APPLIED_KEY, None)  # shown even when the form last showed these very values
    session[PREFILLED_KEY] = (run_id, note)
    return config


def _form_dataset(ws: Workspace, name_or_id: str) -> str:
    """The value the form's dataset choice (dataset names) shows for ``name_or_id``: its
    name when that name opens this very dataset (its newest version), else as given."""
    try:
        chosen = datasets.load_dataset(ws, name_or_id)
        if datasets.load_dataset(ws, chosen.name).id == chosen.id:
            return chosen.name
    except (ValueError, OSError):
        pass
    return name_or_id


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


def _searches_head(state: Mapping[str, Any]) -> bool:
    try:
        return config_from_state(state).searches_head
    except ValueError:
        return False
