"""The backbone registry: per-architecture facts as data, in one table.

Like fastai's ``model_meta``, everything the rest of the package needs to know about a
backbone lives in `BACKBONES`: how to build it, how it wants its pixels, which sizes it
accepts, how its layers group into blocks (for "unfreeze the last N blocks"), which
layers end its stages (for feature fusion), which ImageNet weights file Keras downloads
for it, and how fast it runs on a small CPU machine (for the page's estimates).

Facts were read from ``keras/src/applications/*.py`` (Keras 3.15) and measured on a
2-core CPU at 224x224, batch 16, forward pass only.

Pure data: reading it imports no Keras, so the web server can show every fact. The
constructors and preprocessing functions are named here and resolved when first called
(`tlcore.model.backbones` builds the networks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"
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


# -- the table ---------------------------------------------------------------------------
_VGG_BLOCKS = ((r"^(block\d+)_", r"\1"),)
_RESNET_BLOCKS = ((r"^(conv\d_block\d+)_", r"\1"), (r"^(?:conv1|pool1)_", "stem"))
_RESNET_STAGES = (r"^conv2_", r"^conv3_", r"^conv4_")
_MOBILENET_V3_BLOCKS = (
    (r"^expanded_conv_(\d+)_", r"block_\1"),
    (r"^expanded_conv_", "block_0"),
    (r"^conv_1", "top"),
    (r"^conv(?:_bn)?$", "stem"),
)
_EFFICIENTNET_BLOCKS = ((r"^(block\d+[a-z])_", r"\1"), (r"^stem_", "stem"), (r"^top_", "top"))
_EFFICIENTNET_STAGES = (r"^block2[a-z]$", r"^block3[a-z]$", r"^block5[a-z]$")
_EFFICIENTNET_NOTE = (
    "Keras 3 puts the rescaling and ImageNet normalisation inside the network; "
    "feed raw [0, 255] pixels."
)


def _efficientnet(index: int, size: int, params: int, channels: int, blocks: int, speed, act):
    return BackboneSpec(
        name=f"EfficientNetB{index}",
        display_name=f"EfficientNet-B{index}",
        family="EfficientNet",
        constructor=KerasApp(f"EfficientNetB{index}"),
        preprocess=KerasPreprocess("efficientnet"),
        preprocess_mode="none",
        preprocess_in_model=True,
        default_size=size,
        min_size=32,
        params=params,
        feature_channels=channels,
        block_patterns=_EFFICIENTNET_BLOCKS,
        num_blocks=blocks,
        stage_blocks=_EFFICIENTNET_STAGES,
        weights_url=f"https://storage.googleapis.com/keras-applications/efficientnetb{index}_notop.h5",
        weights_hashes={
            1.0: (
                "50bc09e76180e00e4465e1a485ddc09d",
                "74c4e6b3e1f6a1eea24c589628592432",
                "111f8e2ac8aa800a7a99e3239f7bfb39",
                "af6d107764bb5b1abb91932881670226",
            )[index]
        },
        speed_224=speed,
        activation_mb_224=act,
        imagenet_rescaling=True,
        notes=_EFFICIENTNET_NOTE,
    )


_SPECS = (
    BackboneSpec(
        name="SmallCNN",
        display_name="Small CNN (ours, no pretrained weights)",
        family="SmallCNN",
        constructor=OwnNetwork("SmallCNN"),
        preprocess=OwnNetwork("scale_to_unit_range"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=64,
        min_size=32,
        params=98_160,
        feature_channels=128,
        block_patterns=((r"^(block\d+)_", r"\1"),),
        num_blocks=4,
        stage_blocks=(r"^block1$", r"^block2$", r"^block3$"),
        speed_224=178.5,
        activation_mb_224=19.1,
        notes="A tiny network for tests and quick demos; trains from random weights only.",
    ),
    BackboneSpec(
        name="VGG16",
        display_name="VGG16",
        family="VGG",
        constructor=KerasApp("VGG16"),
        preprocess=KerasPreprocess("vgg16"),
        preprocess_mode="caffe",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=14_714_688,
        feature_channels=512,
        block_patterns=_VGG_BLOCKS,
        num_blocks=5,
        stage_blocks=(r"^block2$", r"^block3$", r"^block4$"),
        weights_url=_GCS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "6d6bbae143d832006294945121d1f1fc"},
        speed_224=11.2,
        activation_mb_224=58.1,
    ),
    BackboneSpec(
        name="VGG19",
        display_name="VGG19",
        family="VGG",
        constructor=KerasApp("VGG19"),
        preprocess=KerasPreprocess("vgg19"),
        preprocess_mode="caffe",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=20_024_384,
        feature_channels=512,
        block_patterns=_VGG_BLOCKS,
        num_blocks=5,
        stage_blocks=(r"^block2$", r"^block3$", r"^block4$"),
        weights_url=_GCS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "253f8cb515780f3b799900260a226db6"},
        speed_224=8.9,
        activation_mb_224=63.1,
    ),
    BackboneSpec(
        name="ResNet50",
        display_name="ResNet-50",
        family="ResNet",
        constructor=KerasApp("ResNet50"),
        preprocess=KerasPreprocess("resnet"),
        preprocess_mode="caffe",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=23_587_712,
        feature_channels=2048,
        block_patterns=_RESNET_BLOCKS,
        num_blocks=17,
        stage_blocks=_RESNET_STAGES,
        weights_url=_GCS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "4d473c1dd8becc155b73f8504c6f6626"},
        speed_224=29.8,
        activation_mb_224=141.6,
    ),
    BackboneSpec(
        name="ResNet50V2",
        display_name="ResNet-50 v2",
        family="ResNet",
        constructor=KerasApp("ResNet50V2"),
        preprocess=KerasPreprocess("resnet_v2"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=23_564_800,
        feature_channels=2048,
        block_patterns=(*_RESNET_BLOCKS, (r"^post_", "top")),
        num_blocks=18,
        stage_blocks=_RESNET_STAGES,
        weights_url=_GCS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "fac2f116257151a9d068a22e544a4917"},
        speed_224=34.3,
        activation_mb_224=119.7,
    ),
    BackboneSpec(
        name="MobileNet",
        display_name="MobileNet v1",
        family="MobileNet",
        constructor=KerasApp("MobileNet"),
        preprocess=KerasPreprocess("mobilenet"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=3_228_864,
        feature_channels=1024,
        alphas=(0.25, 0.5, 0.75, 1.0),
        block_patterns=((r"^conv_(?:dw|pw|pad)_(\d+)", r"block_\1"), (r"^conv1", "stem")),
        num_blocks=14,
        stage_blocks=(r"^block_3$", r"^block_5$", r"^block_11$"),
        weights_url=_GCS + "mobilenet/mobilenet_{alpha_v1}_{rows}_tf_no_top.h5",
        weights_sizes=(128, 160, 192, 224),
        speed_224=115.9,
        activation_mb_224=64.2,
        width_facts={
            0.25: (218_544, 256),
            0.5: (829_536, 512),
            0.75: (1_832_976, 768),
            1.0: (3_228_864, 1024),
        },
    ),
    BackboneSpec(
        name="MobileNetV2",
        display_name="MobileNet v2",
        family="MobileNet",
        constructor=KerasApp("MobileNetV2"),
        preprocess=KerasPreprocess("mobilenet_v2"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=2_257_984,
        feature_channels=1280,
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        block_patterns=(
            (r"^(block_\d+)_", r"\1"),
            (r"^expanded_conv_", "block_0"),
            (r"^(?:Conv1|bn_Conv1)", "stem"),
            (r"^(?:Conv_1|out_relu)", "top"),
        ),
        num_blocks=19,
        stage_blocks=(r"^block_2$", r"^block_5$", r"^block_12$"),
        weights_url=(
            _GCS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
            "{alpha}_{rows}_no_top.h5"
        ),
        weights_sizes=(96, 128, 160, 192, 224),
        speed_224=111.3,
        activation_mb_224=83.2,
        width_facts={
            0.35: (410_208, 1280),
            0.5: (706_224, 1280),
            0.75: (1_382_064, 1280),
            1.0: (2_257_984, 1280),
            1.3: (3_766_048, 1664),
            1.4: (4_363_712, 1792),
        },
    ),
    BackboneSpec(
        name="MobileNetV3Small",
        display_name="MobileNet v3 Small",
        family="MobileNet",
        constructor=KerasApp("MobileNetV3Small"),
        preprocess=KerasPreprocess("mobilenet_v3"),
        preprocess_mode="none",
        preprocess_in_model=True,
        default_size=224,
        min_size=32,
        params=939_120,
        feature_channels=576,
        alphas=(0.75, 1.0),
        block_patterns=_MOBILENET_V3_BLOCKS,
        num_blocks=13,
        stage_blocks=(r"^block_0$", r"^block_2$", r"^block_7$"),
        weights_url=_GCS + "mobilenet_v3/weights_mobilenet_v3_small_224_{alpha}_float_no_top_v2.h5",
        weights_hashes={
            0.75: "ebdb5cc8e0b497cd13a7c275d475c819",
            1.0: "d3e8ec802a04aa4fc771ee12a9a9b836",
        },
        speed_224=302.9,
        activation_mb_224=20.4,
        notes="Keras 3 puts the [-1, 1] rescaling inside the network; feed raw [0, 255] pixels.",
    ),
    BackboneSpec(
        name="MobileNetV3Large",
        display_name="MobileNet v3 Large",
        family="MobileNet",
        constructor=KerasApp("MobileNetV3Large"),
        preprocess=KerasPreprocess("mobilenet_v3"),
        preprocess_mode="none",
        preprocess_in_model=True,
        default_size=224,
        min_size=32,
        params=2_996_352,
        feature_channels=960,
        alphas=(0.75, 1.0),
        block_patterns=_MOBILENET_V3_BLOCKS,
        num_blocks=17,
        stage_blocks=(r"^block_2$", r"^block_5$", r"^block_11$"),
        weights_url=_GCS + "mobilenet_v3/weights_mobilenet_v3_large_224_{alpha}_float_no_top_v2.h5",
        weights_hashes={
            0.75: "40af19a13ebea4e2ee0c676887f69a2e",
            1.0: "07fb09a5933dd0c8eaafa16978110389",
        },
        speed_224=123.8,
        activation_mb_224=58.8,
        notes="Keras 3 puts the [-1, 1] rescaling inside the network; feed raw [0, 255] pixels.",
    ),
    _efficientnet(0, 224, 4_049_571, 1280, 18, 71.2, 95.8),
    _efficientnet(1, 240, 6_575_239, 1280, 25, 65.3, 131.7),
    _efficientnet(2, 260, 7_768_569, 1408, 25, 59.7, 137.8),
    _efficientnet(3, 300, 10_783_535, 1536, 28, 41.1, 182.4),
    BackboneSpec(
        name="EfficientNetV2B0",
        display_name="EfficientNetV2-B0",
        family="EfficientNet",
        constructor=KerasApp("EfficientNetV2B0"),
        preprocess=KerasPreprocess("efficientnet_v2"),
        preprocess_mode="none",
        preprocess_in_model=True,
        default_size=224,
        min_size=32,
        params=5_919_312,
        feature_channels=1280,
        block_patterns=_EFFICIENTNET_BLOCKS,
        num_blocks=23,
        stage_blocks=_EFFICIENTNET_STAGES,
        weights_url=_GCS + "efficientnet_v2/efficientnetv2-b0_notop.h5",
        weights_hashes={1.0: "893217f2bb855e2983157299931e43ff"},
        speed_224=91.9,
        activation_mb_224=61.7,
        notes=_EFFICIENTNET_NOTE,
    ),
    BackboneSpec(
        name="InceptionV3",
        display_name="Inception v3",
        family="Inception",
        constructor=KerasApp("InceptionV3"),
        preprocess=KerasPreprocess("inception_v3"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=299,
        min_size=75,
        params=21_802_784,
        feature_channels=2048,
        block_patterns=((r"^(mixed\d+)$", r"\1"),),
        unmatched="next",
        num_blocks=11,
        stage_blocks=(r"^mixed2$", r"^mixed7$"),
        weights_url=_GCS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "bcbd6486424b2319ff4ef7d526e38f63"},
        speed_224=45.3,
        activation_mb_224=63.8,
        notes="Blocks are the 'mixed' modules; the stem belongs to mixed0. Three stages only.",
    ),
    BackboneSpec(
        name="DenseNet121",
        display_name="DenseNet-121",
        family="DenseNet",
        constructor=KerasApp("DenseNet121"),
        preprocess=KerasPreprocess("densenet"),
        preprocess_mode="torch",
        preprocess_in_model=False,
        default_size=224,
        min_size=32,
        params=7_037_504,
        feature_channels=1024,
        block_patterns=(
            (r"^(conv\d_block\d+)_", r"\1"),
            (r"^(pool\d)_", r"\1"),
            (r"^conv1_", "stem"),
            (r"^pool1$", "stem"),
            (r"^(?:bn|relu)$", "top"),
        ),
        num_blocks=63,
        stage_blocks=(r"^conv2_", r"^conv3_", r"^conv4_"),
        weights_url=_GCS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "30ee3e1110167f948a6b9946edeeb738"},
        speed_224=31.4,
        activation_mb_224=190.4,
    ),
    BackboneSpec(
        name="Xception",
        display_name="Xception",
        family="Xception",
        constructor=KerasApp("Xception"),
        preprocess=KerasPreprocess("xception"),
        preprocess_mode="tf",
        preprocess_in_model=False,
        default_size=299,
        min_size=71,
        params=20_861_480,
        feature_channels=2048,
        block_patterns=((r"^(block\d+)_", r"\1"),),
        num_blocks=14,
        stage_blocks=(r"^block2$", r"^block3$", r"^block12$"),
        weights_url=_GCS + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hashes={1.0: "b0042744bf5b25fce3cb969f33bebb97"},
        speed_224=24.4,
        activation_mb_224=131.9,
    ),
    BackboneSpec(
        name="ConvNeXtTiny",
        display_name="ConvNeXt Tiny",
        family="ConvNeXt",
        constructor=KerasApp("ConvNeXtTiny"),
        preprocess=KerasPreprocess("convnext"),
        preprocess_mode="none",
        preprocess_in_model=True,
        default_size=224,
        min_size=32,
        params=27_820_128,
        feature_channels=768,
        block_patterns=(
            (r"_stage_(\d+)_block_(\d+)_", r"stage\1_block\2"),
            (r"_downsampling_block_(\d+)$", r"downsample\1"),
            (r"_(?:prestem_normalization|stem)$", "stem"),
        ),
        num_blocks=22,
        stage_blocks=(r"^stage0_", r"^stage1_", r"^stage2_"),
        weights_url=_GCS + "convnext/convnext_tiny_notop.h5",
        weights_hashes={1.0: "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"},
        speed_224=3.4,
        activation_mb_224=109.8,
        notes=(
            "Keras 3 puts the ImageNet normalisation inside the network; feed raw [0, 255] "
            "pixels. Slow on CPU (LayerNorm and 7x7 depthwise convolutions)."
        ),
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}
"""Every backbone the studio offers, by registry name."""


def get_backbone(name: str) -> BackboneSpec:
    """The registry entry for ``name``.

    Raises:
        ValueError: ``name`` is not in the registry; the message lists the known names.
    """
    spec = BACKBONES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(
            f"Unknown backbone. Known backbones: {', '.join(BACKBONES)}. "
            f"Received: backbone={name!r}"
        )
    return spec


def resolve_image_size(spec: BackboneSpec, image_size: int = 0) -> int:
    """``image_size``, or the backbone's default when it is 0."""
    return image_size or spec.default_size


def validate_backbone_args(
    name: str, alpha: float = 1.0, image_size: int = 0, weights_kind: str = "none"
) -> BackboneSpec:
    """Checks a backbone/alpha/size/weights combination before anything is built.

    Args:
        name: registry name.
        alpha: width multiplier (MobileNet family only; 1.0 otherwise).
        image_size: input side; 0 means the backbone's default.
        weights_kind: ``"imagenet"``, ``"none"``, ``"file"`` or ``"run"``.

    Returns:
        The registry entry.

    Raises:
        ValueError: naming the bad value and what would work.
    """
    spec = get_backbone(name)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1.4:
        raise ValueError(f"alpha must be a number in (0, 1.4]. Received: alpha={alpha!r}")
    if not spec.has_alpha and float(alpha) != 1.0:
        raise ValueError(
            f"alpha (width multiplier) applies to the MobileNet backbones only; "
            f"{name} needs alpha 1.0. Received: alpha={alpha!r}"
        )
    size = resolve_image_size(spec, image_size)
    if isinstance(size, bool) or not isinstance(size, int) or size < spec.min_size:
        raise ValueError(
            f"image_size must be at least {spec.min_size} for {name}. "
            f"Received: image_size={image_size!r}"
        )
    if weights_kind == "imagenet":
        if not spec.has_imagenet_weights:
            raise ValueError(
                f"{name} has no ImageNet weights; choose weights 'none', a weights file "
                f"or an earlier run. Received: weights='imagenet'"
            )
        if spec.has_alpha and float(alpha) not in spec.alphas:
            shipped = ", ".join(str(float(a)) for a in spec.alphas)
            raise ValueError(
                f"Keras ships ImageNet weights for {name} only with alpha {shipped}. "
                f"Choose one of those, or weights 'none' to train this width from scratch. "
                f"Received: alpha={alpha!r}"
            )
    return spec
