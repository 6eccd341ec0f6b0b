"""Tests for the backbone registry (tlcore.model.backbones) and weight sources
(tlcore.model.weights).

Offline and deterministic. The real ImageNet weights test uses the MobileNet v1
alpha-0.25 file from ``$TLS_TEST_KERAS_HOME`` (default ``<repo>/../shared/keras_home``);
it is skipped when absent, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from keras.src.utils import file_utils

from tlcore.config import RunConfig
from tlcore.model import backbones, weights
from tlcore.model.backbones import BACKBONES, Preprocess, get_backbone
from tlcore.model.models import build_model
from tlcore.model.weights import (
    WeightsMismatchError,
    WeightsUnavailableError,
    imagenet_weights_status,
    save_backbone_weights,
)

REPO = Path(__file__).resolve().parents[1]
MOBILENET_025_FILE = "mobilenet_2_5_224_tf_no_top.h5"

EXPECTED_BACKBONES = {
    "SmallCNN",
    "VGG16",
    "VGG19",
    "ResNet50",
    "ResNet50V2",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetV2B0",
    "InceptionV3",
    "DenseNet121",
    "Xception",
    "ConvNeXtTiny",
}

# (layer name → block) examples a user would recognise, one or more per backbone.
BLOCK_EXAMPLES = {
    "SmallCNN": {"block4_conv": "block4", "block1_bn": "block1"},
    "VGG16": {"block5_conv3": "block5", "block1_conv1": "block1"},
    "VGG19": {"block5_conv4": "block5"},
    "ResNet50": {"conv5_block3_out": "conv5_block3", "conv1_conv": "stem"},
    "ResNet50V2": {"conv5_block3_3_conv": "conv5_block3", "post_relu": "top"},
    "MobileNet": {"conv_pw_13_relu": "block_13", "conv_pad_12": "block_12", "conv1": "stem"},
    "MobileNetV2": {"block_16_project": "block_16", "Conv_1": "top", "Conv1": "stem"},
    "MobileNetV3Small": {"expanded_conv_10_project": "block_10", "conv_1_bn": "top"},
    "MobileNetV3Large": {"expanded_conv_14_add": "block_14", "expanded_conv_project": "block_0"},
    "EfficientNetB0": {"block7a_project_bn": "block7a", "top_conv": "top", "stem_conv": "stem"},
    "EfficientNetB1": {"block7b_add": "block7b"},
    "EfficientNetB2": {"block6e_add": "block6e"},
    "EfficientNetB3": {"block6f_add": "block6f"},
    "EfficientNetV2B0": {"block6h_add": "block6h", "top_bn": "top"},
    "InceptionV3": {"mixed10": "mixed10", "mixed9_1": "mixed10", "mixed0": "mixed0"},
    "DenseNet121": {"conv5_block16_2_conv": "conv5_block16", "pool4_conv": "pool4", "bn": "top"},
    "Xception": {"block14_sepconv2_act": "block14", "block1_conv1": "block1"},
    "ConvNeXtTiny": {
        "convnext_tiny_stage_3_block_2_depthwise_conv": "stage3_block2",
        "convnext_tiny_downsampling_block_2": "downsample2",
        "convnext_tiny_stem": "stem",
    },
}


def _small_size(spec) -> int:
    return max(spec.min_size, 32)


def _config(**overrides) -> RunConfig:
    values = {"dataset": "test", "backbone": "SmallCNN", "weights": "none", "image_size": 32}
    values.update(overrides)
    return RunConfig(**values)


@pytest.fixture
def offline(monkeypatch):
    """Makes every Keras download fail at once, as on a machine without internet."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def real_keras_home(tmp_path, monkeypatch):
    """A writable copy of the shared Keras home with the real MobileNet 0.25 weights."""
    source = Path(
        os.environ.get("TLS_TEST_KERAS_HOME", REPO.parent / "shared" / "keras_home")
    ).resolve()
    if not (source / "models" / MOBILENET_025_FILE).is_file():
        reason = f"the real ImageNet weights {MOBILENET_025_FILE} are not in {source}/models"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: this test must run)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    home = tmp_path / "keras_home"
    shutil.copytree(source, home)
    home.chmod(0o755)
    (home / "models").chmod(0o755)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


# -- the registry ----------------------------------------------------------------------
def test_registry_holds_every_promised_backbone():
    assert set(BACKBONES) == EXPECTED_BACKBONES
    for name, spec in BACKBONES.items():
        assert spec.name == name
        assert spec.preprocess_mode in backbones.PREPROCESS_MODES
        assert spec.min_size <= spec.default_size
        assert spec.speed_224 > 0 and spec.activation_mb_224 > 0
        assert spec.has_imagenet_weights == (name != "SmallCNN")
        assert spec.preprocess_in_model == (spec.preprocess_mode == "none")


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_backbone("ResNet9000")
    message = str(err.value)
    assert "Received: backbone='ResNet9000'" in message
    assert "MobileNetV2" in message and "SmallCNN" in message


@pytest.mark.parametrize("name", sorted(EXPECTED_BACKBONES))
def test_backbone_builds_with_random_weights(name):
    """Every backbone builds small into a working model, with the registry's facts true."""
    spec = BACKBONES[name]
    size = _small_size(spec)
    config = _config(backbone=name, image_size=size, fusion_stages=spec.max_fusion_stages)
    model = build_model(config, 3)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    backbone = model.get_layer("backbone")
    assert backbone.count_params() == spec.params
    stages = backbone.outputs
    assert len(stages) == spec.max_fusion_stages
    assert stages[-1].shape[-1] == spec.feature_channels
    sides = [tensor.shape[1] for tensor in stages]
    assert sides == sorted(sides, reverse=True)
    assert model.get_layer("pooling").output.shape == (None, sum(t.shape[-1] for t in stages))

    blocks = backbones.block_of_layers(spec, backbone)
    assert len(backbones.block_names(spec, backbone)) == spec.num_blocks
    for layer_name, block in BLOCK_EXAMPLES[name].items():
        assert blocks[layer_name] == block, layer_name
    assert all(block for layer, block in blocks.items() if layer != backbone.layers[0].name)
    keras.backend.clear_session()


@pytest.mark.parametrize("name", sorted(EXPECTED_BACKBONES))
def test_preprocess_layer_matches_keras_preprocess_input(name):
    spec = BACKBONES[name]
    images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(Preprocess(spec.preprocess_mode)(images))
    theirs = np.asarray(spec.preprocess(images.copy()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_efficientnet_random_weights_use_imagenet_layout():
    """B0-B3 built for any weights source normalise like Keras' ImageNet build does."""
    spec = BACKBONES["EfficientNetB0"]
    base = backbones.build_base(spec, 32)
    scale = base.get_layer("normalization_imagenet_scale")
    probe = keras.Model(base.input, scale.output)
    image = np.full((1, 32, 32, 3), 200.0, "float32")
    got = keras.ops.convert_to_numpy(probe(image))[0, 0, 0]
    want = (200.0 / 255.0 - np.array(backbones.IMAGENET_MEAN_RGB)) / np.array(
        backbones.IMAGENET_STD_RGB
    )
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("InceptionV3", 64, "at least 75"),
        ("Xception", 70, "at least 71"),
        ("VGG16", 31, "at least 32"),
    ],
)
def test_image_size_below_minimum_is_refused(name, size, message):
    with pytest.raises(ValueError) as err:
        backbones.validate_backbone_args(name, 1.0, size, "none")
    assert message in str(err.value)
    assert f"Received: image_size={size}" in str(err.value)


def test_alpha_only_for_mobilenets_and_shipped_alphas_only_for_imagenet():
    with pytest.raises(ValueError, match=r"MobileNet backbones only.*Received: alpha=0.5"):
        backbones.validate_backbone_args("ResNet50", 0.5, 0, "none")
    with pytest.raises(ValueError) as err:
        backbones.validate_backbone_args("MobileNetV2", 0.6, 0, "imagenet")
    assert "0.35, 0.5, 0.75, 1.0, 1.3, 1.4" in str(err.value)
    assert "Received: alpha=0.6" in str(err.value)
    backbones.validate_backbone_args("MobileNetV2", 0.6, 0, "none")  # any width from scratch
    with pytest.raises(ValueError, match="SmallCNN has no ImageNet weights"):
        backbones.validate_backbone_args("SmallCNN", 1.0, 0, "imagenet")


# -- ImageNet weight files: the names Keras itself asks for ----------------------------------
class _Captured(Exception):
    pass


KERAS_FILE_CASES = [
    (name, 1.0, BACKBONES[name].default_size) for name in sorted(EXPECTED_BACKBONES - {"SmallCNN"})
] + [
    ("MobileNet", 0.25, 128),
    ("MobileNet", 0.25, 96),
    ("MobileNet", 0.5, 224),
    ("MobileNetV2", 0.35, 96),
    ("MobileNetV2", 1.4, 100),
    ("MobileNetV3Small", 0.75, 224),
    ("MobileNetV3Large", 0.75, 224),
]


@pytest.mark.parametrize(("name", "alpha", "size"), KERAS_FILE_CASES)
def test_weights_file_name_url_and_hash_match_keras(
    name, alpha, size, monkeypatch, empty_keras_home
):
    """Our table names the very file (URL, hash) keras.applications would download."""
    spec = BACKBONES[name]
    asked = {}

    def capture(fname=None, origin=None, file_hash=None, **kwargs):
        asked.update(fname=fname, origin=origin, file_hash=file_hash, subdir=kwargs["cache_subdir"])
        raise _Captured

    monkeypatch.setattr(file_utils, "get_file", capture)
    kwargs = {"alpha": alpha} if spec.has_alpha else {}
    build_size = size if spec.weights_sizes else _small_size(spec)
    with pytest.raises(_Captured), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns when it falls back to the 224 weights
        spec.constructor(
            include_top=False, weights="imagenet", input_shape=(build_size, build_size, 3), **kwargs
        )
    status = imagenet_weights_status(name, alpha, size)
    assert asked == {
        "fname": status.filename,
        "origin": status.url,
        "file_hash": status.file_hash,
        "subdir": "models",
    }
    assert status.path == empty_keras_home / "models" / status.filename
    assert not status.available
    keras.backend.clear_session()


def test_weights_status_sees_a_file_in_the_keras_cache(empty_keras_home):
    status = imagenet_weights_status("MobileNetV2", 0.35, 128)
    assert status.filename == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5"
    assert not status.available
    (empty_keras_home / "models").mkdir()
    (empty_keras_home / "models" / status.filename).write_bytes(b"x")
    status = imagenet_weights_status("MobileNetV2", 0.35, 128)
    assert status.available and status.path == empty_keras_home / "models" / status.filename
    assert "224 weights" in imagenet_weights_status("MobileNetV2", 1.0, 100).note


def test_missing_imagenet_weights_name_the_file_and_fail_fast(empty_keras_home, offline):
    config = _config(backbone="MobileNetV2", weights="imagenet", image_size=96, alpha=1.0)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        build_model(config, 3)
    assert time.monotonic() - start < 20
    file = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    message = str(err.value)
    assert "MobileNetV2 (alpha 1.0, 96) are not on this machine" in message
    assert (
        f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{file}"
        in message
    )
    assert f"copy it to {empty_keras_home / 'models' / file}" in message
    assert "or choose weights 'none'" in message
    assert err.value.filename == file
    assert isinstance(err.value, RuntimeError)


def test_corrupt_cached_weights_are_reported_not_used(empty_keras_home, offline):
    status = imagenet_weights_status("ResNet50", 1.0, 32)
    (empty_keras_home / "models").mkdir()
    (empty_keras_home / "models" / status.filename).write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError) as err:
        build_model(_config(backbone="ResNet50", weights="imagenet"), 3)
    assert f"A file named {status.filename} was in" in str(err.value)
    assert "checksum does not match" in str(err.value)


def test_real_mobilenet_imagenet_weights_load_offline(real_keras_home, offline):
    config = _config(backbone="MobileNet", alpha=0.25, weights="imagenet", image_size=96)
    model = build_model(config, 3)
    conv1 = model.get_layer("backbone").get_layer("conv1")
    with h5py.File(real_keras_home / "models" / MOBILENET_025_FILE, "r") as f:
        stored = np.asarray(f["conv1"]["conv1"]["kernel:0"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv1.kernel), stored)

    images = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    pretrained = keras.ops.convert_to_numpy(
        model.get_layer("backbone")(model.get_layer("preprocess")(images))
    )
    # The same Keras file as a weights file: fits MobileNet 0.25, is refused by MobileNetV2.
    as_file = config.replace(weights=f"file:{real_keras_home / 'models' / MOBILENET_025_FILE}")
    from_file = build_model(as_file, 3).get_layer("backbone").get_layer("conv1")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(from_file.kernel), stored)
    with pytest.raises(WeightsMismatchError, match="does not fit MobileNetV2"):
        build_model(as_file.replace(backbone="MobileNetV2", alpha=1.0), 3)

    random = build_model(config.replace(weights="none"), 3)
    scratch = keras.ops.convert_to_numpy(
        random.get_layer("backbone")(random.get_layer("preprocess")(images))
    )
    assert not np.allclose(pretrained, scratch, atol=1e-3)


# -- weights files and runs ----------------------------------------------------------------
def test_backbone_weights_file_round_trips(tmp_path):
    source = build_model(_config(seed=1), 3)
    path = save_backbone_weights(source, tmp_path / "small.weights.h5")
    loaded = build_model(_config(seed=2, weights=f"file:{path}", fusion_stages=3), 3)
    for a, b in zip(
        source.get_layer("backbone").weights, loaded.get_layer("backbone").weights, strict=True
    ):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = save_backbone_weights(build_model(_config(), 3), tmp_path / "small.weights.h5")
    config = _config(backbone="MobileNetV2", alpha=0.35, weights=f"file:{path}")
    with pytest.raises(WeightsMismatchError) as err:
        build_model(config, 3)
    message = str(err.value)
    assert "The weights file small.weights.h5 does not fit MobileNetV2 (alpha 0.35)" in message
    assert "it holds 20 weight arrays" in message


def test_weights_file_checks(tmp_path):
    fake = tmp_path / "weights.h5"
    fake.write_text("not hdf5")
    with pytest.raises(WeightsMismatchError, match="is not an HDF5 file"):
        build_model(_config(weights=f"file:{fake}"), 3)
    odd = tmp_path / "weights.pkl"
    odd.write_bytes(b"\x80")
    with pytest.raises(WeightsMismatchError, match=r"Received: 'weights.pkl'"):
        build_model(_config(weights=f"file:{odd}"), 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(_config(weights=f"file:{tmp_path / 'missing.h5'}"), 3)


def test_run_source_takes_the_backbone_of_an_earlier_run(tmp_path):
    earlier = build_model(_config(seed=5, image_size=48, fusion_stages=2), 4)
    earlier.save(tmp_path / "model.keras")
    config = _config(weights="run:abc123", seed=6)
    with pytest.raises(ValueError, match="run_model_path"):
        build_model(config, 3)
    model = build_model(config, 3, run_model_path=tmp_path / "model.keras")
    for a, b in zip(
        earlier.get_layer("backbone").weights, model.get_layer("backbone").weights, strict=True
    ):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    other = _config(backbone="MobileNetV2", alpha=0.35, weights="run:abc123")
    with pytest.raises(WeightsMismatchError, match=r"The backbone in model\.keras does not fit"):
        build_model(other, 3, run_model_path=tmp_path / "model.keras")


def test_keras_home_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a"))
    assert weights.keras_home() == tmp_path / "a"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "b"))
    assert weights.keras_home() == tmp_path / "b"
