import pytest

from tlcore.fileio import StorageError
from tlcore.store.workspace import open_workspace, resolve_workspace_path


def test_workspace_from_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("TLS_WORKSPACE", str(tmp_path / "from_env"))
    assert resolve_workspace_path() == tmp_path / "from_env"
    assert resolve_workspace_path(tmp_path / "flag") == tmp_path / "flag"
    ws = open_workspace()
    assert ws.runs_dir.is_dir() and ws.datasets_dir.is_dir() and ws.cache_dir.is_dir()


def test_unusable_workspace_is_explained(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="not writable") as info:
        open_workspace(blocker / "ws")
    assert "TLS_WORKSPACE" in info.value.strerror
