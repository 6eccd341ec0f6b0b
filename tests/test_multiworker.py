"""One run on several machines (`tlcore.training.distribution`, ``multi_worker``): two real
worker processes on 127.0.0.1, each started the way a user starts one per machine (the CLI's
``train`` with its own ``TF_CONFIG`` and its own workspace), train one model in lockstep."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, tiny_config, write_class_folders
from tlcore.store import runs
from tlcore.store.run_layout import RunPaths
from tlcore.store.workspace import open_workspace

WORKERS = 2
RUN_TIMEOUT_S = 300


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _weight_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.weights.h5`` file, by its path inside the file."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def _only_run(ws) -> runs.RunRecord:
    records = runs.list_runs(ws)
    assert len(records) == 1, [r.id for r in records]
    return records[0]


def _stop_workers(workspaces) -> None:
    for ws in workspaces:
        for record in runs.list_runs(ws):
            if record.status and record.status.pid:
                try:
                    os.killpg(record.status.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_train_one_run_in_lockstep_and_only_the_chief_keeps_the_results(
    tmp_path, monkeypatch
):
    from tlcore.data import datasets

    monkeypatch.setenv("TLS_SCHEDULER", "off")
    images = write_class_folders(tmp_path / "images", {"red": 20, "green": 20, "blue": 20})
    # Each machine has its own workspace with the same dataset imported.
    workspaces = [open_workspace(tmp_path / f"machine{i}" / "workspace") for i in range(WORKERS)]
    imported = [datasets.import_folder(ws, images, name="tiny") for ws in workspaces]
    assert len({d.content_hash for d in imported}) == 1
    # From scratch, so batch-norm statistics train too; batch 8 = 4 images per worker.
    config = tiny_config("tiny", strategy="from_scratch", epochs=2, batch_size=8)
    (tmp_path / "run.json").write_text(json.dumps(config.to_dict()))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]}

    # What a user types on each machine (README, "Several machines").
    command = [sys.executable, "-m", "tlcore"]
    train = ["train", "--config", str(tmp_path / "run.json"), "--quiet"]
    train += ["--set", "distribution=multi_worker"]
    procs, logs = [], []
    started = time.monotonic()
    try:
        for index, ws in enumerate(workspaces):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = os.environ | {
                "TF_CONFIG": json.dumps(tf_config),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "CUDA_VISIBLE_DEVICES": "",  # the CPU path even on a machine with GPUs
                "PYTHONPATH": str(REPO_ROOT),
            }
            log = tmp_path / f"cli{index}.log"
            logs.append(log)
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [*command, "--workspace", str(ws.root), *train],
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for proc in procs:
            proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        _stop_workers(workspaces)
    seconds = time.monotonic() - started

    chief, other = (_only_run(ws) for ws in workspaces)
    diagnosis = "\n".join(
        f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}"
        for path in [*logs, RunPaths.of(chief.dir).worker_log, RunPaths.of(other.dir).worker_log]
        if path.exists()
    )
    assert [p.returncode for p in procs] == [0, 0], diagnosis
    for log in logs:
        final = json.loads(log.read_text().strip().splitlines()[-1])
        assert final["status"] == "finished" and final["error"] is None, diagnosis
    print(f"two workers trained in {seconds:.1f} s")

    # The chief's run folder is a complete finished run, which the studio can load.
    paths = RunPaths.of(chief.dir)
    assert chief.state == runs.FINISHED
    for path in (paths.model, paths.model_record, paths.history, paths.metrics, paths.classes):
        assert path.is_file(), path
    assert any(paths.tensorboard.rglob("*")) and any(paths.backup.rglob("*"))
    assert any(paths.evaluations.rglob("*.json"))
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["multi_worker"] == {"worker": 0, "workers": 2, "chief": True}
    assert metrics["epochs_completed"] == 2 and metrics["test_accuracy"] is not None
    from tlcore.model import model_store

    loaded = model_store.load_run_model(workspaces[0], chief.id)  # hash checked
    assert loaded.model.output_shape == (None, 3)

    # The other worker kept only what resuming needs, in its own folder; its checkpoints
    # went to a scratch folder that is gone.
    theirs = RunPaths.of(other.dir)
    assert other.state == runs.FINISHED
    assert other.status.summary["multi_worker"] == {"worker": 1, "workers": 2, "chief": False}
    for path in (theirs.model, theirs.model_record, theirs.metrics, theirs.tensorboard):
        assert not path.exists(), path
    assert not theirs.evaluations.exists() and not theirs.worker_scratch.exists()
    assert any(theirs.backup.rglob("*")) and theirs.history.is_file()

    # One model: the same epochs, the same figures and, bit for bit, the same final weights.
    history = [json.loads(p.read_text())["epochs"] for p in (paths.history, theirs.history)]
    figures = [
        [{k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} for row in h]
        for h in history
    ]
    assert figures[0] == figures[1] and len(figures[0]) == 2
    mine = _weight_arrays(chief.dir / "phase1.weights.h5")
    yours = _weight_arrays(other.dir / "phase1.weights.h5")
    assert mine.keys() == yours.keys() and len(mine) > 0
    different = [name for name in mine if not np.array_equal(mine[name], yours[name])]
    assert different == []
