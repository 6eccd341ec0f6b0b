"""What the package knows about one backbone: `BackboneSpec`, and the lazy callables it names.

The rows themselves are in `tlcore.model.backbone_table`; `tlcore.model.registry` looks
them up. Reading a spec imports no Keras: `KerasApp`, `KerasPreprocess` and `OwnNetwork`
name a constructor or preprocessing function and resolve it when first called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
SPEED_REFERENCE_SIZE = 224
MOBILENET_V1_ALPHA_TEXT = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}


@dataclass(frozen=True)
class KerasApp:
    """``keras.applications.<name>``, looked up when called."""

    name: str

    def __call__(self, *args, **kwargs):
        import keras

        return getattr(keras.applications, self.name)(*args, **kwargs)


@dataclass(frozen=True)
class KerasPreprocess:
    """``keras.applications.<module>.preprocess_input``, looked up when called."""

    module: str

    def __call__(self, *args, **kwargs):
        import keras

        return getattr(keras.applications, self.module).preprocess_input(*args, **kwargs)


@dataclass(frozen=True)
class OwnNetwork:
    """A function of `tlcore.model.backbones` (our own small network), looked up when called."""

    name: str

    def __call__(self, *args, **kwargs):
        backbones = importlib.import_module("tlcore.model.backbones")
        return getattr(backbones, self.name)(*args, **kwargs)


@dataclass(frozen=True)
class BackboneSpec:
    """What the package knows about one backbone architecture.

    Attributes:
        name: registry key, as in ``RunConfig.backbone``.
        display_name: name for people.
        family: architecture family (groups variants on the page).
        constructor: builds the network, called like a ``keras.applications`` function
            (``include_top=False, weights=None, input_shape=..., [alpha=...]``).
        preprocess: the architecture's own ``keras.applications.<module>.preprocess_input``
            (for code that preprocesses outside the model).
        preprocess_mode: what `Preprocess` does inside our model: ``"caffe"`` (RGB→BGR,
            subtract the ImageNet mean), ``"tf"`` (scale to [-1, 1]), ``"torch"`` (scale
            to [0, 1], normalise by ImageNet mean/std) or ``"none"``.
        preprocess_in_model: True where Keras 3 puts the rescaling inside the network
            itself (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3); their
            ``preprocess_input`` is then a pass-through and raw [0, 255] pixels go in.
        default_size: input side Keras uses by default (and the ImageNet training size).
        min_size: smallest input side the architecture accepts.
        flexible_size: any side from ``min_size`` up works (True for every no-top model).
        params: parameters without the classifier top, at alpha 1.0.
        feature_channels: channels of the last feature map, at alpha 1.0.
        alphas: width multipliers Keras ships ImageNet weights for; empty when the
            architecture has no width multiplier. Other alphas build with random weights.
        block_patterns: ``(regex, template)`` pairs: the first regex that matches a layer
            name (``re.search``) gives its block, ``match.expand(template)``.
        unmatched: block of a layer no pattern names (auto-named layers such as
            ``re_lu_3``): ``"previous"`` named layer's block, or ``"next"``.
        num_blocks: how many blocks the patterns produce (checked by the tests).
        stage_blocks: regexes on block names, shallow to deep; the last layer of the
            last block matching each one ends a stage. The network's output is always the
            final stage and is not listed. Feature fusion uses the last N stages.
        weights_url: URL template of the no-top ImageNet weights (None: no weights);
            placeholders ``{alpha}``, ``{alpha_v1}``, ``{rows}``. The file name Keras
            caches under ``$KERAS_HOME/models`` is the URL's last part.
        weights_hashes: alpha → md5/sha256 Keras checks the file against (empty: none).
        weights_sizes: input sides Keras ships separate weights for; other sides load
            the 224 file (empty: one file for all sides).
        imagenet_rescaling: Keras adds a ``Rescaling(1/sqrt(stddev))`` after the
            normalisation layer only when it loads ImageNet weights (EfficientNet B0-B3);
            `build_base` always adds it, so every weight source fits one layout.
        speed_224: forward images/second at 224x224 on 2 CPU cores (batch 16).
        activation_mb_224: forward activations per image at 224x224, MB (float32).
        notes: anything a user should know.
    """

    name: str
    display_name: str
    family: str
    constructor: Callable[..., object]
    preprocess: Callable
    preprocess_mode: str
    preprocess_in_model: bool
    default_size: int
    min_size: int
    params: int
    feature_channels: int
    block_patterns: tuple[tuple[str, str], ...]
    num_blocks: int
    stage_blocks: tuple[str, ...]
    speed_224: float
    activation_mb_224: float
    flexible_size: bool = True
    alphas: tuple[float, ...] = ()
    unmatched: str = "previous"
    weights_url: str | None = None
    weights_hashes: dict = field(default_factory=dict)
    weights_sizes: tuple[int, ...] = ()
    imagenet_rescaling: bool = False
    notes: str = ""
    # alpha -> (parameters, feature channels) of the no-top network, counted from Keras.
    width_facts: dict = field(default_factory=dict)

    def __hash__(self) -> int:  # the weights_hashes dict would make the generated one fail
        return hash(self.name)

    @property
    def has_alpha(self) -> bool:
        """Whether the architecture has a width multiplier (``alpha``)."""
        return bool(self.alphas)

    def params_at(self, alpha: float = 1.0) -> int:
        """Parameters without the top at width ``alpha`` (counted; else scaled by alpha²)."""
        if not self.has_alpha:
            return self.params
        counted = self.width_facts.get(float(alpha))
        return counted[0] if counted else int(self.params * float(alpha) ** 2)

    def features_at(self, alpha: float = 1.0) -> int:
        """Channels of the last feature map at width ``alpha``."""
        counted = self.width_facts.get(float(alpha)) if self.has_alpha else None
        return counted[1] if counted else self.feature_channels

    @property
    def has_imagenet_weights(self) -> bool:
        return self.weights_url is not None

    @property
    def max_fusion_stages(self) -> int:
        """How many stages feature fusion can concatenate."""
        return len(self.stage_blocks) + 1

    def weights_rows(self, image_size: int) -> int:
        """The input side of the ImageNet file Keras picks for ``image_size``."""
        if not self.weights_sizes:
            return self.default_size
        return image_size if image_size in self.weights_sizes else 224

    def weights_url_for(self, alpha: float = 1.0, image_size: int = 0) -> str:
        """URL of the no-top ImageNet weights file for this alpha and input side."""
        if self.weights_url is None:
            raise ValueError(f"{self.name} has no ImageNet weights.")
        alpha = float(alpha)
        return self.weights_url.format(
            alpha=alpha,
            alpha_v1=MOBILENET_V1_ALPHA_TEXT.get(alpha, "2_5"),
            rows=self.weights_rows(image_size or self.default_size),
        )

    def weights_filename(self, alpha: float = 1.0, image_size: int = 0) -> str:
        """File name Keras caches the weights under (in ``$KERAS_HOME/models``)."""
        return self.weights_url_for(alpha, image_size).rsplit("/", 1)[1]

    def weights_hash(self, alpha: float = 1.0) -> str | None:
        return self.weights_hashes.get(float(alpha))
