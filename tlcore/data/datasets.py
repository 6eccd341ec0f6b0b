"""Datasets: import labelled images, check them, split them once, store them, read them back.

A dataset is a folder ``<workspace>/datasets/<id>/`` holding:

* ``dataset.json``: the manifest (id, name, classes, counts per split, source, content hash);
* ``items.jsonl``: one line per kept image (path, class, split, sha256, size, mode);
* ``report.json``: the `DatasetReport` (counts, sizes, skipped files and why, duplicates,
  leakage across splits, class imbalance, warnings);
* ``images/<split>/<class>/<file>`` in copy mode; in index mode items point at the
  original files instead.

Imports work the same whatever the source (a folder, a zip, files uploaded per class, the
built-in demo set, a Keras dataset): find the candidate files and their classes, hash and
probe them in a thread pool (content decides what is an image, never the extension), drop
what cannot be used and say why, check the classes, split stratified and seeded (unless
the source brings its own splits), then write everything into a hidden staging folder that
is renamed into place in one step. A dataset is never modified after that, and its split
is stored, so every run trains and evaluates on the same images.

Identity is by content: the hash over every kept image's (class, split, sha256). Importing
the same content again returns the existing dataset with ``already_existed=True``.

This module is the entry point: what callers use is re-exported here from the modules
that hold it: `tlcore.data.catalog` (the types, listing, opening, deleting),
`tlcore.data.sources` and `tlcore.data.keras_datasets` (the imports), `tlcore.data.scan`
(finding the files), `tlcore.data.checks` (probing, checking, splitting) and
`tlcore.data.dataset_report`.
"""

from __future__ import annotations

from tlcore.data.catalog import (
    IMAGES_DIR,
    ITEMS_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    SPLITS,
    Dataset,
    DatasetError,
    DatasetItem,
    DatasetReport,
    DatasetSummary,
    ImportOptions,
    Progress,
    delete_dataset,
    list_datasets,
    load_dataset,
    manifests,
)
from tlcore.data.keras_datasets import KERAS_DATASETS, import_keras_dataset
from tlcore.data.sources import import_class_files, import_demo, import_folder, import_zip

__all__ = [
    "IMAGES_DIR",
    "ITEMS_FILE",
    "KERAS_DATASETS",
    "MANIFEST_FILE",
    "REPORT_FILE",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "DatasetItem",
    "DatasetReport",
    "DatasetSummary",
    "ImportOptions",
    "Progress",
    "delete_dataset",
    "import_class_files",
    "import_demo",
    "import_folder",
    "import_keras_dataset",
    "import_zip",
    "list_datasets",
    "load_dataset",
    "manifests",
]
