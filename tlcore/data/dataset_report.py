"""A dataset's report and manifest: counts, sizes, duplicates and near-copies, imbalance,
odd images and warnings."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tlcore.data import fingerprints
from tlcore.data.catalog import (
    FORMAT_VERSION,
    ITEMS_FILE,
    SPLITS,
    TINY_IMAGE_SIDE,
    DatasetReport,
    ImportOptions,
    _Source,
)
from tlcore.data.scan import _Kept

PLACEHOLDER_SIDE = 64  # a GIF or palette image no larger than this is likely an icon
MAX_ASPECT_RATIO = 4.0  # longer side / shorter side beyond this: a banner, not a photo
LISTED_ODD_FILES = 5  # files named in one warning; the rest are counted
_PALETTE_MODES = frozenset({"P", "PA", "1"})

# ----------------------------------------------------------------------------------------
# Internals: the report and the manifest


def _build_report(
    classes: list[str],
    kept: list[_Kept],
    skipped: list[dict[str, Any]],
    warnings: list[str],
    options: ImportOptions,
) -> DatasetReport:
    counts = _split_counts(classes, kept)
    duplicates = _duplicate_groups(kept)
    leakage = [g for g in duplicates if g["leakage"]]
    imbalance = _imbalance(classes, kept, options.imbalance_ratio)
    sizes = _size_summary(kept)
    plain = [k for k in kept if k.info.plain and not _is_placeholder(k.info)]  # named once
    report = DatasetReport(
        classes=classes,
        counts=counts,
        num_images=len(kept),
        image_sizes=sizes,
        modes=dict(Counter(k.info.mode for k in kept).most_common()),
        formats=dict(Counter(k.info.format for k in kept).most_common()),
        skipped=skipped,
        skipped_counts=dict(Counter(s["reason"] for s in skipped).most_common()),
        duplicates=duplicates,
        leakage=leakage,
        imbalance=imbalance,
        near_copies=_near_copy_groups(kept),
        plain_images=[k.candidate.rel_path for k in plain],
    )
    report.warnings = (
        _warnings(report, counts)
        + _odd_image_warnings(kept)
        + _near_copy_warnings(report)
        + warnings
    )
    return report


def _near_copy_groups(kept: list[_Kept]) -> list[dict[str, Any]]:
    """Groups of images that are one picture edited (`tlcore.data.fingerprints`)."""
    entries = [(k.sha256, None if k.info.plain else k.info.fingerprint) for k in kept]
    return [
        _group_record([kept[i] for i in positions], sha256=None)
        for positions in fingerprints.near_copies(entries)
    ]


def _near_copy_warnings(report: DatasetReport) -> list[str]:
    notes = []
    if report.near_copies:
        pairs = [" ≈ ".join(f["path"] for f in g["files"]) for g in report.near_copies]
        across = sum(g["leakage"] for g in report.near_copies)
        notes.append(
            f"{len(report.near_copies)} group(s) of images look like one photo edited "
            f"(resized, recompressed, recoloured or cropped a little): {_name_files(pairs)}. "
            "Keep one of each"
            + (
                f"; {across} group(s) span splits, so the test figures are optimistic."
                if across
                else "."
            )
        )
    if report.plain_images:
        notes.append(
            f"{len(report.plain_images)} image(s) are one plain colour all over (blank), not "
            f"photos: {_name_files(report.plain_images)}. Remove them unless blank is a class."
        )
    return notes


def _odd_image_warnings(kept: list[_Kept]) -> list[str]:
    """Names the images that look like placeholders or banners rather than photos.

    Read from each image's header (size, mode, format), so it costs nothing extra. They
    are imported; the warning lets the user look at them.
    """
    placeholders, stretched = [], []
    for k in kept:
        info = k.info
        if _is_placeholder(info):
            placeholders.append(k.candidate.rel_path)
        if max(info.width, info.height) > MAX_ASPECT_RATIO * max(min(info.width, info.height), 1):
            stretched.append(k.candidate.rel_path)
    notes = []
    if placeholders:
        notes.append(
            f"{len(placeholders)} image(s) are tiny GIF or palette images (at most "
            f"{PLACEHOLDER_SIDE} px), often an 'image not found' placeholder or an icon "
            f"rather than a photo: {_name_files(placeholders)}. Check them and remove any "
            "that are not real examples."
        )
    if stretched:
        notes.append(
            f"{len(stretched)} image(s) are more than {MAX_ASPECT_RATIO:g} times longer than "
            f"wide (or wider than long): {_name_files(stretched)}. They will be squeezed "
            "to a square for the model; crop them or remove them if they are banners."
        )
    return notes


def _is_placeholder(info) -> bool:
    """A tiny GIF or palette image: an icon or an 'image not found' placeholder, most often."""
    small = max(info.width, info.height) <= PLACEHOLDER_SIDE
    return small and (info.format == "GIF" or info.mode in _PALETTE_MODES)


def _name_files(paths: list[str]) -> str:
    named = ", ".join(paths[:LISTED_ODD_FILES])
    more = len(paths) - LISTED_ODD_FILES
    return named + (f" and {more} more" if more > 0 else "")


def _split_counts(classes: list[str], kept: list[_Kept]) -> dict[str, dict[str, int]]:
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for k in kept:
        counts[k.split][k.candidate.class_name] += 1
    return counts


def _duplicate_groups(kept: list[_Kept]) -> list[dict[str, Any]]:
    by_hash: dict[str, list[_Kept]] = defaultdict(list)
    for k in kept:
        by_hash[k.sha256].append(k)
    return [
        _group_record(copies, sha256=sha256)
        for sha256, copies in sorted(by_hash.items())
        if len(copies) >= 2
    ]


def _group_record(members: list[_Kept], *, sha256: str | None) -> dict[str, Any]:
    """One group of copies (``sha256``: the file's, for exact copies) as the report keeps it."""
    splits = sorted({c.split for c in members}, key=SPLITS.index)
    group_classes = sorted({c.candidate.class_name for c in members})
    record = {"sha256": sha256} if sha256 is not None else {}
    return record | {
        "files": [
            {"path": c.candidate.rel_path, "class": c.candidate.class_name, "split": c.split}
            for c in members
        ],
        "splits": splits,
        "classes": group_classes,
        "leakage": len(splits) > 1,
        "conflicting_classes": len(group_classes) > 1,
    }


def _imbalance(classes: list[str], kept: list[_Kept], threshold: float) -> dict[str, Any]:
    totals = Counter(k.candidate.class_name for k in kept)
    largest = max(classes, key=lambda c: (totals[c], c))
    smallest = min(classes, key=lambda c: (totals[c], c))
    ratio = totals[largest] / max(totals[smallest], 1)
    return {
        "ratio": round(ratio, 3),
        "threshold": threshold,
        "flagged": ratio > threshold,
        "largest": {"class": largest, "count": totals[largest]},
        "smallest": {"class": smallest, "count": totals[smallest]},
    }


def _size_summary(kept: list[_Kept]) -> dict[str, Any]:
    widths = np.array([k.info.width for k in kept])
    heights = np.array([k.info.height for k in kept])

    def stats(values: np.ndarray) -> dict[str, int]:
        return {
            "min": int(values.min()),
            "median": int(np.median(values)),
            "max": int(values.max()),
        }

    tiny = int(np.sum(np.minimum(widths, heights) < TINY_IMAGE_SIDE))
    return {
        "width": stats(widths),
        "height": stats(heights),
        "smaller_than_px": tiny,
        "tiny_side": TINY_IMAGE_SIDE,
    }


def _warnings(report: DatasetReport, counts: dict[str, dict[str, int]]) -> list[str]:
    notes = []
    if report.skipped:
        notes.append(
            f"Not every file was imported{_skipped_summary(report.skipped)}; "
            "see the list of skipped files."
        )
    if report.leakage:
        notes.append(
            f"{len(report.leakage)} image(s) appear in more than one split (leakage): the model "
            "would be evaluated on images it trained on. Remove the copies from val/test."
        )
    conflicting = sum(g["conflicting_classes"] for g in report.duplicates)
    if conflicting:
        notes.append(f"{conflicting} image(s) appear in more than one class with different labels.")
    copies = sum(len(g["files"]) - 1 for g in report.duplicates)
    if copies:
        notes.append(f"{copies} image(s) are exact copies of another image in the dataset.")
    if report.imbalance["flagged"]:
        big, small = report.imbalance["largest"], report.imbalance["smallest"]
        notes.append(
            f"The classes are imbalanced: {big['class']!r} has {big['count']} images and "
            f"{small['class']!r} has {small['count']} (ratio {report.imbalance['ratio']:.1f}, "
            f"above {report.imbalance['threshold']:g}). Consider balanced class weights or "
            "more images of the small classes."
        )
    for split in ("val", "test"):
        if any(counts[split].values()):
            missing = [c for c, n in counts[split].items() if n == 0]
            if missing:
                notes.append(f"No {split} images for class(es) {', '.join(map(repr, missing))}.")
    if report.image_sizes["smaller_than_px"]:
        notes.append(
            f"{report.image_sizes['smaller_than_px']} image(s) are smaller than "
            f"{TINY_IMAGE_SIDE} px on a side; they will be enlarged and look blurry to the model."
        )
    return notes


def _build_manifest(
    dataset_id: str,
    name: str,
    content_hash: str,
    classes: list[str],
    kept: list[_Kept],
    source: _Source,
    options: ImportOptions,
    given_splits: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "id": dataset_id,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "content_hash": content_hash,
        "classes": classes,
        "num_images": len(kept),
        "counts": _split_counts(classes, kept),
        "source": source.to_manifest(),
        "fractions": {"val": options.val_fraction, "test": options.test_fraction},
        "seed": options.seed,
        "splits_given": list(given_splits),
        "items_file": ITEMS_FILE,
    }


def _skipped_summary(skipped: list[dict[str, Any]]) -> str:
    """Like ' (3 files skipped: 2 not an image, 1 truncated)'; empty if nothing was skipped."""
    if not skipped:
        return ""
    reasons = Counter(s["reason"] for s in skipped)
    parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(reasons.items()))
    return f" ({len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: {parts})"
