"""The tf.data input pipeline: a list of image paths in, batches of ``(images, labels)`` out.

Every image is decoded by `tlcore.data.images.load_image_array` (called through
``tf.numpy_function``), the same function prediction uses, so training sees exactly what
prediction sees: EXIF orientation applied, every mode converted to RGB with transparency on
white, GIF/TIFF first frame, and the same bilinear resize.

Why not ``tf.io.decode_image``? It ignores EXIF orientation, drops alpha instead of
compositing it, and resizes differently, so a model would be trained on images that differ
from the ones it is asked to predict. And it is not faster here: decoding and resizing the
flowers5 photos to 224 px on 2 CPU cores, the Pillow path ran at 515-887 images/s and
``tf.io.decode_image`` + ``tf.image.resize`` at 478-845 images/s over several runs of
``bench/bench_datasets.py`` (Pillow at least as fast in every run), because Pillow
releases the GIL while decoding and resizing and decodes big JPEGs at a reduced scale
(``draft``). So there is one decode path.

Memory stays flat whatever the dataset size: the item list is held once as three compact
tensors (paths, cache names, labels); the shuffle is a stateless permutation of indices
(a full shuffle, different each epoch, with no buffer); images are decoded as batches are
drawn.

The optional cache stores each resized image as a raw file named after the image's content
hash (or path, size and modification time), the target size and the loader version, under
``cache_dir``. It replaces ``Dataset.cache(filename)`` on purpose: tf.data's file cache
freezes the order of the first epoch (so a shuffle after it needs a buffer of decoded
images), is keyed by nothing (a changed item list would read a stale cache), and leaves a
lock file behind when a training process is killed, which breaks the next run. Here a
changed image gets a new key, unchanged images are reused across item lists, and a file
half-written by a killed process is never renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import tensorflow as tf

from tlcore.data import images

CACHE_VERSION = 1  # bump when images.load_image_array changes what it returns
CACHE_SUBDIR = "images"
CHANNELS = 3
LOAD_WORKERS = max(2, min(8, os.cpu_count() or 2))


def make_image_dataset(
    items: Sequence[Any],
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Builds a batched, prefetched ``tf.data.Dataset`` that streams images from disk.

    Args:
        items: ``DatasetItem`` objects (anything with ``.path`` and ``.label``; a
            ``.sha256`` is used as the cache key when present) or ``(path, label)`` pairs.
        image_size: the side of the square images, in pixels.
        batch_size: images per batch; the last batch may be smaller.
        shuffle: shuffle all items, differently each epoch, reproducibly from ``seed``.
        seed: the shuffle seed.
        cache_dir: if given, resized images are cached as files under
            ``cache_dir/images/<size>px/`` and read from there in later epochs and runs;
            default None (no cache).
        repeat: repeat forever (each repetition reshuffled); default False (one epoch).

    Returns:
        A dataset of ``(images, labels)``: ``float32`` images of shape
        ``(batch, image_size, image_size, 3)`` with values in ``[0, 255]``, and ``int32``
        labels of shape ``(batch,)``. Order is deterministic for a given seed.

    Raises:
        ValueError: ``items`` is empty, or ``image_size`` or ``batch_size`` is not positive.
        OSError: with ``cache_dir`` and ``(path, label)`` items, a file does not exist.
    """
    _check_positive("image_size", image_size)
    _check_positive("batch_size", batch_size)
    paths, labels, content_ids = _columns(items)
    if not paths:
        raise ValueError("items is empty: there are no images to make a dataset from.")
    cache_files = _cache_files(content_ids, paths, image_size, cache_dir)
    table = (tf.constant(paths), tf.constant(cache_files), tf.constant(labels, dtype=tf.int32))
    indices = _shuffled_indices(len(paths), seed) if shuffle else tf.data.Dataset.range(len(paths))
    if repeat:
        indices = indices.repeat()
    rows = indices.map(lambda i: tuple(tf.gather(column, i) for column in table))
    load = _make_loader(int(image_size))
    dataset = rows.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_images_array(
    items: Sequence[Any], image_size: int, *, workers: int = LOAD_WORKERS
) -> np.ndarray:
    """Loads a small set of images into one array, e.g. for evaluation or explanation.

    Args:
        items: ``DatasetItem`` objects, ``(path, label)`` pairs, or plain paths.
        image_size: the side of the square images, in pixels.
        workers: threads decoding in parallel (default ``LOAD_WORKERS``).

    Returns:
        ``float32`` array of shape ``(len(items), image_size, image_size, 3)``, values in
        ``[0, 255]``, in the order of ``items``: the same pixels `make_image_dataset` yields.

    Raises:
        ValueError: ``image_size`` is not positive.
        images.ImageError: an image cannot be loaded; the message names it.
    """
    _check_positive("image_size", image_size)
    paths = [_path_of(item) for item in items]
    out = np.empty((len(paths), image_size, image_size, CHANNELS), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = pool.map(lambda p: images.load_image_array(p, image_size), paths)
        for index, pixels in enumerate(arrays):
            out[index] = pixels
    return out


def cache_key(content_id: str, image_size: int) -> str:
    """The cache file name stem for one image at one size (hex sha256)."""
    text = f"v{CACHE_VERSION}|pillow {PIL.__version__}|{image_size}px|{content_id}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _path_of(item: Any) -> str:
    if hasattr(item, "path"):
        return str(item.path)
    if isinstance(item, (tuple, list)):
        return str(item[0])
    return str(item)


def _columns(items: Sequence[Any]) -> tuple[list[str], list[int], list[str | None]]:
    """Paths, labels and content ids (sha256 when known) of the items."""
    paths, labels, content_ids = [], [], []
    for item in items:
        if hasattr(item, "path") and hasattr(item, "label"):
            path, label = item.path, item.label
            content_ids.append(getattr(item, "sha256", None) or None)
        else:
            path, label = item
            content_ids.append(None)
        paths.append(str(path))
        labels.append(int(label))
    return paths, labels, content_ids


def _cache_files(
    content_ids: list[str | None],
    paths: list[str],
    image_size: int,
    cache_dir: str | os.PathLike | None,
) -> list[str]:
    """One cache file per item ("" when caching is off)."""
    if cache_dir is None:
        return [""] * len(paths)
    root = Path(cache_dir) / CACHE_SUBDIR / f"{image_size}px"
    files = []
    for content_id, path in zip(content_ids, paths, strict=True):
        key = cache_key(content_id or _file_identity(path), image_size)
        files.append(str(root / key[:2] / f"{key}.rgb"))
    return files


def _file_identity(path: str) -> str:
    # Without a content hash, a file is identified by where it is, its size and when it was
    # last written: rewriting the file gives it a new key, so no stale entry is ever read.
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _shuffled_indices(count: int, seed: int) -> tf.data.Dataset:
    """0..count-1 in a seeded random order, a new order on every iteration (epoch).

    A stateless permutation (``index_shuffle``) instead of ``Dataset.shuffle``: shuffling
    fully with ``shuffle(count)`` keeps a buffer of ``count`` elements, so memory would grow
    with the dataset; this computes each position on the fly and holds nothing.
    """
    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    max_index = tf.constant(count - 1, tf.int64)

    def permutation(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([tf.constant(seed, tf.int64), epoch_seed])
        return tf.data.Dataset.range(count).map(
            lambda i: tf.random.experimental.index_shuffle(i, key, max_index)
        )

    # flat_map hides the length; Keras needs it for progress bars and to count steps.
    shuffled = epoch_seeds.flat_map(permutation)
    return shuffled.apply(tf.data.experimental.assert_cardinality(count))


def _make_loader(image_size: int):
    expected_bytes = image_size * image_size * CHANNELS

    def load_numpy(path: bytes, cache_file: bytes) -> np.ndarray:
        cache = cache_file.decode("utf-8")
        if cache:
            cached = _read_cache(cache, expected_bytes)
            if cached is not None:
                return cached.reshape(image_size, image_size, CHANNELS)
        pixels = images.load_image_array(path.decode("utf-8"), image_size)
        if cache:
            _write_cache(cache, pixels)
        return pixels

    def load(path: tf.Tensor, cache_file: tf.Tensor, label: tf.Tensor):
        pixels = tf.numpy_function(load_numpy, [path, cache_file], tf.uint8, name="load_image")
        pixels.set_shape((image_size, image_size, CHANNELS))
        return tf.cast(pixels, tf.float32), label

    return load


def _read_cache(cache_file: str, expected_bytes: int) -> np.ndarray | None:
    try:
        data = np.fromfile(cache_file, dtype=np.uint8)
    except (FileNotFoundError, OSError):
        return None
    return data if data.size == expected_bytes else None


def _write_cache(cache_file: str, pixels: np.ndarray) -> None:
    """Writes a cache entry under a unique temporary name, then renames it into place.

    No fsync: the cache is disposable, and an entry torn by a crash has the wrong size and
    is recomputed by `_read_cache`.
    """
    tmp = f"{cache_file}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:6]}.tmp"
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        os.replace(tmp, cache_file)
    except OSError:
        # A full or read-only cache must not stop training; the image was decoded anyway.
        try:
            os.unlink(tmp)
        except OSError:
            pass
