"""The backbone registry: per-architecture facts as data, in one table, and their lookup.

Like fastai's ``model_meta``, everything the rest of the package needs to know about a
backbone lives in `BACKBONES`: how to build it, how it wants its pixels, which sizes it
accepts, how its layers group into blocks (for "unfreeze the last N blocks"), which
layers end its stages (for feature fusion), which ImageNet weights file Keras downloads
for it, and how fast it runs on a small CPU machine (for the page's estimates).

The rows are in `tlcore.model.backbone_table`, the record type and its lazy callables in
`tlcore.model.backbone_spec`; both are importable from here too. Pure data: reading it
imports no Keras, so the web server can show every fact (`tlcore.model.backbones` builds
the networks).
"""

from __future__ import annotations

from tlcore.model.backbone_spec import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    MOBILENET_V1_ALPHA_TEXT,
    PREPROCESS_MODES,
    SPEED_REFERENCE_SIZE,
    BackboneSpec,
    KerasApp,
    KerasPreprocess,
    OwnNetwork,
)
from tlcore.model.backbone_table import SPECS

__all__ = [
    "BACKBONES",
    "CAFFE_MEAN_BGR",
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "MOBILENET_V1_ALPHA_TEXT",
    "PREPROCESS_MODES",
    "SPECS",
    "SPEED_REFERENCE_SIZE",
    "BackboneSpec",
    "KerasApp",
    "KerasPreprocess",
    "OwnNetwork",
    "get_backbone",
    "resolve_image_size",
    "validate_backbone_args",
]

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in SPECS}
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
