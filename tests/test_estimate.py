"""Time estimates from this machine's measured speed (tlcore.training.estimate)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_config
from tlcore.training import estimate


def _write_speed(ws, config, **changes):
    entry = {
        "forward_ips": 100.0,
        "train_ips": 25.0,
        "import_s": 5.0,
        "build_s": 1.0,
        "epoch_overhead_s": 0.1,
        "flops": 2e10,
        "lr_fit_s": 0.2,
        "lr_fit_rows": 600,
        "save_variable_s": 0.0,  # weight writes free here: the epochs are what is checked
        "save_bytes_s": 1e12,
        "model_variables": 10,
    } | changes
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    key = estimate.speed_key(config, config.image_size)
    (ws.cache_dir / estimate.SPEED_FILE).write_text(json.dumps({key: entry}))


def test_an_estimate_without_a_measurement_says_it_is_rough(ws, tiny_dataset):
    planned = estimate.estimate_run(ws, tiny_config(tiny_dataset))
    assert not planned["measured"] and "rough" in planned["basis"]
    assert planned["total_seconds"] > 0


def test_the_estimate_adds_up_what_the_run_does_at_the_measured_speed(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, epochs=10)
    _write_speed(ws, config)
    planned = estimate.estimate_run(ws, config)
    assert planned["measured"] and "measured on this machine" in planned["basis"]
    parts = planned["parts"]
    assert parts["start (TensorFlow, model)"] == pytest.approx(7.0)
    # 42 training images x 10 epochs at 25 images/s dominate the epochs.
    assert parts["phase 1 epochs"] == pytest.approx(42 * 10 / 25, rel=0.3)
    twice_as_fast = estimate.estimate_run
    _write_speed(ws, config, train_ips=50.0)
    assert twice_as_fast(ws, config)["parts"]["phase 1 epochs"] < parts["phase 1 epochs"]
    assert (
        estimate.estimate_run(ws, config.replace(epochs=20))["total_seconds"]
        > planned["total_seconds"]
    )


def test_the_recommended_recipe_is_estimated_as_two_feature_passes_and_a_search(ws, tiny_dataset):
    config = tiny_config(tiny_dataset, strategy="feature_extraction", head_search=True)
    _write_speed(ws, config)
    parts = estimate.estimate_run(ws, config)["parts"]
    assert "cross-validated head" in parts and "features, both views" in parts
    assert not any(name.endswith("epochs") for name in parts)


def test_pages_never_start_a_measurement_when_told_not_to(ws, tiny_dataset, monkeypatch):
    monkeypatch.setenv(estimate.AUTO_CALIBRATE_ENV, "0")
    estimate.start_calibration(ws, tiny_config(tiny_dataset))
    assert not list(ws.cache_dir.glob(".calibrating-*"))


@pytest.mark.slow
def test_calibration_measures_and_caches_this_machines_speed(ws):
    config = tiny_config("any")
    entry = estimate.calibrate(ws, config)
    assert entry["forward_ips"] > entry["train_ips"] > 0
    assert entry["import_s"] > 0 and entry["flops"] > 0
    assert estimate.measured_speed(ws, config) == entry
