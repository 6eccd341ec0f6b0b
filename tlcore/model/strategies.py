"""What a run configuration means for its model, without building it: validation, the
layer names every model shares, the training phases of each strategy, and the cost
estimate. Pure Python (no Keras), so the web server can show all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlcore.config import RunConfig
from tlcore.model.registry import BackboneSpec, get_backbone, validate_backbone_args

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


@dataclass(frozen=True)
class Strategy:
    """What the studio says and does about one freezing strategy (`STRATEGY_TABLE`).

    Attributes:
        name: as in ``RunConfig.strategy``.
        label: for headers, lists and charts.
        title: the Model page's choice.
        caption: one or two sentences under it.
        in_sweep: one of the runs of a strategy sweep.
        short: a few lower-case words for run names ("flowers · sweep 2 · fine-tune top").
    """

    name: str
    label: str
    title: str
    caption: str
    in_sweep: bool
    short: str = ""


STRATEGY_TABLE: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "feature_extraction",
            "Feature extraction",
            "Feature extraction",
            "Backbone frozen, only the new head trains. Fastest; the first thing to try, "
            "especially with few images.",
            True,
            short="feature extraction",
        ),
        Strategy(
            "fine_tune_top",
            "Fine-tune the top",
            "Fine-tune the top",
            "The last N blocks (or layers) of the backbone train with the head. Adapts "
            "high-level features when you have more data.",
            True,
            short="fine-tune top",
        ),
        Strategy(
            "bias_only",
            "Bias-only fine-tuning",
            "Bias-only",
            "Backbone kernels frozen; only its biases and batch-norm offsets train (BitFit). "
            "A tiny, cheap adaptation.",
            True,
            short="bias-only",
        ),
        Strategy(
            "full_fine_tune",
            "Full fine-tuning",
            "Full fine-tuning",
            "Every layer trains, starting from the pretrained weights. Needs more data and a "
            "small learning rate.",
            False,
            short="full fine-tune",
        ),
        Strategy(
            "two_phase",
            "Two-phase",
            "Two-phase",
            "Head first on a frozen backbone, then the top N blocks at a lower learning rate "
            "(fastai's fine_tune). Often the best.",
            True,
            short="two-phase",
        ),
        Strategy(
            "from_scratch",
            "From scratch (baseline)",
            "From scratch",
            "Same network, random weights, everything trains: the baseline that shows what "
            "pretraining buys.",
            True,
            short="from scratch",
        ),
    )
}
STRATEGY_LABELS = {name: s.label for name, s in STRATEGY_TABLE.items()}
STRATEGY_SHORT_LABELS = {name: s.short for name, s in STRATEGY_TABLE.items()}


@dataclass(frozen=True)
class Phase:
    """One stretch of training with fixed trainable flags and learning rate.

    Attributes:
        index: 1-based position.
        total: number of phases of the strategy.
        name: what trains: ``"feature_extraction"``, ``"fine_tune_top"``,
            ``"bias_only"``, ``"full_fine_tune"`` or ``"from_scratch"``.
        trains: what trains, for people: "fine-tuning the top 2 blocks of the backbone".
        description: ``trains`` with where the phase stands and, for a second phase, its
            learning rate: "phase 2 of 2: fine-tuning ... at learning rate 1e-05".
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
    trains: str
    epochs: int
    learning_rate: float
    initial_epoch: int = 0
    unfreeze: int = 0
    unfreeze_unit: str = "blocks"
    train_batchnorm: bool = False
    head_search: bool = False  # the head is chosen by cross-validation, not fitted by epochs
    shows_learning_rate: bool = False

    @property
    def what(self) -> str:
        """``trains``, with the learning rate when it differs from the run's first."""
        rate = f" at learning rate {self.learning_rate:g}" if self.shows_learning_rate else ""
        return f"{self.trains}{rate}"

    @property
    def description(self) -> str:
        return f"phase {self.index} of {self.total}: {self.what}"

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
        second = config.strategy == "two_phase" and i == 2
        phases.append(
            Phase(
                index=i,
                total=len(plan),
                name=name,
                trains=top if second else what[name],
                shows_learning_rate=second,
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
