"""The export formats, in one table: `EXPORT_FORMATS`.

Each row says everything the package knows about a format: its name for people, the
files it puts into the bundle (main file first), the function that writes them, the
one that reloads the main file with the format's own runtime to check it, what that
runtime is, the input dtype the exported model takes, whether it can be made here, and
its place in the bundle's ``usage.py``. `FORMATS`, `FORMAT_FILES` and
`available_formats` are read off the table; the writers live in
`tlcore.serving.export.writers`. The names of the bundle's other files are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.serving.export import writers
from tlcore.serving.export.writers import LAYERS_MODULE_FILE, ExportJob

# The bundle's files besides the formats' own.
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MARKDOWN = "model_card.md"
USAGE_FILE = "usage.py"
LABELS_FILE = "labels.txt"
CLASSES_JSON = "classes.json"


def _available() -> str | None:
    return None


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        key: its name in the API and on the command line (``--format``).
        label: its name for people.
        files: what it puts into the bundle folder, its main file first.
        writer: ``writer(job, fmt)`` writes ``files`` into ``job.folder``.
        checker: ``checker(main_file, x)`` reloads the main file with `runtime` and
            returns its probabilities for the images ``x`` (float32 pixels 0–255).
        runtime: what `checker` reloads it with, for people.
        input_dtype: the dtype of the exported model's input (default ``"float32"``).
        unavailable: why it cannot be made here (missing packages); None: it can.
        usage_preference: its place among the bundle's formats in ``usage.py``, whose
            default is the first one in the bundle (lower first).
    """

    key: str
    label: str
    files: tuple[str, ...]
    writer: Callable[[ExportJob, ExportFormat], None]
    checker: Callable[[Path, np.ndarray], np.ndarray]
    runtime: str
    input_dtype: str = "float32"
    unavailable: Callable[[], str | None] = _available
    usage_preference: int = 0

    @property
    def main_file(self) -> str:
        return self.files[0]


EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.key: f
    for f in (
        ExportFormat(
            key="keras",
            label="Keras (.keras)",
            files=("model.keras", LAYERS_MODULE_FILE),
            writer=writers.write_keras,
            checker=writers.check_keras,
            runtime="Keras (keras.saving.load_model, safe mode)",
            usage_preference=3,
        ),
        ExportFormat(
            key="savedmodel",
            label="TensorFlow SavedModel",
            files=("saved_model",),
            writer=writers.write_savedmodel,
            checker=writers.check_savedmodel,
            runtime="TensorFlow (tf.saved_model.load)",
            usage_preference=2,
        ),
        ExportFormat(
            key="tflite",
            label="TensorFlow Lite (float32)",
            files=("model.tflite",),
            writer=writers.write_tflite,
            checker=writers.check_tflite,
            runtime="TensorFlow Lite interpreter (tf.lite)",
            usage_preference=0,
        ),
        ExportFormat(
            key="tflite-int8",
            label="TensorFlow Lite (int8)",
            files=("model_int8.tflite",),
            writer=writers.write_tflite_int8,
            checker=writers.check_tflite,
            runtime="TensorFlow Lite interpreter (tf.lite)",
            input_dtype="uint8",
            usage_preference=4,
        ),
        ExportFormat(
            key="onnx",
            label="ONNX",
            files=("model.onnx",),
            writer=writers.write_onnx,
            checker=writers.check_onnx,
            runtime="ONNX Runtime (CPU)",
            unavailable=writers.onnx_unavailable,
            usage_preference=1,
        ),
    )
}
"""Every format the studio exports, by key, in the order bundles and pages list them."""

FORMATS: dict[str, str] = {key: f.label for key, f in EXPORT_FORMATS.items()}
"""Each format's key and its label (read off `EXPORT_FORMATS`)."""
FORMAT_FILES: dict[str, tuple[str, ...]] = {key: f.files for key, f in EXPORT_FORMATS.items()}
"""Each format's files in the bundle (read off `EXPORT_FORMATS`)."""


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
        runtime: what it was reloaded and checked with.
    """

    format: str
    label: str
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0
    agreement: dict = field(default_factory=dict)
    error: str | None = None
    runtime: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def available_formats() -> dict[str, str | None]:
    """Each format and why it cannot be made here (None: it can)."""
    return {key: f.unavailable() for key, f in EXPORT_FORMATS.items()}


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


def usage_order(formats: Sequence[str]) -> list[str]:
    """``formats`` in the order ``usage.py`` prefers them (its default first)."""
    return sorted(formats, key=lambda key: EXPORT_FORMATS[key].usage_preference)
