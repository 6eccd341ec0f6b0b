"""On real photos (flowers5, 5 classes): the from-scratch twin learns, and the
recommended recipe trains with real ImageNet weights.

flowers5's path comes from ``$TLS_FLOWERS_DIR`` (default ``<repo>/../shared/datasets/
flowers5``) and weights from ``$TLS_TEST_KERAS_HOME``; both are read only. With ``CI=true``
a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tlcore.config import RunConfig
from tlcore.data import datasets
from tlcore.evaluation import evaluate
from tlcore.store import runs
from tlcore.training import sweep, train

REPO = Path(__file__).resolve().parent.parent
SPLIT = datasets.ImportOptions(val_fraction=0.15, test_fraction=0.25, seed=42, mode="index")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        reason = f"{what} not found at {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: this test must run)")
        pytest.skip(reason)
    return path


@pytest.fixture
def flowers(ws):
    source = Path(os.environ.get("TLS_FLOWERS_DIR", REPO.parent / "shared/datasets/flowers5"))
    _require(source, "flowers5")
    return datasets.import_folder(ws, source.resolve(), name="flowers5", options=SPLIT)


@pytest.fixture
def imagenet_home(tmp_path, monkeypatch):
    source = Path(os.environ.get("TLS_TEST_KERAS_HOME", REPO.parent / "shared/keras_home"))
    _require(source / "models", "the shared Keras home")
    home = tmp_path / "keras_home"
    shutil.copytree(source.resolve(), home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _train(ws, config):
    record = runs.create_run(ws, config)
    runs.set_state(ws, record.id, runs.RUNNING)
    result = train.train_run(ws, record.id)
    runs.set_state(ws, record.id, result.state, summary=result.summary)
    return record.id, result


@pytest.mark.slow
def test_the_from_scratch_twin_learns_on_real_photos(ws, flowers):
    # The twin of a MobileNet 0.25 run at 224 px (8-10 minutes on 2 cores). At 96 px the
    # same network reached only 27% on test (95% CI 21-34%): too close to chance to show it.
    original = RunConfig(dataset="flowers5", backbone="MobileNet", alpha=0.25, weights="none")
    twin = sweep.baseline_config(original.replace(strategy="feature_extraction"), "original")
    run_id, result = _train(ws, twin)
    assert result.state == runs.FINISHED
    stored = evaluate.load_evaluation(ws, run_id)
    m = stored.metrics
    predicted = np.asarray(m.confusion_matrix).sum(axis=0)
    assert m.collapse is None and (predicted > 0).sum() >= 4, predicted
    # Clearly above chance (20% for 5 balanced classes): the interval's low end too.
    low, _ = result.summary["test_accuracy_ci95"]
    assert low > 0.3, result.summary
    assert m.macro_avg.f1 > 0.3


@pytest.mark.slow
def test_the_recommended_recipe_trains_with_real_imagenet_weights(ws, flowers, imagenet_home):
    config = RunConfig(dataset="flowers5", backbone="MobileNet", alpha=0.25)
    assert config.searches_head  # the default of a new run
    _, result = _train(ws, config)
    summary = result.summary
    assert summary["val_samples"] == len(flowers.items("train")) + len(flowers.items("val"))
    assert summary["head_search"]["folds"] == 5
    assert summary["test_samples"] == len(flowers.items("test"))
    # Real pretrained features separate these flowers far beyond chance.
    assert summary["test_accuracy_ci95"][0] > 0.6 and summary["collapse"] is None
