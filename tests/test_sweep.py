"""Strategy sweeps and from-scratch baselines (issue 6): what is queued, and what is read back."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_config
from tlcore import cli
from tlcore.evaluation import compare
from tlcore.store import jobs, runs
from tlcore.training import sweep

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


def test_baseline_is_the_same_network_with_the_recipe_training_from_scratch_needs(ws, no_workers):
    config = tiny_config("tiny", name="pets", strategy="two_phase", epochs=20, fine_tune_epochs=15)
    original = runs.create_run(ws, config).id
    baseline_id = sweep.start_baseline(ws, original)
    baseline = runs.read_run(ws, baseline_id).config
    assert (baseline.strategy, baseline.weights, baseline.epochs) == ("from_scratch", "none", 35)
    assert (baseline.lr_schedule, baseline.flip) == ("cosine", "horizontal")
    assert baseline.zoom > 0 and baseline.translation > 0
    short = sweep.baseline_config(config.replace(epochs=2, fine_tune_epochs=3), original)
    assert short.epochs == sweep.TWIN_MIN_EPOCHS  # never fewer than a scratch network needs
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


def _store_evaluation(ws, run_id, truth, predicted, *, val_truth=(), val_predicted=()):
    """A stored evaluation of ``run_id`` whose model predicted ``predicted`` per image."""
    import numpy as np

    from tlcore.evaluation import evaluate
    from tlcore.evaluation.metrics import compute_metrics
    from tlcore.model import model_store

    classes = ["a", "b"]

    def split(prefix, y, yhat):
        probs = np.full((len(y), 2), 0.1)
        probs[np.arange(len(y)), yhat] = 0.9
        paths = [f"/data/{prefix}/{i}.png" for i in range(len(y))]
        return compute_metrics(np.asarray(y), probs, classes), paths, np.asarray(y), probs

    # Stored metrics are served only for the model file they were computed from: stand-in
    # bytes, recorded as training records a model, are enough (nothing loads them).
    model = model_store.save_model(
        None,
        ws.run_dir(run_id) / runs.MODEL_FILE,
        save_fn=lambda _model, target: target.write_bytes(f"model of {run_id}".encode()),
    )
    evaluated = {"test": split("test", truth, predicted)}
    if val_truth:
        evaluated["val"] = split("val", val_truth, val_predicted)
    manifest = {
        "run_id": run_id,
        "dataset_id": "tiny-1",
        "own_dataset": True,
        "format_version": evaluate.FORMAT_VERSION,
        "split": "test",
        "class_names": classes,
        "model_stamp": {"sha256": model.sha256},
    }
    evaluate._store(ws.run_dir(run_id), "tiny-1", evaluated, "test", manifest)


def test_baseline_verdict_follows_a_paired_test_on_the_test_images(ws, no_workers):
    original = runs.create_run(ws, tiny_config("tiny", strategy="feature_extraction")).id
    assert compare.baseline_comparison(ws, original) is None
    baseline_id = sweep.start_baseline(ws, original)
    _finish(ws, original, train_seconds=10.0)
    waiting = compare.baseline_comparison(ws, original)
    assert waiting.verdict == "inconclusive" and "queued" in waiting.reason
    _finish(ws, baseline_id, train_seconds=40.0)
    unevaluated = compare.baseline_comparison(ws, original)
    assert unevaluated.verdict == "inconclusive" and "evaluat" in unevaluated.reason

    truth = [0] * 20 + [1] * 20
    _store_evaluation(ws, original, truth, truth)  # 40 of 40
    twin = [0] * 20 + [1] * 8 + [0] * 12  # 28 of 40: wrong on 12 the run gets right
    _store_evaluation(ws, baseline_id, truth, twin)
    verdict = compare.baseline_comparison(ws, original)
    assert verdict.verdict == "transfer_helped" and verdict.ready
    assert verdict.p_value == pytest.approx(2 / 2**12)
    assert verdict.reason.startswith("Yes: pretrained is better (p < 0.001; 12 of 40")
    assert verdict.to_dict()["twin_run_id"] == baseline_id

    _store_evaluation(ws, baseline_id, truth, [*truth[:38], 0, 0])  # 2 images differ
    close = compare.baseline_comparison(ws, original)
    assert close.verdict == "no_clear_difference" and "2 of 40 images differ" in close.reason


def test_a_twin_that_predicts_one_class_makes_the_verdict_inconclusive(ws, no_workers):
    original = runs.create_run(ws, tiny_config("tiny", strategy="feature_extraction")).id
    baseline_id = sweep.start_baseline(ws, original)
    _finish(ws, original)
    _finish(ws, baseline_id)
    truth = [0] * 20 + [1] * 20
    _store_evaluation(ws, original, truth, truth)
    _store_evaluation(ws, baseline_id, truth, [0] * 40)  # collapsed: 50%, all class "a"
    verdict = compare.baseline_comparison(ws, original)
    assert verdict.verdict == "inconclusive" and verdict.p_value is not None
    assert "the from-scratch twin did not learn" in verdict.reason
    assert "predicts 'a' for 100%" in verdict.reason


def test_the_sweep_chooses_on_validation_and_calls_a_tie_a_tie(ws, no_workers):
    base = tiny_config("tiny", epochs=2)
    started = sweep.start_sweep(ws, base, unfreeze=1)
    truth = [0] * 10 + [1] * 10
    test_truth = [0, 1] * 10
    for role, run_id in started.runs.items():
        _finish(ws, run_id, train_seconds=5.0)
        wrong = {"feature_extraction": 1, "fine_tune_top": 2, "bias_only": 3}.get(role, 10)
        val_pred = truth[: 20 - wrong] + [1 - t for t in truth[20 - wrong :]]
        # The test split prefers from_scratch: it must not decide.
        test_pred = test_truth if role == "from_scratch" else [0] * 20
        _store_evaluation(
            ws, run_id, test_truth, test_pred, val_truth=truth, val_predicted=val_pred
        )
    results = sweep.sweep_results(ws, started.id)
    assert results.winner is None  # 19 vs 18 of 20: no clear difference
    assert set(results.tied) == {"feature_extraction", "fine_tune_top", "bias_only"}
    assert results.message.startswith("Tie: no strategy is clearly better on the 20 validation")
    assert "validation images would be needed" in results.note
    best = next(r for r in results.rows if r["role"] == "feature_extraction")
    assert best["val_samples"] == 20 and best["test_samples"] == 20
    assert "on the test split it scores 50.0% (95% CI" in results.message
    assert all(sweep.sweep_configs(base)[s].head_search is False for s in sweep.SWEEP_STRATEGIES)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_sweep_runs_end_to_end_and_names_a_winner(ws, tiny_dataset, capsys):
    started = sweep.start_sweep(ws, tiny_config(tiny_dataset, epochs=1), unfreeze=1)
    for run_id in started.runs.values():
        record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
        assert record.state == runs.FINISHED, (record.status.error, record.config.strategy)
    results = sweep.sweep_results(ws, started.id)
    assert results.done and results.finished == 5
    assert results.winner in sweep.SWEEP_STRATEGIES or results.tied
    assert all(r["test_accuracy"] is not None for r in results.rows)
    assert all(r["val_accuracy"] is not None for r in results.rows)
    assert all(r["trainable_params"] > 0 and r["train_seconds"] >= 0 for r in results.rows)
    best = max(r["val_accuracy"] for r in results.rows)
    chosen = [r for r in results.rows if r["winner"] or r["tied"]]
    assert chosen and max(r["val_accuracy"] for r in chosen) == best
    assert "wins" in results.message or results.message.startswith("Tie")
    # Fewer weights train when the backbone is frozen than when everything trains.
    params = {r["role"]: r["trainable_params"] for r in results.rows}
    assert params["feature_extraction"] < params["bias_only"] < params["from_scratch"]


# --------------------------------------------------------------------------- names


def test_sweep_runs_are_named_by_dataset_sweep_number_and_strategy(ws, no_workers):
    # A long name of the run the sweep started from no longer hides what tells them apart.
    base = tiny_config("tiny", name="ants-bees fine-tune top (second try)", weights="none")
    first = sweep.start_sweep(ws, base, unfreeze=1)
    second = sweep.start_sweep(ws, base, unfreeze=1)
    assert (first.number, second.number) == (1, 2)
    assert sweep.load_sweep(ws, second.id).number == 2
    records = {role: runs.read_run(ws, run_id) for role, run_id in second.runs.items()}
    assert records["fine_tune_top"].title == "tiny · sweep 2 · fine-tune top"
    assert records["feature_extraction"].title == "tiny · sweep 2 · feature extraction"
    assert records["from_scratch"].short_title == "sweep 2 · from scratch"
    every = [runs.read_run(ws, run_id) for s in (first, second) for run_id in s.runs.values()]
    titles = [r.title for r in every]
    assert len(set(titles)) == 10  # every run of both sweeps has its own name
    # A narrow list (the Training page's queue) shows about 20 characters: still distinct.
    assert len({r.short_title[:20] for r in every}) == 10
    # Another dataset counts its own sweeps.
    other = sweep.start_sweep(ws, base.replace(dataset="pets"), unfreeze=1)
    assert other.number == 1
    assert runs.read_run(ws, other.runs["bias_only"]).title == "pets · sweep 1 · bias-only"


def test_a_baseline_is_named_after_its_dataset_and_the_run_it_copies(ws, no_workers):
    unnamed = runs.create_run(ws, tiny_config("tiny", strategy="two_phase")).id
    twin = runs.read_run(ws, sweep.start_baseline(ws, unnamed))
    assert twin.title == "tiny · baseline of SmallCNN · two-phase"
    started = sweep.start_sweep(ws, tiny_config("tiny", weights="none"), unfreeze=1)
    of_sweep = sweep.baseline_config(
        runs.read_run(ws, started.runs["fine_tune_top"]).config, started.runs["fine_tune_top"]
    )
    assert of_sweep.name == "tiny · baseline of sweep 1 · fine-tune top"
    named = sweep.baseline_config(tiny_config("tiny", name="pets, first try"), "x")
    assert named.name == "tiny · baseline of pets, first try"
    long = sweep.baseline_config(tiny_config("d" * 60, name="n" * 120), "x")
    assert len(long.name) <= 120 and long.name.endswith("…")
