"""The one image loader: content detection, size limits, EXIF, every mode to RGB, damage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_header_only
from tlcore.data import images
from tlcore.data.images import ImageError, ImageInfo, load_image, load_image_array, probe_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise_jpeg(size: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = orientation
    return encode(image, fmt, exif=exif)


def left_red_right_blue(width: int = 20, height: int = 10) -> Image.Image:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


# --- what counts as an image -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_accepted_format_loads_as_rgb(fmt):
    data = encode(Image.new("RGB", (6, 4), GREEN), fmt)

    image = load_image(data)

    assert image.mode == "RGB"
    assert image.size == (6, 4)
    assert probe_image(data).format == fmt


def test_format_is_detected_from_content_not_extension(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(Image.new("RGB", (3, 3), RED), "PNG"))

    assert probe_image(path) == ImageInfo(width=3, height=3, mode="RGB", format="PNG")
    assert load_image(path).getpixel((1, 1)) == RED


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my notes, not a photo")

    with pytest.raises(ImageError) as caught:
        load_image(path)

    assert caught.value.reason == "not_an_image"
    assert "notes.jpg" in str(caught.value)


def test_format_pillow_knows_but_we_do_not_accept_is_unsupported():
    data = encode(Image.new("RGB", (4, 4)), "PPM")

    with pytest.raises(ImageError) as caught:
        probe_image(data, name="scan.ppm")

    assert caught.value.reason == "unsupported_format"
    assert "scan.ppm" in str(caught.value) and "PPM" in str(caught.value)


def test_heic_is_named_as_unsupported():
    heic_header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 16

    with pytest.raises(ImageError) as caught:
        probe_image(heic_header, name="IMG_0001.HEIC")

    assert caught.value.reason == "unsupported_format"
    assert "HEIC" in str(caught.value) and "JPEG or PNG" in str(caught.value)


# --- damage ------------------------------------------------------------------------------


def test_truncated_jpeg_is_caught_by_probe_and_load():
    data = noise_jpeg()
    cut = data[: len(data) // 2]

    for read in (probe_image, load_image):
        with pytest.raises(ImageError) as caught:
            read(cut, name="cut.jpg")
        assert caught.value.reason == "truncated"
        assert "cut.jpg" in str(caught.value)


def test_truncated_png_is_caught_by_probe():
    data = encode(Image.new("RGB", (32, 32), RED), "PNG")

    with pytest.raises(ImageError) as caught:
        probe_image(data[:-20], name="cut.png")

    assert caught.value.reason == "truncated"


def test_header_only_probe_does_not_read_pixel_data():
    data = noise_jpeg()
    cut = data[: len(data) // 2]

    assert probe_image(cut, verify=False).width == 64


def test_missing_file_is_unreadable_and_named(tmp_path):
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path / "gone.png")

    assert caught.value.reason == "unreadable"
    assert "gone.png" in str(caught.value)


# --- size limits -------------------------------------------------------------------------


def test_huge_png_is_refused_from_its_header():
    data = png_header_only(20_000, 20_000)  # 400 megapixels declared in ~100 bytes

    with pytest.raises(ImageError) as caught:
        load_image(data, name="huge.png")

    assert caught.value.reason == "too_large"
    assert "huge.png" in str(caught.value) and "400,000,000" in str(caught.value)


def test_pixel_limit_is_ours_not_pillows():
    # 60 MP is below Pillow's own hard limit (~179 MP) but above MAX_PIXELS.
    data = png_header_only(10_000, 6_000)

    with pytest.raises(ImageError) as caught:
        probe_image(data)

    assert caught.value.reason == "too_large"
    assert "10000x6000" in str(caught.value)


def test_pixel_limit_can_be_lowered():
    data = encode(Image.new("RGB", (100, 100)), "PNG")

    with pytest.raises(ImageError, match="limit is 9,999 pixels"):
        load_image(data, max_pixels=9_999)
    assert load_image(data, max_pixels=10_000).size == (100, 100)


# --- orientation -------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    data = with_orientation(left_red_right_blue(), "PNG", orientation=6)  # rotate 90° CW

    image = load_image(data)

    assert image.size == (10, 20)
    assert image.getpixel((5, 2)) == RED  # the left (red) half is now on top
    assert image.getpixel((5, 17)) == BLUE


def test_probe_reports_displayed_size_of_rotated_jpeg():
    data = with_orientation(left_red_right_blue(), "JPEG", orientation=8)

    info = probe_image(data)

    assert (info.width, info.height) == (10, 20)
    assert load_image(data).size == (10, 20)


# --- every mode to RGB -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("1", (4, 4), 1), "PNG", WHITE),
        (Image.new("L", (4, 4), 128), "PNG", (128, 128, 128)),
        (Image.new("LA", (4, 4), (0, 0)), "PNG", WHITE),  # transparent black -> white
        (Image.new("LA", (4, 4), (50, 255)), "PNG", (50, 50, 50)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG", WHITE),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "PNG", RED),
        (Image.new("RGB", (4, 4), BLUE).convert("P"), "PNG", BLUE),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF", RED),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", RED),
        (Image.fromarray(np.full((4, 4), 65535, np.uint16)), "PNG", WHITE),  # I;16
        (Image.fromarray(np.full((4, 4), 32896, np.uint16)), "TIFF", (128, 128, 128)),
        (Image.fromarray(np.full((4, 4), 1028, np.int32)), "TIFF", (4, 4, 4)),  # I, 16-bit range
        (Image.fromarray(np.full((4, 4), 0.5, np.float32)), "TIFF", (128, 128, 128)),  # F
    ],
    ids=lambda v: getattr(v, "mode", None) or str(v),
)
def test_every_mode_becomes_rgb(image, fmt, expected):
    loaded = load_image(encode(image, fmt))

    assert loaded.mode == "RGB"
    assert loaded.size == (4, 4)
    assert loaded.getpixel((1, 1)) == pytest.approx(expected, abs=3)


def test_32_bit_values_beyond_16_bits_are_stretched_to_full_range():
    values = np.array([[0, 50_000], [100_000, 200_000]], dtype=np.int32)

    loaded = np.asarray(load_image(encode(Image.fromarray(values), "TIFF")))

    assert loaded[0, 0].tolist() == [0, 0, 0]
    assert loaded[1, 1].tolist() == [255, 255, 255]


def test_palette_with_transparent_colour_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)

    loaded = load_image(encode(image, "PNG", transparency=0))

    assert loaded.getpixel((0, 0)) == RED
    assert loaded.getpixel((2, 2)) == WHITE


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (5, 5), colour).convert("P") for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)

    assert load_image(data).getpixel((2, 2)) == RED


# --- sources and the model-ready array ---------------------------------------------------


def test_file_like_source_is_read_and_left_rewound():
    upload = io.BytesIO(encode(Image.new("RGB", (3, 2), GREEN), "PNG"))
    upload.name = "upload.png"

    assert load_image(upload).size == (3, 2)
    assert upload.tell() == 0


def test_load_image_array_resizes_to_square_uint8():
    data = encode(left_red_right_blue(40, 20), "PNG")

    pixels = load_image_array(data, 8)

    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[4, 0]) == RED and tuple(pixels[4, 7]) == BLUE


def test_load_image_array_applies_orientation_before_resizing():
    data = with_orientation(left_red_right_blue(), "PNG", orientation=6)

    pixels = load_image_array(data, 10)

    assert tuple(pixels[0, 5]) == RED and tuple(pixels[9, 5]) == BLUE


def test_load_image_array_decodes_big_jpeg_at_reduced_scale_without_visible_change():
    big = Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((64, 64), np.uint8)))
    data = encode(big.convert("RGB"), "JPEG", quality=95)

    fast = load_image_array(data, 64).astype(np.float32)
    exact = np.asarray(load_image(data).resize((64, 64), Image.Resampling.BILINEAR), np.float32)

    assert np.abs(fast - exact).mean() < 5.0  # of 255: edges a little softer, nothing more


@pytest.mark.parametrize("bad_size", [0, -3, 2.5, True])
def test_load_image_array_rejects_bad_size(bad_size):
    with pytest.raises(ValueError, match="size must be a positive"):
        load_image_array(noise_jpeg(8), bad_size)
