"""Training benchmark (issue 5): the cached-feature fast path, fine-tuning throughput and
the cost of the progress callback, each measured beside its baseline in the same run.

Usage::

    .venv/bin/python bench/bench_training.py [--flowers DIR] [--epochs 20] [--quick]

Real photos come from ``--flowers`` or ``$TLS_FLOWERS_DIR`` (default
``../shared/datasets/flowers5``; only read). ImageNet weights for the accuracy comparison
come from ``$KERAS_HOME`` (MobileNet α 0.25 is the one shipped in ``../shared/keras_home``);
without them the accuracy rows are skipped and the speed rows use random weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tlcore.config import RunConfig  # noqa: E402
from tlcore.data import datasets, pipeline  # noqa: E402
from tlcore.model import models  # noqa: E402
from tlcore.model.weights import imagenet_weights_status  # noqa: E402
from tlcore.store import runs  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402
from tlcore.training import callbacks, train  # noqa: E402


def _run(ws, config: RunConfig) -> tuple[float, dict]:
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, "running")
    start = time.perf_counter()
    result = train.train_run(ws, record.id)
    return time.perf_counter() - start, result.summary


def _seeds_way(ws, dataset_name: str, backbone: str, alpha: float, weights: str, epochs: int):
    """The seeds' recipe: the whole frozen model, Flatten → Dense(1024) → softmax, model.fit."""
    config = RunConfig(
        dataset=dataset_name,
        backbone=backbone,
        alpha=alpha,
        weights=weights,
        pooling="flatten",
        dense_units=(1024,),
        dropout=0.0,
        learning_rate=1e-4,
        epochs=epochs,
        flip="none",
        feature_cache=False,
    )
    dataset = datasets.load_dataset(ws, dataset_name)
    n = len(dataset.classes)
    model = models.build_model(config, n)
    size = int(model.input_shape[1])

    def batches(split, shuffle):
        ds = pipeline.make_image_dataset(
            dataset.items(split), image_size=size, batch_size=32, shuffle=shuffle, seed=42
        )
        return ds.map(lambda x, y: (x, tf.one_hot(y, n)))

    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    start = time.perf_counter()
    history = model.fit(
        batches("train", True), validation_data=batches("val", False), epochs=epochs, verbose=0
    )
    return time.perf_counter() - start, history.history["val_accuracy"][-1]


def bench_fast_path(ws, name, backbone, alpha, weights, epochs, with_accuracy):
    base = RunConfig(
        dataset=name,
        backbone=backbone,
        alpha=alpha,
        weights=weights,
        epochs=epochs,
        flip="none",
        strategy="feature_extraction",
    )
    shutil.rmtree(ws.cache_dir / "features", ignore_errors=True)
    first_s, first = _run(ws, base)
    second_s, _ = _run(ws, base.replace(name="second"))
    seeds_s, seeds_acc = _seeds_way(ws, name, backbone, alpha, weights, epochs)
    label = f"{backbone}{f' α{alpha:g}' if backbone == 'MobileNet' else ''} ({weights})"
    print(f"\n[fast path] {label}, {epochs} epochs")
    print(f"  seeds' way (model.fit of the frozen model): {seeds_s:8.1f} s")
    print(
        f"  cached features, first run (computes cache): {first_s:8.1f} s"
        f"   speed-up {seeds_s / first_s:5.1f}x"
    )
    print(
        f"  cached features, second run (reuses cache):  {second_s:8.1f} s"
        f"   speed-up {seeds_s / second_s:5.1f}x"
    )
    if with_accuracy:
        print(
            f"  val accuracy: seeds' way {seeds_acc:.3f} | ours (defaults) "
            f"{first['val_accuracy']:.3f} (best {first['best_val_accuracy']:.3f})"
        )


def bench_fine_tune(ws, name, backbone, image_count: int, epochs: int):
    """Images/s of our full fine-tuning vs raw model.fit on in-memory arrays, same model."""
    dataset = datasets.load_dataset(ws, name)
    items = dataset.items("train")[:image_count]
    config = RunConfig(
        dataset=name,
        backbone=backbone,
        weights="none",
        flip="none",
        strategy="full_fine_tune",
        epochs=epochs,
        batch_size=32,
    )
    model = models.build_model(config, len(dataset.classes))
    size = int(model.input_shape[1])
    x = pipeline.load_images_array(items, size)
    y = keras.ops.one_hot(np.array([i.label for i in items]), len(dataset.classes))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x[:32], y[:32], epochs=1, verbose=0)  # compile the step
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    raw = len(items) * epochs / (time.perf_counter() - start)

    model2 = models.build_model(config, len(dataset.classes))
    model2.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    ds = pipeline.make_image_dataset(items, image_size=size, batch_size=32, shuffle=True, seed=1)
    ds = ds.map(lambda a, b: (a, tf.one_hot(b, len(dataset.classes))))
    tmp = Path(tempfile.mkdtemp())
    cbs = [
        callbacks.ProgressLogger(tmp, phase=1, batch_size=32, steps_per_epoch=len(ds)),
        callbacks.CancelOnRequest(tmp),
        callbacks.StopOnNaN(),
    ]
    model2.fit(ds.take(1), epochs=1, verbose=0, callbacks=cbs)  # compile the step
    start = time.perf_counter()
    model2.fit(ds, epochs=epochs, verbose=0, callbacks=cbs)
    ours = len(items) * epochs / (time.perf_counter() - start)
    print(f"\n[fine-tuning] {backbone} full fine-tune, {len(items)} images x {epochs} epochs")
    print(f"  raw model.fit, in-memory arrays: {raw:7.1f} img/s")
    print(f"  ours, streaming pipeline + callbacks: {ours:7.1f} img/s   ratio {ours / raw:.2f}x")
    return 32 / ours  # seconds per training batch of 32


def bench_callback_cost(batches: int = 400):
    """Epoch time with and without our callbacks, on a model whose steps are tiny."""
    x = np.random.default_rng(0).normal(size=(batches * 32, 64)).astype("float32")
    y = keras.ops.one_hot(np.arange(len(x)) % 5, 5)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    tmp = Path(tempfile.mkdtemp())

    def epoch(cbs) -> float:
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=cbs)
        return (time.perf_counter() - start) / 3

    plain = min(epoch([]) for _ in range(3))
    ours = min(
        epoch(
            [
                callbacks.ProgressLogger(tmp, phase=1, batch_size=32, steps_per_epoch=batches),
                callbacks.CancelOnRequest(tmp),
                callbacks.StopOnNaN(),
            ]
        )
        for _ in range(3)
    )
    per_batch_ms = 1000 * (ours - plain) / batches
    print(f"\n[progress callback] worst case: {batches} batches of a tiny dense model")
    print(
        f"  without: {plain * 1000:7.1f} ms/epoch   with: {ours * 1000:7.1f} ms/epoch"
        f"   cost {100 * (ours - plain) / plain:+.1f}%  ({per_batch_ms:.3f} ms per batch)"
    )
    return per_batch_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flowers",
        default=os.environ.get(
            "TLS_FLOWERS_DIR", str(REPO.parent / "shared" / "datasets" / "flowers5")
        ),
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs")
    args = parser.parse_args()
    flowers = Path(args.flowers)
    if not flowers.is_dir():
        print(f"No photos at {flowers}: set --flowers or TLS_FLOWERS_DIR.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        ws = open_workspace(Path(tmp) / "workspace")
        ds = datasets.import_folder(
            ws, flowers, name="flowers", options=datasets.ImportOptions(mode="index")
        )
        print(
            f"dataset: {ds.num_images} photos, {len(ds.classes)} classes, splits {ds.split_sizes()}"
        )
        epochs = 5 if args.quick else args.epochs
        bench_fast_path(ws, "flowers", "MobileNetV2", 1.0, "none", epochs, with_accuracy=False)
        if imagenet_weights_status("MobileNet", 0.25, 224).available:
            bench_fast_path(
                ws, "flowers", "MobileNet", 0.25, "imagenet", epochs, with_accuracy=True
            )
        else:
            print("\n(no ImageNet weights for MobileNet α0.25 in KERAS_HOME: accuracy skipped)")
        batch_s = bench_fine_tune(ws, "flowers", "MobileNetV2", 64 if args.quick else 160, 2)
        per_batch_ms = bench_callback_cost()
        print(
            f"  on a real MobileNetV2@224 training batch ({batch_s * 1000:.0f} ms) the callbacks "
            f"cost {100 * per_batch_ms / (batch_s * 1000):.3f}% of epoch time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
