"""Strategy sweeps and from-scratch baselines (issue 6): what is queued, and what is read back."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_config
from tlcore import cli, jobs, runs, sweep

RUN_TIMEOUT_S = 300


@pytest.fixture
def no_workers(monkeypatch) -> list:
    """`jobs.schedule` records its calls instead of starting workers: runs stay queued."""
    calls: list = []
    monkeypatch.setattr(jobs, "schedule", lambda ws: calls.append(ws.root) or [])
    return calls


def test_a_sweep_queues_one_run_per_strategy_with_the_same_budget(ws, no_workers):
    base = tiny_config("tiny", name="colours", epochs=4, weights="none", seed=7)
    started = sweep.start_sweep(ws, base, unfreeze=1)
    assert list(started.runs) == list(sweep.SWEEP_STRATEGIES)
    assert len(no_workers) == 5  # each submission asked the scheduler to start it

    configs = {role: runs.read_run(ws, run_id).config for role, run_id in started.runs.items()}
    assert {role: c.strategy for role, c in configs.items()} == {
        s: s for s in sweep.SWEEP_STRATEGIES
    }
    for role, config in configs.items():
        assert config.total_epochs == 4, role
        assert (config.dataset, config.backbone, config.seed) == ("tiny", "SmallCNN", 7)
        assert config.extra == {"sweep": started.id, "sweep_role": role}
        assert runs.read_run(ws, started.runs[role]).state == runs.QUEUED
    assert (configs["two_phase"].epochs, configs["two_phase"].fine_tune_epochs) == (2, 2)
    assert configs["fine_tune_top"].unfreeze == 1
    assert configs["from_scratch"].weights == "none"

    assert sweep.load_sweep(ws, started.id).runs == started.runs
    assert [s.id for s in sweep.sweeps_of_run(ws, started.runs["bias_only"])] == [started.id]
    results = sweep.sweep_results(ws, started.id)
    assert results.winner is None and results.pending == 5 and not results.done
    assert "0 of 5 runs finished" in results.message


def test_sweep_from_imagenet_weights_keeps_them_except_from_scratch():
    configs = sweep.sweep_configs(tiny_config("tiny", backbone="MobileNetV2", weights="imagenet"))
    assert {role: c.weights for role, c in configs.items()} == {
        "feature_extraction": "imagenet",
        "fine_tune_top": "imagenet",
        "bias_only": "imagenet",
        "two_phase": "imagenet",
        "from_scratch": "none",
    }
    with pytest.raises(ValueError, match="unfreeze"):
        sweep.sweep_configs(tiny_config("tiny"), unfreeze=0)


def test_unknown_sweep_is_refused_by_id(ws):
    with pytest.raises(sweep.SweepError, match="No sweep with id 'sweep-nope'"):
        sweep.sweep_results(ws, "sweep-nope")


def test_cli_sweep_queues_and_prints_the_runs(ws, tiny_dataset, no_workers, capsys):
    code = cli.main(
        [
            "--workspace",
            str(ws.root),
            "sweep",
            "--dataset",
            tiny_dataset,
            "--set",
            "backbone=SmallCNN",
            "--set",
            "weights=none",
            "--set",
            "epochs=2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["runs"]) == sorted(sweep.SWEEP_STRATEGIES)
    assert cli.main(["--workspace", str(ws.root), "sweep", "--results", out["sweep_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 5


# --------------------------------------------------------------------------- baselines


def test_baseline_copies_the_run_from_scratch_with_its_whole_epoch_budget(ws, no_workers):
    config = tiny_config("tiny", name="pets", strategy="two_phase", epochs=2, fine_tune_epochs=3)
    original = runs.create_run(ws, config).id
    baseline_id = sweep.start_baseline(ws, original)
    baseline = runs.read_run(ws, baseline_id).config
    assert (baseline.strategy, baseline.weights, baseline.epochs) == ("from_scratch", "none", 5)
    assert baseline.total_epochs == 5
    assert (baseline.dataset, baseline.backbone, baseline.seed) == (
        config.dataset,
        config.backbone,
        config.seed,
    )
    assert baseline.extra == {"baseline_of": original}
    # Asking again (a double click) does not queue a second one.
    assert sweep.start_baseline(ws, original) == baseline_id
    assert len(runs.list_runs(ws)) == 2


def test_a_from_scratch_run_has_no_baseline(ws, no_workers):
    original = runs.create_run(ws, tiny_config("tiny", strategy="from_scratch")).id
    with pytest.raises(sweep.SweepError, match="already trains from scratch"):
        sweep.start_baseline(ws, original)


def _finish(ws, run_id, **summary):
    runs.set_state(ws, run_id, runs.RUNNING)
    runs.set_state(ws, run_id, runs.FINISHED, summary=summary)


def test_baseline_comparison_says_whether_transfer_helped(ws, no_workers):
    original = runs.create_run(ws, tiny_config("tiny", strategy="feature_extraction")).id
    assert sweep.baseline_comparison(ws, original) is None
    baseline_id = sweep.start_baseline(ws, original)
    _finish(ws, original, best_val_accuracy=0.9, train_seconds=10.0)
    waiting = sweep.baseline_comparison(ws, original)
    assert not waiting.ready and "queued" in waiting.message

    _finish(ws, baseline_id, best_val_accuracy=0.6, train_seconds=40.0)
    verdict = sweep.baseline_comparison(ws, original)
    assert verdict.ready and verdict.delta == pytest.approx(0.3)
    assert verdict.metric == "best validation accuracy"  # neither run was evaluated
    assert verdict.message.startswith("Yes: pretrained weights added 30.0 points")


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_sweep_runs_end_to_end_and_names_a_winner(ws, tiny_dataset, capsys):
    started = sweep.start_sweep(ws, tiny_config(tiny_dataset, epochs=1), unfreeze=1)
    for run_id in started.runs.values():
        record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
        assert record.state == runs.FINISHED, (record.status.error, record.config.strategy)
    results = sweep.sweep_results(ws, started.id)
    assert results.done and results.finished == 5
    assert results.winner in sweep.SWEEP_STRATEGIES
    assert all(r["test_accuracy"] is not None for r in results.rows)
    assert all(r["trainable_params"] > 0 and r["train_seconds"] >= 0 for r in results.rows)
    best = max(r["test_accuracy"] for r in results.rows)
    [winner] = [r for r in results.rows if r["winner"]]
    assert winner["test_accuracy"] == best and winner["role"] == results.winner
    assert "wins with" in results.message
    # Fewer weights train when the backbone is frozen than when everything trains.
    params = {r["role"]: r["trainable_params"] for r in results.rows}
    assert params["feature_extraction"] < params["bias_only"] < params["from_scratch"]
