"""Checked zip extraction: hostile archives are refused whole and leave nothing behind."""

from __future__ import annotations

import os
import stat
import struct
import zipfile

import pytest

from tlcore.data import archives
from tlcore.data.archives import ArchiveError, ArchiveLimits, safe_extract_zip


def make_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    """Writes ``entries`` ({name or ZipInfo: bytes}) to a zip, names taken literally."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = compression
            archive.writestr(info, data)
    return path


def patch_headers(data: bytes, name: str, *, local_at: int, central_at: int, value: int, fmt: str):
    """Rewrites one field of a member's local and central headers (offsets from signature)."""
    raw, target = bytearray(data), name.encode()
    for signature, name_len_at, name_at, field_at in (
        (b"PK\x03\x04", 26, 30, local_at),
        (b"PK\x01\x02", 28, 46, central_at),
    ):
        start = raw.find(signature)
        while start != -1:
            (name_len,) = struct.unpack_from("<H", raw, start + name_len_at)
            if raw[start + name_at : start + name_at + name_len] == target:
                struct.pack_into(fmt, raw, start + field_at, value)
            start = raw.find(signature, start + 4)
    return bytes(raw)


def patch_declared_size(data: bytes, name: str, new_size: int) -> bytes:
    """Rewrites a member's uncompressed size in both its local and central headers."""
    return patch_headers(data, name, local_at=22, central_at=24, value=new_size, fmt="<I")


def assert_nothing_left(tmp_path, dest, zip_path):
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [zip_path.name]
    assert not (tmp_path.parent / "evil.txt").exists()


# --- what a normal archive gives ---------------------------------------------------------


def test_extracts_files_in_archive_order_and_skips_litter(tmp_path):
    zip_path = make_zip(
        tmp_path / "pets.zip",
        {
            "pets/": b"",
            "pets/cats/a.jpg": b"cat",
            "pets/dogs/b.jpg": b"dog",
            "__MACOSX/pets/cats/._a.jpg": b"resource fork",
            "pets/.DS_Store": b"finder",
            "pets/cats/.hidden.jpg": b"hidden",
            "pets/Thumbs.db": b"windows",
        },
    )
    dest = tmp_path / "out"

    paths = safe_extract_zip(zip_path, dest)

    assert paths == [dest / "pets/cats/a.jpg", dest / "pets/dogs/b.jpg"]
    assert (dest / "pets/dogs/b.jpg").read_bytes() == b"dog"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "pets/cats/a.jpg",
        "pets/dogs/b.jpg",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pets.zip"]


def test_unicode_and_spaces_in_names(tmp_path):
    zip_path = make_zip(tmp_path / "u.zip", {"chats noirs/été 1.jpg": b"x", "Ünï cødé/ß.png": b"y"})

    paths = safe_extract_zip(zip_path, tmp_path / "out")

    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == [
        "chats noirs/été 1.jpg",
        "Ünï cødé/ß.png",
    ]


def test_backslash_separators_from_old_windows_tools_become_folders(tmp_path):
    zip_path = make_zip(tmp_path / "win.zip", {"pets\\cats\\a.jpg": b"cat"})

    paths = safe_extract_zip(zip_path, tmp_path / "out")

    assert paths == [tmp_path / "out" / "pets" / "cats" / "a.jpg"]


def test_progress_is_reported(tmp_path):
    zip_path = make_zip(tmp_path / "p.zip", {"a/1.txt": b"1", "a/2.txt": b"2"})
    seen = []

    safe_extract_zip(zip_path, tmp_path / "out", progress=lambda f, m: seen.append(f))

    assert seen == [0.5, 1.0]


def test_existing_empty_destination_is_accepted(tmp_path):
    zip_path = make_zip(tmp_path / "p.zip", {"a.txt": b"1"})
    (tmp_path / "out").mkdir()

    assert safe_extract_zip(zip_path, tmp_path / "out") == [tmp_path / "out" / "a.txt"]


def test_existing_non_empty_destination_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "p.zip", {"a.txt": b"1"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")

    with pytest.raises(FileExistsError, match="not empty"):
        safe_extract_zip(zip_path, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


# --- paths that would escape -------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile_name",
    [
        "../evil.txt",
        "pets/../../evil.txt",
        "/tmp/evil.txt",
        "C:/evil.txt",
        "C:evil.txt",
        "pets/D:/evil.txt",
        "..\\evil.txt",
        "pets\\..\\..\\evil.txt",
        "\\\\server\\share\\evil.txt",
        "C:\\Windows\\evil.txt",
    ],
)
def test_entry_escaping_the_destination_refuses_whole_archive(tmp_path, hostile_name):
    zip_path = make_zip(
        tmp_path / "hostile.zip",
        {"pets/cats/a.jpg": b"fine", hostile_name: b"pwned", "pets/dogs/b.jpg": b"fine"},
    )
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError) as caught:
        safe_extract_zip(zip_path, dest)

    assert hostile_name in str(caught.value) or repr(hostile_name) in str(caught.value)
    assert caught.value.entry == hostile_name
    assert_nothing_left(tmp_path, dest, zip_path)


def test_hostile_entry_hidden_in_litter_is_still_refused(tmp_path):
    zip_path = make_zip(tmp_path / "h.zip", {"a.jpg": b"x", "__MACOSX/../../evil.txt": b"p"})

    with pytest.raises(ArchiveError, match=r"'\.\.'"):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_symlink_entry_refuses_whole_archive(tmp_path):
    link = zipfile.ZipInfo("pets/cats/link.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip(tmp_path / "link.zip", {"pets/cats/a.jpg": b"fine", link: b"/etc/passwd"})
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match="symbolic link") as caught:
        safe_extract_zip(zip_path, dest)

    assert caught.value.entry == "pets/cats/link.jpg"
    assert_nothing_left(tmp_path, dest, zip_path)


def test_device_entry_is_refused(tmp_path):
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    zip_path = make_zip(tmp_path / "fifo.zip", {fifo: b""})

    with pytest.raises(ArchiveError, match="special file"):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_duplicate_entries_are_refused(tmp_path):
    zip_path = tmp_path / "dup.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("a.jpg", b"first")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("a.jpg", b"second")

    with pytest.raises(ArchiveError, match="twice"):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_password_protected_archive_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "locked.zip", {"secret.jpg": b"x"})
    encrypted_flag = 0x1  # general purpose flags: bit 0 = encrypted
    zip_path.write_bytes(
        patch_headers(
            zip_path.read_bytes(),
            "secret.jpg",
            local_at=6,
            central_at=8,
            value=encrypted_flag,
            fmt="<H",
        )
    )

    with pytest.raises(ArchiveError, match="password"):
        safe_extract_zip(zip_path, tmp_path / "out")


# --- zip bombs ---------------------------------------------------------------------------


def test_too_many_members_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match="11 entries, more than the limit of 10"):
        safe_extract_zip(zip_path, dest, limits=ArchiveLimits(max_members=10))
    assert_nothing_left(tmp_path, dest, zip_path)


def test_declared_total_over_limit_is_refused_before_writing(tmp_path):
    zip_path = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(600), "b.bin": os.urandom(600)})
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match=r"would expand to 1\.2 KB, more than the limit"):
        safe_extract_zip(zip_path, dest, limits=ArchiveLimits(max_total_bytes=1000))
    assert_nothing_left(tmp_path, dest, zip_path)


def test_member_over_size_limit_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(2000)})

    with pytest.raises(
        ArchiveError, match=r"'a\.bin' would expand to 2\.0 KB, more than the per-file"
    ):
        safe_extract_zip(zip_path, tmp_path / "out", limits=ArchiveLimits(max_member_bytes=1000))


def test_extreme_compression_ratio_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "bomb.zip", {"ok.jpg": b"fine", "bomb.bin": bytes(4 * 1024**2)})
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match="zip bomb") as caught:
        safe_extract_zip(zip_path, dest)

    assert caught.value.entry == "bomb.bin"
    assert_nothing_left(tmp_path, dest, zip_path)


def test_well_compressed_small_file_is_not_mistaken_for_a_bomb(tmp_path):
    zip_path = make_zip(tmp_path / "blank.zip", {"blank.bmp": bytes(200_000)})

    assert len(safe_extract_zip(zip_path, tmp_path / "out")) == 1


def test_lying_declared_size_is_caught_while_streaming(tmp_path):
    honest = make_zip(
        tmp_path / "honest.zip", {"first.jpg": b"fine" * 100, "liar.bin": bytes(2 * 1024**2)}
    )
    zip_path = tmp_path / "liar.zip"
    # Declares 1,000 bytes: passes the total and ratio checks, but holds 2 MiB.
    zip_path.write_bytes(patch_declared_size(honest.read_bytes(), "liar.bin", 1000))
    honest.unlink()
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError) as caught:
        safe_extract_zip(zip_path, dest)

    assert caught.value.entry == "liar.bin"
    assert "declared size" in str(caught.value)
    assert_nothing_left(tmp_path, dest, zip_path)  # first.jpg, already written, is gone too


def test_actual_bytes_are_counted_even_if_the_reader_trusts_the_header(tmp_path, monkeypatch):
    # zipfile stops at the declared size today; our own count must not depend on that.
    zip_path = make_zip(tmp_path / "z.zip", {"a.bin": b"x" * 100})
    real_open = zipfile.ZipFile.open

    class Overflowing:
        def __init__(self, inner):
            self.inner, self.extra = inner, b"y" * 500

        def read(self, n=-1):
            chunk = self.inner.read(n)
            if chunk:
                return chunk
            chunk, self.extra = self.extra, b""
            return chunk

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

    monkeypatch.setattr(
        zipfile.ZipFile, "open", lambda self, *a, **k: Overflowing(real_open(self, *a, **k))
    )
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match="holds more data than it declares"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_left(tmp_path, dest, zip_path)


# --- not a usable archive ----------------------------------------------------------------


def test_empty_zip_is_refused(tmp_path):
    zip_path = make_zip(tmp_path / "empty.zip", {})

    with pytest.raises(ArchiveError, match=r"The zip empty.zip is empty: it contains no files\."):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_zip_of_only_folders_and_litter_is_empty(tmp_path):
    zip_path = make_zip(
        tmp_path / "litter.zip", {"pets/": b"", "__MACOSX/._x": b"", ".DS_Store": b""}
    )

    with pytest.raises(ArchiveError, match="no files apart from hidden or system files"):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_not_a_zip_is_refused(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("I am a text file with a zip extension")

    with pytest.raises(ArchiveError, match=r"photos\.zip is not a zip archive"):
        safe_extract_zip(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_zip_is_refused(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        safe_extract_zip(tmp_path / "nope.zip", tmp_path / "out")


@pytest.mark.parametrize(
    "field", ["max_members", "max_total_bytes", "max_member_bytes", "max_ratio"]
)
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        ArchiveLimits(**{field: 0})


def test_junk_detection():
    assert archives.is_junk_path(("__MACOSX", "a.jpg"))
    assert archives.is_junk_path(("pets", ".DS_Store"))
    assert not archives.is_junk_path(("pets", "cats", "a.jpg"))
