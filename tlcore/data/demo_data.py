"""The built-in demo dataset: five classes of shapes, drawn procedurally, no download needed.

Each image shows one shape (circle, hexagon, square, star or triangle) at a random
position, size, rotation and colour, filled or outlined, over a random gradient with
clutter lines and noise. Colour and background carry no information, and circles and
hexagons look alike at this resolution, so a small CNN does not reach 100% in its first
epoch: the learning curves have something to show. A frozen ImageNet backbone learns it
quickly, which is the point of transfer learning.

Every image depends only on ``(seed, class, index)``, so the set is identical on every
machine and run, whatever order the images are drawn in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_NAME = "Demo shapes"
DEMO_VERSION = 1  # bump when the drawing changes, so an old import is not mistaken for it
DEMO_SEED = 20240601
DEMO_CLASSES = ("circle", "hexagon", "square", "star", "triangle")
IMAGES_PER_CLASS = 80
MIN_SIDE, MAX_SIDE = 64, 96
JPEG_QUALITY = 90
SUPERSAMPLE = 3  # draw at 3x and shrink: smooth edges without an antialiasing renderer
OUTLINE_PROBABILITY = 0.15
INVERTED_PROBABILITY = 0.15  # usually a dark shape on a light background; sometimes not
LIGHT, DARK = (150, 256), (0, 120)  # channel ranges of the two sides of the contrast

Progress = Callable[[float, str], None]


def generate_demo_image(class_name: str, index: int, *, seed: int = DEMO_SEED) -> Image.Image:
    """Draws one demo image.

    Args:
        class_name: one of ``DEMO_CLASSES``.
        index: the image's number within its class; any non-negative integer.
        seed: the dataset seed (default ``DEMO_SEED``).

    Returns:
        An RGB image between ``MIN_SIDE`` and ``MAX_SIDE`` pixels square.

    Raises:
        ValueError: ``class_name`` is not a demo class.
    """
    if class_name not in DEMO_CLASSES:
        raise ValueError(
            f"class_name must be one of {DEMO_CLASSES}. Received: class_name={class_name!r}"
        )
    rng = np.random.default_rng([seed, DEMO_CLASSES.index(class_name), index])
    side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    canvas_side = side * SUPERSAMPLE
    # Hue is random, but the shape is darker than the background (or, sometimes, lighter),
    # so that a small network trained from scratch on a few hundred images can learn it.
    background, foreground = LIGHT, DARK
    if rng.random() < INVERTED_PROBABILITY:
        background, foreground = DARK, LIGHT
    start, end = _random_colour(rng, background), _random_colour(rng, background)
    canvas = _gradient_background(rng, canvas_side, start, end)
    draw = ImageDraw.Draw(canvas)
    _draw_clutter(draw, rng, canvas_side)
    _draw_shape(draw, rng, class_name, canvas_side, _random_colour(rng, foreground))
    image = canvas.resize((side, side), Image.Resampling.LANCZOS)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return _add_noise(image, rng)


def iter_demo_images(
    *, images_per_class: int = IMAGES_PER_CLASS, seed: int = DEMO_SEED
) -> Iterator[tuple[str, str, Image.Image]]:
    """Yields ``(class_name, file_name, image)`` for the whole demo set, class by class."""
    for class_name in DEMO_CLASSES:
        for index in range(images_per_class):
            yield (
                class_name,
                f"{class_name}_{index:03d}.jpg",
                generate_demo_image(class_name, index, seed=seed),
            )


def write_demo_images(
    dest_dir: str | os.PathLike,
    *,
    images_per_class: int = IMAGES_PER_CLASS,
    seed: int = DEMO_SEED,
    progress: Progress | None = None,
) -> list[Path]:
    """Writes the demo set as ``dest_dir/<class>/<class>_<nnn>.jpg`` JPEG files.

    Args:
        dest_dir: the folder to write into (created if missing).
        images_per_class: images per class (default ``IMAGES_PER_CLASS``).
        seed: the dataset seed (default ``DEMO_SEED``).
        progress: called as ``progress(fraction, message)`` after each image.

    Returns:
        The written files, class by class.
    """
    dest_dir = Path(dest_dir)
    total = images_per_class * len(DEMO_CLASSES)
    written: list[Path] = []
    for class_name, file_name, image in iter_demo_images(
        images_per_class=images_per_class, seed=seed
    ):
        path = dest_dir / class_name / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, "JPEG", quality=JPEG_QUALITY)
        written.append(path)
        if progress is not None:
            progress(len(written) / total, f"Drew {file_name}")
    return written


def _random_colour(
    rng: np.random.Generator, channel_range: tuple[int, int] = (0, 256)
) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(*channel_range, size=3))


def _gradient_background(
    rng: np.random.Generator, side: int, start_colour: tuple, end_colour: tuple
) -> Image.Image:
    start = np.array(start_colour, dtype=np.float32)
    end = np.array(end_colour, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    coords = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    xx, yy = np.meshgrid(coords, coords)
    t = (xx * math.cos(angle) + yy * math.sin(angle) + 1.5) / 3.0  # 0..1 across the image
    pixels = start + (end - start) * t[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int) -> None:
    for _ in range(int(rng.integers(0, 3))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, side, size=4))
        width = SUPERSAMPLE
        draw.line((x0, y0, x1, y1), fill=_random_colour(rng), width=width)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    class_name: str,
    side: int,
    colour: tuple[int, int, int],
) -> None:
    radius = side * rng.uniform(0.2, 0.38)
    margin = radius * 0.7  # lets the shape touch or slightly leave the frame sometimes
    cx, cy = (float(v) for v in rng.uniform(margin, side - margin, size=2))
    rotation = rng.uniform(0, 2 * math.pi)
    squash = rng.uniform(0.8, 1.0)  # shapes are not perfectly regular
    points = _shape_points(class_name, rng, radius, rotation, squash)
    polygon = [(cx + x, cy + y) for x, y in points]
    if rng.random() < OUTLINE_PROBABILITY:
        width = int(rng.integers(2, 4)) * SUPERSAMPLE
        draw.polygon(polygon, outline=colour, width=width)
    else:
        draw.polygon(polygon, fill=colour)


def _shape_points(
    class_name: str, rng: np.random.Generator, radius: float, rotation: float, squash: float
) -> list[tuple[float, float]]:
    if class_name == "circle":
        radii, count = [radius], 48
    elif class_name == "hexagon":
        radii, count = [radius], 6
    elif class_name == "square":
        radii, count = [radius], 4
    elif class_name == "triangle":
        radii, count = [radius * 1.1], 3
    else:  # star: alternating outer and inner points
        radii, count = [radius * 1.1, radius * rng.uniform(0.4, 0.6)], 10
    points = []
    for k in range(count):
        r = radii[k % len(radii)]
        theta = 2 * math.pi * k / count
        x, y = r * math.cos(theta), r * math.sin(theta) * squash
        points.append(
            (
                x * math.cos(rotation) - y * math.sin(rotation),
                x * math.sin(rotation) + y * math.cos(rotation),
            )
        )
    return points


def _add_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    sigma = rng.uniform(2.0, 10.0)
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")
