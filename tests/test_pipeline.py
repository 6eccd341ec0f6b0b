"""The tf.data input pipeline: shapes, determinism, the one loader's semantics, the cache."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tlcore.data import images, pipeline
from tlcore.data.datasets import DatasetItem


def write_noise(path: Path, seed: int, size=(20, 14), mode="RGB", **save) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def item_for(path: Path, label: int) -> DatasetItem:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return DatasetItem(path, label, f"class{label}", "train", sha, 0, 0)


@pytest.fixture
def items(tmp_path):
    return [item_for(write_noise(tmp_path / f"{i}.png", seed=i), i % 3) for i in range(10)]


def labels_of(dataset) -> list[int]:
    return [int(y) for _, batch in dataset for y in batch.numpy()]


def test_yields_float_images_and_int_labels_in_batches(items):
    dataset = pipeline.make_image_dataset(items, image_size=16, batch_size=4, shuffle=False, seed=0)

    batches = list(dataset)

    assert [x.shape for x, _ in batches] == [(4, 16, 16, 3), (4, 16, 16, 3), (2, 16, 16, 3)]
    assert all(x.dtype == tf.float32 and y.dtype == tf.int32 for x, y in batches)
    assert dataset.element_spec[0].shape.as_list() == [None, 16, 16, 3]
    pixels = np.concatenate([x.numpy() for x, _ in batches])
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.max() > 200
    assert labels_of(dataset) == [i % 3 for i in range(10)]


def image_order(dataset) -> list[float]:
    """Identifies each yielded image by its pixel sum (the test images are all different)."""
    return [float(x.sum()) for batch, _ in dataset for x in batch.numpy()]


def shuffled(items, seed):
    return pipeline.make_image_dataset(items, image_size=8, batch_size=3, shuffle=True, seed=seed)


def test_shuffle_is_deterministic_for_a_seed_and_changes_each_epoch(items):
    first, twin = shuffled(items, 1), shuffled(items, 1)
    unshuffled = pipeline.make_image_dataset(
        items, image_size=8, batch_size=3, shuffle=False, seed=1
    )

    epoch1, epoch2 = image_order(first), image_order(first)

    assert epoch1 == image_order(twin) and epoch2 == image_order(twin)
    assert epoch1 != epoch2
    assert image_order(shuffled(items, 2)) != epoch1
    assert sorted(epoch1) == sorted(image_order(unshuffled))


@pytest.mark.slow
def test_shuffle_order_is_the_same_in_another_process(items, tmp_path):
    # The order follows TensorFlow's global seed too, as every op-seeded op does; training
    # sets it from the run's seed before building its datasets, and so do both sides here.
    import keras

    keras.utils.set_random_seed(7)
    script = (
        "import sys, json; from pathlib import Path\n"
        "import keras; keras.utils.set_random_seed(7)\n"
        "from tlcore.data import pipeline\n"
        "pairs = [(p, 0) for p in json.loads(sys.argv[1])]\n"
        "kw = dict(image_size=8, batch_size=3, shuffle=True, seed=1)\n"
        "ds = pipeline.make_image_dataset(pairs, **kw)\n"
        "print(json.dumps([float(x.sum()) for b, _ in ds for x in b.numpy()]))\n"
    )
    paths = json.dumps([str(i.path) for i in items])
    result = subprocess.run(
        [sys.executable, "-c", script, paths],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )

    in_this_process = image_order(shuffled([(i.path, 0) for i in items], 1))

    assert json.loads(result.stdout.strip().splitlines()[-1]) == in_this_process


def test_repeat_streams_several_epochs(items):
    dataset = pipeline.make_image_dataset(
        items, image_size=8, batch_size=5, shuffle=True, seed=0, repeat=True
    )

    labels = [int(y) for _, batch in dataset.take(6) for y in batch.numpy()]

    assert len(labels) == 30
    assert sorted(labels[:10]) == sorted(labels[10:20]) == sorted(i % 3 for i in range(10))


def test_length_is_known_so_keras_can_count_steps(items):
    for shuffle in (False, True):
        dataset = pipeline.make_image_dataset(
            items, image_size=8, batch_size=4, shuffle=shuffle, seed=0
        )
        assert int(dataset.cardinality()) == 3
    endless = pipeline.make_image_dataset(
        items, image_size=8, batch_size=4, shuffle=True, seed=0, repeat=True
    )
    assert endless.cardinality() == tf.data.INFINITE_CARDINALITY


def test_accepts_path_label_pairs(tmp_path):
    pairs = [(write_noise(tmp_path / f"{i}.jpg", seed=i), i) for i in range(3)]

    dataset = pipeline.make_image_dataset(pairs, image_size=8, batch_size=8, shuffle=False, seed=0)

    assert labels_of(dataset) == [0, 1, 2]


def test_pixels_are_exactly_those_of_the_one_loader(tmp_path):
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = 6
    paths = [
        write_noise(tmp_path / "rotated.jpg", seed=1, size=(30, 12), exif=exif),
        write_noise(tmp_path / "alpha.png", seed=2, mode="RGBA"),
        write_noise(tmp_path / "cmyk.jpg", seed=3, mode="CMYK"),
        write_noise(tmp_path / "gray.png", seed=4, mode="L"),
        write_noise(tmp_path / "palette.gif", seed=5, mode="P"),
    ]

    dataset = pipeline.make_image_dataset(
        [(p, 0) for p in paths], image_size=12, batch_size=8, shuffle=False, seed=0
    )
    [(batch, _)] = list(dataset)

    expected = np.stack([images.load_image_array(p, 12) for p in paths]).astype(np.float32)
    np.testing.assert_array_equal(batch.numpy(), expected)
    np.testing.assert_array_equal(pipeline.load_images_array(paths, 12), expected)


def test_cache_is_written_then_used(tmp_path, items):
    cache_dir = tmp_path / "cache"

    def make():
        return pipeline.make_image_dataset(
            items, image_size=8, batch_size=10, shuffle=False, seed=0, cache_dir=cache_dir
        )

    first = next(iter(make()))[0].numpy()
    cached_files = sorted((cache_dir / "images" / "8px").rglob("*.rgb"))
    for item in items:  # the originals are gone: only the cache can provide the pixels
        item.path.unlink()
    second = next(iter(make()))[0].numpy()

    assert len(cached_files) == len(items)
    assert all(f.stat().st_size == 8 * 8 * 3 for f in cached_files)
    np.testing.assert_array_equal(first, second)
    assert not list(cache_dir.rglob("*.tmp"))


def test_changed_file_never_reads_a_stale_cache_entry(tmp_path):
    path = write_noise(tmp_path / "a.png", seed=1)
    cache_dir = tmp_path / "cache"

    def pixels():
        dataset = pipeline.make_image_dataset(
            [(path, 0)], image_size=8, batch_size=1, shuffle=False, seed=0, cache_dir=cache_dir
        )
        return next(iter(dataset))[0].numpy()

    before = pixels()
    write_noise(path, seed=2, size=(21, 14))  # new content, size and mtime
    after = pixels()

    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after[0], images.load_image_array(path, 8))


def test_torn_cache_entry_is_recomputed(tmp_path, items):
    cache_dir = tmp_path / "cache"
    kwargs = dict(image_size=8, batch_size=10, shuffle=False, seed=0, cache_dir=cache_dir)
    expected = next(iter(pipeline.make_image_dataset(items, **kwargs)))[0].numpy()
    torn = sorted(cache_dir.rglob("*.rgb"))[0]
    torn.write_bytes(b"\x00" * 17)

    again = next(iter(pipeline.make_image_dataset(items, **kwargs)))[0].numpy()

    np.testing.assert_array_equal(again, expected)
    assert torn.stat().st_size == 8 * 8 * 3


def test_a_damaged_image_names_the_file(tmp_path, items):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    dataset = pipeline.make_image_dataset(
        [*items, (bad, 0)], image_size=8, batch_size=4, shuffle=False, seed=0
    )

    with pytest.raises(tf.errors.OpError, match=r"bad\.jpg is not an image"):
        list(dataset)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(image_size=0), "image_size must be a positive integer"),
        (dict(batch_size=-1), "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(items, kwargs, message):
    arguments = dict(image_size=8, batch_size=2, shuffle=False, seed=0) | kwargs

    with pytest.raises(ValueError, match=message):
        pipeline.make_image_dataset(items, **arguments)


def test_no_items_is_refused():
    with pytest.raises(ValueError, match="items is empty"):
        pipeline.make_image_dataset([], image_size=8, batch_size=2, shuffle=False, seed=0)
