"""The cached-feature fast path (`tlcore.training.features`): which settings share a cache
entry, reuse, damaged entries and two processes caching the same split at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tlcore.config import RunConfig
from tlcore.training import features
from tlcore.training.features import FEATURES_FILE, LABELS_FILE, META_FILE

DATASET_HASH = "a" * 64


@pytest.fixture
def config() -> RunConfig:
    return RunConfig(dataset="pets", backbone="MobileNetV2", alpha=1.0)


def _key(config: RunConfig, *, dataset=DATASET_HASH, split="train", size=96, weights="imagenet"):
    return features.cache_key(dataset, split, config, size, weights)


# --------------------------------------------------------------------------- the key


def test_the_key_changes_with_everything_the_features_depend_on(config):
    base = _key(config)
    variants = {
        "backbone": _key(config.replace(backbone="MobileNet")),
        "alpha": _key(config.replace(alpha=0.5)),
        "pooling": _key(config.replace(pooling="max")),
        "fusion_stages": _key(config.replace(fusion_stages=2)),
        "image size": _key(config, size=128),
        "dataset content": _key(config, dataset="b" * 64),
        "split": _key(config, split="val"),
        "mirrored images (flip)": _key(config, split="train-mirrored"),
        "starting weights": _key(config, weights="random-seed42"),
    }
    for what, key in variants.items():
        assert key != base, what
    assert len(set(variants.values())) == len(variants)  # and all differ from each other


def test_the_key_ignores_settings_that_do_not_change_the_features(config):
    base = _key(config)
    same = [
        config.replace(learning_rate=0.05, epochs=3, batch_size=8, optimizer="sgd"),
        config.replace(dropout=0.5, dense_units=(64,), head_batchnorm=True),
        config.replace(strategy="two_phase", fine_tune_epochs=2, label_smoothing=0.1),
        # Augmentation changes the images a model sees, not the features of the stored ones
        # (training turns the cache off when it runs; a flip is its own "-mirrored" split).
        config.replace(flip="horizontal", rotation=0.1, zoom=0.2),
        config.replace(seed=7, name="another try", extra={"note": "x"}),
    ]
    assert [_key(c) for c in same] == [base] * len(same)
    assert _key(config.replace(image_size=96)) == base  # the size passed in is what counts
    assert base.startswith("mobilenetv2-train-")  # readable in the cache folder


def test_weights_identity_follows_the_weights_content_not_their_name(tmp_path, config):
    assert features.weights_identity(config) == "imagenet"
    random = config.replace(weights="none")
    assert features.weights_identity(random) == "random-seed42"
    assert features.weights_identity(random.replace(seed=1)) == "random-seed1"

    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"first weights")
    from_file = config.replace(weights=f"file:{weights}")
    first = features.weights_identity(from_file)
    copy = tmp_path / "copy.weights.h5"
    copy.write_bytes(b"first weights")
    assert features.weights_identity(config.replace(weights=f"file:{copy}")) == first
    weights.write_bytes(b"other weights")  # replaced in place: stale features must not match
    assert features.weights_identity(from_file) != first

    model = tmp_path / "model.keras"
    model.write_bytes(b"a trained model")
    from_run = config.replace(weights="run:r1")
    run_id = features.weights_identity(from_run, model)
    model.write_bytes(b"the same run, retrained")
    assert features.weights_identity(from_run, model) != run_id


# --------------------------------------------------------------------------- the cache


class _Backbone:
    """A stand-in frozen backbone: features are a fixed function of the images; counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        images = np.asarray(images, dtype=np.float32)
        return np.stack([images.mean(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))], axis=1)


def _split(count=10, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, 8, 8, 3), dtype=np.float32)
    labels = rng.integers(0, 3, size=count)
    batches = [(images[i : i + batch], labels[i : i + batch]) for i in range(0, count, batch)]
    return images, labels, batches


def _expected(images):
    return _Backbone()(images)


def test_features_are_computed_once_then_reused_from_disk(ws):
    images, labels, batches = _split()
    backbone, seen = _Backbone(), []

    feats, reused = features.load_or_compute(
        ws, "k", labels, backbone, batches, len(batches), progress=lambda d, t: seen.append((d, t))
    )
    assert not reused and backbone.calls == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_allclose(feats, _expected(images))
    folder = ws.cache_dir / "features" / "k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [FEATURES_FILE, LABELS_FILE, META_FILE]
    )

    again, reused = features.load_or_compute(ws, "k", labels, _Backbone(), [], len(batches))
    assert reused
    assert isinstance(again, np.memmap)  # read from disk, not recomputed
    np.testing.assert_allclose(again, _expected(images))


def test_an_entry_with_other_labels_is_recomputed(ws):
    _, labels, batches = _split()
    features.load_or_compute(ws, "k", labels, _Backbone(), batches, len(batches))

    backbone = _Backbone()
    shuffled = labels[::-1].copy()
    _, reused = features.load_or_compute(ws, "k", shuffled, backbone, batches, len(batches))
    assert not reused and backbone.calls == len(batches)
    stored = np.load(ws.cache_dir / "features" / "k" / LABELS_FILE)
    np.testing.assert_array_equal(stored, shuffled)


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / FEATURES_FILE).write_bytes(b"not a numpy file"),
        lambda folder: (folder / FEATURES_FILE).write_bytes(
            (folder / FEATURES_FILE).read_bytes()[:-16]  # cut short by a full disk
        ),
        lambda folder: (folder / LABELS_FILE).write_bytes(b"\x93NUMPY garbage"),
        lambda folder: (folder / FEATURES_FILE).unlink(),
    ],
    ids=["garbage", "truncated", "bad labels", "features missing"],
)
def test_a_damaged_entry_is_recomputed_not_a_crash(ws, damage):
    images, labels, batches = _split()
    features.load_or_compute(ws, "k", labels, _Backbone(), batches, len(batches))
    damage(ws.cache_dir / "features" / "k")

    backbone = _Backbone()
    feats, reused = features.load_or_compute(ws, "k", labels, backbone, batches, len(batches))
    assert not reused and backbone.calls == len(batches)
    np.testing.assert_allclose(feats, _expected(images))
    # The entry was rewritten whole: the next run reuses it.
    again, reused = features.load_or_compute(ws, "k", labels, _Backbone(), [], len(batches))
    assert reused
    np.testing.assert_allclose(again, _expected(images))


def test_two_writers_of_one_entry_do_not_collide(ws, monkeypatch):
    """Two runs cache the same split at once: each writes its own temporary file, and the
    entry left behind is whole (a shared temporary name would make one of them fail)."""
    images, labels, batches = _split()
    first_writing, other_done = threading.Event(), threading.Event()
    real_atomic_write = features.atomic_write

    def atomic_write(path, write):
        if threading.current_thread().name == "first" and path.name == FEATURES_FILE:

            def write_then_wait(fh):
                write(fh)
                first_writing.set()
                assert other_done.wait(10), "the second writer never finished"

            return real_atomic_write(path, write_then_wait)
        return real_atomic_write(path, write)

    monkeypatch.setattr(features, "atomic_write", atomic_write)
    results, errors = {}, []

    def cache(name):
        try:
            results[name] = features.load_or_compute(
                ws, "k", labels, _Backbone(), batches, len(batches)
            )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            if name == "second":
                other_done.set()

    first = threading.Thread(target=cache, args=("first",), name="first")
    first.start()
    assert first_writing.wait(10)
    # The second starts while the first is still writing its features (no meta.json yet).
    second = threading.Thread(target=cache, args=("second",), name="second")
    second.start()
    second.join(20)
    first.join(20)

    assert errors == []
    assert [results[n][1] for n in ("first", "second")] == [False, False]  # both computed
    for feats, _ in results.values():
        np.testing.assert_allclose(feats, _expected(images))
    folder = ws.cache_dir / "features" / "k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [FEATURES_FILE, LABELS_FILE, META_FILE]
    )  # no temporary file left
    again, reused = features.load_or_compute(ws, "k", labels, _Backbone(), [], len(batches))
    assert reused
    np.testing.assert_allclose(again, _expected(images))
