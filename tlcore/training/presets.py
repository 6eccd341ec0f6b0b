"""Named recipes: a few settings of `RunConfig` that go together.

``recommended`` is the studio's default (and the quick start's): a frozen backbone whose
linear head is chosen by cross-validation on cached features (`tlcore.training.head_search`).
``seeds`` and ``teachable_machine`` reproduce two well-known simple recipes, so a user
can pick them and the benchmark (``bench/bench_recipes.py``) can compare against them.
A preset sets only its own fields; backbone, weights, image size and seed stay the
user's.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlcore.config import RunConfig


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    settings: dict


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "recommended",
            "Recommended",
            "Frozen backbone; the head's regularisation chosen by 5-fold cross-validation "
            "on cached features (flips added), refitted on train + validation. Seconds "
            "after the features are computed.",
            {
                "strategy": "feature_extraction",
                "head_search": True,
                "pooling": "avg",
                "dense_units": (),
                "head_batchnorm": False,
                "fusion_stages": 1,
                "flip": "none",
                "rotation": 0.0,
                "zoom": 0.0,
                "translation": 0.0,
                "contrast": 0.0,
                "brightness": 0.0,
                "feature_cache": True,
            },
        ),
        Preset(
            "seeds",
            "Seeds' recipe",
            "Flatten the backbone's feature map, one Dense layer of 1024, Adam at 1e-4 "
            "for 15 epochs, batch 32, no augmentation.",
            {
                "strategy": "feature_extraction",
                "head_search": False,
                "pooling": "flatten",
                "dense_units": (1024,),
                "dense_activation": "relu",
                "dropout": 0.0,
                "head_batchnorm": False,
                "optimizer": "adam",
                "learning_rate": 1e-4,
                "lr_schedule": "constant",
                "epochs": 15,
                "batch_size": 32,
                "flip": "none",
            },
        ),
        Preset(
            "teachable_machine",
            "Teachable Machine's recipe",
            "Global average pooling, Dense 100 (relu), softmax; Adam at 1e-3, batch 16, "
            "50 epochs, no augmentation.",
            {
                "strategy": "feature_extraction",
                "head_search": False,
                "pooling": "avg",
                "dense_units": (100,),
                "dense_activation": "relu",
                "dropout": 0.0,
                "head_batchnorm": False,
                "optimizer": "adam",
                "learning_rate": 1e-3,
                "lr_schedule": "constant",
                "epochs": 50,
                "batch_size": 16,
                "flip": "none",
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}. Received: {name!r}")
    return PRESETS[name]


def apply_preset(config: RunConfig, name: str) -> RunConfig:
    """``config`` with preset ``name``'s settings, recorded in ``extra["preset"]``."""
    preset = get_preset(name)
    return config.replace(**preset.settings, extra=config.extra | {"preset": name})


def matching_preset(config: RunConfig) -> str | None:
    """The preset whose settings ``config`` has, if any (for labels in lists)."""
    for preset in PRESETS.values():
        if all(getattr(config, k) == v for k, v in preset.settings.items()):
            return preset.name
    return None
