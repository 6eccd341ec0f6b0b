"""Exporting a finished run's model: Keras, SavedModel, TFLite (float, int8) and ONNX.

`export_run` writes the chosen formats, then checks each one the way a user would: it
reloads what it wrote with that format's own runtime (Keras, ``tf.saved_model.load``,
the TFLite interpreter, ONNX Runtime) and runs it on sample images of the run's dataset
(held-out images first), comparing with the Keras model: the share of images whose top
class agrees and the largest difference in any probability are recorded per format, with
whether they pass its `AgreementCheck` (float formats: every top class agrees and no
probability differs by more than 0.001; int8: top-1 agreement of at least 95% and no
probability more than 0.15 off).

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

The package, by job:

* `formats`: the one table of formats (`EXPORT_FORMATS`: label, files, writer, checker,
  runtime, input dtype, availability), `FORMATS`, `available_formats`, `check_formats`;
* `writers`: each format's writer and checker, and `inference_model`;
* `model_card`: the card as data and as Markdown (``templates/model_card.md.j2``);
* `bundle`: `export_run`, the bundle's ``usage.py`` (``templates/usage.py.j2``), the zip,
  `list_exports`, `bundle_summary`.

``tlcore_layers.py`` in a bundle is `tlcore.model.tlcore_layers`, copied byte for byte.
"""

from tlcore.serving.export.bundle import (
    SPLIT_PREFERENCE,
    VERIFY_SAMPLES,
    ExportResult,
    Progress,
    bundle_summary,
    export_run,
    list_exports,
    usage_script,
)
from tlcore.serving.export.formats import (
    EXPORT_FORMATS,
    FLOAT_CHECK,
    FORMAT_FILES,
    FORMATS,
    INT8_CHECK,
    AgreementCheck,
    ExportFormat,
    FormatResult,
    available_formats,
    check_formats,
    usage_order,
)
from tlcore.serving.export.model_card import (
    PREPROCESSING_TEXT,
    build_model_card,
    model_card_markdown,
)
from tlcore.serving.export.writers import (
    INPUT_NAME,
    LAYERS_MODULE_FILE,
    ONNX_OPSET,
    REPRESENTATIVE_SAMPLES,
    ExportError,
    custom_layers_source,
    inference_model,
)

__all__ = [
    "EXPORT_FORMATS",
    "FLOAT_CHECK",
    "FORMATS",
    "FORMAT_FILES",
    "INPUT_NAME",
    "INT8_CHECK",
    "LAYERS_MODULE_FILE",
    "ONNX_OPSET",
    "PREPROCESSING_TEXT",
    "REPRESENTATIVE_SAMPLES",
    "SPLIT_PREFERENCE",
    "VERIFY_SAMPLES",
    "AgreementCheck",
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "FormatResult",
    "Progress",
    "available_formats",
    "build_model_card",
    "bundle_summary",
    "check_formats",
    "custom_layers_source",
    "export_run",
    "inference_model",
    "list_exports",
    "model_card_markdown",
    "usage_order",
    "usage_script",
]
