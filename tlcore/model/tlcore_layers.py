"""The two Keras layers of Transfer Learning Studio models: `Preprocess` and `FeaturePooling`.

This file stands on its own (it needs only Keras): every export bundle ships it unchanged,
next to ``model.keras``. Import it before ``keras.saving.load_model("model.keras")``; it
registers both layers under their saved names (``tlcore>Preprocess``,
``tlcore>FeaturePooling``), so the model loads with ``safe_mode=True`` and no
``custom_objects``. The studio itself defines its models with this same file (as
``tlcore.model.tlcore_layers``), so what a bundle ships is what the model was built with.
"""

import math

import keras
from keras import layers, ops

# The same values as the studio's backbone registry (a test keeps them equal).
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
POOLING_MODES = ("avg", "max", "flatten")


@keras.saving.register_keras_serializable(package="tlcore")
class Preprocess(layers.Layer):
    """The backbone's pixel preprocessing, as a serializable layer.

    Takes raw RGB floats in [0, 255]. Modes match ``keras.applications``:
    ``"caffe"`` (RGB→BGR, minus the ImageNet BGR mean), ``"tf"`` (to [-1, 1]),
    ``"torch"`` (to [0, 1], minus ImageNet mean, over ImageNet std), ``"none"``.

    Args:
        mode: one of `PREPROCESS_MODES`.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(
                f"mode must be one of {', '.join(PREPROCESS_MODES)}. Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, x.dtype)
            std = ops.convert_to_tensor(IMAGENET_STD_RGB, x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tlcore")
class FeaturePooling(layers.Layer):
    """Pools one feature map, or several stage outputs, into one feature vector.

    Each map is reduced by global average or max pooling (or flattened), and the results
    are concatenated in order. Parameter-free, so cached features stay valid.

    Args:
        mode: ``"avg"``, ``"max"`` or ``"flatten"`` (flatten takes one map only).
    """

    def __init__(self, mode: str = "avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(
                f"mode must be one of {', '.join(POOLING_MODES)}. Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        maps = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        pooled = []
        for fmap in maps:
            if self.mode == "avg":
                pooled.append(ops.mean(fmap, axis=(1, 2)))
            elif self.mode == "max":
                pooled.append(ops.max(fmap, axis=(1, 2)))
            else:
                pooled.append(ops.reshape(fmap, (-1, math.prod(fmap.shape[1:]))))
        return pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)

    def compute_output_shape(self, input_shape):
        several = isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        )
        shapes = list(input_shape) if several else [input_shape]
        if self.mode == "flatten":
            width = sum(math.prod(s[1:]) for s in shapes)
        else:
            width = sum(s[-1] for s in shapes)
        return (shapes[0][0], width)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
