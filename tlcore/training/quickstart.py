"""Quick start: one action that imports the demo dataset and trains a sensible model on it.

For demos and first contact. The model is the best pretrained network this machine can
get: MobileNetV2's ImageNet weights (downloaded and cached by Keras when there is
internet), else any cached MobileNet. With no pretrained weights at all it says so and
trains a small network from scratch: the choice is shown to the user, never silent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tlcore.config import RunConfig
from tlcore.store import jobs
from tlcore.store.workspace import Workspace
from tlcore.training import presets

# (backbone, alpha, image size) in order of preference, all with ImageNet weights.
PRETRAINED_CHOICES = (
    ("MobileNetV2", 1.0, 224),
    ("MobileNetV2", 0.35, 224),
    ("MobileNet", 1.0, 224),
    ("MobileNet", 0.5, 224),
    ("MobileNet", 0.25, 224),
)
QUICK_EPOCHS = 15


@dataclass(frozen=True)
class QuickStart:
    """What the quick start did: the run it started and a sentence about the model."""

    run_id: str
    dataset_name: str
    note: str


def choose_quick_config(dataset_name: str, *, try_download: bool = True) -> tuple[RunConfig, str]:
    """The run configuration for the quick start, and a sentence explaining the choice."""
    from tlcore.model.weights import WeightsUnavailableError, fetch_imagenet_weights
    from tlcore.model.weights import imagenet_weights_status as status

    common = dict(
        dataset=dataset_name,
        epochs=QUICK_EPOCHS,
        flip="none",
        strategy="feature_extraction",
        name="Quick start",
    )
    # The recommended recipe (the default of every new run): its fast path is already
    # the quickest pretrained option, so the quick start uses it as is.
    common |= presets.get_preset("recommended").settings
    for backbone, alpha, size in PRETRAINED_CHOICES:
        if status(backbone, alpha, size).available:
            return _pretrained(common, backbone, alpha, size), _note(backbone, alpha)
    if try_download:
        backbone, alpha, size = PRETRAINED_CHOICES[0]
        try:
            fetch_imagenet_weights(backbone, alpha, size)
            return _pretrained(common, backbone, alpha, size), _note(backbone, alpha)
        except WeightsUnavailableError:
            pass
    # A network that starts from nothing overfits a few hundred images fast: augment it.
    scratch = dict(
        name="Quick start (from scratch)",
        backbone="SmallCNN",
        weights="none",
        strategy="from_scratch",
        image_size=96,
        epochs=25,
        dropout=0.3,
        flip="horizontal_and_vertical",
        rotation=0.15,
        zoom=0.15,
        translation=0.1,
    )
    config = RunConfig(**(common | scratch))
    return config, (
        "No pretrained weights are on this machine and none could be downloaded, so the quick "
        "start trains a small network from scratch. Put ImageNet weights in the Keras cache "
        "(see the Model page) to see what transfer learning adds."
    )


def _pretrained(common: dict, backbone: str, alpha: float, size: int) -> RunConfig:
    return RunConfig(**common, backbone=backbone, alpha=alpha, image_size=size, weights="imagenet")


def _note(backbone: str, alpha: float) -> str:
    width = f" (width {alpha:g})" if alpha != 1.0 else ""
    return (
        f"Training a classifier on {backbone}{width} with the recommended recipe: its "
        "ImageNet weights frozen, the backbone's features computed once, and the new head "
        "chosen by cross-validation on them in seconds."
    )


def quick_start(
    ws: Workspace,
    progress: Callable[[float, str], None] | None = None,
    *,
    owner: str | None = None,
) -> QuickStart:
    """Imports the demo dataset if needed and starts a run on it. Returns at once.

    ``owner`` (a user name; default None, nobody) owns the run and, if new, the dataset.
    """
    from tlcore.data import datasets

    dataset = datasets.import_demo(ws, progress=progress, owner=owner)
    config, note = choose_quick_config(dataset.name)
    run_id = jobs.submit(ws, config, owner=owner)
    return QuickStart(run_id=run_id, dataset_name=dataset.name, note=note)
