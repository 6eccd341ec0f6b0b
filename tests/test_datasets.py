"""Dataset import, validation, splitting and storage, as a user of the Dataset page sees it."""

from __future__ import annotations

import io
import json
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.data import datasets, demo_data
from tlcore.data.datasets import DatasetError, ImportOptions
from tlcore.store.workspace import open_workspace

# --- helpers: tiny images the tests make -------------------------------------------------


def write_image(path: Path, seed: int, size: tuple[int, int] = (12, 10), **save) -> Path:
    """A unique noise image (its content depends on ``seed``), format from the suffix."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, fmt, **save)
    return path


def make_classes(root: Path, counts: dict[str, int], *, seed: int = 0, ext: str = ".png") -> Path:
    """``root/<class>/img<i><ext>`` with ``counts[class]`` distinct images per class."""
    for c, (class_name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(root / class_name / f"img{i:02d}{ext}", seed=seed * 100_000 + c * 1000 + i)
    return root


def zip_folder(folder: Path, zip_path: Path, *, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def truncated_jpeg(path: Path) -> Path:
    write_image(path, seed=999, size=(64, 64), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def huge_png(path: Path, side: int = 20_000) -> Path:
    """A PNG declaring side x side 1-bit pixels in a hundred bytes (never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def hidden_entries(ws) -> list[str]:
    return [p.name for p in ws.datasets_dir.iterdir() if p.name.startswith(".")]


@pytest.fixture
def ws(tmp_path):
    return open_workspace(tmp_path / "workspace")


# --- a plain folder of class folders -----------------------------------------------------


def test_import_folder_stores_manifest_items_report_and_copies(ws, tmp_path):
    src = make_classes(tmp_path / "pets", {"dogs": 20, "cats": 20})

    ds = datasets.import_folder(ws, src)

    assert ds.name == "pets" and ds.id.startswith("pets-") and not ds.already_existed
    assert ds.classes == ["cats", "dogs"]
    assert ds.num_images == 40
    assert ds.split_sizes() == {"train": 28, "val": 6, "test": 6}
    manifest = json.loads((ds.dir / "dataset.json").read_text())
    assert manifest["counts"]["val"] == {"cats": 3, "dogs": 3}
    assert manifest["source"] == {"kind": "folder", "path": str(src), "mode": "copy"}
    assert manifest["fractions"] == {"val": 0.15, "test": 0.15} and manifest["seed"] == 42
    assert manifest["content_hash"] == ds.content_hash and manifest["created_at"]
    for item in ds.items():
        assert item.path.is_file() and item.path.is_relative_to(ds.dir / "images" / item.split)
        assert item.path.parent.name == item.class_name
        assert item.label == ds.classes.index(item.class_name)
        assert (item.width, item.height) == (12, 10) and len(item.sha256) == 64
    assert ds.report["counts"]["train"] == {"cats": 14, "dogs": 14}
    assert ds.report["skipped"] == [] and ds.report["duplicates"] == []
    assert hidden_entries(ws) == []


def test_split_is_stratified_seeded_and_stable_across_workspaces(tmp_path):
    src = make_classes(tmp_path / "src", {"a": 30, "b": 12, "c": 7})

    first = datasets.import_folder(open_workspace(tmp_path / "ws1"), src)
    second = datasets.import_folder(open_workspace(tmp_path / "ws2"), src)
    reseeded = datasets.import_folder(
        open_workspace(tmp_path / "ws3"), src, options=ImportOptions(seed=7)
    )

    assert first.content_hash == second.content_hash
    assert {(i.sha256, i.split) for i in first.items()} == {
        (i.sha256, i.split) for i in second.items()
    }
    assert reseeded.content_hash != first.content_hash
    assert first.class_counts("val") == {"a": 5, "b": 2, "c": 1}  # 4.5 rounds up
    assert first.class_counts("test") == {"a": 5, "b": 2, "c": 1}


def test_fractions_are_configurable(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 10, "b": 10})

    ds = datasets.import_folder(ws, src, options=ImportOptions(val_fraction=0.2, test_fraction=0))

    assert ds.split_sizes() == {"train": 16, "val": 4, "test": 0}


def test_identical_reimport_returns_the_existing_dataset(ws, tmp_path):
    src = make_classes(tmp_path / "pets", {"dogs": 6, "cats": 6})
    first = datasets.import_folder(ws, src)
    renamed_copy = tmp_path / "elsewhere" / "my pets"
    make_classes(renamed_copy, {"dogs": 6, "cats": 6})

    again = datasets.import_folder(ws, src)
    same_content = datasets.import_folder(ws, renamed_copy, name="Something else")

    assert again.already_existed and again.id == first.id
    assert same_content.already_existed and same_content.id == first.id
    assert len(datasets.list_datasets(ws)) == 1


def test_same_name_different_content_gets_a_distinct_name(ws, tmp_path):
    datasets.import_folder(ws, make_classes(tmp_path / "one", {"a": 5, "b": 5}), name="pets")

    second = datasets.import_folder(
        ws, make_classes(tmp_path / "two", {"a": 5, "b": 5}, seed=1), name="pets"
    )

    assert second.name == "pets (2)"
    assert any("already exists" in w for w in second.report["warnings"])


def test_index_mode_points_at_the_originals_and_copies_nothing(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})

    ds = datasets.import_folder(ws, src, options=ImportOptions(mode="index"))

    assert ds.manifest["source"]["mode"] == "index"
    assert not (ds.dir / "images").exists()
    assert all(i.path.is_absolute() and i.path.is_relative_to(src) for i in ds.items())


def test_wrapping_folder_and_nested_class_folders(ws, tmp_path):
    root = tmp_path / "download"
    make_classes(root / "pets", {"cats": 3, "dogs": 5})
    write_image(root / "pets" / "cats" / "indoor" / "sofa" / "nap.png", seed=75)
    write_image(root / "pets" / "cats" / "indoor" / "sofa" / "yawn.png", seed=76)
    write_image(root / "pets" / "cats" / "outdoor" / "garden.jpg", seed=77)

    ds = datasets.import_folder(ws, root)

    assert ds.classes == ["cats", "dogs"]
    assert ds.class_counts() == {"cats": 6, "dogs": 5}


def test_unicode_and_spaces_in_class_and_file_names(ws, tmp_path):
    src = tmp_path / "Mes animaux"
    for i in range(5):
        write_image(src / "chats noirs 🐈" / f"mon chat {i}.png", seed=i)
        write_image(src / "Ünïcødé ß" / f"été n°{i}.jpg", seed=100 + i)

    ds = datasets.import_folder(ws, src)

    assert ds.classes == ["chats noirs 🐈", "Ünïcødé ß"]
    assert ds.id.startswith("mes-animaux-")
    names = {i.path.name for i in ds.items()}
    assert "mon chat 0.png" in names and "été n°4.jpg" in names
    assert all(i.path.is_file() for i in ds.items())


def test_same_file_name_in_two_subfolders_is_renamed_not_overwritten(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src, {"a": 5, "b": 5})
    write_image(src / "a" / "x" / "same.png", seed=500)
    write_image(src / "a" / "y" / "same.png", seed=501)

    ds = datasets.import_folder(ws, src, options=ImportOptions(val_fraction=0, test_fraction=0))

    stored = sorted(i.path.name for i in ds.items() if i.path.name.startswith("same"))
    assert stored == ["same-2.png", "same.png"]


def test_progress_goes_from_zero_to_one(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})
    seen = []

    datasets.import_folder(ws, src, progress=lambda fraction, message: seen.append(fraction))

    assert seen == sorted(seen) and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_exif_rotated_image_is_recorded_with_its_displayed_size(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(src / "a" / "portrait.jpg", seed=42, size=(40, 20), exif=exif)

    ds = datasets.import_folder(ws, src)

    portrait = next(i for i in ds.items() if i.path.name == "portrait.jpg")
    assert (portrait.width, portrait.height) == (20, 40)


# --- split folders -----------------------------------------------------------------------


def test_train_valid_test_folders_are_honoured(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "train", {"a": 8, "b": 6})
    make_classes(src / "valid", {"a": 2, "b": 2}, seed=1)
    make_classes(src / "Test", {"a": 3, "b": 1}, seed=2)

    ds = datasets.import_folder(ws, src)

    assert ds.manifest["splits_given"] == ["train", "val", "test"]
    assert ds.manifest["counts"] == {
        "train": {"a": 8, "b": 6},
        "val": {"a": 2, "b": 2},
        "test": {"a": 3, "b": 1},
    }
    assert all(i.path.is_relative_to(ds.dir / "images" / i.split) for i in ds.items())


def test_train_and_test_only_carves_val_from_train_stratified(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "training", {"a": 20, "b": 10})
    make_classes(src / "test", {"a": 4, "b": 4}, seed=1)

    ds = datasets.import_folder(ws, src, options=ImportOptions(val_fraction=0.2))

    assert ds.manifest["counts"]["test"] == {"a": 4, "b": 4}
    assert ds.manifest["counts"]["val"] == {"a": 4, "b": 2}
    assert ds.manifest["counts"]["train"] == {"a": 16, "b": 8}
    assert any("No val folder" in w for w in ds.report["warnings"])


def test_folders_next_to_split_folders_are_ignored_with_a_warning(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "train", {"a": 6, "b": 6})
    make_classes(src / "extras", {"c": 6})

    ds = datasets.import_folder(ws, src)

    assert ds.classes == ["a", "b"]
    assert any("'extras'" in w for w in ds.report["warnings"])


def test_two_folders_meaning_the_same_split_are_refused(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "train", {"a": 6, "b": 6})
    make_classes(src / "val", {"a": 2, "b": 2}, seed=1)
    make_classes(src / "validation", {"a": 2, "b": 2}, seed=2)

    with pytest.raises(DatasetError, match="both 'val' and 'validation'"):
        datasets.import_folder(ws, src)


def test_class_with_test_images_but_no_training_images_is_refused(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "train", {"a": 6, "b": 6})
    make_classes(src / "test", {"a": 2, "b": 2, "owl": 6}, seed=1)

    with pytest.raises(
        DatasetError, match="Class 'owl' has images in val or test but none in train"
    ):
        datasets.import_folder(ws, src)


# --- what gets skipped, and why ----------------------------------------------------------


def test_unusable_files_are_skipped_and_listed_with_reasons(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"cats": 5, "dogs": 5})
    (src / "cats" / "notes.jpg").write_text("not a photo")
    truncated_jpeg(src / "cats" / "cut.jpg")
    huge_png(src / "dogs" / "huge.png")
    write_image(src / "stray.png", seed=1234)
    (src / "dogs" / ".DS_Store").write_bytes(b"finder litter")

    ds = datasets.import_folder(ws, src)

    assert ds.num_images == 10
    reasons = {s["path"]: s["reason"] for s in ds.report["skipped"]}
    assert reasons == {
        "cats/notes.jpg": "not_an_image",
        "cats/cut.jpg": "truncated",
        "dogs/huge.png": "too_large",
        "stray.png": "outside_class_folder",
    }
    assert all(s["message"] for s in ds.report["skipped"])
    assert ds.report["skipped_counts"]["truncated"] == 1
    assert any("skipped" in w for w in ds.report["warnings"])


def test_pixel_limit_is_a_setting(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})
    write_image(src / "a" / "big.png", seed=9, size=(100, 100))

    ds = datasets.import_folder(ws, src, options=ImportOptions(max_image_pixels=5000))

    assert [s["path"] for s in ds.report["skipped"]] == ["a/big.png"]


# --- errors a user can cause -------------------------------------------------------------


def test_one_class_is_refused(ws, tmp_path):
    src = make_classes(tmp_path / "dogs_only", {"dogs": 6})

    with pytest.raises(
        DatasetError, match=r"Found 1 class \('dogs'\); a classifier needs at least 2"
    ):
        datasets.import_folder(ws, src)
    assert hidden_entries(ws) == [] and datasets.list_datasets(ws) == []


def test_class_folder_without_images_is_refused_with_its_name(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"cats": 5, "dogs": 5})
    (src / "birds").mkdir()
    (src / "birds" / "readme.jpg").write_text("photos coming soon")

    with pytest.raises(DatasetError) as caught:
        datasets.import_folder(ws, src)

    message = str(caught.value)
    assert "'birds' has no usable images" in message
    assert "1 file skipped: 1 not an image" in message


def test_too_few_images_names_class_count_and_setting(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"cats": 1, "dogs": 6})

    with pytest.raises(DatasetError) as caught:
        datasets.import_folder(ws, src)

    assert str(caught.value) == (
        "Class 'cats' has 1 image; each class needs at least 5 (setting min_images_per_class)."
    )


def test_min_images_per_class_is_a_setting(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"cats": 2, "dogs": 3})

    with pytest.raises(
        DatasetError, match="class 'dogs' has 3 images; each class needs at least 4"
    ):
        datasets.import_folder(ws, src, options=ImportOptions(min_images_per_class=4))
    ds = datasets.import_folder(ws, src, options=ImportOptions(min_images_per_class=2))
    assert ds.num_images == 5


def test_images_without_class_folders_are_refused(ws, tmp_path):
    src = tmp_path / "flat"
    for i in range(6):
        write_image(src / f"{i}.png", seed=i)

    with pytest.raises(DatasetError, match="No class folders found in"):
        datasets.import_folder(ws, src)


def test_missing_folder_and_file_instead_of_folder(ws, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.import_folder(ws, tmp_path / "nowhere")
    (tmp_path / "a.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        datasets.import_folder(ws, tmp_path / "a.zip")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(val_fraction=1.0), "val_fraction must be at least 0 and below 1"),
        (dict(test_fraction=-0.1), "test_fraction must be at least 0"),
        (dict(val_fraction=0.5, test_fraction=0.45), "at least 10% for training"),
        (dict(min_images_per_class=0), "min_images_per_class must be a positive integer"),
        (dict(mode="link"), "mode must be one of"),
        (dict(imbalance_ratio=0.5), "imbalance_ratio must be at least 1"),
    ],
)
def test_bad_options_are_refused_with_the_value(options, message):
    with pytest.raises(DatasetError, match=message):
        ImportOptions(**options)


# --- duplicates, leakage, imbalance ------------------------------------------------------


def test_duplicates_across_given_splits_are_flagged_as_leakage(ws, tmp_path):
    src = tmp_path / "src"
    make_classes(src / "train", {"a": 6, "b": 6})
    make_classes(src / "test", {"a": 2, "b": 2}, seed=1)
    leaked = (src / "train" / "a" / "img00.png").read_bytes()
    (src / "test" / "a" / "leaked.png").write_bytes(leaked)
    (src / "train" / "b" / "copy.png").write_bytes((src / "train" / "b" / "img01.png").read_bytes())

    ds = datasets.import_folder(ws, src)

    groups = {tuple(sorted(f["path"] for f in g["files"])): g for g in ds.report["duplicates"]}
    leak = groups[("test/a/leaked.png", "train/a/img00.png")]
    assert leak["leakage"] and leak["splits"] == ["train", "test"]
    assert not groups[("train/b/copy.png", "train/b/img01.png")]["leakage"]
    assert [g["sha256"] for g in ds.report["leakage"]] == [leak["sha256"]]
    assert any("leakage" in w for w in ds.report["warnings"])


def test_automatic_split_keeps_identical_files_together(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 20, "b": 20})
    original = (src / "a" / "img03.png").read_bytes()
    for k in range(4):
        (src / "a" / f"copy{k}.png").write_bytes(original)

    ds = datasets.import_folder(ws, src)

    [group] = ds.report["duplicates"]
    assert len(group["files"]) == 5 and not group["leakage"]
    assert ds.report["leakage"] == []


def test_same_image_in_two_classes_is_flagged(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})
    (src / "b" / "mislabelled.png").write_bytes((src / "a" / "img00.png").read_bytes())

    ds = datasets.import_folder(ws, src)

    assert ds.report["duplicates"][0]["conflicting_classes"]
    assert any("more than one class" in w for w in ds.report["warnings"])


def test_class_imbalance_is_flagged(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"common": 20, "rare": 5, "middle": 10})

    ds = datasets.import_folder(ws, src)

    imbalance = ds.report["imbalance"]
    assert imbalance["flagged"] and imbalance["ratio"] == 4.0 and imbalance["threshold"] == 3.0
    assert imbalance["largest"] == {"class": "common", "count": 20}
    assert imbalance["smallest"] == {"class": "rare", "count": 5}
    assert any("imbalanced" in w for w in ds.report["warnings"])


def test_balanced_classes_are_not_flagged(ws, tmp_path):
    ds = datasets.import_folder(ws, make_classes(tmp_path / "src", {"a": 9, "b": 5}))

    assert not ds.report["imbalance"]["flagged"]


def test_report_summarises_sizes_modes_and_formats(ws, tmp_path):
    src = make_classes(tmp_path / "src", {"a": 5, "b": 5})
    Image.new("L", (64, 48), 99).save(src / "b" / "gray.png")

    ds = datasets.import_folder(ws, src)

    assert ds.report["modes"] == {"RGB": 10, "L": 1}
    assert ds.report["formats"] == {"PNG": 11}
    assert ds.report["image_sizes"]["width"] == {"min": 12, "median": 12, "max": 64}
    assert ds.report["image_sizes"]["smaller_than_px"] == 10


# --- zips --------------------------------------------------------------------------------


def test_import_zip_with_top_folder_and_mac_litter(ws, tmp_path):
    src = make_classes(tmp_path / "build", {"cats": 5, "dogs": 5})
    zip_path = zip_folder(src, tmp_path / "My Pets.zip", prefix="pets/")
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("__MACOSX/pets/cats/._img00.png", b"resource fork")

    ds = datasets.import_zip(ws, zip_path)

    assert ds.name == "My Pets" and ds.classes == ["cats", "dogs"]
    assert ds.manifest["source"]["kind"] == "zip" and ds.report["skipped"] == []
    assert all(i.path.is_file() and i.path.is_relative_to(ds.dir) for i in ds.items())
    assert hidden_entries(ws) == []


def test_same_images_from_zip_and_folder_are_one_dataset(ws, tmp_path):
    src = make_classes(tmp_path / "pets", {"cats": 5, "dogs": 5})
    from_folder = datasets.import_folder(ws, src)

    from_zip = datasets.import_zip(ws, zip_folder(src, tmp_path / "pets.zip"))

    assert from_zip.already_existed and from_zip.id == from_folder.id


def test_empty_zip_is_a_clear_error(ws, tmp_path):
    zip_path = tmp_path / "empty.zip"
    zipfile.ZipFile(zip_path, "w").close()

    with pytest.raises(DatasetError, match=r"The zip empty\.zip is empty"):
        datasets.import_zip(ws, zip_path)
    assert hidden_entries(ws) == []


def test_zip_with_one_class_is_a_clear_error(ws, tmp_path):
    src = make_classes(tmp_path / "build", {"dogs": 6})

    with pytest.raises(DatasetError, match=r"Found 1 class \('dogs'\)"):
        datasets.import_zip(ws, zip_folder(src, tmp_path / "dogs.zip"))


def test_not_a_zip_is_a_clear_error(ws, tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("hello")

    with pytest.raises(DatasetError, match="not a zip archive"):
        datasets.import_zip(ws, fake)


def test_hostile_zip_is_refused_and_leaves_nothing(ws, tmp_path):
    zip_path = zip_folder(make_classes(tmp_path / "build", {"a": 5, "b": 5}), tmp_path / "x.zip")
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("../../evil.png", png_bytes(1))

    with pytest.raises(DatasetError, match="refused"):
        datasets.import_zip(ws, zip_path)
    assert hidden_entries(ws) == [] and not (ws.root.parent / "evil.png").exists()


def test_zip_with_skippable_files_lists_them(ws, tmp_path):
    src = make_classes(tmp_path / "build", {"cats": 5, "dogs": 5})
    (src / "cats" / "notes.jpg").write_text("text")
    truncated_jpeg(src / "dogs" / "cut.jpg")
    huge_png(src / "dogs" / "huge.png")

    ds = datasets.import_zip(ws, zip_folder(src, tmp_path / "pets.zip"))

    assert sorted(s["reason"] for s in ds.report["skipped"]) == [
        "not_an_image",
        "too_large",
        "truncated",
    ]


# --- uploads per class -------------------------------------------------------------------


def test_import_class_files(ws):
    files = {
        "ripe": [(f"r{i}.png", png_bytes(i)) for i in range(6)],
        " unripe ": [(f"C:\\Users\\me\\u{i}.png", png_bytes(100 + i)) for i in range(6)],
    }

    ds = datasets.import_class_files(ws, files, name="Bananas")

    assert ds.classes == ["ripe", "unripe"] and ds.num_images == 12
    assert ds.manifest["source"] == {"kind": "upload", "path": None, "mode": "copy"}
    assert {i.path.name for i in ds.items() if i.class_name == "unripe"} == {
        f"u{i}.png" for i in range(6)
    }


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a/b": [("x.png", b"")], "c": []}, "contains a slash"),
        ({"  ": [("x.png", b"")]}, "A class has no name"),
        ({"cat": [], "cat ": []}, "given twice"),
    ],
)
def test_bad_class_names_are_refused(ws, files, message):
    with pytest.raises(DatasetError, match=message):
        datasets.import_class_files(ws, files, name="x")


def test_class_files_need_a_name_and_images(ws):
    with pytest.raises(DatasetError, match="Give the dataset a name"):
        datasets.import_class_files(ws, {"a": [], "b": []}, name=" ")
    files = {"a": [(f"{i}.png", png_bytes(i)) for i in range(5)], "b": []}
    with pytest.raises(DatasetError, match="The class 'b' has no usable images"):
        datasets.import_class_files(ws, files, name="x")


# --- the demo set ------------------------------------------------------------------------


def test_demo_images_are_deterministic_and_vary():
    first = np.asarray(demo_data.generate_demo_image("star", 3))
    again = np.asarray(demo_data.generate_demo_image("star", 3))
    other = np.asarray(demo_data.generate_demo_image("star", 4))

    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)
    assert demo_data.MIN_SIDE <= first.shape[0] <= demo_data.MAX_SIDE


def test_demo_rejects_unknown_class():
    with pytest.raises(ValueError, match="class_name must be one of"):
        demo_data.generate_demo_image("dodecahedron", 0)


def test_import_demo_is_deterministic_and_imported_once(tmp_path):
    ws1, ws2 = open_workspace(tmp_path / "ws1"), open_workspace(tmp_path / "ws2")

    ds = datasets.import_demo(ws1)
    again = datasets.import_demo(ws1)
    elsewhere = datasets.import_demo(ws2)

    assert ds.classes == list(demo_data.DEMO_CLASSES)
    assert ds.num_images == len(demo_data.DEMO_CLASSES) * demo_data.IMAGES_PER_CLASS
    assert set(ds.class_counts().values()) == {demo_data.IMAGES_PER_CLASS}
    assert again.already_existed and again.id == ds.id
    assert elsewhere.content_hash == ds.content_hash
    assert ds.report["duplicates"] == [] and ds.report["skipped"] == []


# --- Keras datasets ----------------------------------------------------------------------


def fake_keras_dataset(monkeypatch, which, load_data):
    module = types.ModuleType(f"keras.datasets.{which}")
    module.load_data = load_data
    monkeypatch.setitem(sys.modules, f"keras.datasets.{which}", module)


def test_keras_dataset_becomes_train_val_test_with_named_classes(ws, monkeypatch):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    y_train = np.repeat(np.arange(10), 6).reshape(-1, 1)
    x_test = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    y_test = np.repeat(np.arange(10), 2).reshape(-1, 1)
    fake_keras_dataset(monkeypatch, "cifar10", lambda: ((x_train, y_train), (x_test, y_test)))

    ds = datasets.import_keras_dataset(ws, "cifar10")

    assert ds.name == "CIFAR-10" and "airplane" in ds.classes and len(ds.classes) == 10
    assert ds.class_counts("test")["truck"] == 2
    assert ds.class_counts("val")["truck"] == 1 and ds.class_counts("train")["truck"] == 5
    assert datasets.import_keras_dataset(ws, "cifar10").already_existed


def test_keras_dataset_max_per_class_keeps_the_train_test_proportion(ws, monkeypatch):
    x_train = np.random.default_rng(1).integers(0, 256, (200, 6, 6), dtype=np.uint8)
    x_test = np.random.default_rng(2).integers(0, 256, (40, 6, 6), dtype=np.uint8)
    y_train, y_test = np.arange(200) % 10, np.arange(40) % 10
    fake_keras_dataset(monkeypatch, "mnist", lambda: ((x_train, y_train), (x_test, y_test)))

    ds = datasets.import_keras_dataset(ws, "mnist", max_per_class=12)

    assert ds.name == "MNIST (12 per class)" and ds.classes == [str(d) for d in range(10)]
    assert ds.class_counts() == {str(d): 12 for d in range(10)}
    assert ds.class_counts("test")["0"] == 2
    assert ds.report["modes"] == {"L": 120}


def test_keras_download_failure_says_what_to_do(ws, monkeypatch, tmp_path):
    def offline():
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] no network")

    fake_keras_dataset(monkeypatch, "cifar10", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))

    with pytest.raises(DatasetError) as caught:
        datasets.import_keras_dataset(ws, "cifar10")

    message = str(caught.value)
    assert message.startswith("Could not download CIFAR-10: this machine has no internet access")
    assert str(tmp_path / "kh" / "datasets" / "cifar-10-batches-py-target_archive") in message
    assert "import a zip" in message
    assert hidden_entries(ws) == []


def test_unknown_keras_dataset_is_refused(ws):
    with pytest.raises(DatasetError, match="Unknown Keras dataset 'imagenet'"):
        datasets.import_keras_dataset(ws, "imagenet")


# --- listing, opening, deleting ----------------------------------------------------------


def test_load_by_id_name_or_name_in_any_case(ws, tmp_path):
    ds = datasets.import_folder(ws, make_classes(tmp_path / "src", {"a": 5, "b": 5}), name="Pets")

    assert datasets.load_dataset(ws, ds.id).id == ds.id
    assert datasets.load_dataset(ws, "Pets").id == ds.id
    assert datasets.load_dataset(ws, "pets").id == ds.id


def test_unknown_dataset_says_how_to_import_one(ws):
    with pytest.raises(DatasetError) as caught:
        datasets.load_dataset(ws, "x")

    assert str(caught.value) == (
        "No dataset named 'x'. Import one on the Dataset page or with "
        "`python -m tlcore datasets import`."
    )


def test_corrupt_manifest_is_listed_as_broken_not_a_crash(ws, tmp_path):
    good = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 5, "b": 5}))
    bad = datasets.import_folder(ws, make_classes(tmp_path / "b", {"a": 5, "b": 5}, seed=3))
    (bad.dir / "dataset.json").write_text("{ not json")
    (ws.datasets_dir / "leftover").mkdir()

    listed = {s.id: s for s in datasets.list_datasets(ws)}

    assert not listed[good.id].is_broken and listed[good.id].num_images == 10
    assert listed[bad.id].is_broken and "dataset.json cannot be read" in listed[bad.id].problem
    assert "dataset.json is missing" in listed["leftover"].problem
    with pytest.raises(DatasetError, match=f"Dataset '{bad.id}' cannot be opened"):
        datasets.load_dataset(ws, bad.id)


def test_delete_removes_the_folder_even_when_broken(ws, tmp_path):
    ds = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 5, "b": 5}))
    (ds.dir / "dataset.json").write_text("[]")

    datasets.delete_dataset(ws, ds.id)

    assert not ds.dir.exists() and datasets.list_datasets(ws) == []
    assert hidden_entries(ws) == []


def indexed_datasets(ws) -> dict[str, tuple[str, dict]]:
    """What the workspace's SQLite index holds about datasets: id → (name, manifest)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(ws.index_path)) as conn:
        rows = conn.execute("SELECT id, name, manifest_json FROM datasets").fetchall()
    return {row_id: (name, json.loads(manifest)) for row_id, name, manifest in rows}


def test_workspace_index_records_imports_and_forgets_deletes(ws, tmp_path):
    first = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 5, "b": 5}), name="one")
    second = datasets.import_folder(
        ws, make_classes(tmp_path / "b", {"x": 5, "y": 5}, seed=1), name="two"
    )
    assert indexed_datasets(ws) == {
        first.id: ("one", first.manifest),
        second.id: ("two", second.manifest),
    }

    datasets.delete_dataset(ws, "one")

    assert indexed_datasets(ws) == {second.id: ("two", second.manifest)}


def test_an_index_that_cannot_be_written_does_not_fail_the_import(ws, tmp_path, caplog):
    ws.index_path.mkdir()  # SQLite cannot open a folder as its database

    ds = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 5, "b": 5}))

    assert [d.id for d in datasets.list_datasets(ws)] == [ds.id]
    assert "Could not update the workspace index (record_dataset)" in caplog.text
    datasets.delete_dataset(ws, ds.id)
    assert datasets.list_datasets(ws) == []


def test_items_filters_by_split_and_checks_the_name(ws, tmp_path):
    ds = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 10, "b": 10}))

    assert {i.split for i in ds.items("val")} == {"val"}
    assert len(ds.items()) == 20
    with pytest.raises(ValueError, match="split must be one of"):
        ds.items("validation")


def test_damaged_items_file_is_a_clear_error(ws, tmp_path):
    ds = datasets.import_folder(ws, make_classes(tmp_path / "a", {"a": 5, "b": 5}))
    with open(ds.dir / "items.jsonl", "a") as fh:
        fh.write("{torn")

    with pytest.raises(DatasetError, match=r"line 11 of .* is not valid JSON"):
        datasets.load_dataset(ws, ds.id).items()
