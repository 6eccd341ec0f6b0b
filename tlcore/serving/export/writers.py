"""One writer and one checker per format (the rows of `tlcore.serving.export.formats`).

A writer writes its format's files into the bundle folder; the checker then reloads the
main file with that format's own runtime and returns its class probabilities for sample
images, to compare with the Keras model. Writers take ``(job, fmt)``, checkers
``(path, x)``: ``fmt`` is the format's row, ``path`` its main file, ``x`` the images.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from tlcore.model import model_store


class ExportFormat(Protocol):
    """What a writer needs of its row in `formats.EXPORT_FORMATS` (the table imports the
    writers, so they name only these facts, not the table's class)."""

    main_file: str
    input_dtype: str


INPUT_NAME = "image"
ONNX_OPSET = 17
REPRESENTATIVE_SAMPLES = 100
BATCH = 32  # images per call when a checker runs the sample images
LAYERS_MODULE_FILE = "tlcore_layers.py"  # shipped with model.keras, byte for byte
LAYERS_MODULE_PACKAGE = "tlcore.model"  # where the studio keeps that same file


class ExportError(RuntimeError):
    """An export could not be made; the message says why and what to do."""


@dataclass
class ExportJob:
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


def spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when fewer)."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


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
        POOLING_NAME,
        PREPROCESS_NAME,
    )
    from tlcore.model.models import INPUT_NAME as MODEL_INPUT_NAME

    if AUGMENTATION_NAME not in {layer.name for layer in model.layers}:
        return model
    inputs = keras.Input(model.input.shape[1:], name=MODEL_INPUT_NAME, dtype="float32")
    x = model.get_layer(PREPROCESS_NAME)(inputs)
    x = model.get_layer(BACKBONE_NAME)(x)
    x = model.get_layer(POOLING_NAME)(x)
    return keras.Model(inputs, model.get_layer(HEAD_NAME)(x), name=model.name)


def inference_function(model, size: int):
    """``model`` as a ``tf.function`` on a batch of ``size``×``size`` RGB float32 images."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        return model(image, training=False)

    return serve


def keras_probabilities(model, x: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities for ``x``, the reference every format is compared to."""
    import tensorflow as tf

    fn = inference_function(model, x.shape[1])
    return np.concatenate(
        [fn(tf.constant(x[i : i + BATCH])).numpy() for i in range(0, len(x), BATCH)], axis=0
    )


def custom_layers_source() -> str:
    """The source of ``tlcore_layers.py``: our models' two layers (`Preprocess`,
    `FeaturePooling`), registered under their saved names, for loading ``model.keras``
    without this package. It is `tlcore.model.tlcore_layers`, the very file the studio
    builds its models with."""
    return _layers_module().read_text(encoding="utf-8")


def _layers_module():
    return resources.files(LAYERS_MODULE_PACKAGE).joinpath(LAYERS_MODULE_FILE)


def onnx_unavailable() -> str | None:
    """Why ONNX cannot be exported here (its packages are missing); None: it can."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        return (
            f"ONNX export needs the packages tf2onnx and onnxruntime ({exc}); install them "
            "into the studio's environment (see requirements.txt)."
        )
    return None


# -- Keras: the run's own file, byte for byte, and the layers module ---------------------------
def write_keras(job: ExportJob, fmt: ExportFormat) -> None:
    data = model_store.verified_model_bytes(job.run_dir)  # not a re-save
    if model_store.sha256_bytes(data) != job.model_sha256:
        raise ExportError("The model file changed during the export; export again.")
    (job.folder / fmt.main_file).write_bytes(data)
    (job.folder / LAYERS_MODULE_FILE).write_bytes(_layers_module().read_bytes())


def check_keras(path: Path, x: np.ndarray) -> np.ndarray:
    from tlcore.model import models

    return keras_probabilities(models.load_model(path), x)


# -- SavedModel ---------------------------------------------------------------------------------
def write_savedmodel(job: ExportJob, fmt: ExportFormat) -> None:
    shutil.copytree(job.saved_model(), job.folder / fmt.main_file)


def check_savedmodel(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    reloaded = tf.saved_model.load(str(path))
    return np.concatenate(
        [reloaded.serve(tf.constant(x[i : i + BATCH])).numpy() for i in range(0, len(x), BATCH)]
    )


# -- TensorFlow Lite, float and int8 ------------------------------------------------------------
def _tflite_converter(job: ExportJob):
    import tensorflow as tf

    # From the SavedModel: converting a concrete function directly leaves variable reads
    # in the graph that the int8 calibration cannot run.
    return tf.lite.TFLiteConverter.from_saved_model(str(job.saved_model()))


def write_tflite(job: ExportJob, fmt: ExportFormat) -> None:
    (job.folder / fmt.main_file).write_bytes(_tflite_converter(job).convert())


def _representative_images(dataset, size: int) -> np.ndarray:
    from tlcore.data import pipeline

    items = dataset.items("train") if dataset is not None else []
    if not items:
        raise ExportError(
            "int8 quantization is calibrated on images of the run's training split, and the "
            "run's dataset is not in this workspace. Import it again (same images), or "
            "choose the float TFLite format."
        )
    x = pipeline.load_images_array(spread(items, REPRESENTATIVE_SAMPLES), size)
    # A black and a white image pin the input range to exactly 0..255 (scale 1, zero 0).
    extremes = np.stack([np.zeros((size, size, 3)), np.full((size, size, 3), 255.0)])
    return np.concatenate([x, extremes.astype(np.float32)])


def write_tflite_int8(job: ExportJob, fmt: ExportFormat) -> None:
    import tensorflow as tf

    calibration = _representative_images(job.dataset, job.size)
    converter = _tflite_converter(job)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.as_dtype(fmt.input_dtype)  # uint8: the raw pixels
    converter.inference_output_type = tf.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (job.folder / fmt.main_file).write_bytes(converter.convert())


def check_tflite(path: Path, x: np.ndarray) -> np.ndarray:
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


# -- ONNX ---------------------------------------------------------------------------------------
def write_onnx(job: ExportJob, fmt: ExportFormat) -> None:
    import tensorflow as tf
    import tf2onnx

    size = job.size
    serve = inference_function(inference_model(job.model), size)
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)
    tf2onnx.convert.from_function(
        serve, input_signature=spec, opset=ONNX_OPSET, output_path=str(job.folder / fmt.main_file)
    )


def check_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
    )
