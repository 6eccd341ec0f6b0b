"""Probing, checking and splitting an import: hashes, what is an image, class checks,
and the stratified, seeded split.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tlcore.data import images
from tlcore.data.catalog import (
    HASH_CHUNK_BYTES,
    MAX_NAME_CHARS,
    MIN_CLASSES,
    PROBE_CHUNK,
    PROBE_WORKERS,
    PROGRESS_STEPS,
    SPLITS,
    DatasetError,
    ImportOptions,
    Progress,
)
from tlcore.data.dataset_report import _skipped_summary
from tlcore.data.scan import _Candidate, _Kept, _Probed, _Scan
from tlcore.store import server_paths

# ----------------------------------------------------------------------------------------
# Internals: probing, checking and splitting


def _check_name(name: str) -> str:
    name = unicodedata.normalize("NFC", str(name)).strip()
    if not name:
        raise DatasetError("Give the dataset a name.")
    if len(name) > MAX_NAME_CHARS:
        raise DatasetError(
            f"The dataset name is {len(name)} characters long; keep it under {MAX_NAME_CHARS}."
        )
    return name


def _probe_all(
    candidates: list[_Candidate], max_pixels: int, progress: Progress | None
) -> list[_Probed]:
    """Hashes and probes every candidate in a thread pool, keeping the candidates' order.

    Work is handed to the pool a chunk at a time, so a folder of 100,000 files does not
    create 100,000 pending futures at once.
    """
    results: list[_Probed] = []
    every = max(1, len(candidates) // PROGRESS_STEPS)
    probe = functools.partial(_probe_one, max_pixels=max_pixels)
    with ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="probe") as pool:
        for start in range(0, len(candidates), PROBE_CHUNK):
            for result in pool.map(probe, candidates[start : start + PROBE_CHUNK]):
                results.append(result)
                if progress is not None and len(results) % every == 0:
                    progress(len(results) / len(candidates), f"Checked {result.candidate.rel_path}")
    return results


def _probe_one(candidate: _Candidate, *, max_pixels: int) -> _Probed:
    source: Any = candidate.data if candidate.data is not None else candidate.path
    try:
        digest = _sha256(candidate)
        info = images.probe_image(source, max_pixels=max_pixels, name=candidate.rel_path)
    except images.ImageError as exc:
        return _Probed(candidate, error=exc)
    except server_paths.NotRegularFileError as exc:
        error = images.ImageError(
            "not_a_regular_file",
            f"{candidate.rel_path} is {exc.kind}, not a regular file; it was not read.",
            source=candidate.rel_path,
        )
        return _Probed(candidate, error=error)
    except OSError as exc:
        error = images.ImageError(
            "unreadable",
            f"{candidate.rel_path} could not be read ({exc.strerror or exc}).",
            source=candidate.rel_path,
        )
        return _Probed(candidate, error=error)
    return _Probed(candidate, sha256=digest, info=info)


def _sha256(candidate: _Candidate) -> str:
    if candidate.data is not None:
        return hashlib.sha256(candidate.data).hexdigest()
    digest = hashlib.sha256()
    with server_paths.open_regular_file(candidate.path) as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _skip_record(probed: _Probed) -> dict[str, Any]:
    error = probed.error
    return {
        "path": probed.candidate.rel_path,
        "class": probed.candidate.class_name,
        "reason": error.reason,
        "message": str(error),
    }


def _check_classes(
    scan: _Scan,
    usable: list[_Probed],
    skipped: list[dict[str, Any]],
    options: ImportOptions,
    label: str,
) -> None:
    """Refuses images that cannot train a classifier, naming the class that falls short."""
    counts = Counter(p.candidate.class_name for p in usable)
    if not usable:
        raise DatasetError(f"No usable images found in {label}{_skipped_summary(skipped)}.")
    _refuse_empty_classes(scan.class_names, counts, skipped)
    if len(counts) < MIN_CLASSES:
        raise DatasetError(
            f"Found 1 class ({next(iter(counts))!r}); a classifier needs at least "
            f"{MIN_CLASSES}. Put each class's images in its own folder."
        )
    _refuse_small_classes(counts, options.min_images_per_class)
    if scan.given_splits:
        _refuse_classes_without_training_images(usable, counts)


def _refuse_empty_classes(
    class_names: set[str], counts: Counter, skipped: list[dict[str, Any]]
) -> None:
    empty = sorted(c for c in class_names if counts[c] == 0)
    if empty:
        its_skipped = [s for s in skipped if s.get("class") == empty[0]]
        raise DatasetError(
            f"The class {empty[0]!r} has no usable images{_skipped_summary(its_skipped)}. "
            "Add images to it or remove it."
        )


def _refuse_small_classes(counts: Counter, minimum: int) -> None:
    short = sorted((c, n) for c, n in counts.items() if n < minimum)
    if short:
        described = ", ".join(f"class {c!r} has {n} image{'s' if n != 1 else ''}" for c, n in short)
        raise DatasetError(
            f"{described[0].upper()}{described[1:]}; each class needs at least {minimum} "
            "(setting min_images_per_class)."
        )


def _refuse_classes_without_training_images(usable: list[_Probed], counts: Counter) -> None:
    in_train = {p.candidate.class_name for p in usable if p.candidate.given_split == "train"}
    missing = sorted(set(counts) - in_train)
    if missing:
        raise DatasetError(
            f"Class {missing[0]!r} has images in val or test but none in train. "
            "Add training images for it or remove its folders."
        )


def _assign_splits(
    usable: list[_Probed], given_splits: tuple[str, ...], options: ImportOptions
) -> tuple[list[_Kept], list[str]]:
    """Gives every image its split: as given, or carved from train, stratified and seeded.

    Identical files within a class are kept together (grouped by hash), so a split made here
    never leaks an image into two splits.
    """
    carve = {
        "val": options.val_fraction if "val" not in given_splits else 0.0,
        "test": options.test_fraction if "test" not in given_splits else 0.0,
    }
    pool = defaultdict(list)  # class -> images that may be carved
    kept: list[_Kept] = []
    for p in usable:
        if p.candidate.given_split in (None, "train"):
            pool[p.candidate.class_name].append(p)
        else:
            kept.append(_Kept(p.candidate, p.sha256, p.info, p.candidate.given_split))
    for class_name in sorted(pool):
        split_of_hash = _carve_class(pool[class_name], class_name, carve, options.seed)
        kept += [
            _Kept(p.candidate, p.sha256, p.info, split_of_hash[p.sha256]) for p in pool[class_name]
        ]
    kept.sort(key=lambda k: (SPLITS.index(k.split), k.candidate.class_name, k.candidate.rel_path))
    return kept, _carve_notes(given_splits, carve)


def _carve_class(
    group: list[_Probed], class_name: str, fractions: dict[str, float], seed: int
) -> dict[str, str]:
    # Sorting by hash, not file name, makes the split depend only on the content: the same
    # images under other names split the same way.
    hashes = sorted({p.sha256 for p in group})
    random.Random(f"{seed}:{class_name}").shuffle(hashes)
    n = len(hashes)
    n_test = _carved_count(n, fractions["test"])
    n_val = _carved_count(n, fractions["val"])
    while n_test + n_val >= n and (n_test or n_val):  # always leave one for training
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    split_of = {h: "test" for h in hashes[:n_test]}
    split_of.update({h: "val" for h in hashes[n_test : n_test + n_val]})
    split_of.update({h: "train" for h in hashes[n_test + n_val :]})
    return split_of


def _carved_count(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    count = math.floor(n * fraction + 0.5)
    return max(count, 1) if n >= 3 else count


def _carve_notes(given_splits: tuple[str, ...], carve: dict[str, float]) -> list[str]:
    if not given_splits:
        return []
    return [
        f"No {split} folder was given: {fraction:.0%} of each class's training images "
        f"were set aside as {split}."
        for split, fraction in carve.items()
        if fraction > 0
    ]


def _content_hash(kept: list[_Kept]) -> str:
    lines = sorted(f"{k.candidate.class_name}\t{k.split}\t{k.sha256}\n" for k in kept)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
