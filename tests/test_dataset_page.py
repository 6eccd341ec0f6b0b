"""The Dataset page, driven like a user would: import, read the report, select, delete."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config, write_class_folders
from tlcore.data import datasets
from tlcore.store import runs

# The first page to import TensorFlow in this process needs more than AppTest's 3 s.
TIMEOUT_S = 180


def open_dataset_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.switch_page("views/dataset.py").run()
    assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    for kind in (at.success, at.info, at.warning, at.error):
        parts += [e.value for e in kind]
    return "\n".join(str(p) for p in parts)


def errors(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.error)


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert_no_exception(at)
    return at


def dataframe_values(at: AppTest) -> str:
    return "\n".join(df.value.to_string() for df in at.dataframe)


def zip_bytes(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def png_files(folder: Path) -> list[tuple[str, bytes, str]]:
    return [(p.name, p.read_bytes(), "image/png") for p in sorted(folder.glob("*.png"))]


# -- importing ---------------------------------------------------------------------------------
def test_demo_import_shows_the_report(ws):
    at = open_dataset_page()
    assert "No datasets yet" in page_text(at)

    click(at, "ds_import_demo")

    assert "Imported Demo shapes" in page_text(at)
    dataset = datasets.list_datasets(ws)[0]
    assert at.session_state["dataset"] == dataset.id
    assert at.query_params["dataset"] == dataset.id
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Images"] == "400" and tiles["Classes"] == "5"
    assert tiles["Train · 70%"] == "280"
    # The generated shapes are all distinct files, but a few are drawn at nearly the
    # same place and size: the report names them as near-copies (`tlcore.data.fingerprints`).
    near = [w.value for w in at.warning if "Near-copies" in w.value]
    assert len(near) == 1 and "≈" in near[0]
    assert "All checks passed" not in page_text(at)
    table = dataframe_values(at)
    for shape in ("circle", "hexagon", "square", "star", "triangle"):
        assert shape in table
    assert at.get("plotly_chart"), "the counts chart is drawn"
    thumbnails = [url for image in at.image for url in image.value]
    assert len(thumbnails) == 5 * 8, "8 sample thumbnails per class"


def test_importing_identical_content_says_already_imported(ws):
    datasets.import_demo(ws)
    at = open_dataset_page()
    click(at, "ds_new")  # the import panel replaces the selected dataset
    click(at, "ds_import_demo")
    assert "Already imported" in page_text(at)
    assert len(datasets.list_datasets(ws)) == 1


def test_folder_import_by_path(ws):
    src = write_class_folders(ws.incoming_dir / "flowers", {"daisy": 8, "rose": 8})
    at = open_dataset_page()
    at.text_input(key="ds_folder_path").input(str(src)).run()
    click(at, "ds_import_folder")

    assert "Imported flowers" in page_text(at), errors(at)
    [summary] = datasets.list_datasets(ws)
    assert summary.manifest["source"]["mode"] == "copy"
    assert "daisy" in dataframe_values(at) and "rose" in dataframe_values(at)


def test_folder_import_in_index_mode_copies_nothing(ws):
    src = write_class_folders(ws.incoming_dir / "big", {"a": 6, "b": 6})
    at = open_dataset_page()
    at.text_input(key="ds_folder_path").input(str(src))
    at.radio(key="ds_folder_mode").set_value("index").run()
    click(at, "ds_import_folder")

    [summary] = datasets.list_datasets(ws)
    assert summary.manifest["source"]["mode"] == "index"
    assert not (summary.dir / datasets.IMAGES_DIR).exists()
    assert "indexed in place" in page_text(at)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("no/such/folder", "does not exist"),  # relative: inside the shared folder
        ("", "Type the path of a folder"),
    ],
)
def test_folder_import_with_a_bad_path_explains_and_imports_nothing(ws, path, expected):
    at = open_dataset_page()
    at.text_input(key="ds_folder_path").input(path).run()
    click(at, "ds_import_folder")

    assert expected in errors(at)
    assert datasets.list_datasets(ws) == []
    assert "No datasets yet" in page_text(at)


def test_folder_with_one_class_is_refused_with_the_reason(ws):
    src = write_class_folders(ws.incoming_dir / "lonely", {"only": 8, "other": 0})
    shutil.rmtree(src / "other")
    at = open_dataset_page()
    at.text_input(key="ds_folder_path").input(str(src)).run()
    click(at, "ds_import_folder")
    assert "Nothing was imported" in errors(at)
    assert "at least 2" in errors(at)
    assert datasets.list_datasets(ws) == []


@pytest.mark.parametrize("where", ["/etc", "dot-dot", "link out"])
def test_a_folder_outside_the_shared_folders_is_refused_and_imports_nothing(ws, tmp_path, where):
    private = write_class_folders(tmp_path / "private", {"a": 6, "b": 6})
    (ws.incoming_dir / "link").symlink_to(private)
    typed = {
        "/etc": "/etc",
        "dot-dot": f"{ws.incoming_dir}/../../../../../../etc",
        "link out": str(ws.incoming_dir / "link"),
    }[where]
    at = open_dataset_page()
    assert str(ws.incoming_dir) in page_text(at), "the page says which folders are shared"
    at.text_input(key="ds_folder_path").input(typed).run()
    click(at, "ds_import_folder")

    assert "Nothing was imported" in errors(at)
    assert "is outside the folders this server shares" in errors(at)
    assert datasets.list_datasets(ws) == []


def test_zip_upload_imports(ws, tmp_path):
    src = write_class_folders(tmp_path / "pets", {"cats": 6, "dogs": 6})
    at = open_dataset_page()
    at.file_uploader(key="ds_zip_0").set_value(("pets.zip", zip_bytes(src), "application/zip"))
    at.run()
    click(at, "ds_import_zip")

    assert "Imported pets" in page_text(at), errors(at)
    [summary] = datasets.list_datasets(ws)
    assert summary.manifest["source"]["kind"] == "zip"
    assert not any((ws.cache_dir / "uploads").iterdir()), "the uploaded zip is removed"


def test_a_file_that_is_not_a_zip_is_refused(ws):
    at = open_dataset_page()
    at.file_uploader(key="ds_zip_0").set_value(("fake.zip", b"hello" * 100, "application/zip"))
    at.run()
    click(at, "ds_import_zip")
    assert "Nothing was imported" in errors(at)
    assert datasets.list_datasets(ws) == []


def test_upload_over_the_page_limit_is_refused(ws, monkeypatch):
    monkeypatch.setenv("TLS_MAX_UPLOAD_MB", "1")
    at = open_dataset_page()
    big = b"\0" * (1024**2 + 1)
    at.file_uploader(key="ds_zip_0").set_value(("big.zip", big, "application/zip"))
    at.run()
    assert_no_exception(at)
    assert "too large" in errors(at) and "1 MB" in errors(at)
    assert at.button(key="ds_import_zip").disabled


def test_images_class_by_class(ws, tmp_path):
    src = write_class_folders(tmp_path / "colours", {"red": 6, "blue": 6})
    at = open_dataset_page()
    at.text_input(key="ds_classes_name").input("Colours")
    at.text_input(key="ds_class_name_0_0").input("red")
    at.file_uploader(key="ds_class_files_0_0").set_value(png_files(src / "red"))
    at.text_input(key="ds_class_name_0_1").input("blue")
    at.file_uploader(key="ds_class_files_0_1").set_value(png_files(src / "blue"))
    at.run()
    click(at, "ds_import_classes")

    assert "Imported Colours" in page_text(at), errors(at)
    [summary] = datasets.list_datasets(ws)
    assert summary.classes == ["blue", "red"] and summary.num_images == 12


def test_class_rows_can_be_added_and_removed(ws):
    at = open_dataset_page()
    assert at.button(key="ds_class_remove_0").disabled, "two classes at least"
    click(at, "ds_add_class")
    assert at.session_state["dataset_class_rows"] == [0, 1, 2]
    click(at, "ds_class_remove_1")
    assert at.session_state["dataset_class_rows"] == [0, 2]


def test_class_by_class_needs_two_classes(ws, tmp_path):
    src = write_class_folders(tmp_path / "one", {"red": 6})
    at = open_dataset_page()
    at.text_input(key="ds_classes_name").input("One")
    at.text_input(key="ds_class_name_0_0").input("red")
    at.file_uploader(key="ds_class_files_0_0").set_value(png_files(src / "red"))
    at.run()
    click(at, "ds_import_classes")
    assert "at least two classes" in errors(at)
    assert datasets.list_datasets(ws) == []


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("red", "red"), "The class name 'red' is used twice"),
        (("red", ""), "Class 2 has images but no name"),
    ],
)
def test_class_by_class_names_must_be_given_and_distinct(ws, tmp_path, names, expected):
    src = write_class_folders(tmp_path / "two", {"red": 6, "blue": 6})
    at = open_dataset_page()
    at.text_input(key="ds_classes_name").input("Two")
    for row, (class_name, folder) in enumerate(zip(names, ("red", "blue"), strict=True)):
        at.text_input(key=f"ds_class_name_0_{row}").input(class_name)
        at.file_uploader(key=f"ds_class_files_0_{row}").set_value(png_files(src / folder))
    at.run()
    click(at, "ds_import_classes")
    assert expected in errors(at)
    assert datasets.list_datasets(ws) == []


def test_keras_dataset_offline_shows_what_to_do(ws, monkeypatch):
    import keras.datasets.mnist

    def offline():
        raise Exception("URL fetch failure: no route to host")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    at = open_dataset_page()
    at.selectbox(key="ds_keras_which").set_value("mnist").run()
    click(at, "ds_import_keras")
    assert "Could not download MNIST" in errors(at)
    assert "mnist.npz" in errors(at), "it says where to put the file by hand"
    assert datasets.list_datasets(ws) == []


def test_keras_dataset_imports_with_a_cap_per_class(ws, monkeypatch):
    import keras.datasets.mnist

    rng = np.random.default_rng(0)

    def arrays(n_per_class):
        y = np.repeat(np.arange(10), n_per_class)
        return rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8), y

    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (arrays(20), arrays(5)))
    at = open_dataset_page()
    at.selectbox(key="ds_keras_which").set_value("mnist")
    at.number_input(key="ds_keras_per_class").set_value(10).run()
    click(at, "ds_import_keras")

    assert "Imported MNIST (10 per class)" in page_text(at), errors(at)
    [summary] = datasets.list_datasets(ws)
    assert summary.num_images == 100


def test_invalid_import_options_are_explained(ws, tmp_path):
    src = write_class_folders(tmp_path / "flowers", {"daisy": 8, "rose": 8})
    at = open_dataset_page()
    at.number_input(key="ds_opt_val").set_value(50)
    at.number_input(key="ds_opt_test").set_value(45)
    at.text_input(key="ds_folder_path").input(str(src)).run()
    assert "keep at least 10% for training" in errors(at)
    click(at, "ds_import_folder")
    assert "Fix the import options first" in errors(at)
    assert datasets.list_datasets(ws) == []


# -- the report ----------------------------------------------------------------------------
def test_skipped_files_duplicates_and_imbalance_are_shown(ws, tmp_path):
    src = write_class_folders(tmp_path / "messy", {"cats": 20, "dogs": 5})
    (src / "cats" / "notes.png").write_text("not an image at all")
    shutil.copy(src / "cats" / "img_001.png", src / "cats" / "img_001_copy.png")
    datasets.import_folder(ws, src)

    at = open_dataset_page()
    text = page_text(at)
    assert "1 file(s) were not imported" in text
    assert "Duplicates: 1 file(s) are exact copies" in text
    assert "img_001_copy.png" in text, "the duplicate's files are named in the warning"
    assert "The classes are imbalanced" in text
    tables = dataframe_values(at)
    assert "cats/notes.png" in tables and "Not an image" in tables
    assert "cats/img_001_copy.png" in tables


def test_leakage_across_splits_is_flagged_with_the_files(ws, tmp_path):
    src = write_class_folders(tmp_path / "leaky" / "train", {"a": 6, "b": 6})
    write_class_folders(tmp_path / "leaky" / "test", {"a": 2, "b": 2}, seed=5)
    shutil.copy(src / "a" / "img_000.png", tmp_path / "leaky" / "test" / "a" / "again.png")
    datasets.import_folder(ws, tmp_path / "leaky")

    at = open_dataset_page()
    [leak] = [w.value for w in at.warning if "Leakage" in w.value]
    assert "train/a/img_000.png" in leak and "test/a/again.png" in leak


def test_many_classes_show_samples_of_the_chosen_classes(ws, tmp_path):
    names = {f"class{i:02d}": 5 for i in range(14)}
    datasets.import_folder(ws, write_class_folders(tmp_path / "many", names))
    at = open_dataset_page()
    assert len(at.image) == 12 * 5, "the first 12 classes by default, 5 images each"
    at.multiselect(key=next(m.key for m in at.multiselect)).set_value(["class13"]).run()
    assert_no_exception(at)
    assert len(at.image) == 5


def test_selection_follows_the_query_parameter(ws, tmp_path):
    first = datasets.import_folder(ws, write_class_folders(tmp_path / "first", {"x": 6, "y": 6}))
    datasets.import_demo(ws)
    at = open_dataset_page(query={"dataset": first.id})
    assert at.markdown.values.count(f"### {first.name}") == 1

    at = open_dataset_page(query={"dataset": "gone-12345678"})
    assert "There is no dataset `gone-12345678`" in page_text(at)


def test_train_button_hands_the_dataset_to_the_model_page(ws):
    demo = datasets.import_demo(ws)
    at = open_dataset_page()
    at.button(key="ds_train").click().run()
    assert at.session_state["dataset"] == demo.id
    assert at.session_state["mf_dataset"] == demo.name


# -- deleting ------------------------------------------------------------------------------
def test_delete_needs_confirmation_and_keeps_runs(ws):
    demo = datasets.import_demo(ws)
    record = runs.create_run(ws, tiny_config(demo.name))
    runs.set_state(ws, record.id, runs.CANCELLED)  # not queued: nothing may start training
    at = open_dataset_page()
    delete_key = f"ds_delete_{demo.id}"
    assert at.button(key=delete_key).disabled
    assert "1 run(s) trained on it" in page_text(at)

    at.checkbox(key=f"ds_confirm_delete_{demo.id}").check().run()
    click(at, delete_key)

    assert datasets.list_datasets(ws) == []
    assert "Deleted **Demo shapes**" in page_text(at)
    assert "keep their records" in page_text(at)
    assert "No datasets yet" in page_text(at)
    assert runs.read_run(ws, record.id).config.dataset == demo.name


def test_a_broken_dataset_is_listed_with_its_problem_and_can_be_deleted(ws, tmp_path):
    datasets.import_folder(ws, write_class_folders(tmp_path / "good", {"x": 6, "y": 6}))
    broken = ws.datasets_dir / "half-imported"
    broken.mkdir()
    (broken / "dataset.json").write_text("{not json", encoding="utf-8")

    at = open_dataset_page()
    text = page_text(at)
    assert "half-imported" in [b.label for b in at.button]
    assert "damaged" in text and "dataset.json cannot be read" in text

    click(at, "ds_pick_half-imported")
    assert "This dataset cannot be opened" in errors(at)
    at.checkbox(key="ds_confirm_delete_half-imported").check().run()
    click(at, "ds_delete_half-imported")
    assert not broken.exists()
    assert [s.name for s in datasets.list_datasets(ws)] == ["good"]
