"""Grad-CAM (issue 7): it points at the evidence, works for every kind of backbone, and
draws a readable overlay."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_config
from tlcore.model import models
from tlcore.serving import explain

SIZE = 64
SQUARE = 14


def _scene(rng, color, corner=None):
    """Gray noise with one coloured square, at ``corner`` (x, y) or anywhere."""
    image = np.clip(rng.normal(128, 30, (SIZE, SIZE, 3)), 0, 255)
    if corner is None:
        x, y = rng.integers(0, SIZE - SQUARE, size=2)
    else:
        x, y = corner
    image[y : y + SQUARE, x : x + SQUARE] = color
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def square_finder():
    """A SmallCNN trained to tell a red square from a blue one, wherever it is."""
    import keras

    rng = np.random.default_rng(0)
    colors = [(230, 30, 30), (30, 30, 230)]
    labels = rng.integers(0, 2, 400)
    x = np.stack([_scene(rng, colors[c]) for c in labels])
    config = tiny_config("squares", image_size=SIZE, dropout=0.0)
    model = models.build_model(config, 2)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, batch_size=16, epochs=6, verbose=0)
    return model, colors


@pytest.mark.slow
def test_the_heatmap_peaks_where_the_evidence_is(square_finder):
    model, colors = square_finder
    cam = explain.GradCam(model, ["red", "blue"])
    rng = np.random.default_rng(1)
    corners = {"top-left": (2, 2), "bottom-right": (SIZE - SQUARE - 2, SIZE - SQUARE - 2)}
    for where, corner in corners.items():
        image = _scene(rng, colors[0], corner)
        result = cam.explain(image)
        assert result.class_name == "red" and result.predicted_index == 0, where
        assert result.probability > 0.9
        x, y = result.peak
        if where == "top-left":
            assert x < 0.5 and y < 0.5, (where, result.peak, result.heatmap.round(2))
        else:
            assert x > 0.5 and y > 0.5, (where, result.peak, result.heatmap.round(2))
        other = cam.explain(image, class_index=1)
        assert other.class_name == "blue" and other.probability < 0.1
        assert not np.allclose(other.heatmap, result.heatmap)


BACKBONES = [
    ("SmallCNN", 32, {}, (4, 4)),
    ("MobileNet", 96, {"alpha": 0.25}, (3, 3)),
    ("MobileNetV2", 96, {}, (3, 3)),
    ("ResNet50", 64, {}, (2, 2)),
    ("EfficientNetB0", 64, {}, (2, 2)),
    ("SmallCNN", 64, {"fusion_stages": 3}, (8, 8)),  # fusion: the last stage is explained
]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "size", "extra", "shape"), BACKBONES)
def test_grad_cam_works_for_every_kind_of_backbone(backbone, size, extra, shape):
    config = tiny_config("any", backbone=backbone, image_size=size, flip="horizontal", **extra)
    model = models.build_model(config, 3)
    cam = explain.GradCam(model, ["a", "b", "c"])
    image = np.random.default_rng(0).uniform(0, 255, (size, size, 3))
    maps = [cam.explain(image, class_index=i) for i in range(3)]
    for result in maps:
        assert result.heatmap.shape == shape
        assert np.isfinite(result.heatmap).all()
        assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert any(r.heatmap.max() > r.heatmap.min() for r in maps), "every map is constant"
    assert not all(np.allclose(maps[0].heatmap, r.heatmap) for r in maps[1:])
    probabilities = [r.probability for r in maps]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert cam.explain(image).class_index == int(np.argmax(probabilities))


def test_a_wrong_class_or_shape_is_refused():
    model = models.build_model(tiny_config("any"), 3)
    cam = explain.GradCam(model)
    image = np.zeros((32, 32, 3))
    with pytest.raises(
        ValueError, match=r"class_index must be from 0 to 2\. Received: class_index=3"
    ):
        cam.explain(image, class_index=3)
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\)"):
        cam.explain(np.zeros((64, 64, 3)))


def test_a_model_of_another_shape_is_named():
    import keras

    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()], name="plain")
    with pytest.raises(ValueError, match="model='plain'"):
        explain.GradCam(plain)


def test_jet_runs_from_blue_to_red():
    low, mid, high = explain.jet_colormap(np.array([0.0, 0.5, 1.0]))
    assert low[2] > 100 and low[0] == 0  # dark blue
    assert mid[1] == 255  # green-ish middle
    assert high[0] > 100 and high[2] == 0  # dark red


def test_the_overlay_keeps_the_picture_and_marks_the_hot_spot():
    picture = Image.new("RGB", (200, 120), (128, 128, 128))
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[0, 3] = 1.0  # top right
    out = explain.overlay_heatmap(picture, heatmap, alpha=0.6)
    assert out.size == picture.size and out.mode == "RGB"
    pixels = np.asarray(out, dtype=int)
    hot, cold = pixels[10, 190], pixels[110, 10]
    assert hot[0] > hot[1] + 50 and hot[0] > hot[2] + 50  # red where the evidence is
    assert cold[2] > cold[0]  # a faint blue elsewhere
    assert abs(cold - 128).max() < 60  # the picture still shows through
    with pytest.raises(ValueError, match="alpha must be in"):
        explain.overlay_heatmap(picture, heatmap, alpha=2)
