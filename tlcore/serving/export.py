"""Exporting a finished run's model: Keras, SavedModel, TFLite (float, int8) and ONNX.

`export_run` writes the chosen formats, then checks each one the way a user would: it
reloads what it wrote with that format's own runtime (Keras, ``tf.saved_model.load``,
the TFLite interpreter, ONNX Runtime) and runs it on sample images of the run's dataset
(held-out images first), comparing with the Keras model: the share of images whose top
class agrees and the largest difference in any probability are recorded per format.

Everything goes into one zip, written atomically into ``<run>/exports/``::

    <run_id>-export/
      model_card.md  model_card.json   what the model is, how it was trained, its numbers
      usage.py                         classify an image with any of the included formats
      labels.txt  classes.json         class names in output order
      model.keras  tlcore_layers.py    Keras; the module defines the model's two own layers
      saved_model/                     TensorFlow SavedModel (signature ``serve``)
      model.tflite                     TensorFlow Lite, float32 input and output
      model_int8.tflite                TensorFlow Lite, int8 weights and activations:
                                       uint8 input (the raw pixels), float32 output
      model.onnx                       ONNX (tf2onnx), input ``image``

Every format takes raw RGB pixels 0–255 resized to S×S (float32, NHWC); the backbone's
preprocessing is inside the model. int8 is calibrated on images of the run's training
split (plus one black and one white image, so that the uint8 input holds raw pixels
exactly: scale 1, zero point 0).
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tlcore.evaluation import stats
from tlcore.fileio import StorageError, atomic_write_json, atomic_write_text, read_json
from tlcore.model import model_store
from tlcore.store import runs
from tlcore.store.run_layout import CLASSES_FILE, EXPORTS_DIR
from tlcore.store.workspace import Workspace

FORMATS = {
    "keras": "Keras (.keras)",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TensorFlow Lite (float32)",
    "tflite-int8": "TensorFlow Lite (int8)",
    "onnx": "ONNX",
}
FORMAT_FILES = {
    "keras": ("model.keras", "tlcore_layers.py"),
    "savedmodel": ("saved_model",),
    "tflite": ("model.tflite",),
    "tflite-int8": ("model_int8.tflite",),
    "onnx": ("model.onnx",),
}
VERIFY_SAMPLES = 32
REPRESENTATIVE_SAMPLES = 100
ONNX_OPSET = 17
INPUT_NAME = "image"
SPLIT_PREFERENCE = ("test", "val", "train")
PREPROCESSING_TEXT = "raw RGB 0–255, resized to {s}×{s}; preprocessing is inside the model"

Progress = Callable[[float, str], None]


class ExportError(RuntimeError):
    """An export could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class FormatResult:
    """One exported format and how well it agrees with the Keras model.

    Attributes:
        format: a key of `FORMATS`.
        label: its name for people.
        files: paths inside the bundle folder.
        size_bytes: their total size.
        seconds: time to convert and check it.
        agreement: ``{"samples", "top1_match_rate", "max_abs_prob_diff",
            "mean_abs_prob_diff"}`` against the Keras model on the same images.
        error: why the format could not be made (then nothing else is set).
    """

    format: str
    label: str
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0
    agreement: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ExportResult:
    """What `export_run` made: the bundle zip, each format's result and the model card."""

    bundle: Path
    formats: list[FormatResult]
    card: dict
    samples_from: str

    @property
    def failed(self) -> list[FormatResult]:
        return [r for r in self.formats if not r.ok]


def available_formats() -> dict[str, str | None]:
    """Each format and why it cannot be made here (None: it can)."""
    reasons: dict[str, str | None] = dict.fromkeys(FORMATS)
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        reasons["onnx"] = (
            f"ONNX export needs the packages tf2onnx and onnxruntime ({exc}); install them "
            "into the studio's environment (see requirements.txt)."
        )
    return reasons


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats asked for, validated and de-duplicated in `FORMATS` order.

    Raises:
        ValueError: none given, or an unknown format (quoting it).
    """
    chosen = list(formats)
    if not chosen:
        raise ValueError(f"Choose at least one format: {', '.join(FORMATS)}.")
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"format must be one of {', '.join(FORMATS)}. Received: format={unknown[0]!r}"
        )
    return [f for f in FORMATS if f in chosen]


def list_exports(run_dir: str | os.PathLike) -> list[Path]:
    """The export bundles of a run, newest first."""
    folder = Path(run_dir) / EXPORTS_DIR
    if not folder.is_dir():
        return []
    bundles = [p for p in folder.glob("*.zip") if not p.name.startswith(".")]
    return sorted(bundles, key=lambda p: p.name, reverse=True)


# -- the export -------------------------------------------------------------------------------
def export_run(
    ws: Workspace,
    run_id: str,
    formats: Sequence[str],
    *,
    out_dir: str | os.PathLike | None = None,
    samples: int = VERIFY_SAMPLES,
    progress: Progress | None = None,
) -> ExportResult:
    """Exports a finished run's model in ``formats``, checks each and bundles them.

    Args:
        ws: the workspace.
        run_id: a finished run.
        formats: keys of `FORMATS` (``keras``, ``savedmodel``, ``tflite``,
            ``tflite-int8``, ``onnx``).
        out_dir: the folder for the bundle; default ``<run>/exports/``.
        samples: images to compare each format with the Keras model on (default 32).
        progress: called as ``progress(fraction, message)``.

    Returns:
        An `ExportResult`; formats that could not be made carry an ``error`` and are
        left out of the bundle.

    Raises:
        ValueError: an unknown format.
        tlcore.model.model_store.ModelLoadError: the run is not finished or its model cannot
            be loaded (`ModelIntegrityError`: changed after training).
        ExportError: no format could be made.
        StorageError: the bundle could not be written.
    """
    chosen = check_formats(formats)
    report = progress or (lambda fraction, message: None)
    report(0.0, "Loading and checking the model")
    record = runs.read_run(ws, run_id)
    loaded = model_store.load_run_model(ws, run_id)
    model = loaded.model
    classes = model_store.run_classes(record.dir)
    size = int(model.input_shape[1])
    target_dir = Path(out_dir).expanduser() if out_dir else record.dir / EXPORTS_DIR
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"Could not create {target_dir}: {exc.strerror or exc}."
        ) from exc

    report(0.05, "Loading sample images")
    dataset = _run_dataset(ws, record)
    x, samples_from = _sample_images(dataset, size, samples, record.config.seed)
    reference = _keras_probabilities(model, x)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    bundle_name = f"{run_id}-export"
    staging = target_dir / f".staging-{stamp}-{secrets.token_hex(3)}"
    folder = staging / bundle_name
    folder.mkdir(parents=True)
    job = _Job(
        model=model,
        model_sha256=loaded.sha256,
        run_dir=record.dir,
        folder=folder,
        scratch=staging / "scratch",
        x=x,
        dataset=dataset,
        size=size,
    )
    job.scratch.mkdir()
    results: list[FormatResult] = []
    try:
        span = 0.8 / len(chosen)
        for i, fmt in enumerate(chosen):
            report(0.1 + i * span, f"Exporting {FORMATS[fmt]} and checking it")
            results.append(_export_one(fmt, job, reference))
        made = [r for r in results if r.ok]
        if not made:
            reasons = " ".join(f"{r.label}: {r.error}" for r in results)
            raise ExportError(f"No format could be exported. {reasons}")
        report(0.9, "Writing the model card and the bundle")
        card = _model_card(ws, record, classes, size, loaded.sha256, results, samples_from)
        _write_bundle_texts(folder, card, classes, size, [r.format for r in made], run_id)
        bundle = target_dir / f"{run_id}_export_{stamp}.zip"
        _zip_atomically(folder, bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(1.0, "Done")
    return ExportResult(bundle=bundle, formats=results, card=card, samples_from=samples_from)


def _run_dataset(ws: Workspace, record: runs.RunRecord):
    from tlcore.data import datasets

    try:
        info = read_json(record.dir / CLASSES_FILE)
    except (OSError, ValueError):
        info = {}
    for ref in (info.get("dataset_id"), record.config.dataset):
        if not ref:
            continue
        try:
            return datasets.load_dataset(ws, ref)
        except (datasets.DatasetError, ValueError, OSError):
            continue
    return None


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when fewer)."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def _sample_images(dataset, size: int, count: int, seed: int) -> tuple[np.ndarray, str]:
    """Images to compare formats on: held-out images of the run's dataset if it is here."""
    from tlcore.data import images, pipeline

    if dataset is not None:
        for split in SPLIT_PREFERENCE:
            items = dataset.items(split)
            if items:
                try:
                    x = pipeline.load_images_array(_spread(items, count), size)
                except images.ImageError:
                    break
                return x, f"{len(x)} images of the {split} split of dataset {dataset.name!r}"
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    return x, f"{count} random images (the run's dataset is not in this workspace)"


def _keras_probabilities(model, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    fn = _inference_function(model, x.shape[1])
    return np.concatenate(
        [fn(tf.constant(x[i : i + 32])).numpy() for i in range(0, len(x), 32)], axis=0
    )


def _inference_function(model, size: int):
    import tensorflow as tf

    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        return model(image, training=False)

    return serve


def _agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    probs = np.asarray(probs, dtype=np.float32)
    diff = np.abs(probs - reference)
    return {
        "samples": len(reference),
        "top1_match_rate": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
    }


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _export_one(fmt: str, job: _Job, reference: np.ndarray) -> FormatResult:
    started = time.perf_counter()
    folder = job.folder
    try:
        probs = _WRITERS[fmt](job)
    except Exception as exc:  # one format failing must not lose the others
        return FormatResult(
            format=fmt,
            label=FORMATS[fmt],
            seconds=round(time.perf_counter() - started, 2),
            error=_format_error(fmt, exc),
        )
    files = [name for name in FORMAT_FILES[fmt] if (folder / name).exists()]
    return FormatResult(
        format=fmt,
        label=FORMATS[fmt],
        files=files,
        size_bytes=sum(_size_of(folder / name) for name in files),
        seconds=round(time.perf_counter() - started, 2),
        agreement=_agreement(reference, probs),
    )


def _format_error(fmt: str, exc: Exception) -> str:
    if isinstance(exc, ExportError):
        return str(exc)
    text = str(exc).strip().splitlines()
    detail = text[0][:300] if text else type(exc).__name__
    return f"{FORMATS[fmt]} export failed ({type(exc).__name__}: {detail})."


# -- one writer per format: each writes its files, reloads them and returns probabilities ------
@dataclass
class _Job:
    """What every format writer of one export shares."""

    model: object
    model_sha256: str
    run_dir: Path
    folder: Path  # the bundle folder being filled
    scratch: Path  # intermediate files, not bundled
    x: np.ndarray  # sample images to compare on
    dataset: object
    size: int

    def saved_model(self) -> Path:
        """A SavedModel of the model for inference, exported once per export."""
        target = self.scratch / "saved_model"
        if not target.exists():
            inference_model(self.model).export(str(target), format="tf_saved_model", verbose=False)
        return target


def inference_model(model):
    """``model`` without its augmentation layers (the same layers and weights otherwise).

    ``Model.export`` traces the model in a way that leaves Keras 3's random augmentation
    layers active (a SavedModel of a model with augmentation agreed with it on half the
    images, and TFLite could not convert the random ops), so exports start from the
    inference path only: image → preprocess → backbone → pooling → head.
    """
    import keras

    from tlcore.model.models import (
        AUGMENTATION_NAME,
        BACKBONE_NAME,
        HEAD_NAME,
        INPUT_NAME,
        POOLING_NAME,
        PREPROCESS_NAME,
    )

    if AUGMENTATION_NAME not in {layer.name for layer in model.layers}:
        return model
    inputs = keras.Input(model.input.shape[1:], name=INPUT_NAME, dtype="float32")
    x = model.get_layer(PREPROCESS_NAME)(inputs)
    x = model.get_layer(BACKBONE_NAME)(x)
    x = model.get_layer(POOLING_NAME)(x)
    return keras.Model(inputs, model.get_layer(HEAD_NAME)(x), name=model.name)


def _write_keras(job: _Job) -> np.ndarray:
    from tlcore.model import models

    # The run's own verified file, byte for byte (not a re-save).
    data = model_store.verified_model_bytes(job.run_dir)
    if model_store.sha256_bytes(data) != job.model_sha256:
        raise ExportError("The model file changed during the export; export again.")
    target = job.folder / "model.keras"
    target.write_bytes(data)
    (job.folder / "tlcore_layers.py").write_text(custom_layers_source(), encoding="utf-8")
    reloaded = models.load_model(target)
    return _keras_probabilities(reloaded, job.x)


def _write_savedmodel(job: _Job) -> np.ndarray:
    import tensorflow as tf

    target = job.folder / "saved_model"
    shutil.copytree(job.saved_model(), target)
    reloaded = tf.saved_model.load(str(target))
    x = job.x
    return np.concatenate(
        [reloaded.serve(tf.constant(x[i : i + 32])).numpy() for i in range(0, len(x), 32)]
    )


def _tflite_converter(job: _Job):
    import tensorflow as tf

    # From the SavedModel: converting a concrete function directly leaves variable reads
    # in the graph that the int8 calibration cannot run.
    return tf.lite.TFLiteConverter.from_saved_model(str(job.saved_model()))


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for image in x:
        batch = image[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            batch = np.clip(np.rint(batch / scale + zero), info.min, info.max)
            batch = batch.astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        rows.append(np.asarray(interpreter.get_tensor(out["index"]), dtype=np.float32)[0])
    return np.stack(rows)


def _write_tflite(job: _Job) -> np.ndarray:
    converter = _tflite_converter(job)
    target = job.folder / "model.tflite"
    target.write_bytes(converter.convert())
    return _run_tflite(target, job.x)


def _representative_images(dataset, size: int) -> np.ndarray:
    from tlcore.data import pipeline

    items = dataset.items("train") if dataset is not None else []
    if not items:
        raise ExportError(
            "int8 quantization is calibrated on images of the run's training split, and the "
            "run's dataset is not in this workspace. Import it again (same images), or "
            "choose the float TFLite format."
        )
    x = pipeline.load_images_array(_spread(items, REPRESENTATIVE_SAMPLES), size)
    # A black and a white image pin the input range to exactly 0..255 (scale 1, zero 0).
    extremes = np.stack([np.zeros((size, size, 3)), np.full((size, size, 3), 255.0)])
    return np.concatenate([x, extremes.astype(np.float32)])


def _write_tflite_int8(job: _Job) -> np.ndarray:
    import tensorflow as tf

    calibration = _representative_images(job.dataset, job.size)
    converter = _tflite_converter(job)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    target = job.folder / "model_int8.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target.write_bytes(converter.convert())
    return _run_tflite(target, job.x)


def _write_onnx(job: _Job) -> np.ndarray:
    reason = available_formats()["onnx"]
    if reason:
        raise ExportError(reason)
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    size, x = job.size, job.x
    serve = _inference_function(inference_model(job.model), size)
    target = job.folder / "model.onnx"
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)
    tf2onnx.convert.from_function(
        serve, input_signature=spec, opset=ONNX_OPSET, output_path=str(target)
    )
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x[i : i + 32]})[0] for i in range(0, len(x), 32)]
    )


_WRITERS = {
    "keras": _write_keras,
    "savedmodel": _write_savedmodel,
    "tflite": _write_tflite,
    "tflite-int8": _write_tflite_int8,
    "onnx": _write_onnx,
}


# -- model card, usage and the zip ------------------------------------------------------------
def _software() -> dict:
    import keras
    import tensorflow as tf

    from tlcore import __version__

    versions = {"tlcore": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import tf2onnx

        versions["tf2onnx"] = tf2onnx.__version__
    except ImportError:
        pass
    return versions


def _weights_origin(weights: str) -> str:
    kind, _, ref = weights.partition(":")
    return {
        "imagenet": "ImageNet (Keras applications)",
        "none": "none (random initialisation)",
        "file": f"weights file {Path(ref).name}",
        "run": f"the backbone of run {ref}",
    }.get(kind, weights)


def _model_card(
    ws: Workspace,
    record: runs.RunRecord,
    classes: list[str],
    size: int,
    model_sha256: str,
    results: list[FormatResult],
    samples_from: str,
) -> dict:
    from tlcore.model.models import training_phases
    from tlcore.model.registry import get_backbone

    config = record.config
    spec = get_backbone(config.backbone)
    try:
        info = read_json(record.dir / CLASSES_FILE)
    except (OSError, ValueError):
        info = {}
    backbone = {"name": spec.name, "display_name": spec.display_name}
    if spec.has_alpha:
        backbone["alpha"] = float(config.alpha)
    return {
        "run_id": record.id,
        "name": config.name or f"{config.backbone} on {config.dataset}",
        "exported_at": runs.now_iso(),
        "classes": classes,
        "num_classes": len(classes),
        "backbone": backbone,
        "weights_origin": _weights_origin(config.weights),
        "strategy": config.strategy,
        "phases": [p.description for p in training_phases(config)],
        "dataset": {
            "name": config.dataset,
            "id": info.get("dataset_id"),
            "content_hash": info.get("dataset_hash"),
        },
        "metrics": runs.read_metrics(record.dir),
        "input": {
            "shape": [None, size, size, 3],
            "dtype": "float32 (uint8 for the int8 TFLite model)",
            "layout": "NHWC, RGB",
            "preprocessing": PREPROCESSING_TEXT.format(s=size),
            "resize": "bilinear, whole image squeezed into the square (aspect ratio not kept)",
        },
        "output": "probabilities (softmax), one per class in the order of 'classes'",
        "model_sha256": model_sha256,
        "agreement_measured_on": samples_from,
        "formats": [asdict(r) for r in results],
        "software": _software(),
        "config": config.to_dict(),
    }


def _kept_text(metrics: dict) -> str:
    search = metrics.get("head_search")
    if search:
        return f"head chosen by cross-validation ({search.get('description', '')})"
    epoch = metrics.get("kept_epoch")
    return f"epoch {epoch} of {metrics.get('epochs_completed', '?')}" if epoch else "–"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _model_card_markdown(card: dict) -> str:
    size = card["input"]["shape"][1]
    backbone = card["backbone"]["display_name"]
    if "alpha" in card["backbone"]:
        backbone += f" (alpha {card['backbone']['alpha']})"
    metrics = card["metrics"] or {}
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"Exported by Transfer Learning Studio from run `{card['run_id']}` on "
        f"{card['exported_at']}.",
        "",
        "## What it is",
        "",
        "| | |",
        "| --- | --- |",
        f"| Task | image classification into {card['num_classes']} classes |",
        f"| Classes | {', '.join(card['classes'])} |",
        f"| Backbone | {backbone} |",
        f"| Starting weights | {card['weights_origin']} |",
        f"| Strategy | {card['strategy']} ({'; '.join(card['phases'])}) |",
        f"| Dataset | {card['dataset']['name']} (id `{card['dataset']['id']}`, content hash "
        f"`{(card['dataset']['content_hash'] or '')[:16]}`) |",
        f"| Input | {size}×{size}×3, {card['input']['preprocessing']} |",
        f"| Output | {card['output']} |",
        f"| Model file SHA-256 | `{card['model_sha256']}` |",
        "",
        "## How well it did",
        "",
        "The figures are the kept model's: "
        f"{metrics.get('keep_rule') or 'the model saved at the end of training'}.",
        "",
        "| Metric | Value |",
        "| --- | --- |",
        f"| Kept model | {_kept_text(metrics)} |",
        f"| Validation accuracy ({metrics.get('validation_method') or 'validation split'}) | "
        f"{stats.format_accuracy(metrics.get('val_accuracy'), metrics.get('val_samples'))} |",
        f"| Test accuracy (held out) | "
        f"{stats.format_accuracy(metrics.get('test_accuracy'), metrics.get('test_samples'))} |",
        f"| Training accuracy | {_pct(metrics.get('accuracy'))} |",
        f"| Epochs | {metrics.get('epochs_completed', '–')} |",
        "",
        "## Formats in this bundle",
        "",
        f"Each format was reloaded with its own runtime and compared with the Keras model on "
        f"{card['agreement_measured_on']}.",
        "",
        "| Format | Files | Top-1 agreement | Max. probability difference |",
        "| --- | --- | --- | --- |",
    ]
    for fmt in card["formats"]:
        if fmt["error"]:
            lines.append(f"| {fmt['label']} | not exported: {fmt['error']} | | |")
            continue
        agreement = fmt["agreement"]
        lines.append(
            f"| {fmt['label']} | {', '.join(f'`{f}`' for f in fmt['files'])} | "
            f"{_pct(agreement['top1_match_rate'])} | {agreement['max_abs_prob_diff']:.2g} |"
        )
    lines += [
        "",
        "## How to use it",
        "",
        f"Feed RGB pixels 0–255 (not scaled, not normalised) resized to {size}×{size}; the "
        "model does its own preprocessing. `python usage.py IMAGE` classifies an image with "
        "the first format available; `--format` picks one. The int8 TFLite model takes the "
        "same pixels as uint8. `model.keras` needs `tlcore_layers.py` imported first (it "
        "defines the model's two own layers); the other formats need nothing extra.",
        "",
        "## Limits",
        "",
        "The model knows only the classes above and always answers one of them. Its accuracy "
        "was measured on images like those it was trained on; check it on your own images "
        "before relying on it.",
        "",
    ]
    return "\n".join(lines)


USAGE_TEMPLATE = '''"""Classify an image: python usage.py IMAGE [--format FORMAT] [--top-k K]

Exported by Transfer Learning Studio from run {run_id}. Every format takes raw RGB pixels
0-255 resized to {size}x{size} (the preprocessing is inside the model) and returns one
probability per class.
"""

import argparse
import pathlib

import numpy as np
from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
SIZE = {size}
CLASSES = (HERE / "labels.txt").read_text(encoding="utf-8").splitlines()
FORMATS = {formats!r}  # in this bundle, in order of preference


def load_image(path):
    """The image as the model takes it: upright RGB, transparency on white, SIZE x SIZE."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    image = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)[None]  # (1, SIZE, SIZE, 3)


def predict_tflite(x, file="model.tflite"):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(HERE / file))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    if inp["dtype"] == np.uint8:  # the int8 model takes the pixels as uint8
        scale, zero = inp["quantization"]
        x = np.clip(np.rint(x / scale + zero), 0, 255).astype(np.uint8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def predict_onnx(x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {{session.get_inputs()[0].name: x}})[0][0]


def predict_savedmodel(x):
    import tensorflow as tf

    return tf.saved_model.load(str(HERE / "saved_model")).serve(tf.constant(x)).numpy()[0]


def predict_keras(x):
    import keras

    import tlcore_layers  # noqa: F401  (registers the model's two own layers)

    model = keras.saving.load_model(HERE / "model.keras", compile=False)
    return np.asarray(model(x, training=False))[0]


RUNNERS = {{
    "tflite": predict_tflite,
    "tflite-int8": lambda x: predict_tflite(x, "model_int8.tflite"),
    "onnx": predict_onnx,
    "savedmodel": predict_savedmodel,
    "keras": predict_keras,
}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0])
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()
    probabilities = RUNNERS[args.format](load_image(args.image))
    for index in np.argsort(-probabilities)[: args.top_k]:
        print(f"{{CLASSES[index]}}\\t{{probabilities[index]:.4f}}")


if __name__ == "__main__":
    main()
'''

USAGE_ORDER = ("tflite", "onnx", "savedmodel", "keras", "tflite-int8")


def custom_layers_source() -> str:
    """Python source defining the two custom layers of our models (`Preprocess`,
    `FeaturePooling`), registered under the same names, for loading ``model.keras``
    without this package."""
    from tlcore.model import backbones

    constants = (
        "PREPROCESS_MODES",
        "IMAGENET_MEAN_RGB",
        "IMAGENET_STD_RGB",
        "CAFFE_MEAN_BGR",
        "POOLING_MODES",
    )
    parts = [
        '"""The two layers of Transfer Learning Studio models. Import this module before\n'
        'keras.saving.load_model("model.keras"); it registers them under their saved names."""',
        "",
        "import math",
        "",
        "import keras",
        "from keras import layers, ops",
        "",
        *(f"{name} = {getattr(backbones, name)!r}" for name in constants),
        "",
        "",
        inspect.getsource(backbones.Preprocess),
        "",
        inspect.getsource(backbones.FeaturePooling),
    ]
    return "\n".join(parts)


def _write_bundle_texts(
    folder: Path, card: dict, classes: list[str], size: int, formats: list[str], run_id: str
) -> None:
    atomic_write_json(folder / "model_card.json", card)
    atomic_write_text(folder / "model_card.md", _model_card_markdown(card))
    atomic_write_json(folder / "classes.json", {"classes": classes})
    atomic_write_text(folder / "labels.txt", "\n".join(classes) + "\n")
    ordered = [f for f in USAGE_ORDER if f in formats]
    atomic_write_text(
        folder / "usage.py", USAGE_TEMPLATE.format(run_id=run_id, size=size, formats=ordered)
    )


def _zip_atomically(folder: Path, bundle: Path) -> None:
    """Zips ``folder`` (as the archive's one top folder) into ``bundle``, atomically."""
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder.parent).as_posix())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, bundle)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"Could not write the export bundle {bundle}: {exc.strerror or exc}."
        ) from exc
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def bundle_summary(bundle: str | os.PathLike) -> dict:
    """The model card inside an export bundle (for listing earlier exports); {} if none."""
    try:
        with zipfile.ZipFile(bundle) as archive:
            names = [n for n in archive.namelist() if n.endswith("/model_card.json")]
            return json.loads(archive.read(names[0])) if names else {}
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
