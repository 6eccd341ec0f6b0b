"""The run configuration: everything that defines a training run, validated in one place.

`RunConfig` is frozen and flat so that every field can be set the same way from the
page, from JSON (``config.json`` in the run folder) and from the CLI
(``--set learning_rate=3e-4``). Validation happens in ``__post_init__``: an invalid
config cannot exist, and every error names the field and quotes the bad value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tlcore.fileio import atomic_write_json, read_json

STRATEGIES = (
    "feature_extraction",  # backbone frozen, only the head trains
    "fine_tune_top",  # last N blocks (or layers) of the backbone unfrozen
    "bias_only",  # backbone kernels frozen, biases and batch-norm offsets train
    "full_fine_tune",  # everything trains, starting from the pretrained weights
    "two_phase",  # head first with the backbone frozen, then top N blocks at a lower LR
    "from_scratch",  # same architecture, random weights, all trainable: the baseline
)
POOLINGS = ("avg", "max", "flatten")
ACTIVATIONS = ("relu", "gelu", "swish", "tanh", "elu")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "plateau")
UNFREEZE_UNITS = ("blocks", "layers")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CLASS_WEIGHTS = ("none", "balanced")
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")
MIXED_PRECISION = ("auto", "off", "on")
WEIGHTS_KINDS = ("imagenet", "none", "file", "run")

MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(map(str, allowed))}. Received: {name}={value!r}"
        )


def _int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"{name} must be an integer from {low} to {high}. Received: {name}={value!r}"
        )


def _float_range(name: str, value: Any, low: float, high: float, *, open_low=False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if open_low else value >= low)
        and value <= high
    )
    if not ok:
        bound = "(" if open_low else "["
        raise ValueError(
            f"{name} must be a number in {bound}{low}, {high}]. Received: {name}={value!r}"
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Defaults give a good model without tuning.

    Weights are given as ``weights``: ``"imagenet"``, ``"none"`` (random init),
    ``"file:/path/to/weights.h5"`` or ``"run:<run_id>"`` (the backbone of a model
    trained in an earlier run).
    """

    dataset: str
    name: str = ""
    # Model
    backbone: str = "MobileNetV2"
    alpha: float = 1.0  # width multiplier, MobileNet family only
    weights: str = "imagenet"
    image_size: int = 0  # 0 = the backbone's default size
    pooling: str = "avg"
    dense_units: tuple[int, ...] = ()
    dense_activation: str = "relu"
    dropout: float = 0.2
    head_batchnorm: bool = False
    fusion_stages: int = 1  # >1: pooled features of the last N backbone stages concatenated
    # Recommended recipe: with a frozen backbone and a linear head, choose the head's L2
    # strength by k-fold cross-validation on cached features (flips added in feature
    # space) and refit it on train + val (tlcore.training.head_search) instead of epochs of SGD.
    head_search: bool = True
    # Freezing
    strategy: str = "feature_extraction"
    unfreeze: int = 2  # how many blocks/layers "fine_tune_top" and "two_phase" unfreeze
    unfreeze_unit: str = "blocks"
    train_batchnorm: bool = False  # False keeps BN layers in inference mode when unfrozen
    # Optimisation
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5  # second phase of "two_phase"
    weight_decay: float = 1e-4  # adamw only
    momentum: float = 0.9  # sgd and rmsprop
    lr_schedule: str = "constant"
    epochs: int = 20  # cheap with the cached-feature fast path (the default strategy)
    fine_tune_epochs: int = 5  # second phase of "two_phase"
    batch_size: int = 32
    early_stopping_patience: int = 0  # 0 = off; restores the best weights when on
    class_weights: str = "none"
    label_smoothing: float = 0.0
    # Augmentation (inside the model; 0 / "none" = off). Off by default: with a frozen
    # backbone it would rule out the cached-feature fast path, and on real photos the
    # default recipe beat the seeds' (augmentation-free) recipe without it (bench_training).
    flip: str = "none"
    rotation: float = 0.0  # fraction of a full turn
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    # Execution
    seed: int = 42
    feature_cache: bool = True  # frozen backbone + no augmentation before it: cache features
    mixed_precision: str = "auto"
    distribution: str = "auto"
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes, not validated

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(
                f"dataset must name an imported dataset. Received: dataset={self.dataset!r}"
            )
        if not isinstance(self.name, str) or len(self.name) > 120:
            raise ValueError(
                f"name must be text of at most 120 characters. Received: name={self.name!r}"
            )
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(
                f"backbone must name a registry backbone. Received: backbone={self.backbone!r}"
            )
        _float_range("alpha", self.alpha, 0.0, 1.4, open_low=True)
        self._validate_weights()
        if self.image_size != 0:
            _int_range("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _choice("pooling", self.pooling, POOLINGS)
        units = self.dense_units
        if not isinstance(units, tuple) or not all(
            isinstance(u, int) and not isinstance(u, bool) and 1 <= u <= 8192 for u in units
        ):
            raise ValueError(
                "dense_units must be a list of integers from 1 to 8192. "
                f"Received: dense_units={units!r}"
            )
        _choice("dense_activation", self.dense_activation, ACTIVATIONS)
        _float_range("dropout", self.dropout, 0.0, 0.95)
        _bool("head_batchnorm", self.head_batchnorm)
        _bool("head_search", self.head_search)
        _int_range("fusion_stages", self.fusion_stages, 1, 4)
        _choice("strategy", self.strategy, STRATEGIES)
        _int_range("unfreeze", self.unfreeze, 0, 10_000)
        _choice("unfreeze_unit", self.unfreeze_unit, UNFREEZE_UNITS)
        _bool("train_batchnorm", self.train_batchnorm)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _float_range("learning_rate", self.learning_rate, 0.0, 10.0, open_low=True)
        _float_range(
            "fine_tune_learning_rate", self.fine_tune_learning_rate, 0.0, 10.0, open_low=True
        )
        _float_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _float_range("momentum", self.momentum, 0.0, 0.999)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _int_range("epochs", self.epochs, 1, 10_000)
        _int_range("fine_tune_epochs", self.fine_tune_epochs, 0, 10_000)
        _int_range("batch_size", self.batch_size, 1, 4096)
        _int_range("early_stopping_patience", self.early_stopping_patience, 0, 1000)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _float_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _choice("flip", self.flip, FLIP_MODES)
        for name in ("rotation", "translation", "contrast", "brightness"):
            _float_range(name, getattr(self, name), 0.0, 1.0)
        _float_range("zoom", self.zoom, 0.0, 0.9)  # zooming in by 100% leaves no image
        _int_range("seed", self.seed, 0, 2**31 - 1)
        _bool("feature_cache", self.feature_cache)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("distribution", self.distribution, DISTRIBUTIONS)
        if self.strategy == "from_scratch" and self.weights_kind != "none":
            raise ValueError(
                "strategy 'from_scratch' trains from random weights, so weights must be 'none'. "
                f"Received: weights={self.weights!r}"
            )
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a mapping. Received: extra={self.extra!r}")

    def _validate_weights(self) -> None:
        w = self.weights
        if not isinstance(w, str):
            raise ValueError(f"weights must be text. Received: weights={w!r}")
        kind = w.split(":", 1)[0]
        _choice("weights", kind if ":" in w else w, WEIGHTS_KINDS)
        if kind in ("file", "run") and (":" not in w or not w.split(":", 1)[1].strip()):
            raise ValueError(
                f"weights '{kind}:' needs a {'path' if kind == 'file' else 'run id'} after it. "
                f"Received: weights={w!r}"
            )
        if kind in ("imagenet", "none") and ":" in w:
            raise ValueError(f"weights {kind!r} takes nothing after it. Received: weights={w!r}")

    # -- derived facts -------------------------------------------------------------
    @property
    def weights_kind(self) -> str:
        """One of ``imagenet``, ``none``, ``file``, ``run``."""
        return self.weights.split(":", 1)[0]

    @property
    def weights_ref(self) -> str:
        """The path (``file:``) or run id (``run:``) after the colon; empty otherwise."""
        return self.weights.split(":", 1)[1] if ":" in self.weights else ""

    @property
    def has_augmentation(self) -> bool:
        return self.flip != "none" or any(
            getattr(self, n) > 0
            for n in ("rotation", "zoom", "translation", "contrast", "brightness")
        )

    @property
    def searches_head(self) -> bool:
        """Whether the head is chosen by cross-validation (see ``head_search``).

        Needs what makes it exact and cheap: the feature-extraction strategy with cached
        features (no augmentation before the backbone) and a linear head.
        """
        return (
            self.head_search
            and self.strategy == "feature_extraction"
            and self.feature_cache
            and not self.has_augmentation
            and not self.dense_units
            and not self.head_batchnorm
        )

    @property
    def total_epochs(self) -> int:
        """Epochs over all phases (two-phase adds its fine-tuning epochs).

        A head chosen by cross-validation is one step (logged as one epoch); ``epochs``
        then only sets the budget of runs made from this one (a sweep, a twin).
        """
        if self.searches_head:
            return 1
        return self.epochs + (self.fine_tune_epochs if self.strategy == "two_phase" else 0)

    @property
    def epoch_budget(self) -> int:
        """The epochs a run of another strategy made from this one gets (sweeps, twins)."""
        return self.epochs + (self.fine_tune_epochs if self.strategy == "two_phase" else 0)

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["dense_units"] = list(self.dense_units)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Builds a config from a mapping, refusing unknown keys by name."""
        if not isinstance(data, dict):
            raise ValueError(
                f"a run configuration must be a JSON object. Received: {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown configuration field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}"
            )
        data = dict(data)
        if "dense_units" in data and isinstance(data["dense_units"], list):
            data["dense_units"] = tuple(data["dense_units"])
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"invalid run configuration: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the run configuration is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunConfig:
        """A saved run's config; runs saved before ``head_search`` existed keep it off."""
        data = read_json(path)
        if isinstance(data, dict):
            data.setdefault("head_search", False)
        return cls.from_dict(data)


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false. Received: {name}={value!r}")


_FIELD_TYPES = typing.get_type_hints(RunConfig)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_override(text: str) -> tuple[str, Any]:
    """Parses one ``key=value`` CLI override into the field's type.

    Lists (``dense_units``) are comma-separated: ``dense_units=256,128``; an empty
    value gives an empty list.
    """
    if "=" not in text:
        raise ValueError(f"an override must look like key=value. Received: {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if key not in _FIELD_TYPES or key == "extra":
        raise ValueError(
            f"unknown configuration field {key!r}. Known fields: "
            f"{', '.join(sorted(k for k in _FIELD_TYPES if k != 'extra'))}"
        )
    kind = _FIELD_TYPES[key]
    try:
        if kind is bool:
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            return key, low in _TRUE
        if kind is int:
            return key, int(raw)
        if kind is float:
            return key, float(raw)
        if typing.get_origin(kind) is tuple:
            return key, tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise ValueError(
            f"{key} expects {getattr(kind, '__name__', str(kind))}. Received: {key}={raw!r}"
        ) from None
    return key, raw


def apply_overrides(base: dict, overrides: list[str]) -> RunConfig:
    """Applies ``key=value`` overrides to a config mapping and validates the result."""
    data = dict(base)
    for item in overrides:
        key, value = parse_override(item)
        data[key] = value
    return RunConfig.from_dict(data)
