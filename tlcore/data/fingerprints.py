"""What a picture looks like, in a few bytes: near-copies and plain-colour images.

An import already decodes every image to check it (a JPEG at 1/8 scale, never below
32 px), so a tiny thumbnail of it costs almost nothing more; a PNG, whose check does not
decode it, is decoded for it (`tlcore.data.images.probe_image`). `summarize` keeps the
picture in grey at 16 x 16 pixels (its *fingerprint*, 256 bytes) and says whether it is
**plain**: every channel of its 32 x 32 colour thumbnail within `PLAIN_RANGE` levels, as
in a blank or single-colour placeholder.

Two pictures are **near-copies** (one photo resized, recompressed, brightened, recoloured,
cropped a little or marked in a corner) when three tests agree, each cheap:

1. their difference hashes (dHash: the fingerprint at 9 x 8, one bit per pair of
   horizontal neighbours) differ in at most `NEAR_COPY_BITS` of 64 bits. Only pairs
   that agree exactly on one of the hash's eight bytes are compared: at most 7 bits
   apart, they must (pigeonhole), so no dataset is compared pair by pair;
2. their fingerprints at 12 x 12 correlate at least `MIN_LAYOUT_CORRELATION` (the same
   light and dark areas);
3. their fine detail (the fingerprint minus a blurred copy of it) correlates at least
   `MIN_DETAIL_CORRELATION`. The hash and the layout alone took two drawings of the same
   shape in the same place on a smooth background for copies; the detail tells most apart.

The thresholds were chosen with `bench/bench_near_copies.py` on flowers5's 474 training
images (2026-12-04). It found 2 groups there, each one photo in two versions (one turned
grey, one re-encoded: looked at by eye) and no pair of different photos; two more such
pairs there (recoloured; re-cropped) were missed. Of 120 edited copies of training photos
it found all 120 made half size at JPEG quality 60, 120 of 120 made 15 % brighter, 93 with
a corner patched white, 84 cropped by 4 % on every side, and 1 of 120 mirror images (new
views, not copies). In all of flowers5 (675 photos) it finds 4 groups, all one photo in two
versions, 2 of them across the training and validation splits. Among the demo dataset's 400
generated shapes, as imported, it groups 13 pictures in 6 groups: the same shape drawn at
nearly the same place and size in other colours (in one, a small circle and a small square).
Fingerprints add ~0.2 ms per JPEG to an import (0.40 s against 0.27 s for 675 photos) and
~1.6 ms per PNG of the same photos (0.30 s against 0.06 s for 150), the PNG's decode.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

SIDE = 16  # the fingerprint: SIDE x SIDE grey levels
ENCODED_CHARS = 4 * -(-SIDE * SIDE // 3)  # its length as `encode` writes it (base64)
NEAR_COPY_BITS = 7  # at most 7, for the byte index to find every pair
MIN_LAYOUT_CORRELATION = 0.85
MIN_DETAIL_CORRELATION = 0.85
PLAIN_SIDE = 32
PLAIN_RANGE = 8  # of 255: a photo's 32 x 32 thumbnail varies far more than this


def summarize(image: Image.Image) -> tuple[bytes, bool]:
    """``(fingerprint, plain)`` of a decoded Pillow image of any mode and size."""
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    small = rgb.resize((PLAIN_SIDE, PLAIN_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.int16)
    plain = bool((pixels.max(axis=(0, 1)) - pixels.min(axis=(0, 1))).max() <= PLAIN_RANGE)
    grey = small.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return grey.tobytes(), plain


def encode(fingerprint: bytes) -> str:
    """A fingerprint as text, for a dataset's item records."""
    return base64.b64encode(fingerprint).decode("ascii")


def decode(text: str) -> bytes | None:
    """`encode`'s inverse; None for anything that is not a fingerprint ("" included)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None
    return data if len(data) == SIDE * SIDE else None


class _Picture:
    """What the three tests compare, computed once per fingerprint."""

    def __init__(self, fingerprint: bytes):
        grey = Image.frombytes("L", (SIDE, SIDE), fingerprint)
        self.hash = _difference_hash(grey)
        self.layout = _unit(np.asarray(grey.resize((12, 12), Image.Resampling.BILINEAR)))
        blurred = np.asarray(grey.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
        self.detail = _unit(np.asarray(grey, dtype=np.float32) - blurred)

    def matches(self, other: _Picture) -> bool:
        return (
            (self.hash ^ other.hash).bit_count() <= NEAR_COPY_BITS
            and float(self.layout @ other.layout) >= MIN_LAYOUT_CORRELATION
            and float(self.detail @ other.detail) >= MIN_DETAIL_CORRELATION
        )


def is_near_copy(a: bytes, b: bytes) -> bool:
    """Whether two fingerprints are of near-copies (the three tests above)."""
    return _Picture(a).matches(_Picture(b))


def _difference_hash(grey: Image.Image) -> int:
    small = np.asarray(grey.resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _unit(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit length: a dot product of two is their correlation."""
    flat = values.astype(np.float32).ravel()
    flat = flat - flat.mean()
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 0 else flat


def near_copy_groups(fingerprints: Sequence[bytes]) -> list[list[int]]:
    """Groups of positions in ``fingerprints`` that are near-copies of each other.

    Near-copies are linked, and linked pictures form one group (a chain of small edits is
    one group). Groups have two or more members, in position order, sorted by the first.
    """
    pictures = [_Picture(f) for f in fingerprints]
    parent = list(range(len(pictures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, picture in enumerate(pictures):
        for byte in range(8):
            buckets[(byte, (picture.hash >> (8 * byte)) & 0xFF)].append(position)
    for members in buckets.values():
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                if root(first) != root(second) and pictures[first].matches(pictures[second]):
                    parent[root(second)] = root(first)
    groups: dict[int, list[int]] = defaultdict(list)
    for position in range(len(pictures)):
        groups[root(position)].append(position)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def near_copies(entries: Sequence[tuple[str, bytes | None]]) -> list[list[int]]:
    """Groups of near-copies among ``(sha256, fingerprint)`` entries, as lists of positions.

    Exact copies (one sha256) count as one picture, since they are reported as copies
    already; entries without a fingerprint (plain images, unverified files) are left out.
    Each group holds at least two different files, and every exact copy of them.
    """
    first_of: dict[str, int] = {}
    pictures: list[bytes] = []
    positions: dict[int, list[int]] = defaultdict(list)
    for position, (sha256, fingerprint) in enumerate(entries):
        if fingerprint is None:
            continue
        if sha256 not in first_of:
            first_of[sha256] = len(pictures)
            pictures.append(fingerprint)
        positions[first_of[sha256]].append(position)
    return [
        sorted(p for picture in group for p in positions[picture])
        for group in near_copy_groups(pictures)
    ]
