"""The Evaluation page's Compare tab (`ui.evaluation_compare`): sweep and baseline runs are
told apart in lists and legends, and "Follow the runs" opens the Training page on them."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from tests.conftest import tiny_config
from tests.test_evaluation_page import make_finished_run, open_page
from tlcore.store import jobs, runs
from tlcore.training import sweep
from ui import evaluation_compare

FOLLOW = "Follow the runs on the Training page"


@pytest.fixture(autouse=True)
def no_workers(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])


def test_legend_labels_keep_whole_names_and_tell_equal_ones_apart(ws):
    started = sweep.start_sweep(ws, tiny_config("tiny", weights="none"), unfreeze=1)
    records = [runs.read_run(ws, run_id) for run_id in started.runs.values()]
    twins = [runs.create_run(ws, tiny_config("tiny", name="pets")) for _ in range(2)]
    labels = evaluation_compare.legend_labels([*records, *twins])
    assert labels[:2] == ["tiny · sweep 1 · feature extraction", "tiny · sweep 1 · fine-tune top"]
    assert len(set(labels)) == len(labels)
    assert labels[-1] == f"pets ({twins[1].id[-7:]})"


def test_a_sweep_run_in_a_dropdown_names_its_strategy_once(ws):
    started = sweep.start_sweep(ws, tiny_config("tiny", weights="none"), unfreeze=1)
    record = runs.read_run(ws, started.runs["bias_only"])
    assert evaluation_compare.run_option(record) == "tiny · sweep 1 · bias-only"
    plain = runs.create_run(ws, tiny_config("tiny", name="pets"))
    assert evaluation_compare.run_option(plain) == "pets · Full fine-tuning"


@pytest.mark.parametrize(
    ("states", "followed"),
    [
        ({}, "feature_extraction"),  # all queued: the first to start
        ({"feature_extraction": runs.CANCELLED, "fine_tune_top": runs.RUNNING}, "fine_tune_top"),
        ({role: runs.CANCELLED for role in sweep.SWEEP_STRATEGIES}, "feature_extraction"),
    ],
)
def test_the_followed_sweep_run_is_the_one_training_else_the_next(states, followed):
    rows = [
        {"role": role, "run_id": f"2026-{i}", "state": states.get(role, runs.QUEUED)}
        for i, role in enumerate(sweep.SWEEP_STRATEGIES)
    ]
    expected = next(r["run_id"] for r in rows if r["role"] == followed)
    assert evaluation_compare.followed_run(rows) == expected
    assert evaluation_compare.followed_run([{"run_id": "x", "state": "deleted"}]) is None


def test_follow_the_runs_opens_the_training_page_on_the_sweep_not_an_old_run(ws, tiny_dataset):
    old = runs.create_run(ws, tiny_config(tiny_dataset, name="old experiment"))
    runs.set_state(ws, old.id, runs.FAILED, error="The weights file is not an HDF5 file.")
    run_id = make_finished_run(ws, tiny_dataset, name="pretrained", strategy="fine_tune_top")
    at = open_page(ws, {"run": run_id})
    at.session_state["training_run"] = old.id  # this session looked at the old run before
    next(b for b in at.button if b.label == "Start the sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [started] = sweep.list_sweeps(ws)

    link = next(n.proto for n in at.get("page_link") if n.proto.label == FOLLOW)
    assert "training" in link.page
    query = parse_qs(link.query_string)
    first = started.runs["feature_extraction"]  # queued first, so the first to train
    assert query == {"run": [first]}

    # Following the link: the Training page shows that run, not the one remembered.
    at.query_params["run"] = query["run"][0]
    at.switch_page("views/training.py").run()
    assert not at.exception, [e.value for e in at.exception]
    headers = [m.value for m in at.markdown if str(m.value).startswith("### ")]
    assert headers[0] == f"### {runs.read_run(ws, first).title}"
    assert headers[0] == f"### {tiny_dataset} · sweep 1 · feature extraction"
