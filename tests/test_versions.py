"""Dataset versions: a change makes a new dataset folder; the one it came from stays whole."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from tests.conftest import write_class_folders
from tests.test_cli import tlcore
from tlcore.data import datasets, versions
from tlcore.data.versions import NewImage, VersionChanges
from tlcore.store import audit
from tlcore.store.access import Actor, NotAllowedError


@pytest.fixture
def tiny(ws, tmp_path):
    src = write_class_folders(tmp_path / "src", {"red": 10, "green": 10, "blue": 10})
    return datasets.import_folder(ws, src, name="tiny", owner="ana")


def _png(colour=(10, 200, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(out, format="PNG")
    return out.getvalue()


def _by_path(ds):
    return {item.rel_path: item for item in ds.items()}


def test_items_know_their_path_as_inside_the_dataset(tiny):
    item = tiny.items("train")[0]
    assert item.rel_path == f"train/{item.class_name}/{item.path.name}"
    assert (tiny.dir / "images" / item.rel_path) == item.path


def test_a_change_makes_a_new_version_and_the_old_one_stays_whole(ws, tiny):
    before = {p: (i.class_name, i.sha256) for p, i in _by_path(tiny).items()}
    red = [p for p, i in _by_path(tiny).items() if i.class_name == "red" and i.split == "train"]
    changes = VersionChanges(excluded=(red[0],), moved=((red[1], "green"),), note="two fixes")
    v2 = versions.make_version(ws, "tiny", changes)

    assert (v2.version, v2.lineage, v2.name) == (2, tiny.id, "tiny")
    assert v2.id != tiny.id and v2.content_hash != tiny.content_hash
    moved_to = red[1].replace("/red/", "/green/")
    after = _by_path(v2)
    assert red[0] not in after and red[1] not in after
    assert after[moved_to].class_name == "green" and after[moved_to].split == "train"
    assert after[moved_to].sha256 == before[red[1]][1]
    assert v2.num_images == tiny.num_images - 1
    assert v2.manifest["changes"]["moved"] == [
        {"path": red[1], "from": "red", "to": "green", "new_path": moved_to}
    ]
    assert versions.change_summary(v2.manifest) == "1 moved, 1 excluded — two fixes"
    # The first version, reopened, is exactly as it was; its files are shared, not copied.
    again = datasets.load_dataset(ws, tiny.id)
    assert {p: (i.class_name, i.sha256) for p, i in _by_path(again).items()} == before
    assert os.stat(after[moved_to].path).st_nlink == 2
    # The name opens the newest version; the report is the new one's.
    assert datasets.load_dataset(ws, "tiny").id == v2.id
    assert v2.report["counts"]["train"]["red"] == tiny.report["counts"]["train"]["red"] - 2
    assert [s.version for s in versions.versions(ws, tiny.id)] == [1, 2]


def test_deleting_the_first_version_loses_nothing_of_the_second(ws, tiny):
    path = tiny.items("train")[0].rel_path
    v2 = versions.make_version(ws, "tiny", VersionChanges(excluded=(path,)))
    datasets.delete_dataset(ws, tiny.id)
    for item in datasets.load_dataset(ws, v2.id).items():
        assert item.path.read_bytes()


def test_added_photos_are_split_by_their_content(ws, tiny):
    photos = [NewImage(f"cam-{i}.png", _png((i * 20, 100, 50)), "green") for i in range(8)]
    v2 = versions.make_version(ws, "tiny", VersionChanges(added=tuple(photos)))
    added = v2.manifest["changes"]["added"]
    assert len(added) == 8 and {a["class"] for a in added} == {"green"}
    assert {a["split"] for a in added} <= {"train", "val", "test"}
    # The same photo always lands in the same split (a second lineage, same rule).
    v3 = versions.make_version(
        ws, tiny.id, VersionChanges(added=(photos[0],)), actor=Actor("ana", "member")
    )
    assert v3.manifest["changes"]["added"][0]["split"] == added[0]["split"]
    assert v3.version == 3 and v3.owner == "ana"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (VersionChanges(), "Nothing to change"),
        (VersionChanges(excluded=("train/red/nope.png",)), "not in dataset 'tiny'"),
        (VersionChanges(moved=(("PATH", "purple"),)), "the classes are blue, green, red"),
        (VersionChanges(added=(NewImage("x.png", b"not an image", "red"),)), "was not added"),
    ],
)
def test_impossible_changes_are_refused_and_nothing_is_made(ws, tiny, changes, message):
    if changes.moved:
        changes = VersionChanges(moved=((tiny.items()[0].rel_path, "purple"),))
    with pytest.raises(datasets.DatasetError, match=message):
        versions.make_version(ws, "tiny", changes)
    assert [d.id for d in datasets.list_datasets(ws)] == [tiny.id]
    assert not [p for p in ws.datasets_dir.iterdir() if p.name.startswith(".")]


def test_a_class_left_without_training_images_is_refused(ws, tiny):
    red_train = [i.rel_path for i in tiny.items("train") if i.class_name == "red"]
    with pytest.raises(datasets.DatasetError, match="'red' would have no training images"):
        versions.make_version(ws, "tiny", VersionChanges(excluded=tuple(red_train)))


def test_a_member_may_not_change_someone_elses_dataset(ws, tiny):
    path = tiny.items()[0].rel_path
    with pytest.raises(NotAllowedError):
        versions.make_version(
            ws, "tiny", VersionChanges(excluded=(path,)), actor=Actor("ben", "member")
        )
    assert audit.read(ws)[-1]["outcome"] == audit.REFUSED


def test_undoing_a_change_finds_the_version_it_came_back_to(ws, tiny):
    path = tiny.items("train")[0].rel_path
    cls = tiny.items("train")[0].class_name
    other = next(c for c in tiny.classes if c != cls)
    v2 = versions.make_version(ws, "tiny", VersionChanges(moved=((path, other),)))
    moved_to = path.replace(f"/{cls}/", f"/{other}/")
    back = versions.make_version(ws, v2.id, VersionChanges(moved=((moved_to, cls),)))
    assert back.id == tiny.id and back.already_existed


def test_the_cli_changes_and_lists_versions(ws, tiny, tmp_path):
    photo = tmp_path / "cam.png"
    photo.write_bytes(_png())
    path = tiny.items("train")[0].rel_path
    made = tlcore(ws, "datasets", "change", "tiny", "--exclude", path, "--add", f"red={photo}")
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert out["version"] == 2 and out["changes"] == "1 excluded, 1 added"
    listed = tlcore(ws, "datasets", "versions", "tiny", "--json")
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == [1, 2] and rows[0]["changes"] == "imported"
    bad = tlcore(ws, "datasets", "change", "tiny", "--move", "nonsense")
    assert bad.returncode == 2 and "PATH=CLASS" in bad.stderr
