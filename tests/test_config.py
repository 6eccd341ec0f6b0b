import json

import pytest

from tlcore.config import RunConfig, apply_overrides, parse_override


def test_defaults_are_valid_and_round_trip_through_json(tmp_path):
    config = RunConfig(dataset="flowers", dense_units=(256, 64), name="first")
    path = config.save(tmp_path / "config.json")
    assert RunConfig.load(path) == config
    assert RunConfig.from_json(config.to_json()) == config
    assert json.loads(path.read_text())["dense_units"] == [256, 64]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", -0.1),
        ("learning_rate", float("nan")),
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", True),
        ("strategy", "freeze_some"),
        ("pooling", "mean"),
        ("optimizer", "adagrad"),
        ("dropout", 1.5),
        ("image_size", 8),
        ("dense_units", (0,)),
        ("weights", "imagenet21k"),
        ("weights", "file:"),
        ("flip", "diagonal"),
        ("head_batchnorm", "yes"),
    ],
)
def test_invalid_value_names_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        RunConfig(dataset="d", **{field: value})
    message = str(info.value)
    assert field in message
    assert repr(value) in message or str(value) in message


def test_missing_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset"):
        RunConfig(dataset="  ")


def test_from_scratch_requires_random_weights():
    with pytest.raises(ValueError, match="weights='imagenet'"):
        RunConfig(dataset="d", strategy="from_scratch")
    assert RunConfig(dataset="d", strategy="from_scratch", weights="none").weights_kind == "none"


def test_weights_sources_parse():
    config = RunConfig(dataset="d", weights="file:/tmp/w.weights.h5")
    assert (config.weights_kind, config.weights_ref) == ("file", "/tmp/w.weights.h5")
    assert RunConfig(dataset="d", weights="run:2026-abc").weights_ref == "2026-abc"


def test_unknown_fields_are_refused_by_name():
    with pytest.raises(ValueError, match="learnin_rate"):
        RunConfig.from_dict({"dataset": "d", "learnin_rate": 0.1})


def test_overrides_cover_every_field_type():
    config = apply_overrides(
        {"dataset": "d"},
        [
            "epochs=3",
            "learning_rate=3e-4",
            "dense_units=512,128",
            "head_batchnorm=yes",
            "backbone=MobileNet",
            "alpha=0.25",
        ],
    )
    assert config.epochs == 3 and config.learning_rate == 3e-4
    assert config.dense_units == (512, 128) and config.head_batchnorm is True
    assert apply_overrides({"dataset": "d"}, ["dense_units="]).dense_units == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [("epochs=three", "epochs expects int"), ("nofield=1", "unknown"), ("epochs", "key=value")],
)
def test_bad_overrides_say_what_is_wrong(text, match):
    with pytest.raises(ValueError, match=match):
        parse_override(text)


def test_total_epochs_counts_both_phases():
    assert (
        RunConfig(dataset="d", strategy="two_phase", epochs=4, fine_tune_epochs=3).total_epochs == 7
    )
    epochs = RunConfig(dataset="d", epochs=4, fine_tune_epochs=3, head_search=False)
    assert epochs.total_epochs == 4
    # A head chosen by cross-validation is one step; its epochs budget runs made from it.
    searched = RunConfig(dataset="d", epochs=4, fine_tune_epochs=3)
    assert (searched.total_epochs, searched.epoch_budget) == (1, 4)
