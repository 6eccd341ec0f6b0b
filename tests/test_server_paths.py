"""Confined server paths: what a browser user types is resolved and must lie in a shared
folder; inside one, only regular files are read, within the size caps. The CLI keeps full
access, but never opens a named pipe or a device either.

The tests that put a FIFO or ``/dev/zero`` among images fail by timeout, not by hanging,
if a reader opens them again (``method="thread"``: a stuck reading thread cannot block the
end of the test).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_class_folders
from tlcore import cli
from tlcore.data import datasets, images, sources
from tlcore.data.datasets import DatasetError
from tlcore.store import server_paths
from tlcore.store.server_paths import ServerPathError, ServerRoots

HANG_TIMEOUT = pytest.mark.timeout(60, method="thread")
OUTSIDE = "is outside the folders this server shares"


@pytest.fixture
def roots(ws) -> ServerRoots:
    """This server's defaults: the workspace's incoming/ folder is the only shared one."""
    return ServerRoots.from_env(ws, {})


def _noise_png(path: Path, side: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _skipped(ds) -> dict[str, tuple[str, str]]:
    return {s["path"]: (s["reason"], s["message"]) for s in ds.report["skipped"]}


# -- the roots ---------------------------------------------------------------------------------
def test_the_default_root_is_the_workspaces_incoming_folder(ws, roots):
    assert ws.incoming_dir.is_dir(), "open_workspace creates it"
    assert roots.roots == (ws.incoming_dir,)
    assert roots.max_file_bytes == 100 * 1024**2
    assert roots.max_weights_bytes == 1024**3


def test_roots_and_caps_come_from_the_environment(ws, tmp_path):
    first, second = tmp_path / "photos", tmp_path / "scans"
    env = {
        "TLS_SERVER_ROOTS": f"{first}{os.pathsep}{second}{os.pathsep}",
        "TLS_MAX_FILE_MB": "2",
        "TLS_MAX_IMPORT_GB": "0.5",
    }
    configured = ServerRoots.from_env(ws, env)
    assert configured.roots == (first, second)
    assert configured.max_file_bytes == 2 * 1024**2
    assert configured.max_total_bytes == 1024**3 // 2


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan"])
def test_a_bad_cap_names_the_setting_and_value(ws, value):
    with pytest.raises(
        ServerPathError, match=f"TLS_MAX_FILE_MB must be a positive number.*{value}"
    ):
        ServerRoots.from_env(ws, {"TLS_MAX_FILE_MB": value})


# -- confining a typed path -----------------------------------------------------------------------
def test_etc_is_refused_the_same_way_whether_the_path_exists_or_not(roots, ws):
    messages = {}
    for typed in ("/etc", "/etc/shadow", "/no/such/place"):
        with pytest.raises(ServerPathError, match=OUTSIDE) as refused:
            roots.confine(typed)
        messages[typed] = str(refused.value).replace(typed, "<typed>")
        assert "TLS_SERVER_ROOTS" in str(refused.value)
        assert str(ws.incoming_dir) in str(refused.value), "says where to copy the images"
    assert len(set(messages.values())) == 1, messages


def test_dot_dot_tricks_are_refused(roots, ws):
    (ws.incoming_dir / "pets").mkdir()
    for typed in (
        f"{ws.incoming_dir}/../../../../../etc",
        f"{ws.incoming_dir}/pets/../..",
        "../../../../etc",
        "pets/../../datasets",
    ):
        with pytest.raises(ServerPathError, match=OUTSIDE):
            roots.confine(typed)


def test_a_link_inside_a_root_that_leads_out_is_refused(roots, ws, tmp_path):
    outside = write_class_folders(tmp_path / "private", {"a": 5, "b": 5})
    (ws.incoming_dir / "looks-shared").symlink_to(outside)
    with pytest.raises(ServerPathError, match=OUTSIDE):
        roots.confine(ws.incoming_dir / "looks-shared")
    with pytest.raises(ServerPathError, match=OUTSIDE):
        roots.confine("looks-shared/a")


def test_a_path_inside_a_root_is_resolved_and_a_relative_one_is_taken_inside_it(roots, ws):
    (ws.incoming_dir / "pets").mkdir()
    assert roots.confine(ws.incoming_dir / "pets") == ws.incoming_dir / "pets"
    assert roots.confine("pets") == ws.incoming_dir / "pets"
    assert roots.confine(f"{ws.incoming_dir}/pets/../pets/") == ws.incoming_dir / "pets"


def test_a_weights_file_must_be_a_shared_regular_file_within_the_cap(ws, tmp_path):
    weights = ws.incoming_dir / "backbone.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(2048))
    os.mkfifo(ws.incoming_dir / "pipe.weights.h5")
    roots = ServerRoots.from_env(ws, {})
    confine = roots.confine_file
    assert confine(weights, max_bytes=4096, what="the weights file") == weights
    with pytest.raises(ServerPathError, match=OUTSIDE):
        confine("/etc/passwd", max_bytes=4096, what="the weights file")
    with pytest.raises(ServerPathError, match="named pipe"):
        confine(ws.incoming_dir / "pipe.weights.h5", max_bytes=4096, what="the weights file")
    with pytest.raises(ServerPathError, match="TLS_MAX_WEIGHTS_MB"):
        confine(weights, max_bytes=1024, what="the weights file")
    with pytest.raises(ServerPathError, match="does not exist"):
        confine("missing.weights.h5", max_bytes=4096, what="the weights file")


# -- reading only regular files -----------------------------------------------------------------
@HANG_TIMEOUT
def test_the_image_loader_never_opens_a_pipe_or_a_device(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    for name, kind in (("pipe.png", "a named pipe (FIFO)"), ("zero.png", "a device")):
        with pytest.raises(images.ImageError, match=re.escape(f"is {kind}, not")) as refused:
            images.load_image(tmp_path / name)
        assert refused.value.reason == "not_a_regular_file"
    with pytest.raises(server_paths.NotRegularFileError):
        server_paths.open_regular_file("/dev/zero")


# -- importing a folder ----------------------------------------------------------------------------
def test_the_ui_import_of_etc_is_refused_and_imports_nothing(ws, roots):
    with pytest.raises(DatasetError, match=OUTSIDE):
        datasets.import_folder(ws, "/etc", roots=roots)
    assert datasets.list_datasets(ws) == []


def test_links_out_of_the_roots_are_skipped_with_the_reason(ws, roots, tmp_path):
    private = write_class_folders(tmp_path / "private", {"secret": 6}, seed=5)
    src = write_class_folders(ws.incoming_dir / "pets", {"cats": 6, "dogs": 6})
    (src / "secret").symlink_to(private / "secret")  # a class folder that leads out
    (src / "cats" / "stolen.png").symlink_to(private / "secret" / "img_000.png")
    (src / "dogs" / "inside.png").symlink_to(src / "cats" / "img_000.png")  # stays inside

    ds = datasets.import_folder(ws, src, roots=roots)

    assert ds.classes == ["cats", "dogs"]
    skipped = _skipped(ds)
    assert skipped["secret/"][0] == "outside_server_roots"
    assert skipped["cats/stolen.png"] == (
        "outside_server_roots",
        "cats/stolen.png is a link to a file outside the folders this server shares; it was "
        "not read.",
    )
    assert "dogs/inside.png" not in skipped, "a link within the shared folders is read"


@HANG_TIMEOUT
@pytest.mark.parametrize("confined", [True, False], ids=["web UI", "CLI"])
def test_a_fifo_and_dev_zero_are_skipped_and_the_import_finishes(ws, roots, confined):
    src = write_class_folders(ws.incoming_dir / "pets", {"cats": 6, "dogs": 6})
    os.mkfifo(src / "cats" / "pipe.jpg")
    (src / "dogs" / "zero.jpg").symlink_to("/dev/zero")

    ds = datasets.import_folder(ws, src, **({"roots": roots} if confined else {}))

    assert ds.num_images == 12
    skipped = _skipped(ds)
    assert skipped["cats/pipe.jpg"] == (
        "not_a_regular_file",
        "cats/pipe.jpg is a named pipe (FIFO), not a regular file; it was not read.",
    )
    # /dev/zero is outside the shared folders, and a device anyway: never opened.
    expected = "outside_server_roots" if confined else "not_a_regular_file"
    assert skipped["dogs/zero.jpg"][0] == expected


def test_files_over_the_cap_are_skipped(ws):
    src = write_class_folders(ws.incoming_dir / "pets", {"cats": 6, "dogs": 6})  # ~2 KB each
    _noise_png(src / "cats" / "poster.png", 200)  # ~120 KB
    capped = ServerRoots.from_env(ws, {"TLS_MAX_FILE_MB": "0.05"})

    ds = datasets.import_folder(ws, src, roots=capped)

    assert ds.num_images == 12
    reason, message = _skipped(ds)["cats/poster.png"]
    assert reason == "too_large" and "TLS_MAX_FILE_MB" in message


def test_an_import_over_the_total_cap_is_refused_before_reading_any_file(ws, monkeypatch):
    src = write_class_folders(ws.incoming_dir / "pets", {"cats": 6, "dogs": 6})
    capped = ServerRoots.from_env(ws, {"TLS_MAX_IMPORT_GB": str(10_000 / 1024**3)})

    def read(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(sources, "_probe_all", read)
    with pytest.raises(DatasetError, match="TLS_MAX_IMPORT_GB"):
        datasets.import_folder(ws, src, roots=capped)
    assert datasets.list_datasets(ws) == []


@HANG_TIMEOUT
def test_the_cli_imports_a_folder_outside_the_roots_and_skips_a_fifo(ws, tmp_path):
    src = write_class_folders(tmp_path / "anywhere", {"cats": 6, "dogs": 6})
    os.mkfifo(src / "cats" / "pipe.png")
    code = cli.main(["--workspace", str(ws.root), "datasets", "import", "--folder", str(src)])
    assert code == 0
    [ds] = datasets.list_datasets(ws)
    assert ds.num_images == 12
    loaded = datasets.load_dataset(ws, ds.id)
    assert _skipped(loaded)["cats/pipe.png"][0] == "not_a_regular_file"


# -- predicting a folder ---------------------------------------------------------------------------
@pytest.fixture
def predictor(ws):
    from tests.test_model_store import make_finished_run
    from tlcore.serving import predict

    run_id, _ = make_finished_run(ws)
    return predict.Predictor.for_run(ws, run_id)


def test_predicting_etc_from_the_ui_is_refused(predictor, roots):
    with pytest.raises(ServerPathError, match=OUTSIDE):
        predictor.predict_folder("/etc", roots=roots)


@HANG_TIMEOUT
@pytest.mark.parametrize("confined", [True, False], ids=["web UI", "CLI"])
def test_a_batch_gives_error_rows_for_a_fifo_dev_zero_and_links_out(
    predictor, ws, roots, tmp_path, confined
):
    folder = ws.incoming_dir / "new"
    folder.mkdir()
    _noise_png(folder / "a.png", 40)
    os.mkfifo(folder / "b.png")
    (folder / "c.png").symlink_to("/dev/zero")
    (folder / "d.png").symlink_to(_noise_png(tmp_path / "private.png", 40))

    results = predictor.predict_folder(folder, **({"roots": roots} if confined else {}))

    by_name = {p.name: p for p in results}
    assert list(by_name) == ["a.png", "b.png", "c.png", "d.png"]
    assert by_name["a.png"].ok
    assert by_name["b.png"].reason == "not_a_regular_file"
    assert "named pipe" in by_name["b.png"].error
    if confined:
        assert by_name["c.png"].reason == "outside_server_roots"
        assert by_name["d.png"].reason == "outside_server_roots"
    else:
        assert by_name["c.png"].reason == "not_a_regular_file"
        assert by_name["d.png"].ok, "the CLI follows links anywhere"


def test_a_batch_over_the_total_cap_is_refused(predictor, ws):
    folder = ws.incoming_dir / "new"
    folder.mkdir()
    for i in range(3):
        _noise_png(folder / f"{i}.png", 40, seed=i)
    capped = ServerRoots.from_env(ws, {"TLS_MAX_IMPORT_GB": str(1_000 / 1024**3)})
    with pytest.raises(ServerPathError, match="TLS_MAX_IMPORT_GB"):
        predictor.predict_folder(folder, roots=capped)
