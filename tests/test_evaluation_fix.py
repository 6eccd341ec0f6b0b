"""Evaluation → fix → retrain → compare: errors fixed in place make a new dataset version, a
run retrained on it is compared with the run before the fix on the same test images."""

from __future__ import annotations

import pytest

from tests.test_evaluation_page import _text, make_finished_run, open_page
from tlcore.data import datasets, versions
from tlcore.data.versions import VersionChanges
from tlcore.evaluation import evaluate, fix_compare
from tlcore.store import runs
from tlcore.training import clone


def _fix_boxes(at, run_id):
    return [s for s in at.selectbox if str(s.key).startswith(f"evfix_pick::{run_id}::")]


def test_fixes_chosen_under_errors_make_a_version_and_retrain_starts_a_run(ws, tiny_dataset):
    run_id = make_finished_run(ws, tiny_dataset, name="before")
    at = open_page(ws, {"run": run_id})
    boxes = _fix_boxes(at, run_id)
    assert len(boxes) >= 2  # an untrained model gets plenty wrong
    first = boxes[0]
    move_to = next(o for o in first.options if o.startswith("Move to "))
    first.set_value(move_to).run()
    _fix_boxes(at, run_id)[1].set_value("Exclude").run()
    assert "**:material/build: 2 fixes chosen**" in _text(at)
    at.button(key="evfix_make").click().run()
    assert not at.exception

    v1 = datasets.load_dataset(ws, tiny_dataset)  # the name: now the newest
    assert v1.version == 2
    changes = v1.manifest["changes"]
    assert len(changes["moved"]) == 1 and len(changes["excluded"]) == 1
    assert changes["moved"][0]["to"] == move_to.removeprefix("Move to ")
    assert "Made version 2 of tiny" in _text(at)

    at.button(key="evfix_retrain").click().run()
    assert not at.exception
    retrained = [r for r in runs.list_runs(ws) if r.id != run_id]
    assert len(retrained) == 1
    config = retrained[0].config
    assert config.dataset == v1.id and config.extra[clone.EXTRA_FROM_RUN] == run_id
    assert config.name == "before · v2"


@pytest.mark.slow
def test_before_and_after_are_compared_on_the_fixed_versions_test_images(ws, tiny_dataset):
    before = make_finished_run(ws, tiny_dataset, name="before")
    v1 = datasets.load_dataset(ws, tiny_dataset)
    wrong = v1.items("train")[0]
    other = next(c for c in v1.classes if c != wrong.class_name)
    v2 = versions.make_version(ws, v1.id, VersionChanges(moved=((wrong.rel_path, other),)))
    config = clone.config_from_run(ws, before, dataset=v2.id)
    after = make_finished_run(ws, v2.id, name="after", extra=config.extra)

    pair = fix_compare.before_after(ws, after)
    assert pair is not None and pair.before.id == before and pair.dataset_id == v2.id
    assert pair.needs_evaluation == [before] and pair.paired is None
    # The earlier run, evaluated on the new version: its test split, not every image.
    result = evaluate.evaluate_run(ws, before, dataset=v2.id)
    assert result.split == "test" and result.metrics.num_samples == len(v2.items("test"))
    pair = fix_compare.before_after(ws, after)
    assert pair.paired is not None and pair.paired.n == len(v2.items("test"))
    assert fix_compare.before_after(ws, before) is None  # not a retrained run

    at = open_page(ws, {"run": after})
    text = _text(at)
    assert "Before and after the fix · version 2's test images" in text
    assert f"n = {pair.paired.n}" in text
    assert pair.verdict().split(" (")[0].lower() in text.lower()
