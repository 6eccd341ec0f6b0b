"""The quick start: the demo dataset and a sensible run, never silent about weights."""

from tlcore.store import runs
from tlcore.training import quickstart


def test_prefers_cached_imagenet_weights(monkeypatch):
    cached = ("MobileNet", 0.25, 224)
    monkeypatch.setattr(
        "tlcore.model.weights.imagenet_weights_status",
        lambda *key: type("Status", (), {"available": key == cached})(),
    )
    config, note = quickstart.choose_quick_config("demo", try_download=False)
    assert (config.backbone, config.alpha, config.weights) == ("MobileNet", 0.25, "imagenet")
    assert config.strategy == "feature_extraction" and not config.has_augmentation
    assert "ImageNet" in note


def test_without_any_weights_it_says_it_trains_from_scratch(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    config, note = quickstart.choose_quick_config("demo", try_download=False)
    assert config.weights == "none" and config.strategy == "from_scratch"
    assert "from scratch" in note and "No pretrained weights" in note


def test_quick_start_imports_the_demo_and_queues_a_run(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr("tlcore.store.jobs.schedule", lambda ws: [])
    monkeypatch.setattr(
        quickstart,
        "choose_quick_config",
        lambda name: (
            quickstart.RunConfig(
                dataset=name, backbone="SmallCNN", weights="none", strategy="from_scratch"
            ),
            "note",
        ),
    )
    started = quickstart.quick_start(ws)
    record = runs.read_run(ws, started.run_id)
    assert record.state == "queued" and record.config.dataset == started.dataset_name
    again = quickstart.quick_start(ws)  # the demo is imported once
    assert again.dataset_name == started.dataset_name
