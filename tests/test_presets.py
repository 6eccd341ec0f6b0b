"""Named recipes (tlcore.presets) and how a run gets one."""

import pytest

from tlcore import cli
from tlcore.config import RunConfig
from tlcore.training import presets


def test_a_new_run_is_the_recommended_recipe():
    config = RunConfig(dataset="d")
    assert presets.matching_preset(config) == "recommended"
    assert config.searches_head


@pytest.mark.parametrize("name", ["seeds", "teachable_machine"])
def test_the_simple_recipes_train_their_head_by_epochs(name):
    config = presets.apply_preset(RunConfig(dataset="d", backbone="MobileNet", alpha=0.25), name)
    assert presets.matching_preset(config) == name and config.extra["preset"] == name
    assert not config.searches_head
    assert (config.backbone, config.alpha) == ("MobileNet", 0.25)  # the user's, untouched


def test_the_presets_are_the_published_recipes():
    seeds = presets.get_preset("seeds").settings
    assert (seeds["pooling"], seeds["dense_units"], seeds["learning_rate"], seeds["epochs"]) == (
        "flatten",
        (1024,),
        1e-4,
        15,
    )
    tm = presets.get_preset("teachable_machine").settings
    assert (tm["dense_units"], tm["batch_size"], tm["epochs"], tm["learning_rate"]) == (
        (100,),
        16,
        50,
        1e-3,
    )
    with pytest.raises(ValueError, match="preset must be one of"):
        presets.get_preset("magic")


def test_cli_train_takes_a_preset_and_overrides_after_it(ws, tiny_dataset, monkeypatch):
    from tlcore.store import jobs

    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    parser = cli.build_parser()
    args = parser.parse_args(
        ["train", "--dataset", tiny_dataset, "--preset", "teachable_machine", "--set", "epochs=3"]
    )
    config = cli.config_from_args(ws, args)
    assert config.dense_units == (100,) and config.batch_size == 16 and config.epochs == 3
    assert config.extra["preset"] == "teachable_machine"
