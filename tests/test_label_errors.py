"""Suspected label errors: out-of-fold probabilities ranked by confident learning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import write_class_folders
from tests.test_cli import tlcore
from tlcore.data import datasets, label_check
from tlcore.store import tasks
from tlcore.training import label_errors


def _clusters(rng, per_class=40, classes=3, dims=16, spread=0.6):
    centres = rng.normal(0, 3, size=(classes, dims))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(0, spread, size=(len(labels), dims))
    return features, labels


def test_planted_label_errors_rank_first():
    rng = np.random.default_rng(0)
    features, truth = _clusters(rng)
    given = truth.copy()
    planted = rng.choice(len(given), size=6, replace=False)
    given[planted] = (given[planted] + 1) % 3
    probs, accuracy, folds = label_errors.out_of_fold_probabilities(features, given, 3)
    assert folds == 5 and accuracy > 0.9
    ranked = label_errors.rank_label_issues(given, probs)
    # Confident learning flags as many as it estimates are wrong, the least confident
    # first: here none that is right, and most of those planted.
    assert set(ranked) <= set(planted.tolist()) and len(ranked) >= 4
    scores = [probs[i, given[i]] for i in ranked]
    assert scores == sorted(scores)
    # Each suggestion is the true class: the rest of the data outvotes the label.
    assert all(np.argmax(probs[i]) == truth[i] for i in ranked)
    every = label_errors.rank_label_issues(given, probs, method="predicted_neq_given")
    assert set(planted.tolist()) <= set(every)


def test_clean_labels_raise_no_suspects():
    features, labels = _clusters(np.random.default_rng(1))
    probs, _, _ = label_errors.out_of_fold_probabilities(features, labels, 3)
    assert label_errors.rank_label_issues(labels, probs) == []


def test_a_class_with_one_image_cannot_be_checked(ws, tmp_path):
    src = write_class_folders(tmp_path / "src", {"red": 10, "green": 10})
    ds = datasets.import_folder(ws, src, name="tiny", options=_keep_all())
    from tlcore.data.versions import VersionChanges, make_version

    greens = [i.rel_path for i in ds.items() if i.class_name == "green"]
    keep = next(p for p in greens if p.startswith("train/"))
    one = make_version(ws, ds.id, VersionChanges(excluded=tuple(p for p in greens if p != keep)))
    with pytest.raises(datasets.DatasetError, match="'green' has fewer than 2 images"):
        label_errors.find_suspects(ws, one, backbone="SmallCNN", alpha=1.0)


def _keep_all():
    return datasets.ImportOptions(min_images_per_class=1)


@pytest.mark.slow
def test_the_cli_lists_planted_errors_as_json_and_a_task_reports_them(ws, tmp_path):
    src = write_class_folders(tmp_path / "src", {"red": 20, "green": 20, "blue": 20})
    for name in ("img_000.png", "img_001.png"):
        shutil.move(src / "red" / name, src / "green" / f"planted_{name}")
    ds = datasets.import_folder(ws, src, name="colours")

    out = tlcore(ws, "datasets", "suspects", "colours", "--backbone", "SmallCNN", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["path"].rsplit("/", 1)[-1] for r in rows[:2]} == {
        "planted_img_000.png",
        "planted_img_001.png",
    }
    for row in rows[:2]:
        assert row["given"] == "green" and row["suggested"] == "red"
        assert row["path"].split("/")[1] == "green"  # <split>/<class>/<file>
        assert row["path"] in {i.rel_path for i in ds.items()}
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert set(rows[0]) == {"path", "given", "suggested", "score"}

    # The app runs the same check as a background task and reads the stored list.
    task = tasks.start(
        ws,
        tasks.dataset_subject(ds.id),
        "suspects",
        ["datasets", "suspects", ds.id, "--backbone", "SmallCNN"],
    )
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        seen = tasks.read_task(ws, tasks.dataset_subject(ds.id), task.id)
        if not seen.active:
            break
        time.sleep(0.5)
    assert seen.state == tasks.FINISHED, seen.message
    stored = label_check.stored(ws, ds.id)
    assert [s.to_dict() for s in stored.suspects] == rows
