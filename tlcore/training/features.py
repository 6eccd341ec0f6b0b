"""The cached-feature fast path: run a frozen backbone once, train the head many times.

When the backbone is frozen and no augmentation runs before it, every epoch would push
the same images through the same backbone to the same features. Instead the features
of each split are computed once and kept on disk under
``<workspace>/cache/features/<key>/`` — keyed by dataset content, split, backbone, its
weights, input size, pooling and fusion — so later runs on the same data reuse them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from tlcore.config import RunConfig
from tlcore.fileio import atomic_write, atomic_write_json, file_sha256
from tlcore.store.workspace import Workspace

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
CACHE_FORMAT = 1


def weights_identity(config: RunConfig, run_model_path: Path | None = None) -> str:
    """What the backbone's starting weights are, as a stable string.

    Random weights depend on the seed; a weights file or an earlier run's model on its
    content, so a replaced file never reuses stale features.
    """
    kind = config.weights_kind
    if kind == "none":
        return f"random-seed{config.seed}"
    if kind == "file":
        return f"file-{file_sha256(Path(config.weights_ref))}"
    if kind == "run":
        return f"run-{file_sha256(Path(run_model_path))}" if run_model_path else "run-?"
    return "imagenet"


def cache_key(
    dataset_hash: str, split: str, config: RunConfig, image_size: int, weights_id: str
) -> str:
    """The cache folder name for one split's features under one backbone setting."""
    parts = {
        "format": CACHE_FORMAT,
        "dataset": dataset_hash,
        "split": split,
        "backbone": config.backbone,
        "alpha": float(config.alpha),
        "weights": weights_id,
        "image_size": image_size,
        "pooling": config.pooling,
        "fusion_stages": config.fusion_stages,
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return f"{config.backbone.lower()}-{split}-{hashlib.sha256(blob).hexdigest()[:20]}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def load_or_compute(
    ws: Workspace,
    key: str,
    labels: np.ndarray,
    extract: Callable[[object], np.ndarray],
    batches: Iterable,
    total_batches: int,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, bool]:
    """Features of one split, from the cache or computed and stored.

    Args:
        ws: the workspace (its ``cache/features`` folder holds the cache).
        key: from `cache_key`.
        labels: the split's labels in order; stored beside the features and compared on
            reuse, so a cache entry never pairs features with the wrong labels.
        extract: maps one batch of images to a feature array (the frozen backbone).
        batches: image batches (or ``(images, labels)`` pairs) in ``labels`` order.
        total_batches: how many batches ``batches`` yields, for ``progress``.
        progress: called with (batches done, total) while computing.

    Returns:
        ``(features, reused)``; features are memory-mapped when reused.
    """
    folder = ws.cache_dir / "features" / key
    meta_path = folder / META_FILE
    labels = np.asarray(labels, dtype=np.int32)
    if meta_path.exists():
        try:
            features = np.load(folder / FEATURES_FILE, mmap_mode="r")
            if np.array_equal(np.load(folder / LABELS_FILE), labels):
                return features, True
        except (OSError, ValueError):
            pass  # a damaged cache entry is simply recomputed
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    for done, batch in enumerate(batches, start=1):
        images = batch[0] if isinstance(batch, tuple) else batch
        chunks.append(np.asarray(extract(images), dtype=np.float32))
        if progress:
            progress(done, total_batches)
    features = np.concatenate(chunks)
    _save_npy(folder / FEATURES_FILE, features)
    _save_npy(folder / LABELS_FILE, labels)
    atomic_write_json(meta_path, {"count": len(labels), "shape": list(features.shape)})
    return features, False
