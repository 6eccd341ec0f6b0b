"""Why an image of a dataset deserves a look: the flags the Dataset page's gallery filters on.

Read from the items' records and the last label check; no image is opened.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

from tlcore.data import fingerprints
from tlcore.data.catalog import TINY_IMAGE_SIDE, Dataset
from tlcore.data.dataset_report import _PALETTE_MODES, MAX_ASPECT_RATIO, PLACEHOLDER_SIDE
from tlcore.data.label_check import LabelCheck

DUPLICATE = "duplicate"
NEAR_COPY = "near-copy"
ODD_SIZE = "odd size"
PLAIN = "plain colour"
SUSPECTED = "likely mislabelled"
FLAGS = (SUSPECTED, DUPLICATE, NEAR_COPY, ODD_SIZE, PLAIN)


def image_flags(dataset: Dataset, check: LabelCheck | None = None) -> dict[str, list[str]]:
    """``{rel_path: [flag, …]}`` for every image with at least one flag.

    ``duplicate``: the same file (by content) appears more than once in the dataset.
    ``near-copy``: one photo edited, like another image of the dataset
    (`tlcore.data.fingerprints`; images imported before fingerprints were kept have none).
    ``plain colour``: one colour all over (blank, or a placeholder).
    ``odd size``: smaller than `TINY_IMAGE_SIDE` on a side, more than `MAX_ASPECT_RATIO`
    times longer than wide, or a small palette/GIF image (often a placeholder).
    ``likely mislabelled``: on the list of the last label check of this version.
    """
    items = dataset.items()
    copies = Counter(item.sha256 for item in items)
    suspected = set()
    if check is not None and check.dataset_id == dataset.id:
        suspected = {s.path for s in check.suspects}
    near = {path for group in near_copy_groups(dataset) for path in group}
    flags: dict[str, list[str]] = {}
    for item in items:
        found = []
        if item.rel_path in suspected:
            found.append(SUSPECTED)
        if copies[item.sha256] > 1:
            found.append(DUPLICATE)
        if item.rel_path in near:
            found.append(NEAR_COPY)
        if _odd_size(item.width, item.height, item.mode):
            found.append(ODD_SIZE)
        if item.plain:
            found.append(PLAIN)
        if found:
            flags[item.rel_path] = found
    return flags


_NEAR_COPIES: dict[str, tuple[tuple[str, ...], ...]] = {}  # by id: a version never changes
_NEAR_COPIES_KEPT = 16
_near_copies_lock = threading.Lock()  # the web server's sessions are threads of one process


def near_copy_groups(dataset: Dataset) -> tuple[tuple[str, ...], ...]:
    """The groups of near-copies in a dataset version, as ``rel_path`` values."""
    with _near_copies_lock:
        found = _NEAR_COPIES.get(dataset.id)
    if found is None:
        listed = dataset.items()
        entries = [
            (i.sha256, None if i.plain else fingerprints.decode(i.fingerprint)) for i in listed
        ]
        groups = fingerprints.near_copies(entries)
        found = tuple(tuple(listed[p].rel_path for p in g) for g in groups)
        with _near_copies_lock:
            if len(_NEAR_COPIES) >= _NEAR_COPIES_KEPT:
                _NEAR_COPIES.pop(next(iter(_NEAR_COPIES)))
            _NEAR_COPIES[dataset.id] = found
    return found


def _odd_size(width: int, height: int, mode: str) -> bool:
    short, long = min(width, height), max(width, height)
    if short < TINY_IMAGE_SIDE or long > MAX_ASPECT_RATIO * max(short, 1):
        return True
    return long <= PLACEHOLDER_SIDE and mode in _PALETTE_MODES


def flag_counts(flags: Mapping[str, list[str]]) -> dict[str, int]:
    """Images per flag, in `FLAGS` order."""
    counts = Counter(flag for found in flags.values() for flag in found)
    return {flag: counts[flag] for flag in FLAGS}
