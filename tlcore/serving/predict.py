"""Prediction with a finished run's model: single images, many images, a folder or a zip.

A `Predictor` is loaded once per run (the page caches it across reruns and users, keyed
by run id and model hash) and then answers fast: the model is wrapped in one compiled
TensorFlow function with a fixed input signature (``(None, S, S, 3)`` float32, traced once
when the predictor is made), so a prediction does not rebuild a graph or walk the layers
in Python (see ``bench/bench_predict.py`` for the figures).

Every image goes through `tlcore.data.images.load_image_array`, the loader training used:
type sniffed from the bytes, size checked before decoding, EXIF orientation applied,
every mode made RGB, the same bilinear resize. A file that cannot be used gives a
`Prediction` with ``error`` set (naming the file) instead of an exception, so one bad
file among many never stops the others.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.data import archives, images
from tlcore.model import model_store
from tlcore.store import server_paths
from tlcore.store.server_paths import ServerRoots
from tlcore.store.workspace import Workspace

DEFAULT_TOP_K = 3
MAX_TOP_K = 100
PREDICT_BATCH = 32  # images decoded and run through the model at a time
LOAD_WORKERS = max(2, min(8, os.cpu_count() or 2))
MAX_FOLDER_FILES = 100_000
EXTRACT_DIR = "images"

Progress = Callable[[int, int], None]  # (files done, files in all)


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image, or why it could not say anything.

    Attributes:
        name: the file name (or path relative to the folder / zip) the user knows it by.
        top: ``(class, probability)`` pairs, most probable first (empty on error).
        error: why the image could not be used, naming the file; None when predicted.
        reason: the `tlcore.data.images.ImageError` reason (``not_an_image``, ``truncated``,
            ``too_large``, ``not_a_regular_file``, ...), ``outside_server_roots`` (a link out
            of the shared folders, not read) or ``"error"``; None when predicted.
    """

    name: str
    top: tuple[tuple[str, float], ...] = ()
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def predicted_class(self) -> str | None:
        return self.top[0][0] if self.top else None

    @property
    def confidence(self) -> float | None:
        return self.top[0][1] if self.top else None


@dataclass
class Predictor:
    """A loaded model ready to classify images.

    Make one with `Predictor.for_run` (a finished run's verified model) or
    `Predictor.for_weights_upload` (a run's architecture with uploaded weights).

    Attributes:
        model: the Keras model (raw RGB floats in [0, 255] in, probabilities out).
        classes: class names in output order.
        run_id: the run it belongs to.
        model_sha256: the hash of the bytes the weights came from.
        source: ``"run"`` or ``"weights_upload"``.
        weights_name: the uploaded file's name when ``source`` is ``"weights_upload"``.
        max_pixels: images with more pixels are refused (default ``images.MAX_PIXELS``).
    """

    model: Any
    classes: list[str]
    run_id: str = ""
    model_sha256: str = ""
    source: str = "run"
    weights_name: str = ""
    max_pixels: int = images.MAX_PIXELS
    _infer: Any = field(default=None, init=False, repr=False)
    _gradcam: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import tensorflow as tf

        outputs = int(self.model.output_shape[-1])
        if outputs != len(self.classes):
            raise model_store.ModelLoadError(
                f"The model has {outputs} outputs but the run lists {len(self.classes)} "
                "classes; the run folder is inconsistent. Train the run again."
            )
        model = self.model
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32)

        @tf.function(input_signature=[spec])
        def infer(batch):
            return model(batch, training=False)

        self._infer = infer
        infer(tf.zeros((1, self.image_size, self.image_size, 3), tf.float32))  # trace now

    # -- making one ---------------------------------------------------------------------
    @classmethod
    def for_run(cls, ws: Workspace, run_id: str) -> Predictor:
        """The predictor of a finished run, its model file checked against its hash.

        Raises:
            tlcore.store.runs.RunNotFoundError: no such run.
            tlcore.model.model_store.ModelLoadError: not finished, no model, damaged class list.
            tlcore.model.model_store.ModelIntegrityError: the model file was changed after
                training (or has no recorded hash); it is not loaded.
        """
        loaded = model_store.load_run_model(ws, run_id)
        classes = model_store.run_classes(ws.run_dir(run_id))
        return cls(loaded.model, classes, run_id=run_id, model_sha256=loaded.sha256)

    @classmethod
    def for_weights_upload(
        cls,
        ws: Workspace,
        run_id: str,
        data: bytes,
        name: str,
        *,
        allow_full_model: bool = False,
    ) -> Predictor:
        """A run's architecture and classes with the weights of an uploaded file.

        See `tlcore.model.model_store.load_weights_for_run` (nothing is deserialized; a full
        model is refused unless ``allow_full_model``, and then only its weights are read).
        """
        loaded = model_store.load_weights_for_run(
            ws, run_id, data, name, allow_full_model=allow_full_model
        )
        classes = model_store.run_classes(ws.run_dir(run_id))
        return cls(
            loaded.model,
            classes,
            run_id=run_id,
            model_sha256=loaded.sha256,
            source=loaded.source,
            weights_name=name,
        )

    @property
    def image_size(self) -> int:
        """The side of the square images the model takes."""
        return int(self.model.input_shape[1])

    # -- predicting ---------------------------------------------------------------------
    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of images already at the model's size.

        Args:
            pixels: ``(n, S, S, 3)`` RGB values in [0, 255] (any numeric dtype), or one
                image ``(S, S, 3)``.

        Returns:
            ``float32`` array ``(n, classes)`` (``(classes,)`` for one image).
        """
        x = np.asarray(pixels, dtype=np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        size = self.image_size
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(
                f"pixels must have shape (n, {size}, {size}, 3). Received: shape={x.shape}"
            )
        probs = self._infer(x).numpy()
        return probs[0] if single else probs

    def load_pixels(self, source: images.ImageSource, name: str | None = None) -> np.ndarray:
        """One image as the model sees it: ``uint8 (S, S, 3)`` from the training loader.

        Raises:
            tlcore.data.images.ImageError: see `tlcore.data.images.load_image`.
        """
        return images.load_image_array(
            source, self.image_size, max_pixels=self.max_pixels, name=name
        )

    def top_k(self, probabilities: np.ndarray, k: int = DEFAULT_TOP_K) -> list[tuple[str, float]]:
        """The ``k`` most probable classes of one probability vector, best first."""
        k = _check_top_k(k, len(self.classes))
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.classes[i], float(probabilities[i])) for i in order]

    def predict_images(
        self,
        sources: Iterable[Any],
        top_k: int = DEFAULT_TOP_K,
        *,
        progress: Progress | None = None,
    ) -> list[Prediction]:
        """Predicts each image; a file that cannot be used gets an error, not an exception.

        Args:
            sources: paths, ``(name, source)`` pairs (source: path, bytes or binary file),
                or uploaded-file objects with a ``name`` (e.g. Streamlit's).
            top_k: classes to keep per image (default 3; at most the number of classes).
            progress: called as ``progress(done, total)`` after each batch.

        Returns:
            One `Prediction` per source, in order.
        """
        named = [_named(source) for source in sources]
        k = _check_top_k(top_k, len(self.classes))
        results: list[Prediction] = []
        total = len(named)
        workers = min(LOAD_WORKERS, max(1, total))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, total, PREDICT_BATCH):
                chunk = named[start : start + PREDICT_BATCH]
                if len(chunk) == 1:
                    loaded = [self._try_load(*chunk[0])]
                else:
                    loaded = list(pool.map(lambda item: self._try_load(*item), chunk))
                good = [i for i, item in enumerate(loaded) if isinstance(item, np.ndarray)]
                probs = self.predict_arrays(np.stack([loaded[i] for i in good])) if good else None
                row_of = {index: row for row, index in enumerate(good)}
                for i, (name, _) in enumerate(chunk):
                    item = loaded[i]
                    if isinstance(item, Prediction):
                        results.append(item)
                    else:
                        top = self.top_k(probs[row_of[i]], k)
                        results.append(Prediction(name=name, top=tuple(top)))
                if progress is not None:
                    progress(len(results), total)
        return results

    def _try_load(self, name: str, source: Any) -> np.ndarray | Prediction:
        try:
            return self.load_pixels(source, name)
        except images.ImageError as exc:
            return Prediction(name=name, error=str(exc), reason=exc.reason)
        except Exception as exc:  # never let one file stop a batch
            return Prediction(
                name=name,
                error=f"{name} could not be read ({type(exc).__name__}: {exc}).",
                reason="error",
            )

    def predict_folder(
        self,
        folder: str | os.PathLike,
        top_k: int = DEFAULT_TOP_K,
        *,
        progress: Progress | None = None,
        roots: ServerRoots | None = None,
    ) -> list[Prediction]:
        """Predicts every file under ``folder`` (recursively; hidden files and OS litter
        skipped). Names are paths relative to ``folder``; non-images get an error row, and
        so do named pipes, devices, sockets and broken links, which are never opened.

        Args:
            folder: the folder.
            top_k: classes to keep per image (default 3).
            progress: called as ``progress(done, total)`` after each batch.
            roots: confines what is read to these shared folders (the web UI): ``folder``
                must lie under them, a link out of them gets an error row, and the size caps
                apply; default None (full access: the command line).

        Raises:
            tlcore.store.server_paths.ServerPathError: ``folder`` is outside ``roots``, or
                its files exceed their total cap (nothing is read).
            FileNotFoundError: ``folder`` is not a folder.
            ValueError: more than ``MAX_FOLDER_FILES`` files.
        """
        root = roots.confine(folder) if roots is not None else Path(folder).expanduser()
        entries, total = [], 0
        for path in list_image_candidates(root):
            name = path.relative_to(root).as_posix()
            check = server_paths.check_file(path, name, roots)
            entries.append((name, path, check.refusal))
            total += check.size
        if roots is not None:
            roots.check_total(total, str(folder))
        readable = [(name, path) for name, path, refusal in entries if refusal is None]
        predicted = iter(self.predict_images(readable, top_k, progress=progress))
        return [
            Prediction(name=name, error=refusal.message, reason=refusal.reason)
            if refusal is not None
            else next(predicted)
            for name, _, refusal in entries
        ]

    def predict_zip(
        self,
        zip_path: str | os.PathLike,
        top_k: int = DEFAULT_TOP_K,
        *,
        progress: Progress | None = None,
    ) -> list[Prediction]:
        """Predicts every file in a zip archive, extracted with every member checked
        (`tlcore.data.archives.safe_extract_zip`) into a temporary folder removed afterwards.

        Raises:
            tlcore.data.archives.ArchiveError: the archive was refused; the message says why.
        """
        with tempfile.TemporaryDirectory(prefix="tls-predict-") as tmp:
            target = Path(tmp) / EXTRACT_DIR
            archives.safe_extract_zip(zip_path, target)
            return self.predict_folder(target, top_k, progress=progress)

    # -- explaining ---------------------------------------------------------------------
    def explain(self, pixels: np.ndarray, class_index: int | None = None):
        """Grad-CAM for one image at the model's size (see `tlcore.serving.explain.GradCam`)."""
        if self._gradcam is None:
            from tlcore.serving.explain import GradCam

            self._gradcam = GradCam(self.model, self.classes)
        return self._gradcam.explain(pixels, class_index)


# -- sources, folders and tables --------------------------------------------------------------
def _named(source: Any) -> tuple[str, Any]:
    if isinstance(source, tuple) and len(source) == 2:
        return str(source[0]), source[1]
    if isinstance(source, (str, os.PathLike)):
        return str(source), source
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        if hasattr(source, "getvalue"):  # Streamlit's UploadedFile: a BytesIO with a name
            return name, source.getvalue()
        return name, source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "image", bytes(source)
    raise TypeError(
        "each source must be a path, a (name, source) pair or a named file object. "
        f"Received: {type(source).__name__}"
    )


def _check_top_k(k: int, num_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k must be a positive integer. Received: top_k={k!r}")
    return int(min(k, num_classes, MAX_TOP_K))


def list_image_candidates(root: Path) -> list[Path]:
    """Every visible file under ``root``, sorted; hidden files and OS litter left out.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: more than ``MAX_FOLDER_FILES`` files.
    """
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder on this machine. Check the path (it is read on the "
            "server, not on your computer)."
        )
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).parts
        dirs[:] = sorted(d for d in dirs if not archives.is_junk_path((*rel, d)))
        for name in sorted(files):
            if archives.is_junk_path((*rel, name)):
                continue
            found.append(Path(folder) / name)
            if len(found) > MAX_FOLDER_FILES:
                raise ValueError(
                    f"{root} holds more than {MAX_FOLDER_FILES:,} files; predict a smaller "
                    "folder, or split it."
                )
    return found


def prediction_rows(predictions: Sequence[Prediction], top_k: int | None = None) -> list[dict]:
    """One flat row per image for tables and CSV.

    Columns: ``file``, ``predicted_class``, ``probability``, then ``class_2``,
    ``probability_2`` ... up to ``top_k`` (default: the longest list present), and
    ``error`` (empty when predicted).
    """
    k = top_k or max((len(p.top) for p in predictions), default=1)
    rows = []
    for p in predictions:
        row: dict[str, Any] = {
            "file": p.name,
            "predicted_class": p.predicted_class or "",
            "probability": round(p.confidence, 6) if p.confidence is not None else None,
        }
        for rank in range(2, k + 1):
            cls, prob = p.top[rank - 1] if len(p.top) >= rank else ("", None)
            row[f"class_{rank}"] = cls
            row[f"probability_{rank}"] = round(prob, 6) if prob is not None else None
        row["error"] = p.error or ""
        rows.append(row)
    return rows


def predictions_csv(predictions: Sequence[Prediction], top_k: int | None = None) -> str:
    """The predictions as CSV text (see `prediction_rows` for the columns)."""
    rows = prediction_rows(predictions, top_k)
    out = io.StringIO()
    columns = list(rows[0]) if rows else ["file", "predicted_class", "probability", "error"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def summarize(predictions: Sequence[Prediction]) -> dict:
    """Counts for a batch: ``{"images", "predicted", "failed", "by_class": {class: n}}``."""
    by_class: dict[str, int] = {}
    for p in predictions:
        if p.ok:
            by_class[p.predicted_class] = by_class.get(p.predicted_class, 0) + 1
    failed = sum(1 for p in predictions if not p.ok)
    return {
        "images": len(predictions),
        "predicted": len(predictions) - failed,
        "failed": failed,
        "by_class": dict(sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
