"""The Model page (AppTest): form → RunConfig, what trains per strategy, errors, weights, start.

The tests use the tiny SmallCNN backbone (no pretrained weights) at 32-48 px wherever the
backbone does not matter, so each model the page builds for its architecture view takes a
fraction of a second. ``KERAS_HOME`` points at an empty folder in every test, so whether
ImageNet weights are "on this machine" never depends on the machine running the tests;
`fake_cached_weights` puts a file where Keras would cache it.
"""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT
from tlcore.config import RunConfig
from tlcore.model import models, preview
from tlcore.model.weights import save_backbone_weights
from tlcore.store import jobs, runs
from ui import model_state as form_state

TIMEOUT_S = 180
PAGE = "views/model.py"
MOBILENET_025_FILE = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache: no ImageNet weights are on this 'machine'."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def submitted(monkeypatch) -> list[RunConfig]:
    """`jobs.submit` records the configs it is given instead of starting workers."""
    configs: list[RunConfig] = []

    def fake_submit(ws, config, **owner):
        configs.append(config)
        return "20260101-000000-fake01"

    monkeypatch.setattr(jobs, "submit", fake_submit)
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])
    return configs


@pytest.fixture
def fake_cached_weights(keras_home):
    """Puts a (dummy) MobileNet alpha 0.25 weights file where Keras caches it."""
    (keras_home / "models" / MOBILENET_025_FILE).write_bytes(b"not really weights")


def open_model_page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def settle(at: AppTest, timeout_s: float = 120) -> AppTest:
    """Waits for the architecture preview the page asked for (built in its own process)."""
    deadline = time.monotonic() + timeout_s
    while "Building the architecture preview" in texts(at):
        assert time.monotonic() < deadline, "the preview was not built in time"
        time.sleep(0.5)
        at.run()
    return at


def small_cnn(at: AppTest, size: int = 32) -> AppTest:
    at.selectbox(key="mf_backbone").set_value("SmallCNN").run()
    at.number_input(key="mf_image_size").set_value(size).run()
    return settle(at)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.error)


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.warning] + [e.value for e in at.info]
    return "\n".join(str(p) for p in parts)


def test_renders_with_a_dataset(ws, tiny_dataset):
    at = small_cnn(open_model_page())
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, errors(at)
    assert at.selectbox(key="mf_dataset").value == tiny_dataset
    shown = metrics(at)
    for label in ("Total", "New head", "Trainable", "Frozen", "Peak memory", "Per epoch"):
        assert label in shown, shown
    assert len(at.get("plotly_chart")) == 1  # parameters per block
    assert len(at.dataframe) >= 2  # the weights overview and the layer table
    assert not at.button(key="start_training").disabled


def test_without_datasets_says_import_one_first(ws):
    at = open_model_page()
    assert "Import a dataset first" in texts(at)
    assert not [b for b in at.button if b.key == "start_training"]


def test_switching_strategy_changes_the_trainable_parameters(ws, tiny_dataset):
    at = small_cnn(open_model_page())
    head_only, total = metrics(at)["Trainable"], metrics(at)["Total"]
    settle(at.radio(key="mf_strategy").set_value("full_fine_tune").run())
    everything = metrics(at)["Trainable"]
    assert everything != head_only
    assert metrics(at)["Total"] == total  # the network is the same; only what trains changes
    settle(at.radio(key="mf_strategy").set_value("two_phase").run())
    shown = metrics(at)
    assert shown["Trainable · phase 1"] == head_only
    assert shown["Trainable · phase 2"] not in (head_only, everything)
    assert "Trainable" not in shown


def test_an_invalid_value_shows_the_error_and_blocks_the_start(ws, tiny_dataset):
    at = small_cnn(open_model_page())
    at.text_input(key="mf_dense_units").set_value("64,abc").run()
    assert "dense_units" in errors(at) and "64,abc" in errors(at)
    assert at.button(key="start_training").disabled
    at.text_input(key="mf_dense_units").set_value("64").run()
    assert not at.error
    # A combination only the model builder rejects: fusing stages needs a pooled vector.
    at.selectbox(key="mf_pooling").set_value("flatten").run()
    at.number_input(key="mf_fusion_stages").set_value(2).run()
    assert "fusion_stages" in errors(at) and "'flatten'" in errors(at)
    assert at.button(key="start_training").disabled


def test_from_scratch_forces_weights_none(ws, tiny_dataset, submitted):
    at = open_model_page()
    at.selectbox(key="mf_backbone").set_value("MobileNet").run()
    at.selectbox(key="mf_alpha").set_value(0.25).run()
    at.number_input(key="mf_image_size").set_value(64).run()
    assert at.radio(key="mf_weights_source").value == "imagenet"
    at.radio(key="mf_strategy").set_value("from_scratch").run()
    weights = at.radio(key="mf_weights_source")
    assert weights.value == "none" and weights.disabled
    assert "64 px · random weights" in texts(at)  # the run summary
    # Leaving "from scratch" brings back the weights chosen before.
    at.radio(key="mf_strategy").set_value("feature_extraction").run()
    assert at.radio(key="mf_weights_source").value == "imagenet"
    at.radio(key="mf_strategy").set_value("from_scratch").run()
    at.button(key="start_training").click().run()
    assert submitted[-1].weights == "none" and submitted[-1].strategy == "from_scratch"


def test_start_training_submits_the_config_the_widgets_show(ws, tiny_dataset, submitted):
    at = small_cnn(open_model_page(), size=48)
    at.selectbox(key="mf_pooling").set_value("max").run()
    at.text_input(key="mf_dense_units").set_value("32, 16").run()
    at.selectbox(key="mf_dense_activation").set_value("gelu").run()
    at.slider(key="mf_dropout").set_value(0.3).run()
    at.toggle(key="mf_head_batchnorm").set_value(True).run()
    at.radio(key="mf_strategy").set_value("fine_tune_top").run()
    at.number_input(key="mf_unfreeze").set_value(1).run()
    at.radio(key="mf_unfreeze_unit").set_value("layers").run()
    at.toggle(key="mf_train_batchnorm").set_value(True).run()
    at.selectbox(key="mf_optimizer").set_value("sgd").run()
    at.number_input(key="mf_momentum").set_value(0.8).run()
    at.number_input(key="mf_learning_rate").set_value(0.01).run()
    at.selectbox(key="mf_lr_schedule").set_value("cosine").run()
    at.number_input(key="mf_epochs").set_value(3).run()
    at.selectbox(key="mf_batch_size").set_value(16).run()
    at.toggle(key="mf_early_stopping").set_value(True).run()
    at.number_input(key="mf_patience").set_value(2).run()
    at.toggle(key="mf_balanced").set_value(True).run()
    at.slider(key="mf_label_smoothing").set_value(0.1).run()
    at.segmented_control(key="mf_flip").set_value("none").run()
    at.slider(key="mf_rotation").set_value(0.1).run()
    at.number_input(key="mf_seed").set_value(7).run()
    at.text_input(key="mf_name").set_value("tiny baseline").run()
    assert not at.error, errors(at)
    at.button(key="start_training").click().run()
    assert not at.exception, [e.value for e in at.exception]

    assert len(submitted) == 1
    expected = RunConfig(
        dataset=tiny_dataset,
        name="tiny baseline",
        backbone="SmallCNN",
        weights="none",
        image_size=48,
        pooling="max",
        dense_units=(32, 16),
        dense_activation="gelu",
        dropout=0.3,
        head_batchnorm=True,
        strategy="fine_tune_top",
        unfreeze=1,
        unfreeze_unit="layers",
        train_batchnorm=True,
        optimizer="sgd",
        momentum=0.8,
        learning_rate=0.01,
        lr_schedule="cosine",
        epochs=3,
        batch_size=16,
        early_stopping_patience=2,
        class_weights="balanced",
        label_smoothing=0.1,
        flip="none",
        rotation=0.1,
        seed=7,
    )
    assert submitted[0].to_dict() == expected.to_dict()
    # The Training page opens on the new run.
    assert at.session_state["training_run"] == "20260101-000000-fake01"
    assert at.query_params["run"] == "20260101-000000-fake01"
    assert at.title[0].value == "Training"


def test_missing_imagenet_weights_name_the_file(ws, tiny_dataset):
    at = open_model_page()
    # Nothing is cached, so the page starts on MobileNetV2 and says which file is missing.
    assert at.selectbox(key="mf_backbone").value == "MobileNetV2"
    warning = "\n".join(w.value for w in at.warning)
    assert MOBILENET_V2_FILE in warning and "fails" in warning
    at.selectbox(key="mf_backbone").set_value("MobileNet").run()
    at.selectbox(key="mf_alpha").set_value(0.25).run()
    at.number_input(key="mf_image_size").set_value(96).run()
    warning = "\n".join(w.value for w in at.warning)
    assert MOBILENET_025_FILE in warning
    assert "keras_home/models" in texts(at)  # where to put it


def test_default_backbone_has_cached_weights(ws, tiny_dataset, fake_cached_weights):
    at = open_model_page()
    assert at.selectbox(key="mf_backbone").value == "MobileNet"
    assert at.selectbox(key="mf_alpha").value == 0.25
    assert at.radio(key="mf_weights_source").value == "imagenet"
    assert "ImageNet weights on this machine" in texts(at)
    assert not at.warning


def test_weights_file_on_the_server_is_checked(ws, tiny_dataset, submitted):
    config = RunConfig(dataset="x", backbone="SmallCNN", weights="none", image_size=32)
    shared = ws.incoming_dir
    good = save_backbone_weights(models.build_model(config, 2), shared / "cnn.weights.h5")
    not_hdf5 = shared / "fake.weights.h5"
    not_hdf5.write_text("hello")

    at = small_cnn(open_model_page())
    at.radio(key="mf_weights_source").set_value("file").run()
    assert "Choose a weights file" in errors(at)
    at.text_input(key="mf_weights_path").set_value(str(shared / "missing.h5")).run()
    assert "does not exist" in errors(at)
    settle(at.text_input(key="mf_weights_path").set_value(str(not_hdf5)).run())
    assert "not an HDF5 file" in errors(at)
    settle(at.text_input(key="mf_weights_path").set_value(str(good)).run())
    assert not at.error, errors(at)
    at.button(key="start_training").click().run()
    assert submitted[-1].weights == f"file:{good}"


@pytest.mark.parametrize("typed", ["/etc/shadow", "/etc/passwd", "../../../../../etc/passwd"])
def test_a_weights_file_outside_the_shared_folders_is_refused(ws, tiny_dataset, monkeypatch, typed):
    at = small_cnn(open_model_page())
    handed: list = []  # the weights files given to the preview, which reads them
    for name in ("cached", "request"):
        real = getattr(preview, name)

        def spy(*args, _real=real, **kwargs):
            handed.append(args[3] if len(args) > 3 else kwargs.get("weights_file"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(preview, name, spy)
    at.radio(key="mf_weights_source").set_value("file").run()
    assert str(ws.incoming_dir) in texts(at), "the page says which folders are shared"
    settle(at.text_input(key="mf_weights_path").set_value(typed).run())
    assert "is outside the folders this server shares" in errors(at)
    assert at.button(key="start_training").disabled
    assert not any(h and "etc" in h for h in handed), handed


def test_weights_from_an_earlier_run(ws, tiny_dataset, submitted):
    earlier = runs.create_run(
        ws, RunConfig(dataset=tiny_dataset, name="first", backbone="SmallCNN", weights="none")
    )
    runs.set_state(ws, earlier.id, runs.RUNNING)
    runs.set_state(ws, earlier.id, runs.FINISHED)
    (earlier.dir / runs.MODEL_FILE).write_bytes(b"model")

    at = small_cnn(open_model_page())
    at.radio(key="mf_weights_source").set_value("run").run()
    choice = at.selectbox(key="mf_weights_run")
    assert choice.value == earlier.id and len(choice.options) == 1
    assert "first" in choice.options[0]
    at.button(key="start_training").click().run()
    assert submitted[-1].weights == f"run:{earlier.id}"


def test_choices_survive_a_page_switch(ws, tiny_dataset):
    at = small_cnn(open_model_page(), size=40)
    at.radio(key="mf_strategy").set_value("bias_only").run()
    at.switch_page("views/home.py").run()
    at.switch_page(PAGE).run()
    assert at.selectbox(key="mf_backbone").value == "SmallCNN"
    assert at.number_input(key="mf_image_size").value == 40
    assert at.radio(key="mf_strategy").value == "bias_only"
    saved = at.session_state["run_config"]
    assert saved["backbone"] == "SmallCNN" and saved["strategy"] == "bias_only"


def test_a_config_left_by_another_page_prefills_the_form(ws, tiny_dataset):
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    wanted = RunConfig(
        dataset=tiny_dataset,
        backbone="SmallCNN",
        weights="none",
        image_size=32,
        strategy="two_phase",
        epochs=4,
        fine_tune_epochs=3,
        dense_units=(8,),
    )
    at.session_state["run_config"] = wanted.to_dict()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="mf_strategy").value == "two_phase"
    assert at.number_input(key="mf_fine_tune_epochs").value == 3
    assert at.text_input(key="mf_dense_units").value == "8"
    assert at.session_state["run_config"] == wanted.to_dict()


def test_save_configuration_downloads_the_config(ws, tiny_dataset):
    at = small_cnn(open_model_page())
    saved = at.session_state["run_config"]
    assert RunConfig.from_dict(saved).backbone == "SmallCNN"
    download = at.get("download_button")
    assert len(download) == 1


# -- the form's plain functions ------------------------------------------------------------
def test_state_round_trips_every_field():
    config = RunConfig(
        dataset="flowers",
        name="n",
        backbone="MobileNetV2",
        alpha=0.5,
        weights="file:/tmp/w.weights.h5",
        image_size=160,
        pooling="max",
        dense_units=(128, 64),
        dense_activation="swish",
        dropout=0.4,
        head_batchnorm=True,
        fusion_stages=3,
        strategy="two_phase",
        unfreeze=5,
        unfreeze_unit="layers",
        optimizer="adamw",
        learning_rate=3e-4,
        fine_tune_learning_rate=2e-6,
        weight_decay=1e-3,
        lr_schedule="plateau",
        epochs=7,
        fine_tune_epochs=9,
        batch_size=24,
        early_stopping_patience=4,
        class_weights="balanced",
        label_smoothing=0.2,
        flip="vertical",
        rotation=0.2,
        zoom=0.1,
        translation=0.05,
        contrast=0.3,
        brightness=0.25,
        seed=11,
        feature_cache=False,
        mixed_precision="on",
        distribution="one_device",
    )
    state = form_state.state_from_config(config.to_dict())
    assert form_state.config_from_state(state).to_dict() == config.to_dict()
    assert json.loads(config.to_json())["weights"] == "file:/tmp/w.weights.h5"


def test_dense_units_text():
    assert form_state.parse_dense_units("") == ()
    assert form_state.parse_dense_units(" 256, 128 ,") == (256, 128)
    with pytest.raises(ValueError, match=r"dense_units.*Received: dense_units='2x'"):
        form_state.parse_dense_units("2x")


def test_uploaded_weights_are_stored_by_content_and_checked(ws):
    data = b"\x89HDF\r\n\x1a\n" + b"\0" * 100
    path = form_state.save_uploaded_weights(ws, "My Net.weights.h5", data)
    assert path.parent == ws.root / "weights" and path.name.endswith(".weights.h5")
    assert path.read_bytes() == data
    assert form_state.save_uploaded_weights(ws, "other-name.weights.h5", data) == path
    assert form_state.save_uploaded_weights(ws, "legacy.h5", data).name.endswith(".h5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        form_state.save_uploaded_weights(ws, "fake.h5", b"PK\x03\x04 a zip")
    with pytest.raises(ValueError, match=r"must end in .weights.h5, .h5 or .hdf5"):
        form_state.save_uploaded_weights(ws, "weights.pkl", data)


def test_prefill_from_run_puts_its_settings_where_the_form_reads_them(ws, tiny_dataset, tmp_path):
    from tests.conftest import tiny_config, write_class_folders
    from tlcore.data import datasets

    record = runs.create_run(ws, tiny_config(tiny_dataset, name="colours", epochs=4))
    session = {form_state.APPLIED_KEY: record.config.to_dict()}
    config = form_state.prefill_from_run(ws, record.id, session=session)
    assert config.name == "colours (again)"
    assert session["run_config"] == config.to_dict()
    assert form_state.APPLIED_KEY not in session  # the form is seeded from it even so
    assert session[form_state.PREFILLED_KEY] == (record.id, None)
    # Another dataset, given by id: the form's choice shows its name.
    other = datasets.import_folder(
        ws, write_class_folders(tmp_path / "o", {"a": 8, "b": 8}), name="other"
    )
    form_state.prefill_from_run(ws, record.id, other.id, session=session)
    assert session["run_config"]["dataset"] == "other"
    with pytest.raises(datasets.DatasetError, match="ghost"):
        form_state.prefill_from_run(ws, record.id, "ghost", session=session)
    # The run's own dataset is gone: the newest one is filled in, and the page says so.
    datasets.delete_dataset(ws, tiny_dataset)
    form_state.prefill_from_run(ws, record.id, session=session)
    assert session["run_config"]["dataset"] == "other"
    _, note = session[form_state.PREFILLED_KEY]
    assert f"*{tiny_dataset}* is no longer in this workspace" in note
