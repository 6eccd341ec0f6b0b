"""The Dataset page's improvement loop: browse, select, exclude or move, versions, label check."""

from __future__ import annotations

import pytest

from tests.conftest import write_class_folders
from tests.test_auth_pages import PASSWORD, _log_in, _open, address, shared_server, users_env
from tests.test_dataset_page import assert_no_exception, click, open_dataset_page, page_text
from tlcore.data import datasets, label_check, versions
from tlcore.data.label_check import LabelCheck, Suspect
from tlcore.store import tasks


@pytest.fixture
def colours(ws, tmp_path):
    src = write_class_folders(tmp_path / "src", {"red": 12, "green": 12, "blue": 12})
    return datasets.import_folder(ws, src, name="colours")


def _section(at, name: str):
    at.button_group(key="ds_section").set_value(name).run()
    assert_no_exception(at)
    return at


def _pick(at, dataset, path: str):
    at.checkbox(key=f"fix_pick::{dataset.id}::{path}").check().run()
    assert_no_exception(at)


def test_selected_images_moved_to_another_class_make_a_new_version(ws, colours):
    at = _section(open_dataset_page({"dataset": colours.id}), "images")
    at.selectbox(key="fix_class").set_value("red").run()
    reds = [i.rel_path for i in colours.items() if i.class_name == "red"][:12]
    on_page = [p for p in reds if at.checkbox(key=f"fix_pick::{colours.id}::{p}")]
    assert len(on_page) == 12  # the class filter shows exactly the class
    _pick(at, colours, on_page[0])
    _pick(at, colours, on_page[1])
    assert "**2 selected**" in page_text(at)
    at.selectbox(key=f"fix_target::{colours.id}").set_value("green").run()
    at.text_input(key=f"fix_note::{colours.id}").input("two were green").run()
    click(at, "fix_move")

    newest = datasets.load_dataset(ws, "colours")
    assert newest.version == 2 and at.query_params["dataset"] == newest.id
    assert "Made version 2 of **colours** (2 moved — two were green)" in page_text(at)
    moved = {i.rel_path: i.class_name for i in newest.items()}
    for path in on_page[:2]:
        assert moved[path.replace("/red/", "/green/")] == "green"
    # Version 1 is as it was, and listed under Versions with what changed.
    assert datasets.load_dataset(ws, colours.id).class_counts()["red"] == 12
    _section(at, "versions")
    text = page_text(at)
    assert "**Version 2**" in text and "**Version 1**" in text and "2 moved" in text
    click(at, f"ver_open::{colours.id}")
    assert at.query_params["dataset"] == colours.id
    assert "older; the newest is v2" in page_text(at)


def test_excluding_every_training_image_of_a_class_is_refused_on_the_page(ws, colours):
    at = _section(open_dataset_page({"dataset": colours.id}), "images")
    at.selectbox(key="fix_class").set_value("blue").run()
    at.selectbox(key="fix_split").set_value("train").run()
    click(at, "fix_select_page")
    click(at, "fix_exclude")
    assert "No new version was made" in "\n".join(e.value for e in at.error)
    assert "'blue' would have no training images left" in "\n".join(e.value for e in at.error)
    assert [d.id for d in datasets.list_datasets(ws)] == [colours.id]


def test_the_likely_mislabelled_list_offers_the_suggested_classes(ws, colours):
    at = _section(open_dataset_page({"dataset": colours.id}), "labels")
    assert at.button(key="fix_check")  # never checked: one button to start
    red = [i.rel_path for i in colours.items() if i.class_name == "red"][:2]
    check = LabelCheck(
        colours.id,
        "MobileNetV2",
        0.35,
        colours.num_images,
        5,
        0.94,
        [Suspect(red[0], "red", "blue", 0.97), Suspect(red[1], "red", "green", 0.81)],
        0.0,
    )
    label_check.store(ws, check)
    at.run()
    text = page_text(at)
    assert "**2 likely mislabelled**" in text and "n = 36" in text
    assert "→ blue · 0.97" in text and "→ green · 0.81" in text
    click(at, "fix_select_page")
    click(at, "fix_accept")
    newest = datasets.load_dataset(ws, "colours")
    classes = {i.rel_path: i.class_name for i in newest.items()}
    assert classes[red[0].replace("/red/", "/blue/")] == "blue"
    assert classes[red[1].replace("/red/", "/green/")] == "green"
    assert newest.manifest["changes"]["moved"][0]["to"] in ("blue", "green")


def test_starting_the_label_check_files_a_background_task(ws, colours, monkeypatch):
    started = []
    monkeypatch.setattr(tasks.jobs, "start_cli", lambda ws, *args, log: started.append(args))
    at = _section(open_dataset_page({"dataset": colours.id}), "labels")
    click(at, "fix_check")
    assert started == [("datasets", "suspects", colours.id, "--task", started[0][-1])]
    task = tasks.latest(ws, tasks.dataset_subject(colours.id), "suspects")
    assert task is not None and task.active  # the page follows it with a progress bar
    assert "fix_check" not in [b.key for b in at.button]


def test_the_list_shows_each_dataset_once_at_its_newest_version(ws, colours):
    path = colours.items()[0].rel_path
    v2 = versions.make_version(ws, colours.id, versions.VersionChanges(excluded=(path,)))
    at = open_dataset_page()
    assert at.button(key=f"ds_pick_{v2.id}")
    assert f"ds_pick_{colours.id}" not in [b.key for b in at.button]
    assert "v2 · 35 images" in page_text(at)


def test_members_cannot_change_someone_elses_dataset(shared_server, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    ds = datasets.import_folder(shared_server, src, owner="ben")
    at = _log_in(_open(), "cleo", PASSWORD)
    at.query_params["dataset"] = ds.id
    at.switch_page("views/dataset.py").run()
    _section(at, "images")
    _pick(at, ds, ds.items()[0].rel_path)
    assert at.button(key="fix_exclude").disabled and at.button(key="fix_move").disabled
    assert "This dataset belongs to **ben**" in page_text(at)


def test_runs_of_an_earlier_version_can_be_retrained_on_the_new_one(ws, colours, monkeypatch):
    from tests.conftest import tiny_config
    from tlcore.fileio import atomic_write_json
    from tlcore.store import jobs, run_layout, runs

    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    record = runs.create_run(ws, tiny_config("colours", name="first"))
    atomic_write_json(
        record.dir / run_layout.CLASSES_FILE,
        {"classes": colours.classes, "dataset_id": colours.id, "dataset_hash": "0" * 64},
    )
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={"val_accuracy": 0.5})
    path = colours.items("train")[0].rel_path
    v2 = versions.make_version(ws, colours.id, versions.VersionChanges(excluded=(path,)))
    at = open_dataset_page({"dataset": v2.id})
    click(at, f"ver_retrain::{record.id}")
    [again] = [r for r in runs.list_runs(ws) if r.id != record.id]
    assert again.config.dataset == v2.id and again.config.extra["trained_again_from"] == record.id
    at = open_dataset_page({"dataset": v2.id})  # retrained once: not offered again
    assert f"ver_retrain::{record.id}" not in [b.key for b in at.button]


def test_a_retrain_refused_by_the_servers_limits_says_why_and_starts_nothing(
    ws, colours, monkeypatch
):
    from tests.conftest import tiny_config
    from tlcore.fileio import atomic_write_json
    from tlcore.store import jobs, quotas, run_layout, runs

    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    record = runs.create_run(ws, tiny_config("colours", name="first", epochs=5))
    atomic_write_json(
        record.dir / run_layout.CLASSES_FILE,
        {"classes": colours.classes, "dataset_id": colours.id, "dataset_hash": "0" * 64},
    )
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary={"val_accuracy": 0.5})
    path = colours.items("train")[0].rel_path
    v2 = versions.make_version(ws, colours.id, versions.VersionChanges(excluded=(path,)))
    monkeypatch.setenv(quotas.MAX_EPOCHS_ENV, "2")
    at = open_dataset_page({"dataset": v2.id})
    click(at, f"ver_retrain::{record.id}")
    errors = "\n".join(e.value for e in at.error)
    assert "The run did not start" in errors and "epochs" in errors
    assert [r.id for r in runs.list_runs(ws)] == [record.id]


def test_a_label_check_that_failed_says_why_and_offers_to_start_again(ws, colours, monkeypatch):
    monkeypatch.setattr(tasks.jobs, "start_cli", lambda ws, *args, log: None)
    subject = tasks.dataset_subject(colours.id)
    task = tasks.start(ws, subject, "suspects", ["datasets", "suspects", colours.id])
    tasks.TaskReporter(ws, subject, task.id).fail("The ImageNet weights are not on this machine.")
    at = _section(open_dataset_page({"dataset": colours.id}), "labels")
    errors = "\n".join(e.value for e in at.error)
    assert "The check did not finish." in errors and "ImageNet weights" in errors
    assert at.button(key="fix_check")  # and it can be started again


__all__ = ["address", "shared_server", "users_env"]  # fixtures used above
