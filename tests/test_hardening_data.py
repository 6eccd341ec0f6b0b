"""Hostile or careless dataset inputs end in a clear message, with nothing stuck or lost."""

from __future__ import annotations

import builtins
import errno
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.data import archives, datasets
from tlcore.data.archives import ArchiveError, safe_extract_zip
from tlcore.data.datasets import DatasetError
from tlcore.fileio import StorageError

# --- helpers ------------------------------------------------------------------------------


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> Path:
    """A unique noise PNG (its content depends on ``seed``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "PNG")
    return path


def make_classes(root: Path, counts: dict[str, int], *, seed: int = 0) -> Path:
    for c, (class_name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(root / class_name / f"img{i:02d}.png", seed=seed * 100_000 + c * 1000 + i)
    return root


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(
                path, path.relative_to(folder).as_posix() + ("/" if path.is_dir() else "")
            )
    return zip_path


def no_extraction(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a member was extracted before the archive was checked")

    monkeypatch.setattr(archives, "_stream_member", refuse)


# --- row 1: a bomb split into many small members -----------------------------------------


def test_zip_bomb_split_into_small_members_is_refused_before_extracting(tmp_path, monkeypatch):
    zip_path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(40):  # 40 x 512 KiB of zeros: each under the per-member ratio floor
            archive.writestr(f"a/zeros{i:03d}.bin", b"\0" * (512 * 1024))
    no_extraction(monkeypatch)

    with pytest.raises(ArchiveError, match=r"its 40 files would expand [\d,]+ times"):
        safe_extract_zip(zip_path, tmp_path / "out")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


def test_total_extraction_cap_is_configurable_and_checked_before_extracting(
    ws, tmp_path, monkeypatch
):
    src = make_classes(tmp_path / "pets", {"cats": 6, "dogs": 6})
    zip_path = zip_folder(src, tmp_path / "pets.zip")
    monkeypatch.setenv("TLS_MAX_EXTRACT_GB", "0.00001")  # about 10 KB
    no_extraction(monkeypatch)

    with pytest.raises(DatasetError, match=r"more than the limit of .*TLS_MAX_EXTRACT_GB"):
        datasets.import_zip(ws, zip_path)

    assert datasets.list_datasets(ws) == []
    assert [p.name for p in ws.datasets_dir.iterdir()] == []


def test_a_bad_extraction_cap_is_quoted(tmp_path, monkeypatch):
    zip_path = tmp_path / "a.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("a/b.txt", b"x")
    monkeypatch.setenv("TLS_MAX_EXTRACT_GB", "lots")

    with pytest.raises(ArchiveError, match="Received: TLS_MAX_EXTRACT_GB='lots'"):
        safe_extract_zip(zip_path, tmp_path / "out")


# --- row 2: the disk fills up during an import -------------------------------------------


def test_folder_import_that_fills_the_disk_says_so_and_leaves_nothing(ws, tmp_path, monkeypatch):
    earlier = datasets.import_folder(ws, make_classes(tmp_path / "earlier", {"a": 5, "b": 5}))
    earlier_files = sorted(p.relative_to(earlier.dir) for p in earlier.dir.rglob("*"))
    src = make_classes(tmp_path / "pets", {"cats": 6, "dogs": 6}, seed=1)
    src_files = {p: p.read_bytes() for p in src.rglob("*.png")}
    real_copy, copied = shutil.copyfile, []

    def copy_until_full(source, target, *args, **kwargs):
        if len(copied) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        copied.append(target)
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)

    with pytest.raises(StorageError, match=r"The disk is full.*Free some space") as caught:
        datasets.import_folder(ws, src)

    assert "pets" in caught.value.strerror  # what the Dataset page and the CLI show
    assert [d.id for d in datasets.list_datasets(ws)] == [earlier.id]
    assert sorted(p.name for p in ws.datasets_dir.iterdir()) == [earlier.id]  # no staging left
    assert sorted(p.relative_to(earlier.dir) for p in earlier.dir.rglob("*")) == earlier_files
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == src_files


def test_zip_extraction_that_fills_the_disk_says_so_and_leaves_nothing(ws, tmp_path, monkeypatch):
    zip_path = zip_folder(
        make_classes(tmp_path / "pets", {"cats": 6, "dogs": 6}), tmp_path / "p.zip"
    )
    real_open, opened = open, []

    def open_until_full(file, mode="r", *args, **kwargs):
        if mode == "xb":
            opened.append(file)
            if len(opened) == 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_until_full)

    with pytest.raises(StorageError, match=r"The disk is full: extracting p\.zip stopped"):
        datasets.import_zip(ws, zip_path)

    assert datasets.list_datasets(ws) == []
    assert list(ws.datasets_dir.iterdir()) == []


# --- row 9: entry names that are not the UTF-8 they claim to be --------------------------


def test_zip_entry_name_with_invalid_utf8_is_named_in_a_clear_refusal(ws, tmp_path):
    zip_path = zip_folder(
        make_classes(tmp_path / "pets", {"cats": 5, "dogs": 5}), tmp_path / "p.zip"
    )
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("cats/caf\u00e9.png", b"x")  # non-ASCII: written with the UTF-8 flag
    data = zip_path.read_bytes()
    assert data.count("caf\u00e9".encode()) == 2  # its local and central headers
    zip_path.write_bytes(data.replace("caf\u00e9".encode(), b"caf\xff\xfe"))

    with pytest.raises(DatasetError, match=r"the entry 'cats/caf\\xff\\xfe.png' has a name"):
        datasets.import_zip(ws, zip_path)

    assert list(ws.datasets_dir.iterdir()) == []


# --- row 10: an empty class folder in a zip ----------------------------------------------


def test_zip_with_an_empty_class_folder_is_refused_like_the_folder(ws, tmp_path):
    src = make_classes(tmp_path / "pets", {"cats": 5, "dogs": 5})
    (src / "birds").mkdir()
    zip_path = zip_folder(src, tmp_path / "pets.zip")
    assert "birds/" in zipfile.ZipFile(zip_path).namelist()

    with pytest.raises(DatasetError, match="The class 'birds' has no usable images") as as_folder:
        datasets.import_folder(ws, src)
    with pytest.raises(DatasetError, match="The class 'birds' has no usable images") as as_zip:
        datasets.import_zip(ws, zip_path)

    assert str(as_zip.value) == str(as_folder.value)
    assert list(ws.datasets_dir.iterdir()) == []


def test_zip_folder_entries_are_extracted_even_when_empty(tmp_path):
    zip_path = tmp_path / "a.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("top/empty/", b"")
        archive.writestr("top/full/x.txt", b"x")
        archive.writestr("__MACOSX/", b"")

    files = safe_extract_zip(zip_path, tmp_path / "out")

    assert files == [tmp_path / "out" / "top" / "full" / "x.txt"]
    assert (tmp_path / "out" / "top" / "empty").is_dir()
    assert not (tmp_path / "out" / "__MACOSX").exists()


# --- odd images are reported by name, not refused ----------------------------------------


def test_placeholder_gifs_and_banners_are_named_in_the_report(ws, tmp_path):
    src = make_classes(tmp_path / "pets", {"cats": 6, "dogs": 6})
    Image.new("P", (40, 30), 3).save(src / "cats" / "not-found.gif", "GIF")
    write_image(src / "dogs" / "banner.png", seed=77, size=(200, 20))

    ds = datasets.import_folder(ws, src)

    assert ds.num_images == 14  # imported, not refused
    placeholder = [w for w in ds.report["warnings"] if "placeholder" in w]
    banner = [w for w in ds.report["warnings"] if "longer than wide" in w]
    assert len(placeholder) == 1 and "cats/not-found.gif" in placeholder[0]
    assert len(banner) == 1 and "dogs/banner.png" in banner[0]
    assert not any("img00" in w for w in placeholder + banner)
