"""Tests for tlcore.model.models: building, freezing strategies, the feature fast path, saving.

Offline and deterministic; tiny inputs (32-48 px) and the tiny SmallCNN where the
architecture does not matter.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

from tlcore.config import RunConfig
from tlcore.model.models import (
    apply_phase,
    backbone_blocks,
    build_model,
    describe_model,
    estimate_cost,
    feature_extractor,
    head_model,
    load_model,
    trainable_variables_summary,
    training_phases,
    uses_feature_cache,
)

HEAD = {"logits/kernel", "logits/bias"}
SMALL_CONVS = {f"block{i}_conv/kernel" for i in range(1, 5)}
SMALL_BETAS = {f"block{i}_bn/beta" for i in range(1, 5)}
SMALL_GAMMAS = {f"block{i}_bn/gamma" for i in range(1, 5)}


def _config(**overrides) -> RunConfig:
    values = {"dataset": "test", "backbone": "SmallCNN", "weights": "none", "image_size": 32}
    values.update(overrides)
    return RunConfig(**values)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _trainable(model) -> set[str]:
    return {v.path for v in model.trainable_variables}


def _train_step(model, images, num_classes=3, eager=False):
    """One optimizer step. ``eager`` skips tracing, much faster for big backbones."""
    labels = np.arange(len(images)) % num_classes
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        run_eagerly=eager,
    )
    model.train_on_batch(images, labels)


def _snapshot(model) -> dict[int, np.ndarray]:
    return {id(v): _numpy(v).copy() for v in model.weights}


def _changed(model, before) -> set[str]:
    return {v.path for v in model.weights if not np.array_equal(before[id(v)], _numpy(v))}


def _bn_layers(model):
    return [
        layer
        for layer in model.get_layer("backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


# -- structure -----------------------------------------------------------------------------
def test_model_takes_raw_images_and_outputs_probabilities():
    config = _config(
        flip="horizontal", rotation=0.1, zoom=0.2, translation=0.1, contrast=0.2, brightness=0.2
    )
    model = build_model(config, 3)
    assert [layer.name for layer in model.layers] == [
        "image",
        "augmentation",
        "preprocess",
        "backbone",
        "pooling",
        "head",
    ]
    assert model.input.shape == (None, 32, 32, 3)
    augmentation = [layer.name for layer in model.get_layer("augmentation").layers]
    assert augmentation == [
        "random_flip",
        "random_rotation",
        "random_zoom",
        "random_translation",
        "random_contrast",
        "random_brightness",
    ]
    probabilities = _numpy(model(_images(), training=False))
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert "augmentation" not in [
        layer.name for layer in build_model(_config(flip="none"), 3).layers
    ]


def test_same_seed_gives_same_model():
    a = build_model(_config(seed=7, dense_units=(8,)), 3)
    b = build_model(_config(seed=7, dense_units=(8,)), 3)
    np.testing.assert_array_equal(_numpy(a(_images())), _numpy(b(_images())))


def test_head_layers_follow_the_config():
    config = _config(dense_units=(16, 8), dense_activation="gelu", head_batchnorm=True, dropout=0.3)
    head = head_model(build_model(config, 5))
    names = [layer.name for layer in head.layers]
    assert names == [
        "features",
        "head_bn_1",
        "head_dropout_1",
        "head_dense_1",
        "head_bn_2",
        "head_dropout_2",
        "head_dense_2",
        "head_bn",
        "head_dropout",
        "logits",
        "probabilities",
    ]
    assert head.get_layer("head_dense_1").activation.__name__ == "gelu"
    assert head.output.shape == (None, 5)


def test_softmax_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(_config(), 3)
        assert model.get_layer("backbone").outputs[0].dtype == "float16"
        assert model.output.dtype == "float32"
        assert _numpy(model(_images(), training=False)).dtype == np.float32
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    ("overrides", "num_classes", "message"),
    [
        ({}, 1, "Received: num_classes=1"),
        ({"fusion_stages": 2, "pooling": "flatten"}, 3, "Received: pooling='flatten'"),
        ({"backbone": "InceptionV3", "image_size": 75, "fusion_stages": 4}, 3, "InceptionV3 has 3"),
        ({"zoom": 1.0}, 3, "Received: zoom=1.0"),
        ({"backbone": "SmallCNN", "weights": "imagenet"}, 3, "SmallCNN has no ImageNet weights"),
        ({"backbone": "Nope"}, 3, "Known backbones: SmallCNN, VGG16"),
        ({"backbone": "InceptionV3", "image_size": 64}, 3, "Received: image_size=64"),
    ],
)
def test_invalid_model_settings_are_refused_before_building(overrides, num_classes, message):
    with pytest.raises(ValueError) as err:
        build_model(_config(**overrides), num_classes)
    assert message in str(err.value)


# -- strategies: exactly what trains ---------------------------------------------------------
SMALL_CNN_CASES = [
    ({"strategy": "feature_extraction"}, HEAD),
    ({"strategy": "fine_tune_top"}, {"block3_conv/kernel", "block4_conv/kernel"} | HEAD),
    (
        {"strategy": "fine_tune_top", "train_batchnorm": True},
        {
            "block3_conv/kernel",
            "block4_conv/kernel",
            "block3_bn/gamma",
            "block3_bn/beta",
            "block4_bn/gamma",
            "block4_bn/beta",
        }
        | HEAD,
    ),
    (
        {"strategy": "fine_tune_top", "unfreeze_unit": "layers", "unfreeze": 3},
        {"block2_conv/kernel", "block3_conv/kernel", "block4_conv/kernel"} | HEAD,
    ),
    (
        {
            "strategy": "fine_tune_top",
            "unfreeze_unit": "layers",
            "unfreeze": 3,
            "train_batchnorm": True,
        },
        {
            "block3_bn/gamma",
            "block3_bn/beta",
            "block4_conv/kernel",
            "block4_bn/gamma",
            "block4_bn/beta",
        }
        | HEAD,
    ),
    ({"strategy": "fine_tune_top", "unfreeze": 0}, HEAD),
    ({"strategy": "fine_tune_top", "unfreeze": 99}, SMALL_CONVS | HEAD),
    ({"strategy": "bias_only"}, SMALL_BETAS | HEAD),
    ({"strategy": "full_fine_tune"}, SMALL_CONVS | HEAD),
    (
        {"strategy": "full_fine_tune", "train_batchnorm": True},
        SMALL_CONVS | SMALL_BETAS | SMALL_GAMMAS | HEAD,
    ),
    ({"strategy": "from_scratch"}, SMALL_CONVS | SMALL_BETAS | SMALL_GAMMAS | HEAD),
]


@pytest.mark.parametrize(("overrides", "expected"), SMALL_CNN_CASES)
def test_strategy_trains_exactly_the_expected_small_cnn_variables(overrides, expected):
    model = build_model(_config(**overrides), 3)
    assert _trainable(model) == expected


def test_two_phase_switches_from_head_to_top_blocks():
    config = _config(strategy="two_phase", epochs=3, fine_tune_epochs=2, unfreeze=1)
    model = build_model(config, 3)
    first, second = training_phases(config)
    assert _trainable(model) == HEAD  # build_model applies phase 1
    apply_phase(model, config, second)
    assert _trainable(model) == {"block4_conv/kernel"} | HEAD
    apply_phase(model, config, first)
    assert _trainable(model) == HEAD


def test_strategies_on_mobilenet_v2():
    base = _config(backbone="MobileNetV2", alpha=0.35)
    model = build_model(base, 3)
    convs = {
        v.path
        for layer in model.get_layer("backbone").layers
        if not isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.weights
    }
    betas = {layer.beta.path for layer in _bn_layers(model)}
    assert len(convs) == 52 and len(betas) == 52
    assert _trainable(model) == HEAD

    expected = {
        "fine_tune_top": {
            "Conv_1/kernel",
            "block_16_expand/kernel",
            "block_16_depthwise/kernel",
            "block_16_project/kernel",
        }
        | HEAD,
        "bias_only": betas | HEAD,
        "full_fine_tune": convs | HEAD,
        "feature_extraction": HEAD,
    }
    for strategy, want in expected.items():
        config = base.replace(strategy=strategy)
        apply_phase(model, config, training_phases(config)[0])
        assert _trainable(model) == want, strategy
    assert [len(expected[s]) for s in ("fine_tune_top", "bias_only", "full_fine_tune")] == [
        6,
        54,
        54,
    ]
    gammas = {layer.gamma.path for layer in _bn_layers(model)}
    scratch = base.replace(strategy="from_scratch")
    apply_phase(model, scratch, training_phases(scratch)[0])
    assert _trainable(model) == convs | betas | gammas | HEAD
    assert len(_trainable(model)) == 158
    config = base.replace(strategy="fine_tune_top", unfreeze_unit="layers", unfreeze=2)
    apply_phase(model, config, training_phases(config)[0])
    assert _trainable(model) == {"Conv_1/kernel", "block_16_project/kernel"} | HEAD


# -- what actually changes in a training step -------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("bias_only", SMALL_BETAS | HEAD),
        ("full_fine_tune", SMALL_CONVS | HEAD),  # BN statistics untouched too
        ("from_scratch", SMALL_CONVS | SMALL_BETAS | SMALL_GAMMAS | HEAD),
    ],
)
def test_a_compiled_training_step_changes_exactly_what_trains(strategy, expected):
    """Through the traced (graph) train step, as model.fit runs it."""
    model = build_model(_config(strategy=strategy), 3)
    before = _snapshot(model)
    _train_step(model, _images())
    changed = _changed(model, before)
    if strategy == "from_scratch":  # BN layers train: their moving statistics move
        moving = {
            f"block{i}_bn/{s}" for i in range(1, 5) for s in ("moving_mean", "moving_variance")
        }
        expected = expected | moving
    assert changed == expected


def test_bias_only_on_vgg16_changes_conv_biases_not_kernels():
    model = build_model(_config(backbone="VGG16", strategy="bias_only"), 3)
    before = _snapshot(model)
    _train_step(model, _images(2), eager=True)
    changed = _changed(model, before)
    biases = {f"{layer.name}/bias" for layer in model.get_layer("backbone").layers if layer.weights}
    assert len(biases) == 13
    assert changed == biases | HEAD


def test_batchnorm_statistics_stay_put_when_fine_tuning_by_default():
    config = _config(backbone="MobileNetV2", alpha=0.35, strategy="full_fine_tune")
    model = build_model(config, 3)
    bns = _bn_layers(model)
    moving = [(_numpy(b.moving_mean).copy(), _numpy(b.moving_variance).copy()) for b in bns]
    before = _snapshot(model)
    _train_step(model, _images(), eager=True)
    for bn, (mean, variance) in zip(bns, moving, strict=True):
        np.testing.assert_array_equal(_numpy(bn.moving_mean), mean)
        np.testing.assert_array_equal(_numpy(bn.moving_variance), variance)
    changed = _changed(model, before)
    assert "Conv_1/kernel" in changed
    assert not any(layer.beta.path in changed for layer in bns)

    trained = build_model(config.replace(train_batchnorm=True), 3)
    first = trained.get_layer("backbone").get_layer("bn_Conv1")
    mean = _numpy(first.moving_mean).copy()
    _train_step(trained, _images(), eager=True)
    assert not np.allclose(_numpy(first.moving_mean), mean)


# -- the cached-feature fast path --------------------------------------------------------------
def test_feature_extractor_and_head_equal_the_model():
    config = _config(fusion_stages=3, dense_units=(8,), head_batchnorm=True, rotation=0.1)
    model = build_model(config, 3)
    images = _images()
    extractor, head = feature_extractor(model), head_model(model)
    assert [layer.name for layer in extractor.layers] == [
        "image",
        "preprocess",
        "backbone",
        "pooling",
    ]
    features = extractor.predict(images, verbose=0)
    assert features.shape == (4, 32 + 64 + 128)  # stages after block2, block3, block4
    full = model.predict(images, verbose=0)
    np.testing.assert_allclose(head.predict(features, verbose=0), full, rtol=1e-5, atol=1e-6)

    _train_step(head, features)  # train the head alone on cached features
    after = model.predict(images, verbose=0)
    assert not np.allclose(after, full)
    np.testing.assert_allclose(head.predict(features, verbose=0), after, rtol=1e-5, atol=1e-6)


def test_feature_cache_only_for_frozen_backbones_without_augmentation():
    plain = _config(strategy="two_phase", flip="none")
    first, second = training_phases(plain)
    assert uses_feature_cache(plain, first) and not uses_feature_cache(plain, second)
    assert not uses_feature_cache(_config(flip="horizontal"), training_phases(_config())[0])
    off = plain.replace(feature_cache=False)
    assert not uses_feature_cache(off, training_phases(off)[0])


# -- saving ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"fusion_stages": 3, "dense_units": (8,), "head_batchnorm": True, "zoom": 0.2},
        {"backbone": "EfficientNetB0"},
        {"backbone": "VGG16", "pooling": "flatten"},
    ],
)
def test_saved_model_reloads_in_safe_mode_with_same_outputs(tmp_path, overrides):
    model = build_model(_config(strategy="full_fine_tune", train_batchnorm=True, **overrides), 3)
    _train_step(model, _images(), eager=True)  # move BN statistics off their initial values
    path = tmp_path / "model.keras"
    model.save(path)
    images = _images(seed=3)
    expected = _numpy(model(images, training=False))
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(_numpy(reloaded(images, training=False)), expected, atol=1e-6)
    ours = load_model(path)
    np.testing.assert_allclose(_numpy(ours(images, training=False)), expected, atol=1e-6)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in model.layers]


# -- phases, description, estimates ------------------------------------------------------------
def test_training_phases_describe_the_schedule():
    config = _config(
        strategy="two_phase",
        epochs=4,
        fine_tune_epochs=3,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-5,
        unfreeze=2,
    )
    first, second = training_phases(config)
    assert (first.index, first.total, first.name, first.epochs, first.learning_rate) == (
        1,
        2,
        "feature_extraction",
        4,
        1e-3,
    )
    assert first.description == "phase 1 of 2: training the head on a frozen backbone"
    assert (second.name, second.epochs, second.learning_rate, second.initial_epoch) == (
        "fine_tune_top",
        3,
        1e-5,
        4,
    )
    assert second.description.startswith("phase 2 of 2: fine-tuning the top 2 blocks")
    assert first.backbone_frozen and not second.backbone_frozen
    only_head = training_phases(config.replace(fine_tune_epochs=0))
    assert [p.description for p in only_head] == [
        "phase 1 of 1: training the head on a frozen backbone"
    ]
    (one,) = training_phases(_config(strategy="fine_tune_top", unfreeze=1, unfreeze_unit="layers"))
    assert one.description == (
        "phase 1 of 1: fine-tuning the top 1 layer of the backbone and the head"
    )


def test_describe_model_rows_and_totals():
    config = _config(strategy="fine_tune_top", unfreeze=1, dense_units=(8,))
    model = build_model(config, 3)
    rows = describe_model(model, config)
    by_name = {row["name"]: row for row in rows}
    assert by_name["block4_conv"] == {
        "name": "block4_conv",
        "type": "Conv2D",
        "part": "backbone",
        "block": "block4",
        "output_shape": (None, 4, 4, 128),
        "params": 73728,
        "trainable_params": 73728,
        "trainable": True,
    }
    assert by_name["block4_bn"]["trainable"] is False
    assert by_name["block3_conv"]["trainable"] is False
    assert by_name["head_dense_1"]["part"] == "head" and by_name["head_dense_1"]["trainable"]
    assert by_name["pooling"]["output_shape"] == (None, 128)
    summary = trainable_variables_summary(model)
    assert summary["total_params"] == model.count_params() == sum(r["params"] for r in rows)
    assert summary["trainable_params"] == sum(r["trainable_params"] for r in rows)
    assert summary["trainable_params"] == 73728 + (128 * 8 + 8) + (8 * 3 + 3)
    assert summary["by_part"]["backbone"]["trainable_params"] == 73728
    blocks = backbone_blocks(model, config)
    assert [b["block"] for b in blocks] == ["block1", "block2", "block3", "block4"]
    assert blocks[-1]["layers"] == ["block4_conv", "block4_bn", "block4_relu"]


def test_estimate_cost_scales_with_size_backbone_and_strategy():
    mobile = estimate_cost(RunConfig(dataset="d", backbone="MobileNetV2", image_size=224))
    bigger = estimate_cost(RunConfig(dataset="d", backbone="MobileNetV2", image_size=448))
    vgg = estimate_cost(RunConfig(dataset="d", backbone="VGG16", image_size=224))
    assert bigger["forward_seconds_per_image"] == pytest.approx(
        4 * mobile["forward_seconds_per_image"]
    )
    assert mobile["forward_seconds_per_image"] == pytest.approx(1 / 111.3)
    assert vgg["forward_seconds_per_image"] > 5 * mobile["forward_seconds_per_image"]
    full = estimate_cost(RunConfig(dataset="d", backbone="MobileNetV2", strategy="full_fine_tune"))
    assert full["train_seconds_per_image"] == pytest.approx(3 * full["forward_seconds_per_image"])
    assert full["memory_mb"] > mobile["memory_mb"]
    planned = estimate_cost(
        RunConfig(dataset="d", strategy="two_phase", flip="none", epochs=5, fine_tune_epochs=2),
        num_images=1000,
    )
    assert [p["name"] for p in planned["phases"]] == ["feature_extraction", "fine_tune_top"]
    assert planned["phases"][0]["uses_feature_cache"]
    assert planned["total_seconds"] > 0
