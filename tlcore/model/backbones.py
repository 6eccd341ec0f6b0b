"""Building backbones: the networks of the registry (`tlcore.model.registry`) as Keras models.

The two small Keras layers of the backbone side of the model, `Preprocess` (the
backbone's own pixel preprocessing, as a serializable layer rather than a ``Lambda``)
and `FeaturePooling` (global pooling of one or more stage outputs into one vector), are
importable from here; they are defined in `tlcore.model.tlcore_layers`, a file that needs
only Keras, because every export bundle ships that file as is.
"""

from __future__ import annotations

import math
import re

import keras
import numpy as np
from keras import layers

from tlcore.model.registry import (  # noqa: F401 - the registry's names, also used as backbones.X
    BACKBONES,
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    PREPROCESS_MODES,
    BackboneSpec,
    get_backbone,
    resolve_image_size,
    validate_backbone_args,
)
from tlcore.model.tlcore_layers import (  # noqa: F401 - also used as backbones.X
    POOLING_MODES,
    FeaturePooling,
    Preprocess,
)

# -- our own tiny network ----------------------------------------------------------------
SMALL_CNN_FILTERS = (16, 32, 64, 128)


def SmallCNN(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    name: str = "small_cnn",
) -> keras.Model:
    """A tiny plain conv net (4 blocks of conv-BN-ReLU, ~100k parameters), no top.

    For tests and fast demos. It has no pretrained weights: ``weights`` must be None.

    Args:
        include_top: must be False (the head is ours).
        weights: must be None.
        input_shape: ``(side, side, 3)``; defaults to ``(64, 64, 3)``.
        name: model name.
    """
    if include_top:
        raise ValueError(f"SmallCNN has no classifier top. Received: include_top={include_top!r}")
    if weights is not None:
        raise ValueError(
            f"SmallCNN has no pretrained weights; build it with weights=None. "
            f"Received: weights={weights!r}"
        )
    inputs = keras.Input(shape=input_shape or (64, 64, 3))
    x = inputs
    for i, filters in enumerate(SMALL_CNN_FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        if i < len(SMALL_CNN_FILTERS):
            x = layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name=name)


def scale_to_unit_range(x, data_format=None):
    """SmallCNN's preprocessing: [0, 255] → [-1, 1] (the "tf" mode)."""
    return x / 127.5 - 1.0


# -- building ----------------------------------------------------------------------------
def build_base(spec: BackboneSpec, image_size: int, alpha: float = 1.0) -> keras.Model:
    """Builds the raw network, no top, random weights, in the ImageNet-weights layout.

    The result is the plain ``keras.applications`` model (its own name, one output).
    EfficientNet B0-B3 get the extra rescaling layer Keras only adds when it loads
    ImageNet weights, and ImageNet mean/variance in their normalisation layer, so the
    same architecture takes ImageNet weights, weights files and earlier runs alike.
    """
    kwargs = {"include_top": False, "weights": None, "input_shape": (image_size, image_size, 3)}
    if spec.has_alpha:
        kwargs["alpha"] = float(alpha)
    base = spec.constructor(**kwargs)
    if spec.imagenet_rescaling:
        base = _efficientnet_imagenet_layout(base)
    return base


def _efficientnet_imagenet_layout(base: keras.Model) -> keras.Model:
    """Adds the post-normalisation rescaling Keras adds for ImageNet weights.

    ``keras/src/applications/efficientnet.py`` inserts ``Rescaling(1/sqrt(stddev))``
    after its ``Normalization`` layer only when ``weights == "imagenet"`` (the weights
    file stores the stddev as the variance). The network is cloned with fresh layers so
    every layer belongs to one graph only.
    """
    scale = [1.0 / math.sqrt(s) for s in IMAGENET_STD_RGB]

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if isinstance(layer, layers.Normalization):
            out = layers.Rescaling(scale, name="normalization_imagenet_scale")(out)
        return out

    model = keras.models.clone_model(base, call_function=call)
    norm = next(layer for layer in model.layers if isinstance(layer, layers.Normalization))
    # Random weights get the values the ImageNet file holds (stddev stored as variance).
    mean, variance, count = norm.get_weights()
    norm.set_weights(
        [
            np.asarray(IMAGENET_MEAN_RGB, mean.dtype),
            np.asarray(IMAGENET_STD_RGB, variance.dtype),
            np.zeros_like(count),
        ]
    )
    norm.finalize_state()
    return model


def stage_outputs(spec: BackboneSpec, base: keras.Model, count: int) -> list[tuple[str, object]]:
    """The feature maps ending the last ``count`` stages, shallow to deep.

    Each item is ``(block, tensor)``: the block that ends the stage and the tensor that
    leaves it (the input of the next block, so residual additions that are bare
    operations rather than layers, as in ConvNeXt, are included). The last item is
    always the network's output.

    Raises:
        ValueError: ``count`` is more than the backbone has.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError(f"fusion_stages must be an integer. Received: fusion_stages={count!r}")
    if not 1 <= count <= spec.max_fusion_stages:
        raise ValueError(
            f"{spec.name} has {spec.max_fusion_stages} feature stages to fuse. "
            f"Received: fusion_stages={count!r}"
        )
    blocks = block_of_layers(spec, base)
    order = [layer.name for layer in base.layers]
    found = []
    for pattern in spec.stage_blocks[len(spec.stage_blocks) - (count - 1) :]:
        regex = re.compile(pattern)
        positions = [
            i for i, name in enumerate(order) if blocks[name] and regex.search(blocks[name])
        ]
        if not positions:
            raise RuntimeError(f"{spec.name}: no block matches stage pattern {pattern!r}")
        last = positions[-1]
        following = base.layers[last + 1] if last + 1 < len(order) else None
        tensor = following.input if following is not None else base.layers[last].output
        if isinstance(tensor, (list, tuple)):
            tensor = base.layers[last].output
        found.append((blocks[order[last]], tensor))
    found.append((blocks[order[-1]], base.output))
    return found


def block_of_layers(spec: BackboneSpec, model: keras.Model) -> dict[str, str]:
    """Maps every layer name of the backbone to its block (``""`` for the input layer).

    Order follows ``model.layers`` (topological), so the last blocks come last.
    """
    compiled = [(re.compile(pattern), template) for pattern, template in spec.block_patterns]
    named: list[str | None] = []
    for layer in model.layers:
        block = None
        for regex, template in compiled:
            match = regex.search(layer.name)
            if match:
                block = match.expand(template)
                break
        named.append(block)
    result: dict[str, str] = {}
    order = range(len(named)) if spec.unmatched == "previous" else range(len(named) - 1, -1, -1)
    carry = None
    for i in order:
        if named[i] is not None:
            carry = named[i]
        result[model.layers[i].name] = carry
    first = next((b for b in named if b is not None), "")
    last = next((b for b in reversed(named) if b is not None), "")
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            result[layer.name] = ""
        elif result[layer.name] is None:
            result[layer.name] = first if spec.unmatched == "previous" else last
    return {layer.name: result[layer.name] for layer in model.layers}


def block_names(spec: BackboneSpec, model: keras.Model) -> list[str]:
    """The backbone's blocks in order, first to last."""
    seen: dict[str, None] = {}
    for block in block_of_layers(spec, model).values():
        if block:
            seen.setdefault(block)
    return list(seen)


def canonical_backbone(backbone: keras.Model) -> keras.Model:
    """A single-output view of a backbone (its final feature map), sharing its layers.

    Weights are saved and copied through this view so that the layer order does not
    depend on how many stage outputs (feature fusion) the backbone exposes.
    """
    outputs = backbone.outputs
    if len(outputs) == 1:
        return backbone
    return keras.Model(backbone.inputs, outputs[-1], name=f"{backbone.name}_final")
