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
)
from tlcore.model.registry import BACKBONES, BackboneSpec
from tlcore.training import presets
from ui.common import section
from ui.model_state import (
    BALANCED,
    BATCH_SIZES,
    CUSTOM_RECIPE,
    DENSE_UNITS,
    DISTRIBUTION_LABELS,
    EARLY_STOPPING,
    FINE_TUNE_STRATEGIES,
    FLIP_LABELS,
    HIGH_LEARNING_RATE,
    LR_FORMAT,
    MIXED_PRECISION_LABELS,
    OPTIMIZER_LABELS,
    PATIENCE,
    PERSIST,
    POOLING_LABELS,
    RECIPE,
    SCHEDULE_LABELS,
    STRATEGY_CAPTIONS,
    STRATEGY_TITLES,
    UNFROZEN_STRATEGIES,
    _current_recipe,
    _on_backbone_change,
    _on_recipe_change,
    _on_strategy_change,
    _searches_head,
    backbone_label,
    cached_alphas,
    count_text,
    key,
)
from ui.weights_form import weights_overview_table, weights_section  # noqa: F401 - form.X


# -- sections -------------------------------------------------------------------------------
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
            weights_overview_table()
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
