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


# --- near-copies and plain images are named in the report and flagged in the gallery ----


def photo_like(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A picture with broad areas and finer texture, as photos have (plain noise has no
    broad areas, and one shape on a smooth background little fine detail)."""
    rng = np.random.default_rng(seed)
    broad = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    fine = Image.fromarray(rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8))
    resized = [im.resize(size, Image.Resampling.BICUBIC) for im in (broad, fine)]
    return Image.blend(*resized, 0.35)


def make_photos(root: Path, counts: dict[str, int]) -> Path:
    for c, (class_name, count) in enumerate(counts.items()):
        for i in range(count):
            path = root / class_name / f"photo{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo_like(c * 1000 + i).save(path, "JPEG", quality=90)
    return root


def test_near_copies_and_plain_images_are_named_in_the_report(ws, tmp_path):
    src = make_photos(tmp_path / "pets", {"cats": 8, "dogs": 8})
    # The same photo made half size and saved again at JPEG quality 60, filed as a dog.
    photo_like(3).resize((80, 60)).save(src / "dogs" / "small-copy.jpg", "JPEG", quality=60)
    Image.new("RGB", (120, 90), (200, 200, 200)).save(src / "cats" / "blank.jpg", "JPEG")

    ds = datasets.import_folder(ws, src)

    assert ds.num_images == 18  # imported, not refused
    assert [sorted(f["path"] for f in g["files"]) for g in ds.report["near_copies"]] == [
        ["cats/photo03.jpg", "dogs/small-copy.jpg"]
    ]
    near = [w for w in ds.report["warnings"] if "look like one photo edited" in w]
    assert len(near) == 1 and "cats/photo03.jpg ≈ dogs/small-copy.jpg" in near[0]
    assert ds.report["plain_images"] == ["cats/blank.jpg"]
    plain = [w for w in ds.report["warnings"] if "one plain colour" in w]
    assert len(plain) == 1 and "cats/blank.jpg" in plain[0]


def test_a_new_version_keeps_finding_near_copies_and_the_gallery_flags_them(ws, tmp_path):
    from tlcore.data import image_flags, versions

    src = make_photos(tmp_path / "pets", {"cats": 8, "dogs": 8})
    photo_like(3).resize((80, 60)).save(src / "dogs" / "small-copy.jpg", "JPEG", quality=60)
    Image.new("RGB", (120, 90), (30, 30, 30)).save(src / "cats" / "blank.jpg", "JPEG")
    first = datasets.import_folder(ws, src, name="pets")
    unrelated = next(i.rel_path for i in first.items() if i.rel_path.endswith("photo05.jpg"))

    second = versions.make_version(ws, first.id, versions.VersionChanges(excluded=(unrelated,)))

    assert len(second.report["near_copies"]) == 1 and second.report["plain_images"]
    flags = image_flags.image_flags(second)
    flagged = sorted(path for path, found in flags.items() if image_flags.NEAR_COPY in found)
    assert [p.rsplit("/", 1)[1] for p in flagged] == ["photo03.jpg", "small-copy.jpg"]
    assert [p for p, found in flags.items() if image_flags.PLAIN in found] == [
        next(i.rel_path for i in second.items() if i.rel_path.endswith("blank.jpg"))
    ]


def test_exact_copies_are_not_also_near_copies_and_chains_make_one_group():
    from tlcore.data import fingerprints

    def fingerprint(image: Image.Image) -> bytes:
        return fingerprints.summarize(image)[0]

    a = fingerprint(photo_like(1))
    a_small = fingerprint(photo_like(1).resize((80, 60)))
    other = fingerprint(photo_like(2))
    groups = fingerprints.near_copies(
        [("sha-a", a), ("sha-a", a), ("sha-b", other), ("sha-c", a_small)]
    )
    assert groups == [[0, 1, 3]]  # both exact copies of a, with its near-copy; not b
    assert fingerprints.near_copies([("sha-a", a), ("sha-a", a)]) == []  # copies only
    assert fingerprints.decode(fingerprints.encode(a)) == a
    assert fingerprints.decode("not base64!") is None and fingerprints.decode("AAAA") is None


def test_a_png_is_decoded_for_its_fingerprint_only_when_asked(tmp_path):
    from tlcore.data import images

    path = tmp_path / "photo.png"
    photo_like(4).save(path, "PNG")
    assert len(images.probe_image(path).fingerprint) == 256
    assert images.probe_image(path, fingerprint=False).fingerprint is None


def test_tampered_fingerprints_in_item_records_are_ignored(ws, tmp_path):
    import json

    from tlcore.data import image_flags

    src = make_photos(tmp_path / "pets", {"cats": 6, "dogs": 6})
    ds = datasets.import_folder(ws, src)
    items_file = ds.dir / "items.jsonl"
    records = [json.loads(line) for line in items_file.read_text().splitlines()]
    records[0]["fingerprint"] = "short"
    records[1]["fingerprint"] = "!" * len(records[2]["fingerprint"])  # right length, not base64
    items_file.write_text("".join(json.dumps(r) + "\n" for r in records))

    reloaded = datasets.load_dataset(ws, ds.id)
    assert reloaded.items()[0].fingerprint == ""
    assert image_flags.image_flags(reloaded) == {}  # no crash, nothing flagged
