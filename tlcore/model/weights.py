"""Where a backbone's starting weights come from: ImageNet, a weights file, or a run.

* ImageNet weights go through Keras' own download-and-cache (`keras.utils.get_file`,
  the same file name, URL, hash and ``models`` cache folder the
  ``keras.applications`` constructors use), so a machine with internet just works and
  an offline machine finds files copied into ``$KERAS_HOME/models``. If the file is
  neither cached nor downloadable, `WeightsUnavailableError` says exactly which file
  to fetch and where to put it. There is never a silent fallback to random weights.
* A weights file (``.h5`` or ``.weights.h5``) is loaded with ``load_weights`` into the
  chosen architecture, after checking that it is an HDF5 file whose arrays fit; a
  file for another architecture raises `WeightsMismatchError`. Full models are never
  deserialized from user files.
* A run's model (``.keras``, written by this package, trusted) gives its backbone
  weights through `load_backbone_from_model_file`.

The Keras cache folder is read at call time from ``$KERAS_HOME`` (else ``~/.keras``),
so it can change without re-importing Keras.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from tlcore.model.registry import BackboneSpec, validate_backbone_args

if TYPE_CHECKING:  # Keras is imported where weights are loaded, not to read a status
    import keras

KERAS_HOME_ENV = "KERAS_HOME"
DOWNLOAD_TIMEOUT_S = 60.0  # per blocking socket operation, not for the whole download
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_OPTIMIZER_GROUP = "optimizer"  # where Keras stores optimizer state in a weights file


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in the Keras cache nor downloadable.

    Attributes:
        filename: the file Keras needs.
        url: where to download it.
        path: where to put it.
    """

    def __init__(self, message: str, *, filename: str, url: str, path: Path):
        super().__init__(message)
        self.filename = filename
        self.url = url
        self.path = path


class WeightsMismatchError(ValueError):
    """A weights file does not fit the chosen backbone (or is not a weights file)."""


@dataclass(frozen=True)
class WeightsStatus:
    """Whether the ImageNet weights for a backbone are on this machine.

    Attributes:
        available: the file is in the Keras cache (its checksum is not verified here).
        path: where the file is, or where Keras will put it once downloaded.
        filename: the file name Keras caches it under.
        url: where Keras downloads it from.
        file_hash: the md5/sha256 Keras verifies (None: Keras verifies nothing).
        note: extra information, e.g. which input size the weights were trained at.
    """

    available: bool
    path: Path
    filename: str
    url: str
    file_hash: str | None = None
    note: str = ""


def keras_home() -> Path:
    """The Keras home folder: ``$KERAS_HOME``, else ``~/.keras`` (read at call time)."""
    configured = os.environ.get(KERAS_HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def _cache_candidates(filename: str) -> list[Path]:
    """Where Keras' cache may hold ``filename``: ``<home>/models`` and, when the home is
    not writable, the ``/tmp/.keras/models`` folder `keras.utils.get_file` falls back to."""
    home = keras_home()
    candidates = [home / "models" / filename]
    if not os.access(home, os.W_OK):
        fallback = Path(tempfile.gettempdir() if not os.path.isdir("/tmp") else "/tmp") / ".keras"
        candidates.append(fallback / "models" / filename)
    return candidates


def _label(spec: BackboneSpec, alpha: float, image_size: int) -> str:
    if spec.has_alpha:
        return f"{spec.name} (alpha {float(alpha)}, {image_size})"
    return f"{spec.name} ({image_size})"


def imagenet_weights_status(
    backbone: str, alpha: float = 1.0, image_size: int = 0
) -> WeightsStatus:
    """Checks whether the ImageNet weights for a backbone are in the Keras cache.

    Cheap (no download, no checksum): suitable for a page refresh.

    Args:
        backbone: registry name.
        alpha: width multiplier (MobileNet family); defaults to 1.0.
        image_size: input side; 0 (default) means the backbone's default size. MobileNet
            v1/v2 have separate files per size; other sides use the 224 file.

    Returns:
        A `WeightsStatus`.

    Raises:
        ValueError: unknown backbone, or no ImageNet weights for this backbone/alpha.
    """
    spec = validate_backbone_args(backbone, alpha, image_size, "imagenet")
    size = image_size or spec.default_size
    filename = spec.weights_filename(alpha, size)
    candidates = _cache_candidates(filename)
    found = next((p for p in candidates if p.is_file()), None)
    note = ""
    if spec.weights_sizes and size not in spec.weights_sizes:
        sizes = ", ".join(map(str, spec.weights_sizes))
        note = (
            f"Keras ships {spec.name} weights for input sizes {sizes}; "
            f"size {size} uses the 224 weights."
        )
    elif not spec.weights_sizes and size != spec.default_size:
        note = f"The ImageNet weights were trained at {spec.default_size}x{spec.default_size}."
    return WeightsStatus(
        available=found is not None,
        path=found or candidates[-1],
        filename=filename,
        url=spec.weights_url_for(alpha, size),
        file_hash=spec.weights_hash(alpha),
        note=note,
    )


def _file_matches_hash(path: Path, file_hash: str | None) -> bool:
    if not file_hash:
        return True
    algorithm = "sha256" if len(file_hash) == 64 else "md5"  # Keras records either
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest() == file_hash


def fetch_imagenet_weights(backbone: str, alpha: float = 1.0, image_size: int = 0) -> Path:
    """The path of the ImageNet weights file, downloading it through Keras if needed.

    A cached file whose checksum matches is used as is; otherwise
    `keras.utils.get_file` downloads it into ``$KERAS_HOME/models`` exactly as the
    ``keras.applications`` constructors would.

    Args:
        backbone: registry name.
        alpha: width multiplier (MobileNet family); defaults to 1.0.
        image_size: input side; 0 (default) means the backbone's default size.

    Raises:
        ValueError: unknown backbone, or no ImageNet weights for this backbone/alpha.
        WeightsUnavailableError: not cached and the download failed (e.g. offline);
            the message names the file, its URL and the folder to copy it into.
    """
    import keras

    status = imagenet_weights_status(backbone, alpha, image_size)
    spec = validate_backbone_args(backbone, alpha, image_size, "imagenet")
    size = image_size or spec.default_size
    corrupt = None
    if status.available:
        if _file_matches_hash(status.path, status.file_hash):
            return status.path
        corrupt = status.path
    home = keras_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # get_file then falls back to /tmp/.keras, as Keras always does
    previous_timeout = socket.getdefaulttimeout()
    if previous_timeout is None:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        path = keras.utils.get_file(
            status.filename,
            status.url,
            cache_subdir="models",
            cache_dir=str(home),
            file_hash=status.file_hash,
        )
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...")
        target = home / "models" / status.filename
        problem = (
            f"A file named {status.filename} was in {corrupt.parent} but its checksum does not "
            "match the one Keras expects (an incomplete download or a different file). "
            if corrupt
            else ""
        )
        raise WeightsUnavailableError(
            f"ImageNet weights for {_label(spec, alpha, size)} are not on this machine and "
            f"could not be downloaded. {problem}Download {status.url} on a machine with "
            f"internet and copy it to {target}, or choose weights 'none'."
            f"{_other_size_hint(spec, alpha, size)} (Download error: {exc})",
            filename=status.filename,
            url=status.url,
            path=target,
        ) from exc
    finally:
        if previous_timeout is None:
            socket.setdefaulttimeout(None)
    return Path(path)


def _other_size_hint(spec: BackboneSpec, alpha: float, size: int) -> str:
    """Points at the 224 file when Keras has a separate file for ``size`` and only the
    224 one is cached (Keras uses the 224 file for sizes it ships nothing for)."""
    if not spec.weights_sizes or spec.weights_rows(size) == 224:
        return ""
    filename = spec.weights_filename(alpha, 224)
    if not any(p.is_file() for p in _cache_candidates(filename)):
        return ""
    return (
        f" The {filename} weights are on this machine: image size 224 uses them "
        f"(as does any size other than {', '.join(map(str, spec.weights_sizes))})."
    )


def load_imagenet_weights(
    base: keras.Model, backbone: str, alpha: float = 1.0, image_size: int = 0
) -> Path:
    """Fetches (see `fetch_imagenet_weights`) and loads ImageNet weights into ``base``.

    Args:
        base: the network built by `tlcore.model.backbones.build_base` (or a backbone view).
        backbone, alpha, image_size: as for `fetch_imagenet_weights`.

    Returns:
        The weights file used.

    Raises:
        WeightsUnavailableError: the file is not cached and cannot be downloaded.
        WeightsMismatchError: the cached file does not fit (e.g. a different file
            saved under the expected name).
    """
    path = fetch_imagenet_weights(backbone, alpha, image_size)
    spec = validate_backbone_args(backbone, alpha, image_size, "imagenet")
    load_weights_file(base, path, _label(spec, alpha, image_size or spec.default_size))
    return path


# -- weights files ------------------------------------------------------------------------
def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == _HDF5_SIGNATURE


def _file_arrays(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every weight array in a Keras weights file, in file order.

    Handles the native format (``*.weights.h5``: ``layers/.../vars/N``) and the legacy
    one (``layer_names`` / ``weight_names`` attributes, optionally under
    ``model_weights``). Optimizer state is ignored wherever it sits: at the top
    (``optimizer/vars/N``) or under a compiled sub-model (a feature-extraction run's
    head is fitted on its own, so its ``.keras`` holds ``layers/<head>/optimizer/...``).
    """
    arrays: list[tuple[str, tuple[int, ...]]] = []
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:
            for layer_name in root.attrs["layer_names"]:
                layer_name = layer_name.decode() if isinstance(layer_name, bytes) else layer_name
                group = root[layer_name]
                for weight_name in group.attrs.get("weight_names", []):
                    weight_name = (
                        weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                    )
                    arrays.append((weight_name, tuple(group[weight_name].shape)))
        else:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and _OPTIMIZER_GROUP not in name.split("/"):
                    arrays.append((name, tuple(obj.shape)))

            root.visititems(visit)
    return arrays


def _count(shapes) -> int:
    return sum(int(np.prod(s)) for s in shapes)


def _describe_mismatch(path: Path, model: keras.Model, label: str, arrays) -> str | None:
    """A readable reason why the file's arrays cannot fit the model, or None if they can."""
    expected = [tuple(v.shape) for v in model.weights]
    found = [shape for _, shape in arrays]
    if sorted(expected) == sorted(found):
        return None
    message = (
        f"The weights file {path.name} does not fit {label}: it holds {len(found)} weight arrays "
        f"({_count(found):,} values); {label} without its classifier top needs "
        f"{len(expected)} ({_count(expected):,} values)."
    )
    if len(found) == len(expected):
        for variable, (name, shape) in zip(model.weights, arrays, strict=True):
            if tuple(variable.shape) != shape:
                message += (
                    f" First difference: {variable.path} expects shape {tuple(variable.shape)}, "
                    f"the file's {name} has {shape}."
                )
                break
    elif len(found) > len(expected):
        message += (
            " If this file includes a classifier top (e.g. a Keras file without '_notop' or "
            "'_no_top' in its name), use the no-top version."
        )
    return message + " Choose a file saved from the same architecture, or weights 'none'."


def load_weights_file(model: keras.Model, path: str | os.PathLike, label: str = "") -> None:
    """Loads a ``.h5`` / ``.weights.h5`` file into ``model`` after checking that it fits.

    Only weights are read (``model.load_weights``); nothing is deserialized. A backbone
    with several stage outputs is loaded through its single-output view, so files saved
    with `save_backbone_weights` load whatever the fusion setting.

    Args:
        model: the backbone (or any model) to fill.
        path: the weights file.
        label: how to name the architecture in errors (defaults to ``model.name``).

    Raises:
        FileNotFoundError: no such file.
        WeightsMismatchError: not an HDF5 weights file, or its arrays do not fit.
    """
    from tlcore.model.backbones import canonical_backbone

    path = Path(path).expanduser()
    label = label or model.name
    if not path.is_file():
        raise FileNotFoundError(
            f"The weights file {path} does not exist. Check the path, or choose weights 'none'."
        )
    name = path.name.lower()
    if not name.endswith(WEIGHTS_SUFFIXES):
        raise WeightsMismatchError(
            f"A weights file must end in .weights.h5, .h5 or .hdf5 (Keras weights). "
            f"Received: {path.name!r}"
        )
    if not _is_hdf5(path):
        raise WeightsMismatchError(
            f"The weights file {path.name} is not an HDF5 file (whatever its name says), "
            "so it cannot hold Keras weights. Choose a .h5 or .weights.h5 file saved by Keras."
        )
    target = canonical_backbone(model)
    try:
        arrays = _file_arrays(path)
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsMismatchError(
            f"The weights file {path.name} could not be read as Keras weights ({exc})."
        ) from exc
    problem = _describe_mismatch(path, target, label, arrays)
    if problem:
        raise WeightsMismatchError(problem)
    try:
        target.load_weights(str(path))
    except Exception as exc:  # Keras raises ValueError/KeyError with the detail we quote
        raise WeightsMismatchError(
            f"The weights file {path.name} does not fit {label}: {exc}"
        ) from exc
    _finalize(target)


def _finalize(model: keras.Model) -> None:
    """Lets layers with derived state (Normalization) recompute it after new weights."""
    for layer in model.layers:
        finalize = getattr(layer, "finalize_state", None)
        if finalize is not None and layer.weights:
            finalize()


def save_backbone_weights(model: keras.Model, path: str | os.PathLike) -> Path:
    """Writes a backbone's weights to ``path`` (``*.weights.h5``) atomically.

    Accepts a full model from `tlcore.model.models.build_model` (its ``"backbone"``) or a
    backbone. The file loads back with weights ``"file:<path>"``.
    """
    from tlcore.model.backbones import canonical_backbone

    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"path must end in .weights.h5. Received: path={str(path)!r}")
    backbone = _backbone_of(model) or model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[: -len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5")
    try:
        canonical_backbone(backbone).save_weights(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _backbone_of(model: keras.Model) -> keras.Model | None:
    try:
        return model.get_layer("backbone")
    except ValueError:
        return None


def load_backbone_from_model_file(
    path: str | os.PathLike, backbone: keras.Model, label: str = ""
) -> None:
    """Copies the backbone weights of an earlier run's model into ``backbone``.

    ``path`` must be a model this package trained (trusted): a ``.keras`` file whose
    ``"backbone"`` sub-model has the same architecture, loaded with
    ``safe_mode=True``. A ``.weights.h5``/``.h5`` backbone weights file (see
    `save_backbone_weights`) is accepted too. Input size and fusion settings may differ.

    Args:
        path: the run's model file.
        backbone: the freshly built backbone to fill.
        label: how to name the architecture in errors.

    Raises:
        FileNotFoundError: no such file.
        WeightsMismatchError: the run's backbone is a different architecture.
    """
    import keras

    path = Path(path).expanduser()
    label = label or backbone.name
    if not path.is_file():
        raise FileNotFoundError(
            f"The run's model file {path} does not exist; the run may not have finished."
        )
    if not path.name.endswith(".keras"):
        load_weights_file(backbone, path, label)
        return
    if not zipfile.is_zipfile(path):
        raise WeightsMismatchError(f"{path.name} is not a Keras model file (.keras is a zip).")
    source_model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    source = _backbone_of(source_model)
    if source is None:
        raise WeightsMismatchError(
            f"The model in {path.name} has no 'backbone' part, so it was not trained by "
            "Transfer Learning Studio; use its weights as a file instead."
        )
    copy_backbone_weights(source, backbone, label, origin=path.name)


def copy_backbone_weights(
    source: keras.Model, target: keras.Model, label: str = "", origin: str = "the run"
) -> None:
    """Copies weights between two backbones of the same architecture.

    Raises:
        WeightsMismatchError: the architectures differ (names the first layer that does).
    """
    from tlcore.model.backbones import canonical_backbone

    src = canonical_backbone(source).weights
    dst = canonical_backbone(target).weights
    label = label or target.name
    if len(src) != len(dst):
        raise WeightsMismatchError(
            f"The backbone in {origin} does not fit {label}: it has {len(src)} weight arrays "
            f"({_count(v.shape for v in src):,} values), {label} has {len(dst)} "
            f"({_count(v.shape for v in dst):,}). Choose a run with the same backbone and alpha."
        )
    for s, d in zip(src, dst, strict=True):
        if tuple(s.shape) != tuple(d.shape):
            raise WeightsMismatchError(
                f"The backbone in {origin} does not fit {label}: {d.path} expects shape "
                f"{tuple(d.shape)}, the run has {tuple(s.shape)}. Choose a run with the same "
                "backbone and alpha."
            )
    for s, d in zip(src, dst, strict=True):
        d.assign(s.numpy())
    _finalize(canonical_backbone(target))
