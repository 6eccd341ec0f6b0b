"""How long a run will take, from speeds measured on this machine.

The registry's images/s (`tlcore.model.backbones`) were measured once on one machine; a lab
server, a laptop and a GPU differ by 10x or more, and a run is much more than forward
passes: a worker process starts and imports TensorFlow, images are decoded, every epoch
validates, the model is saved and evaluated at the end. So:

* `calibrate` (in a process that may import Keras: ``python -m tlcore calibrate``, which
  the Model page starts in the background) times, for one backbone, width and size, the
  TensorFlow import, building the model, a forward pass and a training step of the whole
  network, a training epoch of a small head, a dense matrix product (for heads on
  flattened features) and one fit of the cross-validated head. Results are cached in the
  workspace (``cache/speed.json``), keyed by backbone, width, size and batch size.
* `estimate_run` adds up what a run does with those speeds, counting the run's own
  images (decoding a sample of them with Pillow to time it). Without a calibration it
  falls back to the registry's figure and says so.

Pure Python except `calibrate`: the web process can estimate without TensorFlow.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import tempfile
import time
from pathlib import Path

from tlcore.config import RunConfig
from tlcore.fileio import atomic_write_json, read_json
from tlcore.store import jobs
from tlcore.store.workspace import Workspace

SPEED_FILE = "speed.json"
DECODE_SAMPLE = 6
MODEL_SAVE_S = 0.6  # one .keras write of a small model, plus its hash
MODEL_SAVE_INTERVAL_S = 15.0  # tlcore.training.callbacks.BestModelCheckpoint.MIN_INTERVAL_S
FALLBACK_TRAIN_FACTOR = 3.0  # a training step costs ~3 forward passes
FALLBACK_STARTUP_S = 8.0
ACCURACY = 0.3  # what the estimate promises once measured: within ±30%
AUTO_CALIBRATE_ENV = "TLS_AUTO_CALIBRATE"  # "0": pages never start a measurement


def speed_key(config: RunConfig, image_size: int) -> str:
    return f"{config.backbone}@{float(config.alpha):g}@{image_size}@b{config.batch_size}"


def _speed_path(ws: Workspace) -> Path:
    return ws.cache_dir / SPEED_FILE


def read_speeds(ws: Workspace) -> dict:
    try:
        data = read_json(_speed_path(ws))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_speed(ws: Workspace, config: RunConfig) -> dict | None:
    """This machine's calibration for the config's backbone, width, size and batch."""
    from tlcore.model.strategies import image_size

    entry = read_speeds(ws).get(speed_key(config, image_size(config)))
    return entry if isinstance(entry, dict) and entry.get("forward_ips") else None


# -- measuring (imports TensorFlow) -------------------------------------------------------
def calibrate(ws: Workspace, config: RunConfig) -> dict:
    """Measures this machine's speeds for the config's network and caches them.

    Takes 10-60 s on 2 CPU cores (dominated by the training steps of big backbones).
    """
    import psutil

    started = time.perf_counter()
    # What a worker pays before its first batch: the interpreter, tlcore, TensorFlow and
    # Keras imports. This process started the same way, so its age now measures that.
    import keras
    import numpy as np
    import tensorflow as tf

    from tlcore.data import pipeline
    from tlcore.model import models
    from tlcore.model.registry import get_backbone
    from tlcore.training import head_search

    import_s = max(time.time() - psutil.Process().create_time(), 0.0)
    size = models.image_size(config)
    batch = min(config.batch_size, 64)
    probe = RunConfig(
        dataset="calibration",
        backbone=config.backbone,
        alpha=config.alpha,
        image_size=size,
        weights="none",
        strategy="from_scratch",
        seed=0,
    )
    t = time.perf_counter()
    model = models.build_model(probe, 5)
    build_s = time.perf_counter() - t
    extractor = models.feature_extractor(model)
    images = tf.random.uniform((batch, size, size, 3), 0, 255, seed=0)
    labels = tf.one_hot(tf.random.uniform((batch,), 0, 5, dtype=tf.int32, seed=1), 5)

    def timed(step, repeats: int) -> float:
        step()  # the first call traces the graph: not what later batches cost
        t0 = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - t0) / repeats

    forward = timed(lambda: extractor.predict_on_batch(images), 3)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    train = timed(lambda: model.train_on_batch(images, labels), 2)

    # The same work through the real input pipeline, on photo-sized JPEGs: decoding
    # shares the cores with the network, which the bare figures above do not show.
    with tempfile.TemporaryDirectory(prefix="tls-calibrate-") as folder:
        items = _synthetic_photos(Path(folder), 3 * batch)
        synthetic_decode = decode_seconds(items, size)
        batches = pipeline.make_image_dataset(
            items, image_size=size, batch_size=batch, shuffle=False, seed=0
        )
        # Called as the feature cache calls it (`tlcore.training.phase_fit._cached_split`).
        extract = timed(lambda: [extractor(x, training=False) for x, _ in batches], 1)
        extract_ips = len(items) / extract
        # ... and as evaluation predicts (compiled, `predict_on_batch`).
        predict = timed(lambda: [model.predict_on_batch(x) for x, _ in batches], 1)
        predict_ips = len(items) / predict
        one_hot = batches.map(lambda x, y: (x, tf.one_hot(y, 5)))
        fit = timed(lambda: model.fit(one_hot, epochs=1, verbose=0), 1)
        train_pipeline_ips = len(items) / fit

    # A small head trained on cached features, as fit() runs it: per-epoch overhead.
    head = keras.Sequential([keras.Input((64,)), keras.layers.Dense(5, activation="softmax")])
    head.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(256, 64)).astype("float32")
    y = np.eye(5, dtype="float32")[np.arange(256) % 5]
    head.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(x[:64], y[:64]))
    t0 = time.perf_counter()
    head.fit(x, y, batch_size=32, epochs=5, verbose=0, validation_data=(x[:64], y[:64]))
    epoch_s = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    head.fit(x, y, batch_size=32, epochs=5, verbose=0)
    bare_epoch_s = (time.perf_counter() - t0) / 5

    a = tf.random.uniform((1024, 4096))
    b = tf.random.uniform((4096, 1024))
    matmul = timed(lambda: tf.linalg.matmul(a, b).numpy(), 3)
    flops = 2 * 1024 * 4096 * 1024 / matmul

    # A big head on cached features (a flattened map into Dense 2048, 8M weights: past
    # the caches, as flattened heads are): seconds per image and head weight of an epoch,
    # the optimizer's update included, beyond the bare epoch of a tiny head.
    wide = keras.Sequential(
        [keras.Input((4096,)), keras.layers.Dense(2048, activation="relu"), keras.layers.Dense(5)]
    )
    wide.compile(optimizer="adam", loss="categorical_crossentropy")
    wx = np.random.default_rng(1).normal(size=(256, 4096)).astype("float32")
    wy = np.eye(5, dtype="float32")[np.arange(256) % 5]
    wide_epoch = timed(lambda: wide.fit(wx, wy, batch_size=32, epochs=1, verbose=0), 2)
    head_param_s = max(wide_epoch - bare_epoch_s, 0.0) / (len(wx) * wide.count_params())

    # Writing weights (the checkpoint at an improvement, the resume backup every epoch):
    # a cost per variable (HDF5 datasets) plus a throughput, from two very different files.
    with tempfile.TemporaryDirectory(prefix="tls-calibrate-") as folder:
        many, big = Path(folder) / "many.weights.h5", Path(folder) / "big.weights.h5"
        t_many = timed(lambda: model.save_weights(many), 1)
        t_big = timed(lambda: wide.save_weights(big), 1)
        (v_many, b_many), (v_big, b_big) = (
            (len(model.weights), many.stat().st_size),
            (len(wide.weights), big.stat().st_size),
        )
    # t = v * per_variable + b / throughput, solved for the two files.
    det = v_many * b_big - v_big * b_many
    per_variable = max((t_many * b_big - t_big * b_many) / det, 0.0) if det else 0.0
    rest = t_big - v_big * per_variable
    save_bytes_s = b_big / rest if rest > 0 else b_big / max(t_big, 1e-6)

    features = get_backbone(config.backbone).features_at(config.alpha)
    rows = 600
    rng = np.random.default_rng(0)
    fx = rng.normal(size=(rows, features)) + np.repeat(rng.normal(size=(5, features)), 120, 0)
    fy = np.repeat(np.arange(5), 120)
    t0 = time.perf_counter()
    head_search._fit(fx, fy, 0.1, 5, False)
    fit_s = time.perf_counter() - t0

    entry = {
        "forward_ips": batch / forward,
        "train_ips": batch / train,
        "extract_ips": extract_ips,
        "predict_ips": predict_ips,
        "train_pipeline_ips": train_pipeline_ips,
        "synthetic_decode_s": synthetic_decode,
        "import_s": round(import_s, 2),
        "build_s": round(build_s, 2),
        "epoch_overhead_s": round(epoch_s, 4),
        "flops": flops,
        "head_param_s": head_param_s,
        "save_bytes_s": save_bytes_s,
        "save_variable_s": per_variable,
        "model_variables": len(model.weights),
        "lr_fit_s": round(fit_s, 3),
        "lr_fit_rows": rows,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    speeds = read_speeds(ws)
    speeds[speed_key(config, size)] = entry
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_speed_path(ws), speeds)
    return entry


def _synthetic_photos(folder: Path, count: int) -> list:
    """``count`` 500x375 JPEGs with photo-like smooth content, as ``(path, label)`` items."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
        path = folder / f"photo_{i:03d}.jpg"
        image.save(path, quality=90)
        items.append(_Item(path, i % 5))
    return items


class _Item:
    """The two attributes the pipeline and `decode_seconds` read from a dataset item."""

    def __init__(self, path: Path, label: int):
        self.path, self.label = path, label


def start_calibration(ws: Workspace, config: RunConfig) -> None:
    """Starts `calibrate` in its own process (the web process never imports Keras)."""

    from tlcore.model.strategies import image_size

    if os.environ.get(AUTO_CALIBRATE_ENV, "1") == "0":
        return
    marker = ws.cache_dir / f".calibrating-{speed_key(config, image_size(config))}"
    if marker.exists() and time.time() - marker.stat().st_mtime < 300:
        return  # one is already measuring
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    jobs.start_cli(
        ws,
        "calibrate",
        "--backbone",
        config.backbone,
        "--alpha",
        str(config.alpha),
        "--image-size",
        str(image_size(config)),
        "--batch-size",
        str(config.batch_size),
    )


# -- estimating (pure Python) --------------------------------------------------------------
def decode_seconds(items, image_size: int) -> float:
    """Seconds to decode and resize one image, timed on a few of ``items``."""
    from tlcore.data.images import ImageError, load_image_array

    if not items:
        return 0.0
    sample = random.Random(0).sample(list(items), min(DECODE_SAMPLE, len(items)))
    t0 = time.perf_counter()
    done = 0
    for item in sample:
        try:
            load_image_array(item.path, image_size)
            done += 1
        except (ImageError, OSError):
            continue
    return (time.perf_counter() - t0) / max(done, 1)


def _head_params(config: RunConfig, features: int) -> int:
    """Weights of the head: a Dense chain on ``features`` (x49 for a flattened 7x7 map)."""
    dims = [features, *config.dense_units, 5]
    return sum(a * b for a, b in itertools.pairwise(dims))


def estimate_run(ws: Workspace, config: RunConfig, dataset=None) -> dict:
    """How long ``config`` will take here, start of its worker to end of its evaluation.

    Returns:
        ``{"total_seconds", "parts": {name: seconds}, "measured": bool, "basis"}``.
    """
    from tlcore.data import datasets
    from tlcore.model import strategies  # the pure half of the model: no Keras here
    from tlcore.model.registry import get_backbone

    spec = strategies.validate_model_config(config)
    size = strategies.image_size(config)
    dataset = dataset or datasets.load_dataset(ws, config.dataset)
    n_train, n_val, n_test = (len(dataset.items(s)) for s in ("train", "val", "test"))
    speed = measured_speed(ws, config)
    measured = speed is not None
    if speed is None:
        width = (0.2 + 0.8 * float(config.alpha) ** 2) if spec.has_alpha else 1.0
        forward_ips = spec.speed_224 / ((size / 224) ** 2 * width)
        speed = {
            "forward_ips": forward_ips,
            "train_ips": forward_ips / FALLBACK_TRAIN_FACTOR,
            "import_s": FALLBACK_STARTUP_S - 2.0,
            "build_s": 2.0,
            "epoch_overhead_s": 0.05,
            "flops": 2e10,
            "lr_fit_s": 0.5,
            "lr_fit_rows": 600,
        }
    decode = decode_seconds(dataset.items(), size)
    if "extract_ips" in speed:
        # Measured through the pipeline on synthetic photos: add only what this
        # dataset's images cost to decode beyond those.
        extra_decode = max(decode - speed.get("synthetic_decode_s", 0.0), 0.0)
        forward = 1.0 / speed["extract_ips"] + extra_decode
        predicting = 1.0 / speed.get("predict_ips", speed["extract_ips"]) + extra_decode
        full_step = 1.0 / speed["train_pipeline_ips"] + extra_decode
    else:
        forward = 1.0 / speed["forward_ips"] + decode
        predicting = forward
        full_step = 1.0 / speed["train_ips"] + decode
    features = spec.features_at(config.alpha)
    if config.pooling == "flatten":
        side = max(math.ceil(size / 32), 1)
        features *= side * side
    head_params = _head_params(config, features)
    if "head_param_s" in speed:
        head_step = head_params * speed["head_param_s"]
    else:
        head_step = 6.0 * head_params / speed["flops"]
    save_bytes_s = speed.get("save_bytes_s", 2e8)
    per_variable = speed.get("save_variable_s", 0.002)
    model_variables = speed.get("model_variables", 150)
    head_variables = 2 * (len(config.dense_units) + 1)

    def write_s(variables: int, weights: int) -> float:
        return variables * per_variable + 4 * weights / save_bytes_s

    total_params = spec.params_at(config.alpha) + head_params
    parts = {"start (TensorFlow, model)": speed["import_s"] + speed["build_s"] + 1.0}
    compute = 0.0
    for phase in strategies.training_phases(config):
        if phase.head_search:
            pool = n_train + (n_val if n_test else 0)
            extract = 2 * pool * forward
            from tlcore.training import head_search

            fits = (head_search.MAX_FOLDS * len(head_search.C_GRID) + 1) * speed["lr_fit_s"]
            # Calibrated on this backbone's feature width; a fit's time grows with its rows.
            fits *= (2 * pool * (1 - 1 / head_search.MAX_FOLDS)) / speed["lr_fit_rows"]
            parts["features, both views"] = extract
            parts["cross-validated head"] = fits
            compute += extract + fits
        elif strategies.uses_feature_cache(config, phase):
            extract = (n_train + n_val) * forward
            # Each epoch also writes the resume backup: weights and Adam's two slots.
            # fit() runs on the head alone here: its resume backup is the head and its
            # optimizer (two Adam slots per weight).
            backup = write_s(3 * head_variables, 3 * head_params)
            epochs = phase.epochs * (
                n_train * head_step + n_val * head_step / 3 + speed["epoch_overhead_s"] + backup
            )
            parts["features"] = parts.get("features", 0.0) + extract
            parts["head epochs"] = parts.get("head epochs", 0.0) + epochs
            compute += extract + epochs
        else:
            share = 1.0
            if phase.backbone_frozen:
                share = 0.0
            elif phase.name == "fine_tune_top":
                per_block = (
                    phase.unfreeze if phase.unfreeze_unit == "blocks" else phase.unfreeze / 3
                )
                share = min(1.0, per_block / spec.num_blocks)
            step = forward + share * max(full_step - forward, 0.0) + head_step
            backup = write_s(3 * model_variables, 3 * total_params)
            epochs = phase.epochs * (
                n_train * step + n_val * forward + speed["epoch_overhead_s"] + backup
            )
            parts[f"phase {phase.index} epochs"] = epochs
            compute += epochs
    evaluated = n_test + (n_val if not (config.searches_head and n_test) else 0)
    parts["evaluation"] = speed["build_s"] + evaluated * predicting
    saves = (1 + compute / MODEL_SAVE_INTERVAL_S) if not config.searches_head else 1
    one_save = MODEL_SAVE_S + write_s(model_variables, total_params)
    parts["saving the model"] = one_save * min(saves, 1 + config.total_epochs)
    total = sum(parts.values())
    basis = (
        "measured on this machine"
        + f" ({speed.get('forward_ips', 0):.0f} images/s forward, "
        + f"{speed.get('train_ips', 0):.0f} training; within about ±30%)"
        if measured
        else f"{get_backbone(config.backbone).display_name}'s speed measured on 2 CPU "
        "cores elsewhere; rough (±50% or worse) until this machine's speed is measured"
    )
    return {"total_seconds": total, "parts": parts, "measured": measured, "basis": basis}
