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
)
from tlcore.model.strategies import (  # noqa: F401 - also used as models.X
    AUGMENTATION_NAME,
    BACKBONE_NAME,
    BIAS_VARIABLE_NAMES,
    FEATURES_NAME,
    HEAD_NAME,
    INPUT_NAME,
    MAX_CLASSES,
    POOLING_NAME,
    PREPROCESS_NAME,
    TF_RUNTIME_MB,
    Phase,
    estimate_cost,
    image_size,
    training_phases,
    uses_feature_cache,
    validate_model_config,
)
from tlcore.model.weights import (
    load_backbone_from_model_file,
    load_imagenet_weights,
    load_weights_file,
)


# -- validation ---------------------------------------------------------------------------
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
