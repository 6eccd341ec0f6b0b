"""The export formats, in one table: `EXPORT_FORMATS`.

Each row says everything the package knows about a format: its name for people, the
files it puts into the bundle (main file first), the function that writes them, the
one that reloads the main file with the format's own runtime to check it, what that
runtime is, the input dtype the exported model takes, what agreement with the Keras model
it must reach to pass its check (`AgreementCheck`), whether it can be made here, and its
place in the bundle's ``usage.py``. `FORMATS`, `FORMAT_FILES` and
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
class AgreementCheck:
    """What a format must reach against the Keras model, on the same sample images, to pass.

    Both must hold: the format's top class is the Keras model's on at least ``min_top1`` of
    the images, AND no probability of any class on any image differs by more than
    ``max_prob_diff``.

    Attributes:
        min_top1: the least share of images whose top class agrees (0–1).
        max_prob_diff: the largest absolute difference allowed in any probability.
        why: the reason for these values, for people.
    """

    min_top1: float
    max_prob_diff: float
    why: str

    def passes(self, top1_match_rate: float, max_abs_prob_diff: float) -> bool:
        return top1_match_rate >= self.min_top1 and max_abs_prob_diff <= self.max_prob_diff

    @property
    def rule(self) -> str:
        """The rule in words: "top-1 agreement ≥ 95% and max. probability difference ≤ 0.15"."""
        top1 = (
            "the same top class on every image"
            if self.min_top1 >= 1
            else f"top-1 agreement ≥ {self.min_top1:.0%}"
        )
        return f"{top1} and max. probability difference ≤ {self.max_prob_diff:g}"


# A float export computes what the Keras model computes, in float32: only the order of
# rounding differs (measured: under 1e-5), so every top class must agree and a difference
# of 0.001 already means a different computation (a layer missing, other preprocessing).
FLOAT_CHECK = AgreementCheck(
    min_top1=1.0,
    max_prob_diff=1e-3,
    why="the same float32 computation: only rounding may differ",
)
# int8 rounds weights and activations to 256 levels. Post-training quantization usually
# costs a network about 1 point of accuracy, so at most 1 image in 20 may change class, and
# no class's probability may move by more than 15 points on any image: a bigger change
# alters the model's confidence enough to change decisions taken on a threshold. (With
# the 32 sample images: at most one may disagree.)
INT8_CHECK = AgreementCheck(
    min_top1=0.95,
    max_prob_diff=0.15,
    why="int8 rounding costs a little: at most 1 image in 20 may change class, and no "
    "probability may move by more than 0.15",
)


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
        check: the agreement with the Keras model it must reach to pass (default
            `FLOAT_CHECK`: the same computation, so the same answers).
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
    check: AgreementCheck = FLOAT_CHECK
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
            check=INT8_CHECK,
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
            "mean_abs_prob_diff", "passed", "min_top1_match_rate", "max_abs_prob_diff_allowed",
            "rule"}`` against the Keras model on the same images: the measures, whether
            they pass the format's `AgreementCheck`, its two thresholds and its rule in
            words.
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

    @property
    def passed(self) -> bool:
        """Made, and its agreement with the Keras model passes the format's check."""
        return self.ok and bool(self.agreement.get("passed"))


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
