"""The one image loader: every image the studio trains on, evaluates or predicts goes through here.

`load_image` decides what an image *is* for the whole application: the file type is
detected from its bytes (never its extension), its size is checked from the header before
any pixel is decoded, EXIF orientation is applied, and every mode (grayscale, palette,
alpha, CMYK, 16-bit, float) becomes 8-bit RGB, with transparency composited on white.
Training (`tlcore.data.pipeline`), evaluation and prediction all call it, so a model never sees
an image differently at prediction time than it did in training.

Failures raise `ImageError` with a ``reason`` a caller can count (``REASONS``) and a
message that names the file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from tlcore.data import fingerprints
from tlcore.store import server_paths

MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes to ~150 MB of RGB: enough for anything real
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
REASONS = (
    "not_an_image",
    "unreadable",
    "truncated",
    "too_large",
    "unsupported_format",
    "not_a_regular_file",  # a named pipe, a device or a socket: never opened, it could hang
)
WHITE = (255, 255, 255)
EXIF_ORIENTATION_TAG = 0x0112
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SNIFF_BYTES = 32

# Magic numbers of the accepted formats, checked in order. "MPO" is how Pillow names a
# JPEG carrying a second (depth or preview) picture, common from phones; it is a JPEG.
_ACCEPTED_SIGNATURES: tuple[tuple[int, bytes, str, tuple[str, ...]], ...] = (
    (0, b"\xff\xd8\xff", "JPEG", ("JPEG", "MPO")),
    (0, b"\x89PNG\r\n\x1a\n", "PNG", ("PNG",)),
    (0, b"GIF87a", "GIF", ("GIF",)),
    (0, b"GIF89a", "GIF", ("GIF",)),
    (0, b"II*\x00", "TIFF", ("TIFF",)),
    (0, b"MM\x00*", "TIFF", ("TIFF",)),
    (0, b"BM", "BMP", ("BMP",)),
)
# Formats people upload that we recognise but do not read, so the message can say what to do.
_KNOWN_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"8BPS", "PSD"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\x00\x00\x01\x00", "ICO"),
)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


class ImageError(ValueError):
    """An image could not be used.

    Attributes:
        reason: one of ``REASONS``: 'not_an_image', 'unreadable', 'truncated', 'too_large',
            'unsupported_format' or 'not_a_regular_file'.
        source: the file name or path the message names.
    """

    def __init__(self, reason: str, message: str, *, source: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"Unknown image error reason. Received: reason={reason!r}")
        super().__init__(message)
        self.reason = reason
        self.source = source


@dataclass(frozen=True)
class ImageInfo:
    """What `probe_image` learns about an image without decoding all of it.

    ``width`` and ``height`` are as displayed, i.e. after EXIF orientation; ``mode`` is
    the stored Pillow mode (before conversion to RGB); ``format`` is one of
    ``ACCEPTED_FORMATS``.
    """

    width: int
    height: int
    mode: str
    format: str
    # From the pixels, when the data was verified (`tlcore.data.fingerprints.summarize`);
    # not compared: two infos are equal when the headers agree.
    fingerprint: bytes | None = dataclasses.field(default=None, compare=False)  # 16 x 16 grey
    plain: bool = dataclasses.field(default=False, compare=False)  # one colour all over


def probe_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    verify: bool = True,
    fingerprint: bool = True,
    name: str | None = None,
) -> ImageInfo:
    """Reads an image's header and checks that its data is complete, without a full decode.

    With ``verify`` the data is checked as cheaply as each format allows: a JPEG is decoded
    at 1/8 scale (which still reads every byte, so truncation is caught; never below 32 px),
    a PNG's chunk checksums are verified, and the other formats are decoded fully. The
    decoded picture also gives the image's fingerprint (`tlcore.data.fingerprints`); a PNG
    is decoded for it after its checksums are checked (Pillow's decoder skips the pixel
    chunks' checksums), ~20 ms more for a 1024 x 768 photo.

    Args:
        source: a path, the file's bytes, or a binary file-like object.
        max_pixels: images with more pixels than this are refused; default ``MAX_PIXELS``.
        verify: also check the pixel data (default True); False reads the header only.
        fingerprint: with ``verify``, also take the fingerprint (default True).
        name: the name to use in error messages (default: the path or the file object's
            ``name``).

    Returns:
        The image's displayed width and height, stored mode and format, and with
        ``verify`` and ``fingerprint`` its fingerprint and whether it is one plain colour.

    Raises:
        ImageError: the file is not an image, is of an unsupported format, is truncated,
            is unreadable or is larger than ``max_pixels``.
    """
    label = _describe(source, name)
    with _open_binary(source, label) as fh:
        start = fh.tell()
        image, fmt = _open_checked(fh, label, max_pixels)
        with image:
            width, height = image.size
            if _exif_orientation(image, fmt) in _ROTATED_ORIENTATIONS:
                width, height = height, width
            info = ImageInfo(width=width, height=height, mode=image.mode, format=fmt)
            if verify:
                picture = _verify_data(image, fmt, label, (fh, start) if fingerprint else None)
                if fingerprint:
                    summary, plain = fingerprints.summarize(picture)
                    info = dataclasses.replace(info, fingerprint=summary, plain=plain)
                if picture is not image:
                    picture.close()
    return info


def load_image(
    source: ImageSource, *, max_pixels: int = MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """Loads an image as an upright 8-bit RGB Pillow image.

    The format is detected from the content; animated GIF/WebP/multi-page TIFF give their
    first frame; EXIF orientation is applied; every mode becomes RGB (see `to_rgb`).

    Args:
        source: a path, the file's bytes, or a binary file-like object (e.g. an upload).
        max_pixels: images with more pixels than this are refused before decoding;
            default ``MAX_PIXELS``.
        name: the name to use in error messages (default: the path or the file object's
            ``name``).

    Returns:
        A fully loaded RGB image, independent of the source file.

    Raises:
        ImageError: the file is not an image, is of an unsupported format, is truncated,
            is unreadable or is larger than ``max_pixels``.
    """
    return _load(source, max_pixels=max_pixels, name=name, draft_size=None)


def load_image_array(
    source: ImageSource,
    size: int,
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Loads an image (see `load_image`) and resizes it to ``size`` x ``size`` for a model.

    The aspect ratio is not kept (the whole image is squeezed into the square, as Keras'
    ``image_dataset_from_directory`` does by default), using bilinear filtering that
    averages over the source pixels when shrinking. A large JPEG is decoded at a reduced
    scale that is still at least ``size`` on each side, which is much faster and does not
    change the result visibly.

    Args:
        source: a path, the file's bytes, or a binary file-like object.
        size: the side of the square output, in pixels.
        max_pixels: see `load_image`.
        name: the name to use in error messages.

    Returns:
        A ``uint8`` array of shape ``(size, size, 3)``.

    Raises:
        ValueError: ``size`` is not a positive integer.
        ImageError: see `load_image`.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive number of pixels. Received: size={size!r}")
    size = int(size)
    image = _load(source, max_pixels=max_pixels, name=name, draft_size=size)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts an image of any Pillow mode to 8-bit RGB.

    Transparency (RGBA, LA, palette with a transparent colour) is composited on white,
    because that is how a person looks at such an image. 16- and 32-bit integer images are
    scaled into 0..255 rather than clipped (a 16-bit PNG clipped would be almost all white);
    float images are taken as 0..1 when they fit in it, else scaled by their range.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and _has_transparency(image)):
        return _composite_on_white(image.convert("RGBA"))
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


def _load(
    source: ImageSource, *, max_pixels: int, name: str | None, draft_size: int | None
) -> Image.Image:
    label = _describe(source, name)
    with _open_binary(source, label) as fh:
        image, fmt = _open_checked(fh, label, max_pixels)
        with image:
            if draft_size is not None and fmt == "JPEG":
                # Mode None: keep the stored colour space; only the DCT scale changes.
                image.draft(None, (draft_size, draft_size))
            _decode(image, label)
            upright = _apply_exif_orientation(image)
    return to_rgb(upright)


def _open_binary(source: ImageSource, label: str):
    """A context manager yielding a seekable binary file for ``source``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            return server_paths.open_regular_file(source)
        except server_paths.NotRegularFileError as exc:
            raise ImageError(
                "not_a_regular_file",
                f"{label} is {exc.kind}, not a regular file; it was not read.",
                source=label,
            ) from exc
        except FileNotFoundError as exc:
            raise ImageError(
                "unreadable", f"{label}: the file does not exist.", source=label
            ) from exc
        except OSError as exc:
            raise ImageError(
                "unreadable",
                f"{label}: could not open the file ({exc.strerror or exc}).",
                source=label,
            ) from exc
    if hasattr(source, "read"):
        return _SeekableView(source)
    raise TypeError(
        "source must be a path, bytes or a binary file object. "
        f"Received: source of type {type(source).__name__}"
    )


class _SeekableView:
    """Wraps a caller's file object: makes it seekable and leaves it open afterwards."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj
        seekable = getattr(fileobj, "seekable", lambda: False)()
        if seekable:
            self._start = fileobj.tell()
            self._fh: BinaryIO = fileobj
        else:
            self._start = None
            self._fh = io.BytesIO(fileobj.read())

    def __enter__(self) -> BinaryIO:
        return self._fh

    def __exit__(self, *exc_info) -> None:
        if self._start is not None:  # leave an upload readable again for the caller
            self._fileobj.seek(self._start)


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source))
    file_name = getattr(source, "name", None)
    if isinstance(file_name, str) and file_name:
        return file_name
    return "The image"


def _sniff_format(head: bytes) -> tuple[str, tuple[str, ...]] | None:
    for offset, magic, fmt, pillow_formats in _ACCEPTED_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return fmt, pillow_formats
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", ("WEBP",)
    return None


def _open_checked(fh: BinaryIO, label: str, max_pixels: int) -> tuple[Image.Image, str]:
    """Opens the header only, refusing non-images, unsupported formats and oversize images."""
    start = fh.tell()
    head = fh.read(_SNIFF_BYTES)
    fh.seek(start)
    sniffed = _sniff_format(head)
    if sniffed is None:
        raise _unrecognised(fh, head, label)
    fmt, pillow_formats = sniffed
    if fmt == "WEBP" and not features.check("webp"):
        raise ImageError(
            "unsupported_format",
            f"{label} is a WebP image, but this installation of Pillow cannot read WebP. "
            "Convert it to JPEG or PNG.",
            source=label,
        )
    try:
        image = Image.open(fh, formats=pillow_formats)
    except Image.DecompressionBombError as exc:
        # Pillow refuses on its own above 2x its global limit; same meaning as ours.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise _too_large(label, detail, max_pixels) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            "unreadable",
            f"{label} looks like a {fmt} file but its header could not be read ({exc}). "
            "The file may be damaged; re-export it or remove it.",
            source=label,
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_large(label, f"{width}x{height} = {width * height:,} pixels", max_pixels)
    return image, fmt


def _unrecognised(fh: BinaryIO, head: bytes, label: str) -> ImageError:
    for offset, magic, fmt in _KNOWN_UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return _unsupported(label, fmt)
    # Pillow may still know the format (PPM, ICNS, TGA...): name it, but do not accept it.
    start = fh.tell()
    try:
        with Image.open(fh) as other:
            return _unsupported(label, other.format or "unknown")
    except Exception:  # any failure here just means: not a format we know
        pass
    finally:
        fh.seek(start)
    return ImageError(
        "not_an_image",
        f"{label} is not an image (its content is not JPEG, PNG, BMP, GIF, WebP or TIFF, "
        "whatever its extension says).",
        source=label,
    )


def _unsupported(label: str, fmt: str) -> ImageError:
    return ImageError(
        "unsupported_format",
        f"{label} is a {fmt} image, which is not supported. Convert it to JPEG or PNG.",
        source=label,
    )


def _too_large(label: str, detail: str, max_pixels: int) -> ImageError:
    return ImageError(
        "too_large",
        f"{label} is too large ({detail}; the limit is {max_pixels:,} pixels). "
        "Resize it before importing.",
        source=label,
    )


def _decode(image: Image.Image, label: str) -> None:
    """Decodes the pixel data, turning any decoder failure into an ImageError."""
    try:
        image.seek(0)
        image.load()
    except Exception as exc:  # Pillow's decoders raise many types on damaged data
        raise _decode_error(exc, label) from exc


def _verify_data(
    image: Image.Image, fmt: str, label: str, reopen: tuple[BinaryIO, int] | None
) -> Image.Image:
    """Checks the pixel data; returns the decoded picture (a JPEG's at 1/8 scale).

    ``reopen`` (the image's file and where it begins) asks for a picture to take a
    fingerprint from: a PNG is then decoded too, from a fresh open, and a JPEG no smaller
    than the fingerprint's thumbnail. None: only check (a PNG's ``image`` comes back unusable).
    """
    if fmt == "PNG":
        try:
            image.verify()  # reads every chunk and checks its CRC
        except Exception as exc:  # as in _decode
            raise _decode_error(exc, label) from exc
        if reopen is None:
            return image
        fh, start = reopen
        fh.seek(start)
        picture = Image.open(fh, formats=["PNG"])  # verify() leaves the image unusable
        _decode(picture, label)
        return picture
    if fmt == "JPEG":
        # At 1/8 scale (every byte is still read), but for a fingerprint never below its
        # thumbnail: a small JPEG at 1/8 would be blurred into a few pixels.
        width, height = image.size
        side = fingerprints.PLAIN_SIDE if reopen is not None else 1
        image.draft(None, (min(width, max(side, width // 8)), min(height, max(side, height // 8))))
    _decode(image, label)
    return image


def _decode_error(exc: Exception, label: str) -> ImageError:
    text = str(exc)
    if "truncated" in text.lower() or "broken data stream" in text or isinstance(exc, EOFError):
        return ImageError(
            "truncated",
            f"{label} is truncated (the file ends before the image does); "
            "it was probably cut off while copying or downloading.",
            source=label,
        )
    return ImageError(
        "unreadable",
        f"{label} could not be decoded ({text or type(exc).__name__}); the file is damaged.",
        source=label,
    )


def _exif_orientation(image: Image.Image, fmt: str) -> int:
    """The EXIF orientation tag (1 = upright), read from the header only."""
    try:
        if fmt == "PNG":
            # Pillow's PNG getexif() decodes the whole image to look for a late eXIf chunk;
            # an early one is already in .info, and late ones are rare enough to ignore here.
            exif = Image.Exif()
            exif.load(image.info.get("exif", b""))
        else:
            exif = image.getexif()
        return int(exif.get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block must not make the image unusable
        return 1


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # as in _exif_orientation: show the image as stored
        return image.copy()


def _has_transparency(image: Image.Image) -> bool:
    return "transparency" in image.info


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scaled = _scale_float(values)
    else:
        scaled = _scale_integer(values)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _scale_integer(values: np.ndarray) -> np.ndarray:
    peak = float(values.max()) if values.size else 0.0
    if peak <= 255:
        return values
    if peak <= 65535:
        return values / 257.0  # 16-bit: 65535 -> 255 exactly
    return _stretch(values)


def _scale_float(values: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if low >= 0.0 and high <= 1.0:
        return finite * 255.0
    if low >= 0.0 and high <= 255.0:
        return finite
    return _stretch(finite)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))
