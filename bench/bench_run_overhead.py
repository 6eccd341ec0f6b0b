"""Fixed overhead of a run (the lab-server issue): a cached-feature run's wall time against
its floor, cold worker versus the scheduler's warm worker, measured side by side.

The floor is the work the run cannot avoid, measured in this process with TensorFlow
already imported: building the model (backbone weights loaded) plus one forward pass of the
backbone over every image of the dataset. Each run is timed from `jobs.submit` to its
``finished`` state — the wall time a person waits — and printed beside the floor:

1. cold worker, features not cached (a fresh process imports TensorFlow, then computes them)
2. warm worker, features not cached (the scheduler's worker has TensorFlow imported)
3. warm worker, features cached (the same run again: only the head trains)

Usage::

    .venv/bin/python bench/bench_run_overhead.py [--flowers DIR] [--epochs 20]

Real photos come from ``--flowers`` or ``$TLS_FLOWERS_DIR`` (default
``../shared/datasets/flowers5``, ~400 training images). ImageNet weights for MobileNetV2 α 0.35
come from ``$KERAS_HOME`` (``../shared/keras_home`` holds them); without them the backbone has
random weights, which changes nothing here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlcore.config import RunConfig  # noqa: E402
from tlcore.data import datasets  # noqa: E402
from tlcore.store import jobs, runs, scheduler  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402


def _floor(ws, config: RunConfig) -> float:
    """Seconds to build the model and run the backbone once over every image."""
    import numpy as np

    from tlcore.data import pipeline
    from tlcore.model import models

    dataset = datasets.load_dataset(ws, config.dataset)
    start = time.perf_counter()
    model = models.build_model(config, len(dataset.classes))
    backbone = models.feature_extractor(model)
    for split in ("train", "val", "test"):
        items = dataset.items(split)
        if not items:
            continue
        data = pipeline.make_image_dataset(
            items,
            image_size=config.image_size,
            batch_size=config.batch_size,
            shuffle=False,
            seed=0,
        )
        for batch in data:
            images = batch[0] if isinstance(batch, tuple) else batch
            np.asarray(backbone(images, training=False))
    return time.perf_counter() - start


def _timed_run(ws, config: RunConfig, timeout: float = 900) -> float:
    start, wall = time.perf_counter(), time.time()
    run_id = jobs.submit(ws, config)
    record = jobs.wait_for(ws, run_id, timeout=timeout, poll=0.05)
    elapsed = time.perf_counter() - start
    if record.state != runs.FINISHED:
        raise SystemExit(f"run {run_id} ended {record.state}: {record.status.error}")
    _print_timeline(record, wall)
    return elapsed


def _print_timeline(record, submitted: float) -> None:
    """When each step of the run began, in seconds after submit (from its progress log)."""
    from datetime import datetime

    steps = []
    for event in runs.read_progress(record.dir):
        if event["event"] in ("epoch_end", "batch"):
            continue
        at = datetime.fromisoformat(event["time"]).timestamp() - submitted
        steps.append(f"{event['event']} {at:.1f}")
    print(f"  {config_name(record)}: " + ", ".join(steps))


def config_name(record) -> str:
    return record.config.name if record.config else record.id


def _start_scheduler(ws) -> subprocess.Popen:
    env, cwd = jobs.child_environment()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "scheduler"],
        env=env | {"TLS_WARM_WORKER": "1"},
        cwd=cwd,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid = scheduler.status(ws).warm_worker_pid
        if pid and (ws.cache_dir / jobs.WARM_DIR / f"{pid}.ready").exists():
            return proc
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the warm worker did not get ready within 120 s")


def _wait_warm(ws) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid = scheduler.status(ws).warm_worker_pid
        if pid and (ws.cache_dir / jobs.WARM_DIR / f"{pid}.ready").exists():
            return
        time.sleep(0.2)
    raise SystemExit("no new warm worker within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flowers", default=os.environ.get("TLS_FLOWERS_DIR"))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    flowers = Path(args.flowers or REPO.parent / "shared" / "datasets" / "flowers5")
    root = Path(tempfile.mkdtemp(prefix="tls-overhead-"))
    os.environ["TLS_WORKSPACE"] = str(root / "ws")
    os.environ["TLS_AUTO_CALIBRATE"] = "0"
    os.environ.setdefault("TLS_MAX_CONCURRENT_RUNS", "1")
    ws = open_workspace(root / "ws")
    try:
        ds = datasets.import_folder(ws, flowers, name="flowers5")
        from tlcore.model.weights import imagenet_weights_status

        weights = (
            "imagenet" if imagenet_weights_status("MobileNetV2", 0.35, 224).available else "none"
        )
        config = RunConfig(
            dataset=ds.name,
            backbone="MobileNetV2",
            alpha=0.35,
            weights=weights,
            image_size=224,
            strategy="feature_extraction",
            head_search=False,
            epochs=args.epochs,
            feature_cache=True,
            flip="none",
        )
        images = sum(len(ds.items(s)) for s in ("train", "val", "test"))
        print(f"flowers5: {images} images, MobileNetV2 α 0.35 ({weights}), {args.epochs} epochs")
        floor = _floor(ws, config)
        print(f"floor (model build + one forward pass over every image): {floor:6.1f} s")

        cold = _timed_run(ws, config.replace(name="cold"))
        shutil.rmtree(ws.cache_dir / "features", ignore_errors=True)
        proc = _start_scheduler(ws)
        try:
            warm = _timed_run(ws, config.replace(name="warm"))
            _wait_warm(ws)
            cached = _timed_run(ws, config.replace(name="warm, cached"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        for label, seconds in (
            ("cold worker, features computed", cold),
            ("warm worker, features computed", warm),
            ("warm worker, features cached", cached),
        ):
            print(f"{label:<34} {seconds:6.1f} s   {seconds / floor:4.2f}x the floor")
        print(f"warm worker saves {cold - warm:.1f} s per run; target: ≤ 1.5x the floor")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
