"""How well the import tells near-copies from distinct pictures, and what it costs: the
figures behind `tlcore.data.fingerprints`' thresholds.

1. flowers5's **training** images (as an import with the default split puts them): every
   group of near-copies found, by name, to look at (exact copies are not near-copies);
2. edited copies of the first ``--sample`` of them, each compared with its original:
   half size at JPEG quality 60; a 4 % crop on every side; 15 % brighter; a white patch
   in a corner; and mirrored, which is a new view and should *not* count;
3. the demo dataset as imported (400 generated shapes on smooth backgrounds, each drawn
   independently): every group found there, by name;
4. importing flowers5 with and without the fingerprints (best of two each, seconds), and
   150 of its photos saved as PNG (a PNG's check does not decode it; its fingerprint does).

Usage: ``.venv/bin/python bench/bench_near_copies.py [--flowers DIR] [--sample 120]``.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image, ImageEnhance  # noqa: E402

from tlcore.data import datasets, fingerprints, images  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _patched(image: Image.Image) -> Image.Image:
    image = image.copy()
    image.paste((255, 255, 255), (0, 0, image.width // 6, image.height // 12))
    return image


EDITS = {
    "half size, quality 60": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2)), 60),
    "4% crop on every side": lambda im: _jpeg(
        im.crop((im.width // 25, im.height // 25, im.width * 24 // 25, im.height * 24 // 25))
    ),
    "15% brighter": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.15)),
    "corner patch": lambda im: _jpeg(_patched(im)),
    "mirrored (a new view)": lambda im: _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
}


def _fingerprint(source) -> bytes:
    return images.probe_image(source).fingerprint


def _timed_import(ws, folder: Path, fingerprinted: bool) -> float:
    """Seconds to import ``folder``; without fingerprints, as the import was before them."""
    original = images.probe_image
    if not fingerprinted:
        images.probe_image = functools.partial(original, fingerprint=False)
    try:
        started = time.perf_counter()
        datasets.import_folder(ws, folder, name="timed")
        return time.perf_counter() - started
    finally:
        images.probe_image = original


def _best_of_two(ws, folder: Path) -> tuple[float, float]:
    timings = {True: [], False: []}
    for fingerprinted in (True, False, True, False):
        timings[fingerprinted].append(_timed_import(ws, folder, fingerprinted))
    return min(timings[True]), min(timings[False])


def _as_png(flowers: Path, target: Path, per_class: int) -> int:
    """The first ``per_class`` photos of each class saved as PNG; how many were written."""
    written = 0
    for folder in sorted(p for p in flowers.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:per_class]:
            with Image.open(photo) as im:
                im.convert("RGB").save(target / folder.name / f"{photo.stem}.png")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flowers", default=os.environ.get("TLS_FLOWERS_DIR"))
    parser.add_argument("--sample", type=int, default=120)
    args = parser.parse_args()
    flowers = Path(args.flowers or REPO.parent / "shared" / "datasets" / "flowers5")
    root = Path(tempfile.mkdtemp(prefix="tls-near-"))
    try:
        ws = open_workspace(root / "ws")
        ds = datasets.import_folder(ws, flowers, name="flowers5")  # also warms the file cache
        train = ds.items("train")
        prints = [_fingerprint(item.path) for item in train]
        groups = fingerprints.near_copies(
            [(i.sha256, f) for i, f in zip(train, prints, strict=True)]
        )
        print(f"1. flowers5 training images: {len(train)}; near-copy groups: {len(groups)}")
        for group in groups:
            print("   " + " ≈ ".join(train[i].rel_path for i in group))

        print(f"2. edited copies of {min(args.sample, len(train))} training images, found:")
        for name, edit in EDITS.items():
            found = 0
            for item, original in zip(train[: args.sample], prints, strict=False):
                with Image.open(item.path) as im:
                    copy = _fingerprint(edit(im.convert("RGB")))
                found += fingerprints.is_near_copy(original, copy)
            print(f"   {name:<24} {found}/{min(args.sample, len(train))}")

        demo = datasets.import_demo(ws)
        started = time.perf_counter()
        demo_groups = fingerprints.near_copies(
            [(i.sha256, fingerprints.decode(i.fingerprint)) for i in demo.items()]
        )
        took = time.perf_counter() - started
        print(
            f"3. demo dataset: {demo.num_images} pictures, {len(demo_groups)} near-copy groups "
            f"({sum(map(len, demo_groups))} pictures); grouping took {took:.3f} s"
        )
        for group in demo_groups:
            print("   " + " ≈ ".join(demo.items()[i].rel_path for i in group))

        with_, without = _best_of_two(ws, flowers)
        print(
            f"4. import of {len(ds.items())} JPEG photos (best of two): {with_:.2f} s with "
            f"fingerprints, {without:.2f} s without ({with_ / without:.2f}x)"
        )
        pngs = _as_png(flowers, root / "png", per_class=30)
        with_, without = _best_of_two(ws, root / "png")
        print(
            f"   import of {pngs} of them saved as PNG: {with_:.2f} s with fingerprints (each "
            f"PNG decoded for it), {without:.2f} s without ({with_ / without:.2f}x)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
