"""Saving and loading run models safely: hashes recorded at save time, checked at load time.

A model file is code as much as data: a ``.keras`` or full-model ``.h5`` file names the
classes to build and can carry Python (``Lambda`` layers). So the studio deserializes
only model files it wrote itself, into run folders, and proves it on every load:

* `save_model` is the one way a run's model is written (the training's best-model
  checkpoint and its final save both go through it). It writes the file next to its
  target, hashes it (SHA-256), records the hash in ``model.json`` beside it, and moves
  the file into place. A reader sees the old model or the new one, never half of one.
* `load_run_model` reads the run's ``model.keras`` once into memory, checks its hash
  against ``model.json`` and deserializes exactly the bytes it checked (``safe_mode=True``,
  no custom objects). A file changed after training is refused with
  `ModelIntegrityError`, whose message says what happened and what to do.
* Files a user uploads are never deserialized as models. `load_weights_for_run` builds
  the architecture of a finished run from its ``config.json`` and loads only the weight
  arrays of the upload into it (``load_weights`` through `tlcore.model.weights`): a
  ``.weights.h5`` file, the weights of a legacy full-model ``.h5``, or the
  ``model.weights.h5`` member of a ``.keras`` archive (its ``config.json`` is never read).
  `check_upload` tells a full model from a weights file, so that an upload meant for
  prediction can be refused with an explanation unless the user asks to import its
  weights.

The record (``model.json``)::

    {"file": "model.keras", "sha256": "<hex>", "size_bytes": 123,
     "previous_sha256": "<hex or null>", "saved_at": "...", "keras_version": "3.15.1",
     "format": 1}

The record is written *before* the new file replaces the old one, naming the previous
file's hash too: if the process dies between the two steps the old file is still in
place and still matches (``previous_sha256``), so a crash never makes a good model look
tampered with. Either hash proves the file was written here.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlcore.fileio import atomic_write_json, file_sha256, read_json
from tlcore.store import run_layout, runs
from tlcore.store.run_layout import MODEL_RECORD_FILE
from tlcore.store.workspace import Workspace

RECORD_FORMAT = 1
HASH_CHUNK_BYTES = 1 << 20
KERAS_WEIGHTS_MEMBER = "model.weights.h5"  # where a .keras archive keeps its weight arrays
MAX_WEIGHTS_MEMBER_BYTES = 4 * 1024**3  # a .keras whose weights claim more is refused
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# What `check_upload` finds a file to be.
WEIGHTS_FILE = "weights"  # HDF5 weight arrays only (.weights.h5, or .h5 saved by save_weights)
FULL_KERAS_MODEL = "keras_model"  # a .keras archive: architecture (code) + weights
FULL_H5_MODEL = "h5_model"  # a legacy full-model .h5: architecture (code) + weights
NOT_A_MODEL = "not_a_model"


class ModelLoadError(ValueError):
    """A run's model cannot be loaded; the message says why and what to do."""


class ModelIntegrityError(ModelLoadError):
    """The model file does not match the hash recorded when it was saved (or has none)."""


class UnsafeModelError(ValueError):
    """An uploaded file is a full model, which the studio never deserializes."""


@dataclass(frozen=True)
class ModelRecord:
    """The contents of ``model.json``: which model file this run saved, and its hash."""

    file: str
    sha256: str
    size_bytes: int
    previous_sha256: str | None = None
    saved_at: str = ""
    keras_version: str = ""
    format: int = RECORD_FORMAT

    def matches(self, digest: str) -> bool:
        return digest == self.sha256 or (
            self.previous_sha256 is not None and digest == self.previous_sha256
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and where it came from.

    Attributes:
        model: the Keras model (uncompiled).
        sha256: the hash of the bytes it was loaded from (the run's model file, or the
            uploaded weights file for `load_weights_for_run`).
        source: ``"run"`` (the run's own model file) or ``"weights_upload"``.
        weights_name: the uploaded file's name, for ``"weights_upload"``.
    """

    model: object
    sha256: str
    source: str = "run"
    weights_name: str = ""


# -- hashing and saving -------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file (`tlcore.fileio.file_sha256`)."""
    return file_sha256(path)


def record_path(model_path: str | os.PathLike) -> Path:
    """Where the hash record of ``model_path`` lives: ``model.json`` beside it."""
    return Path(model_path).with_name(MODEL_RECORD_FILE)


def read_record(model_path: str | os.PathLike) -> ModelRecord | None:
    """The hash record of ``model_path``, or None when there is none (or it is unreadable)."""
    try:
        data = read_json(record_path(model_path))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        return None
    known = ModelRecord.__dataclass_fields__
    try:
        return ModelRecord(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def _default_save(model, target: Path) -> None:
    model.save(target)


def save_model(
    model,
    path: str | os.PathLike,
    *,
    save_fn: Callable[[object, Path], None] | None = None,
) -> ModelRecord:
    """Saves ``model`` to ``path`` atomically and records its SHA-256 in ``model.json``.

    The model is written to a temporary ``.keras`` file beside ``path``, hashed, the
    record is written (atomically, naming the hash of the file it replaces too), and the
    file is moved over ``path``. A failure leaves the previous model and its record as
    they were (or the record already naming both hashes), and no temporary file.

    Args:
        model: the Keras model (passed to ``save_fn``).
        path: the ``.keras`` file to write, e.g. ``<run>/model.keras``.
        save_fn: ``save_fn(model, target)`` writes the file; default ``model.save``.
            Training passes one that saves the whole model while only its head is fitted.

    Returns:
        The record written.

    Raises:
        OSError: the file or record could not be written (disk full, no permission).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        (save_fn or _default_save)(model, tmp)
        digest = sha256_file(tmp)
        previous = read_record(path)
        previous_sha = None
        if path.exists():
            # Known to be ours only if the old record vouches for it.
            old = previous.sha256 if previous else None
            previous_sha = old if old and sha256_file(path) == old else None
        record = ModelRecord(
            file=path.name,
            sha256=digest,
            size_bytes=tmp.stat().st_size,
            previous_sha256=previous_sha,
            saved_at=runs.now_iso(),
            keras_version=_keras_version(),
        )
        atomic_write_json(record_path(path), record.__dict__)
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return record


def _keras_version() -> str:
    try:
        import keras

        return keras.__version__
    except Exception:  # only informative
        return ""


# -- verifying and loading a run's model ----------------------------------------------------
def verified_model_bytes(run_dir: str | os.PathLike, run_id: str | None = None) -> bytes:
    """Reads a run's ``model.keras`` and checks it against ``model.json``.

    Returns the bytes that were checked, so that the caller loads exactly them (no window
    between checking and loading in which the file could be swapped).

    Raises:
        ModelLoadError: the run has no model file.
        ModelIntegrityError: no hash was recorded, or the file does not match it.
    """
    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    path = run_dir / runs.MODEL_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(exc, run_dir, run_id) from exc
    _check_digest(path, sha256_bytes(data), run_id)
    return data


def _unreadable(exc: OSError, run_dir: Path, run_id: str) -> ModelLoadError:
    """The `ModelLoadError` for a run's model file that could not be read."""
    if isinstance(exc, FileNotFoundError):
        return ModelLoadError(
            f"Run {run_id} has no saved model ({runs.MODEL_FILE} is missing from {run_dir}). "
            "Train the run again."
        )
    return ModelLoadError(f"The model file of run {run_id} cannot be read ({exc.strerror or exc}).")


def _check_digest(path: Path, digest: str, run_id: str) -> None:
    """Raises `ModelIntegrityError` unless ``digest`` (of ``path``) is the one recorded."""
    record = read_record(path)
    if record is None:
        raise ModelIntegrityError(
            f"The model file of run {run_id} has no recorded hash ({MODEL_RECORD_FILE} is "
            "missing or unreadable), so it cannot be shown to be the model training saved; "
            "it will not be loaded. Retrain the run."
        )
    if not record.matches(digest):
        raise ModelIntegrityError(
            f"The model file of run {run_id} was changed after training (hash mismatch); "
            "it will not be loaded. Retrain or restore it."
        )


_hash_cache: dict[tuple, str] = {}  # (path, inode, mtime_ns, size) -> sha256


def verified_model_hash(run_dir: str | os.PathLike, run_id: str | None = None) -> str:
    """The SHA-256 of a run's ``model.keras`` as it is now, checked against ``model.json``.

    For serving what was computed from the model (stored evaluations) without loading it.
    The file is hashed again whenever its inode, size or modification time changes.

    Raises:
        ModelLoadError: the run has no model file.
        ModelIntegrityError: no hash was recorded, or the file does not match it.
    """
    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    path = run_dir / runs.MODEL_FILE
    try:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        digest = _hash_cache.get(key) or sha256_file(path)
    except OSError as exc:
        raise _unreadable(exc, run_dir, run_id) from exc
    _hash_cache[key] = digest
    _check_digest(path, digest, run_id)
    return digest


def recorded_hash(run_dir: str | os.PathLike) -> str | None:
    """The hash ``model.json`` records for a run's model (cheap: no hashing), or None."""
    record = read_record(Path(run_dir) / runs.MODEL_FILE)
    return record.sha256 if record else None


def load_model_bytes(data: bytes):
    """Deserializes a ``.keras`` file's bytes with `tlcore.model.models.load_model` (safe mode).

    Only for bytes this package wrote and whose hash was checked (`verified_model_bytes`).
    """
    from tlcore.model import models

    folder = tempfile.mkdtemp(prefix="tls-model-")
    try:
        path = Path(folder) / runs.MODEL_FILE
        path.write_bytes(data)
        return models.load_model(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_run(ws: Workspace, run_id: str) -> runs.RunRecord:
    record = runs.read_run(ws, run_id)
    if record.config is None:
        raise ModelLoadError(f"Run {run_id} cannot be used: {record.problem}.")
    if record.state != runs.FINISHED:
        raise ModelLoadError(
            f"Run {run_id} is {record.state}, not finished; only a finished run's model can "
            "be used here. Wait for it to finish, or resume it on the Training page."
        )
    return record


def load_run_model(ws: Workspace, run_id: str) -> LoadedModel:
    """Loads a finished run's model after checking its hash.

    Raises:
        tlcore.store.runs.RunNotFoundError: no such run.
        ModelLoadError: the run is not finished, or has no model file.
        ModelIntegrityError: the file was changed after training, or has no recorded hash.
    """
    record = _check_run(ws, run_id)
    data = verified_model_bytes(record.dir, run_id)
    try:
        model = load_model_bytes(data)
    except Exception as exc:  # Keras raises many types for a file it cannot rebuild
        raise ModelLoadError(
            f"The model of run {run_id} matches its recorded hash but cannot be loaded by "
            f"this version of Keras ({type(exc).__name__}: {exc}). Retrain the run."
        ) from exc
    return LoadedModel(model=model, sha256=sha256_bytes(data))


# -- uploads: weights only ---------------------------------------------------------------
def check_upload(data: bytes) -> str:
    """What an uploaded model-ish file is, judged from its content (never its name).

    Returns:
        ``WEIGHTS_FILE``, ``FULL_KERAS_MODEL``, ``FULL_H5_MODEL`` or ``NOT_A_MODEL``.
    """
    head = bytes(data[:8])
    if head == _HDF5_SIGNATURE:
        import h5py

        try:
            with h5py.File(io.BytesIO(data), "r") as f:
                return FULL_H5_MODEL if "model_config" in f.attrs else WEIGHTS_FILE
        except (OSError, ValueError):
            return NOT_A_MODEL
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile:
            return NOT_A_MODEL
        if "config.json" in names or KERAS_WEIGHTS_MEMBER in names:
            return FULL_KERAS_MODEL
    return NOT_A_MODEL


def refuse_full_model(data: bytes, name: str) -> None:
    """Raises `UnsafeModelError` if ``data`` is a full model rather than weights.

    Raises:
        UnsafeModelError: a ``.keras`` archive or a full-model ``.h5``; the message explains
            that only its weights can be imported, and how.
        ValueError: not a Keras file at all.
    """
    kind = check_upload(data)
    if kind in (FULL_KERAS_MODEL, FULL_H5_MODEL):
        what = "a .keras model archive" if kind == FULL_KERAS_MODEL else "a full Keras .h5 model"
        raise UnsafeModelError(
            f"{name} is {what}: it stores an architecture to rebuild, which can carry code, "
            "so the studio never loads uploaded models. To use it, import it as weights: "
            "choose the finished run whose architecture it has (same backbone, size, head "
            "and classes) and tick 'Import only its weights'; only its weight arrays are "
            "then read into that run's architecture."
        )
    if kind == NOT_A_MODEL:
        raise ValueError(
            f"{name} is not a Keras weights file (.weights.h5 or .h5, HDF5 inside), "
            "whatever its name says."
        )


def _safe_stem(name: str) -> str:
    """A file-name stem for a temporary copy that still reads like the upload's name."""
    stem = Path(name).name
    for suffix in (".weights.h5", ".keras", ".hdf5", ".h5"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".")
    return cleaned[:80] or "upload"


def _weights_file_from_upload(data: bytes, name: str, folder: Path, allow_full: bool) -> Path:
    """Writes the weight arrays of an upload to a file Keras' ``load_weights`` reads."""
    kind = check_upload(data)
    if kind in (FULL_KERAS_MODEL, FULL_H5_MODEL) and not allow_full:
        refuse_full_model(data, name)
    if kind == NOT_A_MODEL:
        refuse_full_model(data, name)  # raises the "not a weights file" message
    if kind == FULL_KERAS_MODEL:
        target = folder / f"{_safe_stem(name)}.weights.h5"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                info = archive.getinfo(KERAS_WEIGHTS_MEMBER)
            except KeyError:
                raise ValueError(
                    f"{name} is a .keras archive without {KERAS_WEIGHTS_MEMBER}; "
                    "it holds no weights to import."
                ) from None
            if info.file_size > MAX_WEIGHTS_MEMBER_BYTES:
                raise ValueError(
                    f"{name}: its weights claim {info.file_size:,} bytes, over the "
                    f"{MAX_WEIGHTS_MEMBER_BYTES:,}-byte limit."
                )
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, HASH_CHUNK_BYTES)
        return target
    # Weights-only HDF5, or a legacy full-model .h5 whose weights Keras reads from its
    # model_weights group (the model_config attribute is never read).
    suffix = ".weights.h5" if kind == WEIGHTS_FILE and name.endswith(".weights.h5") else ".h5"
    target = folder / f"{_safe_stem(name)}{suffix}"
    target.write_bytes(data)
    return target


def load_weights_for_run(
    ws: Workspace, run_id: str, data: bytes, name: str, *, allow_full_model: bool = False
) -> LoadedModel:
    """Builds a finished run's architecture and loads an uploaded file's weights into it.

    Nothing in the upload is deserialized: the architecture comes from the run's
    ``config.json`` and class list, and only HDF5 weight arrays are read from the file.

    Args:
        ws: the workspace.
        run_id: the finished run whose architecture (and classes) the weights are for.
        data: the uploaded file's bytes.
        name: its name, for messages.
        allow_full_model: accept a ``.keras`` archive or full-model ``.h5`` and import
            only its weights (the user's explicit choice); default False refuses them.

    Raises:
        UnsafeModelError: a full model and ``allow_full_model`` is False.
        ValueError: not a Keras weights file.
        tlcore.model.weights.WeightsMismatchError: the weights are for another architecture.
        ModelLoadError: the run is not finished or its class list is missing.
    """
    from tlcore.model import models
    from tlcore.model.weights import load_weights_file

    record = _check_run(ws, run_id)
    classes = run_classes(record.dir)
    config = record.config.replace(weights="none")
    model = models.build_model(config, len(classes))
    label = (
        f"the architecture of run {run_id} ({config.backbone}, "
        f"{int(model.input_shape[1])} px, {len(classes)} classes)"
    )
    folder = Path(tempfile.mkdtemp(prefix="tls-weights-"))
    try:
        path = _weights_file_from_upload(data, name, folder, allow_full_model)
        _check_arrays_fit(path, model, name, label)
        load_weights_file(model, path, label)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return LoadedModel(
        model=model, sha256=sha256_bytes(data), source="weights_upload", weights_name=name
    )


def _check_arrays_fit(path: Path, model, name: str, label: str) -> None:
    """Refuses, in words about whole models, a file whose arrays cannot fit ``model``."""
    import math

    from tlcore.model.weights import WeightsMismatchError, _file_arrays

    try:
        found = [shape for _, shape in _file_arrays(path)]
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsMismatchError(f"{name} could not be read as Keras weights ({exc}).") from exc
    expected = [tuple(v.shape) for v in model.weights]
    if sorted(found) != sorted(expected):
        raise WeightsMismatchError(
            f"{name} does not fit {label}: it holds {len(found)} weight arrays "
            f"({sum(math.prod(s) for s in found):,} values); the run's model has "
            f"{len(expected)} ({sum(math.prod(s) for s in expected):,} values). Weights for "
            "prediction must come from a model with the same backbone, image size, head and "
            "number of classes."
        )


def run_classes(run_dir: str | os.PathLike) -> list[str]:
    """The class names of a run, in output order (``classes.json``).

    Raises:
        ModelLoadError: the file is missing or damaged.
    """
    try:
        return list(run_layout.read_classes(run_dir)["classes"])
    except run_layout.ClassListError as exc:
        raise ModelLoadError(f"{exc} Train the run again.") from exc
