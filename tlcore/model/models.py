"""Building the transfer-learning model, choosing what trains, and describing it.

`build_model` turns a `RunConfig` into one flat Keras model that takes raw RGB images,
floats in [0, 255], shaped ``(batch, S, S, 3)``::

    image ─ augmentation ─ preprocess ─ backbone ─ pooling ─ head ─ probabilities
            (optional,      (the         (nested    (global    (nested model:
             training only)  backbone's   model;     pooling,   [BN] [dropout] dense…
                             own)         1+ stage   fusion)    → softmax, float32)
                                          outputs)

The pooling sits outside the head so that the features a frozen backbone produces are
small vectors: `feature_extractor` (preprocess → backbone → pooling, no augmentation)
and `head_model` (features → probabilities) split the model for the cached-feature
fast path, and ``head_model(feature_extractor(x)) == model(x)`` at inference. Training
`head_model` alone updates the very weights the full model uses.

What trains is decided per phase: `training_phases` lists the phases of a strategy and
`apply_phase` sets the trainable flags; recompile after each `apply_phase`.

Batch normalization: in Keras 3 a BatchNormalization layer with ``trainable=False``
runs in inference mode (moving statistics used and left alone), and calling a nested
model with ``training=False`` does not hold once ``fit`` calls the outer model with
``training=True`` (keras-team/keras#20285). So backbone BN layers are kept
``trainable=False`` in every phase unless ``config.train_batchnorm`` (or the strategy is
``from_scratch``); "bias_only" trains the BN offsets (beta) through variable-level
``trainable`` flags while the layer itself stays in inference mode.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import keras
from keras import layers

from tlcore.config import RunConfig
from tlcore.model.backbones import (
    BackboneSpec,
    FeaturePooling,
    Preprocess,
    block_names,
    block_of_layers,
    build_base,
    get_backbone,
    stage_outputs,
    validate_backbone_args,
)
from tlcore.model.weights import (
    load_backbone_from_model_file,
    load_imagenet_weights,
    load_weights_file,
)

INPUT_NAME = "image"
AUGMENTATION_NAME = "augmentation"
PREPROCESS_NAME = "preprocess"
BACKBONE_NAME = "backbone"
POOLING_NAME = "pooling"
HEAD_NAME = "head"
FEATURES_NAME = "features"
MAX_CLASSES = 100_000
BIAS_VARIABLE_NAMES = ("bias", "beta")
TF_RUNTIME_MB = 400  # TensorFlow's own footprint, for the memory estimate


# -- validation ---------------------------------------------------------------------------
def validate_model_config(config: RunConfig, num_classes: int | None = None) -> BackboneSpec:
    """Checks everything `build_model` needs from ``config`` before anything is built.

    Args:
        config: the run configuration.
        num_classes: number of classes; not checked when None.

    Returns:
        The backbone's registry entry.

    Raises:
        ValueError: naming the field and quoting the bad value (unknown backbone, image
            size below the backbone's minimum, alpha for a backbone without one, ImageNet
            weights Keras does not ship, too many fusion stages, ...).
    """
    if not isinstance(config, RunConfig):
        raise ValueError(f"config must be a RunConfig. Received: config={config!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or not 2 <= num_classes <= MAX_CLASSES
    ):
        raise ValueError(
            f"num_classes must be an integer from 2 to {MAX_CLASSES}. "
            f"Received: num_classes={num_classes!r}"
        )
    spec = validate_backbone_args(
        config.backbone, config.alpha, config.image_size, config.weights_kind
    )
    if config.fusion_stages > spec.max_fusion_stages:
        raise ValueError(
            f"{spec.name} has {spec.max_fusion_stages} feature stages to fuse. "
            f"Received: fusion_stages={config.fusion_stages!r}"
        )
    if config.fusion_stages > 1 and config.pooling == "flatten":
        raise ValueError(
            "Feature fusion pools each stage to a vector; use pooling 'avg' or 'max' with "
            f"fusion_stages > 1. Received: pooling={config.pooling!r}"
        )
    if config.zoom >= 1.0:
        raise ValueError(
            "zoom must be below 1.0 (zooming in by 100% leaves nothing of the image). "
            f"Received: zoom={config.zoom!r}"
        )
    return spec


def image_size(config: RunConfig) -> int:
    """The input side of the model: ``config.image_size`` or the backbone's default."""
    return config.image_size or get_backbone(config.backbone).default_size


def _label(spec: BackboneSpec, config: RunConfig) -> str:
    if spec.has_alpha:
        return f"{spec.name} (alpha {float(config.alpha)})"
    return spec.name


# -- building -----------------------------------------------------------------------------
def build_model(
    config: RunConfig, num_classes: int, *, run_model_path: str | os.PathLike | None = None
) -> keras.Model:
    """Builds the classifier a run trains, with its starting weights loaded.

    The model takes raw RGB images, floats in [0, 255], shape ``(None, S, S, 3)`` with
    ``S = image_size(config)``, and outputs class probabilities (float32, also under
    mixed precision). Seeds Python, NumPy and the backend with ``config.seed``; the
    augmentation and dropout layers are seeded from it too. The first training phase
    is applied (see `apply_phase`), so trainable flags are ready for phase 1.

    Args:
        config: the run configuration.
        num_classes: number of classes (2 or more).
        run_model_path: for weights ``"run:<id>"``: that run's model file (trusted,
            ``.keras``), resolved by the caller.

    Returns:
        A ``keras.Model`` with layers ``image``, ``augmentation`` (when any is on),
        ``preprocess``, ``backbone``, ``pooling`` and ``head``.

    Raises:
        ValueError: an invalid configuration (see `validate_model_config`).
        tlcore.model.weights.WeightsUnavailableError: ImageNet weights are not cached and
            cannot be downloaded; the message names the file and where to put it.
        tlcore.model.weights.WeightsMismatchError: a weights file or run of another
            architecture.
        FileNotFoundError: the weights file or run model does not exist.
    """
    spec = validate_model_config(config, num_classes)
    kind = config.weights_kind
    if kind == "run" and run_model_path is None:
        raise ValueError(
            f"weights {config.weights!r} needs the run's model file: pass "
            "run_model_path=<that run's model.keras> to build_model."
        )
    size = image_size(config)
    label = _label(spec, config)
    keras.utils.set_random_seed(config.seed)

    base = build_base(spec, size, config.alpha)
    if kind == "imagenet":
        load_imagenet_weights(base, spec.name, config.alpha, size)
    elif kind == "file":
        load_weights_file(base, config.weights_ref, label)
    outputs = [tensor for _, tensor in stage_outputs(spec, base, config.fusion_stages)]
    backbone = keras.Model(
        base.inputs, outputs if len(outputs) > 1 else outputs[0], name=BACKBONE_NAME
    )
    if kind == "run":
        load_backbone_from_model_file(run_model_path, backbone, label)
    if kind == "none":
        _fast_batchnorm_statistics(backbone)

    inputs = keras.Input((size, size, 3), name=INPUT_NAME, dtype="float32")
    x = inputs
    augmentation = _augmentation(config)
    if augmentation is not None:
        x = augmentation(x)
    x = Preprocess(spec.preprocess_mode, name=PREPROCESS_NAME, dtype="float32")(x)
    x = backbone(x)
    x = FeaturePooling(config.pooling, name=POOLING_NAME)(x)
    head = _head(config, int(x.shape[-1]), num_classes)
    model = keras.Model(inputs, head(x), name=f"{spec.name.lower()}_classifier")
    apply_phase(model, config, training_phases(config)[0])
    return model


# Keras' MobileNets keep batch-norm moving statistics with momentum 0.999 (V2) or 0.99
# (V1): right for ImageNet's ~1M steps, but a from-scratch run of a few hundred steps on
# a small dataset ends with statistics still near their initial (0, 1), so inference
# (which uses them) sees a different network than training did and predicts one class.
SCRATCH_BN_MOMENTUM = 0.9


def _fast_batchnorm_statistics(backbone: keras.Model) -> None:
    """Lets random-weight BN layers' moving statistics follow training within ~20 steps."""
    for layer in backbone.layers:
        if _is_bn(layer):
            layer.momentum = min(layer.momentum, SCRATCH_BN_MOMENTUM)


def _augmentation(config: RunConfig) -> keras.Sequential | None:
    """The random augmentation layers the config turns on (active in training only)."""
    chosen = []
    if config.flip != "none":
        chosen.append(
            layers.RandomFlip(
                config.flip, seed=_seed(config, 0), dtype="float32", name="random_flip"
            )
        )
    if config.rotation > 0:
        chosen.append(
            layers.RandomRotation(
                config.rotation, seed=_seed(config, 1), dtype="float32", name="random_rotation"
            )
        )
    if config.zoom > 0:
        chosen.append(
            layers.RandomZoom(
                (-config.zoom, config.zoom),
                seed=_seed(config, 2),
                dtype="float32",
                name="random_zoom",
            )
        )
    if config.translation > 0:
        chosen.append(
            layers.RandomTranslation(
                config.translation,
                config.translation,
                seed=_seed(config, 3),
                dtype="float32",
                name="random_translation",
            )
        )
    if config.contrast > 0:
        chosen.append(
            layers.RandomContrast(
                config.contrast, seed=_seed(config, 4), dtype="float32", name="random_contrast"
            )
        )
    if config.brightness > 0:
        chosen.append(
            layers.RandomBrightness(
                config.brightness,
                value_range=(0, 255),
                seed=_seed(config, 5),
                dtype="float32",
                name="random_brightness",
            )
        )
    if not chosen:
        return None
    return keras.Sequential(chosen, name=AUGMENTATION_NAME)


def _seed(config: RunConfig, offset: int) -> int:
    """A distinct, reproducible seed per random layer, derived from ``config.seed``."""
    return (config.seed + offset) % 2**31


def _head(config: RunConfig, feature_dim: int, num_classes: int) -> keras.Model:
    """features → ([BN] [dropout] dense+activation)* → [BN] [dropout] → logits → softmax."""
    features = keras.Input((feature_dim,), name=FEATURES_NAME)
    x = features
    blocks = len(config.dense_units) + 1
    for i, units in enumerate((*config.dense_units, None), start=1):
        suffix = f"_{i}" if i < blocks else ""
        if config.head_batchnorm:
            x = layers.BatchNormalization(name=f"head_bn{suffix}")(x)
        if config.dropout > 0:
            x = layers.Dropout(
                config.dropout, seed=_seed(config, 100 + i), name=f"head_dropout{suffix}"
            )(x)
        if units is not None:
            x = layers.Dense(
                units,
                activation=config.dense_activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(config, 200 + i)),
                name=f"head_dense{suffix}",
            )(x)
    x = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(config, 300)),
        name="logits",
    )(x)
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(features, probabilities, name=HEAD_NAME)


def load_model(path: str | os.PathLike, *, compile: bool = False) -> keras.Model:
    """Loads a model this package saved (``.keras``) with ``safe_mode=True``.

    Our two custom layers are registered on import, so no ``custom_objects`` and no
    unsafe deserialization are needed. Call `apply_phase` before training it further
    (variable-level trainable flags are not saved).
    """
    return keras.saving.load_model(str(path), compile=compile, safe_mode=True)


# -- the cached-feature fast path ----------------------------------------------------------
def feature_extractor(model: keras.Model) -> keras.Model:
    """preprocess → backbone → pooling of ``model``, without augmentation.

    Maps raw images (floats in [0, 255]) to the feature vectors the head takes. Shares
    layers (and weights) with ``model``; call it with ``training=False`` (``predict``).
    """
    inputs = keras.Input(model.input.shape[1:], name=INPUT_NAME, dtype="float32")
    x = model.get_layer(PREPROCESS_NAME)(inputs)
    x = model.get_layer(BACKBONE_NAME)(x)
    x = model.get_layer(POOLING_NAME)(x)
    return keras.Model(inputs, x, name="feature_extractor")


def head_model(model: keras.Model) -> keras.Model:
    """The head of ``model`` (features → probabilities): the same object, same weights."""
    return model.get_layer(HEAD_NAME)


# -- phases and freezing -------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """One stretch of training with fixed trainable flags and learning rate.

    Attributes:
        index: 1-based position.
        total: number of phases of the strategy.
        name: what trains: ``"feature_extraction"``, ``"fine_tune_top"``,
            ``"bias_only"``, ``"full_fine_tune"`` or ``"from_scratch"``.
        description: for people, e.g. "phase 2 of 2: fine-tuning the top 2 blocks ...".
        epochs: epochs in this phase.
        learning_rate: learning rate for this phase.
        initial_epoch: epochs done before this phase (``fit(initial_epoch=...)``).
        unfreeze: blocks or layers unfrozen (``fine_tune_top`` only).
        unfreeze_unit: ``"blocks"`` or ``"layers"``.
        train_batchnorm: whether backbone BN layers train (batch statistics).
    """

    index: int
    total: int
    name: str
    description: str
    epochs: int
    learning_rate: float
    initial_epoch: int = 0
    unfreeze: int = 0
    unfreeze_unit: str = "blocks"
    train_batchnorm: bool = False
    head_search: bool = False  # the head is chosen by cross-validation, not fitted by epochs

    @property
    def backbone_frozen(self) -> bool:
        """No backbone weight changes in this phase (its features can be cached)."""
        return self.name == "feature_extraction" or (
            self.name == "fine_tune_top" and self.unfreeze == 0
        )


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit if n != 1 else unit[:-1]}"


def training_phases(config: RunConfig) -> list[Phase]:
    """The phases a run goes through, in order.

    ``two_phase`` gives feature extraction (``epochs`` at ``learning_rate``), then the
    top ``unfreeze`` blocks/layers unfrozen (``fine_tune_epochs`` at
    ``fine_tune_learning_rate``; left out when ``fine_tune_epochs`` is 0). Every other
    strategy is one phase of ``epochs`` at ``learning_rate``.
    """
    if not isinstance(config, RunConfig):
        raise ValueError(f"config must be a RunConfig. Received: config={config!r}")
    bn = config.train_batchnorm or config.strategy == "from_scratch"
    top = f"fine-tuning the top {_plural(config.unfreeze, config.unfreeze_unit)} of the backbone"
    what = {
        "feature_extraction": "training the head on a frozen backbone",
        "fine_tune_top": f"{top} and the head",
        "bias_only": "training the backbone's biases and batch-norm offsets, and the head",
        "full_fine_tune": "fine-tuning the whole backbone and the head",
        "from_scratch": "training every layer from random weights",
    }
    if config.strategy == "two_phase":
        plan = [("feature_extraction", config.epochs, config.learning_rate)]
        if config.fine_tune_epochs > 0:
            plan.append(("fine_tune_top", config.fine_tune_epochs, config.fine_tune_learning_rate))
    elif config.searches_head:
        plan = [("feature_extraction", 1, config.learning_rate)]
        what["feature_extraction"] = (
            "choosing the head by cross-validation on a frozen backbone's cached features"
        )
    else:
        plan = [(config.strategy, config.epochs, config.learning_rate)]
    phases, done = [], 0
    for i, (name, epochs, lr) in enumerate(plan, start=1):
        text = what[name]
        if config.strategy == "two_phase" and i == 2:
            text = f"{top} at learning rate {lr:g}"
        phases.append(
            Phase(
                index=i,
                total=len(plan),
                name=name,
                description=f"phase {i} of {len(plan)}: {text}",
                epochs=epochs,
                learning_rate=lr,
                initial_epoch=done,
                unfreeze=config.unfreeze if name == "fine_tune_top" else 0,
                unfreeze_unit=config.unfreeze_unit,
                train_batchnorm=bn,
                head_search=config.searches_head,
            )
        )
        done += epochs
    return phases


def uses_feature_cache(config: RunConfig, phase: Phase) -> bool:
    """Whether ``phase`` may train the head on cached features.

    True when ``config.feature_cache`` is on, the backbone is frozen in this phase and
    no augmentation runs before it.
    """
    return config.feature_cache and phase.backbone_frozen and not config.has_augmentation


def _is_bn(layer) -> bool:
    return isinstance(layer, layers.BatchNormalization)


def _unfrozen_layers(spec: BackboneSpec, backbone: keras.Model, phase: Phase) -> set[str]:
    """Names of backbone layers a ``fine_tune_top`` phase unfreezes."""
    if phase.unfreeze == 0:
        return set()
    if phase.unfreeze_unit == "blocks":
        chosen = set(block_names(spec, backbone)[-phase.unfreeze :])
        return {name for name, block in block_of_layers(spec, backbone).items() if block in chosen}
    candidates = [
        layer
        for layer in backbone.layers
        if layer.trainable_weights and (phase.train_batchnorm or not _is_bn(layer))
    ]
    return {layer.name for layer in candidates[-phase.unfreeze :]}


def _unfreeze_all(model: keras.Model) -> None:
    """Makes every layer and every weight of ``model`` trainable again.

    On the TensorFlow backend ``layer.trainable = True`` is skipped when the layer is
    already trainable (``AutoTrackable.__setattr__`` returns early when the new value
    ``is`` the current one), so sublayers and variables frozen underneath would stay
    frozen. Going through False first reaches all of them.
    """
    model.trainable = False
    model.trainable = True


def apply_phase(model: keras.Model, config: RunConfig, phase: Phase) -> None:
    """Sets the trainable flags of ``model`` for ``phase``. Recompile afterwards.

    * feature_extraction: backbone frozen; the head trains.
    * fine_tune_top: the last ``phase.unfreeze`` blocks (or layers with weights,
      counting only layers that will train) of the backbone train.
    * bias_only: backbone kernels frozen; its biases and BN offsets (beta) train.
    * full_fine_tune / from_scratch: the whole backbone trains.

    Backbone BatchNormalization layers stay ``trainable=False`` (inference mode: moving
    statistics used and never updated) unless ``phase.train_batchnorm``. The head always
    trains, its own BN included.

    Args:
        model: a model from `build_model` (or `load_model`).
        config: the run configuration it was built from.
        phase: one of `training_phases(config)`.
    """
    spec = get_backbone(config.backbone)
    backbone = model.get_layer(BACKBONE_NAME)
    _unfreeze_all(model)
    bn_trains = phase.train_batchnorm
    if phase.name == "feature_extraction":
        backbone.trainable = False
        return
    if phase.name in ("full_fine_tune", "from_scratch"):
        unfrozen = {layer.name for layer in backbone.layers}
    elif phase.name == "fine_tune_top":
        unfrozen = _unfrozen_layers(spec, backbone, phase)
    elif phase.name == "bias_only":
        for layer in backbone.layers:
            if _is_bn(layer) and bn_trains:
                if layer.gamma is not None:
                    layer.gamma.trainable = False
                continue
            layer.trainable = False
            # Layer flags only gate the BN mode; the optimizer takes every variable whose
            # own flag is set (Model.trainable_variables filters variables, not layers).
            for variable in layer.weights:
                if variable.name in BIAS_VARIABLE_NAMES:
                    variable.trainable = True
        return
    else:
        raise ValueError(f"Unknown phase. Received: phase.name={phase.name!r}")
    for layer in backbone.layers:
        if layer.name not in unfrozen or (_is_bn(layer) and not bn_trains):
            layer.trainable = False


# -- describing ---------------------------------------------------------------------------
def _params(variables) -> int:
    return sum(math.prod(v.shape) for v in variables)


def trainable_variables_summary(model: keras.Model) -> dict:
    """Parameter totals of ``model`` as the optimizer will see them.

    Returns:
        ``{"total_params", "trainable_params", "non_trainable_params",
        "trainable_variables": [variable paths], "by_part": {part: {"params",
        "trainable_params"}}}`` where parts are the top-level layers (``backbone``,
        ``head``, ...).
    """
    trainable = model.trainable_variables
    trainable_ids = {id(v) for v in trainable}
    by_part = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        by_part[layer.name] = {
            "params": _params(layer.weights),
            "trainable_params": _params(v for v in layer.weights if id(v) in trainable_ids),
        }
    total = _params(model.weights)
    n_trainable = _params(trainable)
    return {
        "total_params": total,
        "trainable_params": n_trainable,
        "non_trainable_params": total - n_trainable,
        "trainable_variables": [v.path for v in trainable],
        "by_part": by_part,
    }


def _shape(layer) -> tuple | list:
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return ()
    if isinstance(output, (list, tuple)):
        return [tuple(t.shape) for t in output]
    return tuple(output.shape)


def describe_model(model: keras.Model, config: RunConfig) -> list[dict]:
    """One row per layer for the page's layer table, backbone and head expanded.

    Each row: ``name``, ``type`` (class name), ``part`` (``augmentation``,
    ``preprocess``, ``backbone``, ``pooling`` or ``head``), ``block`` (backbone block,
    ``""`` elsewhere), ``output_shape`` (tuple, batch ``None``; a list of tuples for
    several outputs), ``params``, ``trainable_params`` and ``trainable`` (any weight
    trains). Totals come from `trainable_variables_summary`.
    """
    spec = get_backbone(config.backbone)
    trainable_ids = {id(v) for v in model.trainable_variables}
    rows = []

    def row(layer, part, block=""):
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "part": part,
                "block": block,
                "output_shape": _shape(layer),
                "params": _params(layer.weights),
                "trainable_params": _params(v for v in layer.weights if id(v) in trainable_ids),
                "trainable": any(id(v) in trainable_ids for v in layer.weights),
            }
        )

    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if layer.name == BACKBONE_NAME:
            blocks = block_of_layers(spec, layer)
            for inner in layer.layers:
                if not isinstance(inner, layers.InputLayer):
                    row(inner, BACKBONE_NAME, blocks[inner.name])
        elif layer.name in (HEAD_NAME, AUGMENTATION_NAME):
            for inner in layer.layers:
                if not isinstance(inner, layers.InputLayer):
                    row(inner, layer.name)
        else:
            row(layer, layer.name)
    return rows


def backbone_blocks(model: keras.Model, config: RunConfig) -> list[dict]:
    """The backbone's blocks, first to last: ``{"block", "layers", "params"}`` each.

    What "unfreeze the last N blocks" counts from the end of.
    """
    spec = get_backbone(config.backbone)
    backbone = model.get_layer(BACKBONE_NAME)
    blocks: dict[str, dict] = {}
    mapping = block_of_layers(spec, backbone)
    for layer in backbone.layers:
        block = mapping[layer.name]
        if not block:
            continue
        entry = blocks.setdefault(block, {"block": block, "layers": [], "params": 0})
        entry["layers"].append(layer.name)
        entry["params"] += _params(layer.weights)
    return list(blocks.values())


# -- estimates ----------------------------------------------------------------------------
def _trained_fraction(spec: BackboneSpec, phase: Phase) -> float:
    """Rough share of the backbone's compute that backpropagates in ``phase``."""
    if phase.backbone_frozen:
        return 0.0
    if phase.name == "fine_tune_top":
        per_block = phase.unfreeze if phase.unfreeze_unit == "blocks" else phase.unfreeze / 3
        return min(1.0, per_block / spec.num_blocks)
    return 1.0


def estimate_cost(config: RunConfig, num_images: int | None = None) -> dict:
    """A rough time and memory estimate for a run, for the page to show before training.

    Scales the registry's measured forward speed (images/s at 224x224 on 2 CPU cores)
    by ``(image_size / 224) ** 2`` (and roughly by alpha squared for MobileNets). A
    training step costs about 1x forward with a frozen backbone, up to 3x when the
    whole backbone backpropagates. Memory counts weights, gradients and Adam slots of
    what trains, activations of one batch, and TensorFlow's own footprint.

    Args:
        config: the run configuration.
        num_images: training images per epoch; when given, seconds per epoch and in
            total are estimated too.

    Returns:
        ``{"image_size", "params", "forward_seconds_per_image",
        "train_seconds_per_image" (slowest phase), "memory_mb" (peak),
        "phases": [{"name", "epochs", "seconds_per_image", "uses_feature_cache",
        ["seconds_per_epoch"]}], ["total_seconds"], "basis"}``.
    """
    spec = validate_model_config(config)
    if num_images is not None and (
        isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0
    ):
        raise ValueError(
            f"num_images must be a whole number >= 0. Received: num_images={num_images!r}"
        )
    size = image_size(config)
    alpha = float(config.alpha)
    width = (0.2 + 0.8 * alpha**2) if spec.has_alpha else 1.0
    area = (size / 224) ** 2
    forward = area * width / spec.speed_224
    params = int(spec.params * (alpha**2 if spec.has_alpha else 1.0))
    weights_mb = params * 4 / 2**20
    activations_mb = spec.activation_mb_224 * area * width * config.batch_size
    phases, peak_mb, slowest, total = [], 0.0, 0.0, 0.0
    for phase in training_phases(config):
        share = _trained_fraction(spec, phase)
        if phase.name == "bias_only":
            step = forward * 2.0  # backprop through every layer, no kernel gradients
            trained_params = 0.02
        else:
            step = forward * (1.0 + 2.0 * share)
            trained_params = share
        cached = uses_feature_cache(config, phase)
        memory = (
            TF_RUNTIME_MB
            + weights_mb * (1.0 + 3.0 * trained_params)
            + activations_mb * (2.0 if share or phase.name == "bias_only" else 1.0)
        )
        peak_mb = max(peak_mb, memory)
        slowest = max(slowest, step)
        entry = {
            "name": phase.name,
            "epochs": phase.epochs,
            "seconds_per_image": step,
            "uses_feature_cache": cached,
        }
        if num_images is not None:
            # With cached features the backbone runs once; later epochs only train the head.
            entry["seconds_per_epoch"] = step * num_images
            total += forward * num_images if cached else step * num_images * phase.epochs
        phases.append(entry)
    result = {
        "image_size": size,
        "params": params,
        "forward_seconds_per_image": forward,
        "train_seconds_per_image": slowest,
        "memory_mb": round(peak_mb, 1),
        "phases": phases,
        "basis": (
            f"{spec.display_name} measured at {spec.speed_224:g} images/s forward at 224x224 "
            "on 2 CPU cores; scaled by image area; rough (±50%)."
        ),
    }
    if num_images is not None:
        result["total_seconds"] = total
    return result
