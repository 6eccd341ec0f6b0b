"""Suspected label errors: images whose given class the rest of the dataset disagrees with.

Every image of a dataset (all splits: a wrong label in the test split misleads the evaluation
as much as one in training misleads the model) is mapped to pooled features of a pretrained
backbone, once; then a standardised logistic regression predicts each image's class with
k-fold cross-validation, so each image's probabilities come from a model that never saw it
(*out of fold*). Confident learning (Northcutt et al., 2021, as implemented by the
`cleanlab` library) finds the images whose given label is unlikely under those
probabilities, given how often each class is confused with each other one; they are ranked
by how little probability their given class received (score = 1 − that probability).

The features are cached per image content (``cache/label_check/<backbone key>.npz``), so
checking a new version of a dataset computes features for its added images only; the list
found is stored beside them (``<dataset id>.json``) for the Dataset page to read.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.data import label_check
from tlcore.data.catalog import Dataset, DatasetError
from tlcore.data.label_check import CACHE_DIR, LabelCheck, Suspect
from tlcore.fileio import atomic_write
from tlcore.store.workspace import Workspace
from tlcore.training import head_search

DEFAULT_BACKBONE = "MobileNetV2"
DEFAULT_ALPHA = 0.35  # cheap enough to check a whole dataset in seconds on two cores
BATCH_SIZE = 32
FEATURES_FORMAT = 1

Progress = Callable[[float, str], None]


def check_config(dataset: Dataset, backbone: str, alpha: float) -> RunConfig:
    """The frozen backbone the features come from, as a run's settings (validated)."""
    weights = "none" if backbone == "SmallCNN" else "imagenet"  # SmallCNN: tests only
    return RunConfig(
        dataset=dataset.id,
        backbone=backbone,
        alpha=alpha,
        weights=weights,
        strategy="feature_extraction",
    )


def find_suspects(
    ws: Workspace,
    dataset: Dataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    alpha: float | None = None,
    progress: Progress | None = None,
) -> LabelCheck:
    """Checks every image's label; stores and returns what was found (most suspicious first).

    ``alpha`` None: `DEFAULT_ALPHA` for the default backbone, else 1.0.

    Raises:
        DatasetError: a class has fewer than two images (nothing to cross-validate).
        tlcore.model.weights.WeightsUnavailableError (or similar): the backbone's weights
            are not on this machine; the message says how to provide them.
    """
    if alpha is None:
        alpha = DEFAULT_ALPHA if backbone == DEFAULT_BACKBONE else 1.0
    config = check_config(dataset, backbone, alpha)
    items = dataset.items()
    labels = np.asarray([item.label for item in items], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(dataset.classes))
    if counts.min() < 2:
        small = dataset.classes[int(np.argmin(counts))]
        raise DatasetError(
            f"Class {small!r} has fewer than 2 images: add some before checking labels."
        )
    features = _features(ws, dataset, config, items, _scaled(progress, 0.0, 0.9))
    if progress:
        progress(0.9, "Cross-validating")
    probs, cv_accuracy, folds = out_of_fold_probabilities(features, labels, len(dataset.classes))
    ranked = rank_label_issues(labels, probs)
    suspects = [
        Suspect(
            path=items[i].rel_path,
            given=dataset.classes[labels[i]],
            suggested=dataset.classes[int(np.argmax(probs[i]))],
            score=round(float(1.0 - probs[i, labels[i]]), 4),
        )
        for i in ranked
    ]
    check = LabelCheck(
        dataset.id, backbone, float(alpha), len(items), folds, cv_accuracy, suspects, time.time()
    )
    label_check.store(ws, check)
    if progress:
        progress(1.0, f"{len(suspects)} likely mislabelled of {len(items)}")
    return check


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 42
) -> tuple[np.ndarray, float, int]:
    """Each row's class probabilities from a model fitted without it.

    The L2 strength is the one whose out-of-fold probabilities have the lowest log loss
    (confident learning needs probabilities, not just a right answer). Returns
    ``(probabilities, their accuracy, folds)``.
    """
    x = np.asarray(features, dtype=np.float64)
    folds = head_search._folds(labels, seed)
    best = None
    for c in head_search.C_GRID:
        probs = np.zeros((len(labels), num_classes))
        for train_idx, held_idx in folds:
            fitted = head_search._fit(x[train_idx], labels[train_idx], c, num_classes, False)
            probs[held_idx] = head_search._probabilities(fitted, x[held_idx], num_classes)
        accuracy, loss = head_search.score(probs, labels)
        if best is None or loss < best[2]:
            best = (probs, accuracy, loss)
    return best[0], best[1], len(folds)


RANKINGS = ("prune_by_noise_rate", "both", "predicted_neq_given")
DEFAULT_RANKING = "prune_by_noise_rate"


def rank_label_issues(
    labels: np.ndarray, probs: np.ndarray, *, method: str = DEFAULT_RANKING
) -> list[int]:
    """Indices of likely label errors, most suspicious first.

    ``method`` is cleanlab's ``filter_by``: ``prune_by_noise_rate`` (confident learning:
    as many images per pair of classes as the estimated noise between them, the least
    confident first), ``both``, or ``predicted_neq_given`` (every image whose out-of-fold
    prediction differs from its label). See ``bench/bench_label_errors.py`` for how they
    compare on real photos with planted errors.
    """
    from cleanlab.filter import find_label_issues

    if method not in RANKINGS:
        raise ValueError(f"method must be one of {RANKINGS}. Received: method={method!r}")
    ranked = find_label_issues(
        labels=labels,
        pred_probs=probs,
        filter_by=method,
        return_indices_ranked_by="self_confidence",
    )
    return [int(i) for i in ranked]


# ----------------------------------------------------------------------------------------


def _features(
    ws: Workspace, dataset: Dataset, config: RunConfig, items, progress: Progress | None
) -> np.ndarray:
    """Pooled features of ``items``, from the per-image cache where present."""
    path = _cache_path(ws, config)
    cached: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            with np.load(path) as stored:
                cached = dict(zip(stored["sha256"].tolist(), stored["features"], strict=True))
        except (OSError, ValueError, KeyError):
            cached = {}  # a damaged cache is computed again
    missing = [item for item in items if item.sha256 not in cached]
    if missing:
        cached.update(_compute(config, dataset, missing, progress))
        shas = sorted(cached)
        table = np.stack([cached[s] for s in shas]).astype(np.float32)

        def write(fh) -> None:
            np.savez(fh, sha256=np.asarray(shas), features=table)

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    return np.stack([cached[item.sha256] for item in items])


def _compute(config, dataset: Dataset, items, progress: Progress | None) -> dict:
    from tlcore.data import pipeline
    from tlcore.model import models
    from tlcore.model.registry import get_backbone, resolve_image_size

    size = resolve_image_size(get_backbone(config.backbone), config.image_size)
    extractor = models.feature_extractor(
        models.build_model(config.replace(image_size=size), len(dataset.classes))
    )
    batches = pipeline.make_image_dataset(
        items, image_size=size, batch_size=BATCH_SIZE, shuffle=False, seed=0
    )
    total = math.ceil(len(items) / BATCH_SIZE)
    chunks = []
    for done, (images, _labels) in enumerate(batches, start=1):
        chunks.append(np.asarray(extractor(images, training=False), dtype=np.float32))
        if progress:
            progress(done / total, f"Features of {min(done * BATCH_SIZE, len(items))} images")
    features = np.concatenate(chunks)
    return {item.sha256: features[i] for i, item in enumerate(items)}


def _cache_path(ws: Workspace, config: RunConfig) -> Path:
    parts = {
        "format": FEATURES_FORMAT,
        "backbone": config.backbone,
        "alpha": float(config.alpha),
        "weights": config.weights,
        "image_size": config.image_size,
        "pooling": config.pooling,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return ws.cache_dir / CACHE_DIR / f"{config.backbone.lower()}-{digest}.npz"


def _scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)
