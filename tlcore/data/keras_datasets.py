"""Importing a Keras built-in dataset (CIFAR-10, MNIST, Fashion-MNIST).

`KERAS_DATASETS` is the table of what the studio offers: each dataset's title, class
names, the files Keras caches under ``~/.keras/datasets`` and where to download them by
hand. `import_keras_dataset` loads the arrays through ``keras.datasets`` (downloading once),
writes each image as a PNG into class folders of a staging folder, and imports those
through the one import path of `tlcore.data.sources`. `tlcore.data.datasets` re-exports
both names.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlcore.data.catalog import (
    PROGRESS_STEPS,
    Dataset,
    DatasetError,
    ImportOptions,
    Progress,
    _find_by_source,
    _scaled,
    _Source,
)
from tlcore.data.scan import _scan_folder
from tlcore.data.sources import _import_scanned, _staging_dir
from tlcore.store.workspace import Workspace


@dataclass(frozen=True)
class _KerasDataset:
    title: str
    classes: tuple[str, ...]
    cache_files: tuple[str, ...]  # where Keras looks, relative to ~/.keras/datasets
    url: str


KERAS_DATASETS: dict[str, _KerasDataset] = {
    "cifar10": _KerasDataset(
        "CIFAR-10",
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        ("cifar-10-batches-py-target_archive",),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "mnist": _KerasDataset(
        "MNIST",
        tuple(str(d) for d in range(10)),
        ("mnist.npz",),
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    ),
    "fashion_mnist": _KerasDataset(
        "Fashion-MNIST",
        (
            "T-shirt_top",  # Keras calls it "T-shirt/top"; a slash cannot name a folder
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        tuple(
            f"fashion-mnist/{f}"
            for f in (
                "train-labels-idx1-ubyte.gz",
                "train-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
            )
        ),
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
}


def import_keras_dataset(
    ws: Workspace,
    which: str,
    *,
    max_per_class: int | None = None,
    options: ImportOptions = ImportOptions(),
    progress: Progress | None = None,
    owner: str | None = None,
) -> Dataset:
    """Imports CIFAR-10, MNIST or Fashion-MNIST through ``keras.datasets`` (downloads once).

    The Keras train and test sets become the train and test splits; val is carved from
    train. Class names are sorted, so label numbers may differ from Keras' own.

    Args:
        ws: the workspace.
        which: 'cifar10', 'mnist' or 'fashion_mnist'.
        max_per_class: keep at most this many images per class (train and test together,
            in their original proportion); default all.
        options: split and check settings (``mode`` is ignored).
        progress: called as ``progress(fraction, message)``.
        owner: who imports it (a user name), kept in the manifest; default None (nobody).

    Raises:
        DatasetError: ``which`` is unknown, ``max_per_class`` is not positive, or the data
            cannot be downloaded (with where to put the file by hand).
    """
    spec = KERAS_DATASETS.get(which)
    if spec is None:
        raise DatasetError(
            f"Unknown Keras dataset {which!r}. Choose one of: {', '.join(KERAS_DATASETS)}."
        )
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise DatasetError(
            f"max_per_class must be a positive integer. Received: max_per_class={max_per_class!r}"
        )
    source = _Source(
        kind="keras",
        path=None,
        mode="copy",
        owns_files=True,
        label=spec.title,
        extra={"which": which, "max_per_class": max_per_class},
    )
    existing = _find_by_source(ws, source)
    if existing is not None:
        return existing
    report = _scaled(progress, 0.0, 0.4)
    if report is not None:
        report(0.0, f"Loading {spec.title}")
    (x_train, y_train), (x_test, y_test) = _load_keras_arrays(which, spec)
    title = spec.title if max_per_class is None else f"{spec.title} ({max_per_class} per class)"
    with _staging_dir(ws) as staging:
        written = staging / "source"
        train_cap, test_cap = _keras_caps(max_per_class, len(y_train), len(y_test))
        _write_keras_split(
            written / "train", x_train, y_train, spec, train_cap, _scaled(report, 0.0, 0.8)
        )
        _write_keras_split(
            written / "test", x_test, y_test, spec, test_cap, _scaled(report, 0.8, 1.0)
        )
        scan = _scan_folder(written, spec.title)
        return _import_scanned(
            ws, staging, scan, title, source, options, _scaled(progress, 0.4, 1.0), owner
        )


# ----------------------------------------------------------------------------------------
# Internals


def _keras_datasets_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _load_keras_arrays(which: str, spec: _KerasDataset):
    module = importlib.import_module(f"keras.datasets.{which}")
    try:
        return module.load_data()
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        folder = _keras_datasets_dir()
        files = ", ".join(str(folder / f) for f in spec.cache_files)
        raise DatasetError(
            f"Could not download {spec.title}: this machine has no internet access or the "
            f"download failed ({exc}). Download it elsewhere from {spec.url} and put the "
            f"file(s) at {files}, or import a zip of class folders instead."
        ) from exc


def _keras_caps(
    max_per_class: int | None, n_train: int, n_test: int
) -> tuple[int | None, int | None]:
    """Per-class caps for train and test that keep Keras' train/test proportion."""
    if max_per_class is None:
        return None, None
    test_cap = max(1, round(max_per_class * n_test / max(n_train + n_test, 1)))
    return max(1, max_per_class - test_cap), test_cap


def _write_keras_split(
    folder: Path,
    x: np.ndarray,
    y: np.ndarray,
    spec: _KerasDataset,
    cap: int | None,
    progress: Progress | None,
) -> None:
    """Writes ``folder/<class>/<index>.png`` for the first ``cap`` images of each class."""
    labels = np.asarray(y).reshape(-1)
    written: Counter[int] = Counter()
    every = max(1, len(labels) // PROGRESS_STEPS)
    for index, (pixels, label) in enumerate(zip(x, labels, strict=True)):
        label = int(label)
        if cap is None or written[label] < cap:
            class_dir = folder / spec.classes[label]
            class_dir.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
            image.save(class_dir / f"{index:05d}.png")
            written[label] += 1
        if progress is not None and (index + 1) % every == 0:
            progress((index + 1) / len(labels), f"Wrote {folder.name} image {index + 1}")
