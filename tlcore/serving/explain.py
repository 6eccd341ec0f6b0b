"""Grad-CAM: where in the image the model found evidence for a class.

For a model from `tlcore.model.models.build_model` (image → [augmentation] → preprocess →
backbone → pooling → head), the class score is the head's logit for the class (before
the softmax, so a confident prediction still has gradients), and the feature map is
the backbone's last stage output: the nested backbone sub-model's final output, also
when feature fusion gives it several outputs. Grad-CAM (Selvaraju et al., 2017) weights
each channel of that map by the mean gradient of the score over the map, sums them and
keeps the positive part: a coarse map (7×7 for most backbones at 224) of where the
evidence lies, which `overlay_heatmap` stretches over the picture as a coloured layer.

The computation is one compiled TensorFlow function per model, traced on first use;
the augmentation layers (training only) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tlcore.model.models import BACKBONE_NAME, HEAD_NAME, POOLING_NAME, PREPROCESS_NAME

LOGITS_LAYER = "logits"
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM heatmap for one image and one class.

    Attributes:
        heatmap: ``float32 (h, w)`` in [0, 1] at the feature map's resolution (1 = the
            strongest evidence for the class); all zeros when ``empty``.
        class_index: the class explained.
        class_name: its name.
        probability: the model's probability for that class on this image.
        predicted_index: the class the model predicts for the image.
        empty: no part of the image counts as evidence *for* the class (every weighted
            activation was negative); the map is then all zeros.
    """

    heatmap: np.ndarray
    class_index: int
    class_name: str
    probability: float
    predicted_index: int
    empty: bool = False

    @property
    def peak(self) -> tuple[float, float]:
        """Where the heatmap is highest, as fractions ``(x, y)`` of the width and height."""
        h, w = self.heatmap.shape
        row, col = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return (col + 0.5) / w, (row + 0.5) / h


class GradCam:
    """Grad-CAM for a classifier built by `tlcore.model.models.build_model`.

    Args:
        model: the classifier (any backbone of the registry, fusion or not).
        classes: class names in output order (default ``class_0``, ``class_1``, ...).

    Raises:
        ValueError: ``model`` lacks the preprocess, backbone, pooling or head parts.
    """

    def __init__(self, model, classes: list[str] | None = None):
        import keras
        import tensorflow as tf

        try:
            preprocess = model.get_layer(PREPROCESS_NAME)
            backbone = model.get_layer(BACKBONE_NAME)
            pooling = model.get_layer(POOLING_NAME)
            head = model.get_layer(HEAD_NAME)
            logits_layer = head.get_layer(LOGITS_LAYER)
        except ValueError as exc:
            raise ValueError(
                "Grad-CAM needs a model built by Transfer Learning Studio (layers "
                f"'{PREPROCESS_NAME}', '{BACKBONE_NAME}', '{POOLING_NAME}', '{HEAD_NAME}'). "
                f"Received: model={model.name!r} ({exc})"
            ) from exc
        num_classes = int(model.output_shape[-1])
        self.classes = list(classes) if classes else [f"class_{i}" for i in range(num_classes)]
        self.image_size = int(model.input_shape[1])
        logits_model = keras.Model(head.inputs, logits_layer.output, name="head_logits")
        size = self.image_size

        @tf.function(
            input_signature=[
                tf.TensorSpec((None, size, size, 3), tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ]
        )
        def cam(images, class_index):
            x = preprocess(images)
            with tf.GradientTape() as tape:
                features = backbone(x, training=False)
                maps = list(features) if isinstance(features, (list, tuple)) else [features]
                tape.watch(maps[-1])
                pooled = pooling(maps if len(maps) > 1 else maps[0])
                logits = tf.cast(logits_model(pooled, training=False), tf.float32)
                score = tf.gather(logits, class_index, batch_dims=1)
            last = maps[-1]
            grads = tf.cast(tape.gradient(score, last), tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2))
            heat = tf.einsum("bhwc,bc->bhw", tf.cast(last, tf.float32), weights)
            return tf.nn.relu(heat), tf.nn.softmax(logits, axis=-1)

        self._cam = cam

    def explain(self, pixels: np.ndarray, class_index: int | None = None) -> Explanation:
        """The Grad-CAM heatmap of one image for ``class_index`` (default: the predicted).

        Args:
            pixels: the image as the model takes it: ``(S, S, 3)`` RGB in [0, 255] (e.g.
                `tlcore.serving.predict.Predictor.load_pixels`).
            class_index: the class to explain; None (default) explains the predicted one.

        Raises:
            ValueError: wrong image shape, or a class index out of range.
        """
        import tensorflow as tf

        x = np.asarray(pixels, dtype=np.float32)
        size = self.image_size
        if x.shape != (size, size, 3):
            raise ValueError(f"pixels must have shape ({size}, {size}, 3). Received: {x.shape}")
        x = tf.constant(x[None])
        if class_index is None:
            _, probs = self._cam(x, tf.constant([0], tf.int32))
            class_index = int(np.argmax(probs.numpy()[0]))
        if not 0 <= int(class_index) < len(self.classes):
            raise ValueError(
                f"class_index must be from 0 to {len(self.classes) - 1}. "
                f"Received: class_index={class_index!r}"
            )
        heat, probs = self._cam(x, tf.constant([int(class_index)], tf.int32))
        heat = heat.numpy()[0]
        probs = probs.numpy()[0]
        top = float(heat.max()) if heat.size else 0.0
        # Only the sign matters: untrained networks can have tiny (1e-15) but real activations.
        empty = not np.isfinite(top) or top <= 0.0
        heatmap = np.zeros_like(heat, dtype=np.float32) if empty else (heat / top)
        return Explanation(
            heatmap=heatmap.astype(np.float32),
            class_index=int(class_index),
            class_name=self.classes[int(class_index)],
            probability=float(probs[int(class_index)]),
            predicted_index=int(np.argmax(probs)),
            empty=bool(empty),
        )


# -- drawing --------------------------------------------------------------------------------
def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Maps values in [0, 1] to ``uint8`` RGB with a jet-like ramp (blue → cyan → yellow →
    red), shape ``values.shape + (3,)``."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.rint(np.stack([r, g, b], axis=-1) * 255.0).astype(np.uint8)


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretches a heatmap to ``size`` = ``(width, height)`` smoothly (bicubic), in [0, 1]."""
    layer = Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    stretched = np.asarray(layer.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(stretched, 0.0, 1.0)


def overlay_heatmap(
    image: Image.Image | np.ndarray, heatmap: np.ndarray, *, alpha: float = DEFAULT_ALPHA
) -> Image.Image:
    """Lays a heatmap over an image as a jet-coloured, alpha-blended layer.

    The heatmap is stretched over the whole image (the model saw the whole image squeezed
    into its square input, so the map covers it end to end). Strong evidence is drawn
    more opaquely than weak, so the picture stays readable where nothing was found.

    Args:
        image: the picture (Pillow image of any mode, or ``uint8`` RGB array).
        heatmap: values in [0, 1], any resolution (`Explanation.heatmap`).
        alpha: opacity of the colour at the strongest evidence, default 0.5; the weakest
            gets a third of it.

    Returns:
        An RGB Pillow image the size of ``image``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha!r}")
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    base = base.convert("RGB")
    heat = resize_heatmap(heatmap, base.size)
    colors = jet_colormap(heat).astype(np.float32)
    weight = (alpha * (1.0 / 3.0 + (2.0 / 3.0) * heat))[..., None]
    pixels = np.asarray(base, dtype=np.float32)
    blended = pixels * (1.0 - weight) + colors * weight
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
