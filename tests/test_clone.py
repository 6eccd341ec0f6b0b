"""Train again with these settings: a new run's config from an earlier run's `config.json`."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.store import runs
from tlcore.training import clone, presets

RUN_ONLY = {
    "sweep": "20260101-000000-abcd",
    "sweep_role": "two_phase",
    "sweep_source": "20260101-000000-0001aa",
    "baseline_of": "20260101-000000-0002bb",
}


def _run(ws, dataset: str, **changes) -> runs.RunRecord:
    values = dict(
        name="colours",
        strategy="two_phase",
        epochs=3,
        fine_tune_epochs=2,
        learning_rate=2e-3,
        fine_tune_learning_rate=3e-5,
        dense_units=(16,),
        seed=7,
        extra={"note": "kept", **RUN_ONLY},
    )
    return runs.create_run(ws, tiny_config(dataset, **(values | changes)))


def test_every_setting_is_copied_but_the_name_and_what_belonged_to_that_run(ws, tiny_dataset):
    record = _run(ws, tiny_dataset)
    config = clone.config_from_run(ws, record.id)
    old = record.config.to_dict()
    new = config.to_dict()
    assert {k for k in old if old[k] != new[k]} == {"name", "extra"}
    assert config.name == "colours (again)"
    assert config.seed == 7  # the same seed: training again repeats the run
    assert config.extra == {"note": "kept", "trained_again_from": record.id}


def test_copies_of_copies_are_numbered_and_unnamed_runs_keep_the_usual_title(ws, tiny_dataset):
    assert clone.again_name("colours") == "colours (again)"
    assert clone.again_name("colours (again)") == "colours (again 2)"
    assert clone.again_name("colours (again 2)") == "colours (again 3)"
    assert clone.again_name("") == ""
    long = clone.again_name("x" * 120)
    assert len(long) == 120 and long.endswith(" (again)")
    first = clone.config_from_run(ws, _run(ws, tiny_dataset).id)
    second = clone.config_from_run(ws, runs.create_run(ws, first).id)
    assert second.name == "colours (again 2)"
    assert second.extra["trained_again_from"] != first.extra["trained_again_from"]
    unnamed = _run(ws, tiny_dataset, name="")
    again = clone.config_from_run(ws, unnamed.id)
    assert again.name == "" and runs.create_run(ws, again).title == f"SmallCNN on {tiny_dataset}"


def test_overrides_are_parsed_as_train_set_does(ws, tiny_dataset):
    record = _run(ws, tiny_dataset)
    config = clone.config_from_run(
        ws,
        record.id,
        overrides={"epochs": "5", "dense_units": "32,8", "head_batchnorm": "yes", "name": "mine"},
    )
    assert (config.epochs, config.dense_units, config.head_batchnorm) == (5, (32, 8), True)
    assert config.name == "mine"  # an explicit name wins over "(again)"
    assert config.fine_tune_learning_rate == 3e-5  # everything else as it was
    with pytest.raises(ValueError, match="epochs='many'"):
        clone.config_from_run(ws, record.id, overrides={"epochs": "many"})
    with pytest.raises(ValueError, match="unknown configuration field 'epoch'"):
        clone.config_from_run(ws, record.id, overrides={"epoch": "5"})
    with pytest.raises(ValueError, match="learning_rate=-1"):
        clone.config_from_run(ws, record.id, overrides={"learning_rate": "-1"})


def test_the_dataset_can_be_switched_by_name_or_id_and_must_exist(ws, tiny_dataset, tmp_path):
    folder = write_class_folders(tmp_path / "other", {"red": 8, "green": 8, "blue": 8}, seed=3)
    other = datasets.import_folder(ws, folder, name="other")
    record = _run(ws, tiny_dataset)
    assert clone.config_from_run(ws, record.id, dataset="other").dataset == "other"
    assert clone.config_from_run(ws, record.id, dataset=f" {other.id} ").dataset == other.id
    assert clone.config_from_run(ws, record.id, overrides={"dataset": "other"}).dataset == "other"
    with pytest.raises(datasets.DatasetError, match="No dataset named 'ghost'"):
        clone.config_from_run(ws, record.id, dataset="ghost")
    with pytest.raises(ValueError, match="dataset must name an imported dataset"):
        clone.config_from_run(ws, record.id, dataset="  ")


def test_a_run_whose_dataset_is_gone_says_so(ws, tiny_dataset):
    record = _run(ws, tiny_dataset)
    datasets.delete_dataset(ws, tiny_dataset)
    with pytest.raises(datasets.DatasetError, match=f"No dataset named '{tiny_dataset}'"):
        clone.config_from_run(ws, record.id)


def test_a_run_with_an_unreadable_or_missing_config_is_refused(ws, tiny_dataset):
    record = _run(ws, tiny_dataset)
    (record.dir / runs.CONFIG_FILE).write_text("{broken", encoding="utf-8")
    with pytest.raises(clone.CloneError, match=rf"Run {record.id}'s settings cannot be read"):
        clone.config_from_run(ws, record.id)
    (record.dir / runs.CONFIG_FILE).unlink()
    with pytest.raises(clone.CloneError, match=r"config\.json is missing"):
        clone.config_from_run(ws, record.id)
    with pytest.raises(runs.RunNotFoundError, match="No run with id 'nope'"):
        clone.config_from_run(ws, "nope")


def test_a_recipe_label_is_kept_only_while_the_settings_still_match_it(ws, tiny_dataset):
    seeds = presets.apply_preset(tiny_config(tiny_dataset, name="s"), "seeds")
    record = runs.create_run(ws, seeds)
    assert clone.config_from_run(ws, record.id).extra["preset"] == "seeds"
    changed = clone.config_from_run(ws, record.id, overrides={"epochs": "3"})
    assert "preset" not in changed.extra


def test_a_retrain_on_a_fixed_version_is_named_after_the_run_and_the_version(ws, tiny_dataset):
    from tlcore.data import versions

    ds = datasets.load_dataset(ws, tiny_dataset)
    v2 = versions.make_version(
        ws, ds.id, versions.VersionChanges(excluded=(ds.items("train")[0].rel_path,))
    )
    unnamed = _run(ws, tiny_dataset, name="")
    config = clone.config_for_version(ws, unnamed.id, v2.id)
    assert config.name == "SmallCNN on tiny · v2" and config.dataset == v2.id
    assert config.extra[clone.EXTRA_FROM_RUN] == unnamed.id
    named = _run(ws, tiny_dataset, name="pets (again)")
    assert clone.config_for_version(ws, named.id, v2.id).name == "pets · v2"
