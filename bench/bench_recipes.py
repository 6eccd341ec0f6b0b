"""Recipe benchmark (issue 10): the recommended recipe against the seeds' and Teachable
Machine's presets, on the same training images and the same held-out images, for both
backbones whose ImageNet weights ship in ``../shared/keras_home``; plus each recommended
run's from-scratch twin, and the Model page's time estimate beside each run's real time.

Usage::

    KERAS_HOME=/writable/copy/of/shared/keras_home \\
        .venv/bin/python bench/bench_recipes.py [--flowers DIR] [--json out.json] [--no-twin]

flowers5 (``--flowers`` or ``$TLS_FLOWERS_DIR``, default ``../shared/datasets/flowers5``)
is split once, per class, with seed 42: 60% train, 15% validation, 25% test. The test
split is the held-out set: no run, no setting and no default ever looked at it before
this script scores it. Every run trains in a real worker process, as from the app; its
wall time runs from submission to the end of its evaluation.

Printed: per backbone and recipe the test accuracy with its 95% Wilson interval and n,
the exact McNemar test of the recommended recipe against each preset, wall time, the
estimate made before the run and their ratio, and the twin's accuracy and verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlcore.config import RunConfig  # noqa: E402
from tlcore.data import datasets  # noqa: E402
from tlcore.evaluation import compare, evaluate, stats  # noqa: E402
from tlcore.model.weights import imagenet_weights_status  # noqa: E402
from tlcore.store import jobs, runs  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402
from tlcore.training import estimate, presets, sweep  # noqa: E402

BACKBONES = (("MobileNet", 0.25), ("MobileNetV2", 0.35))
RECIPES = ("recommended", "seeds", "teachable_machine")
SPLIT = datasets.ImportOptions(val_fraction=0.15, test_fraction=0.25, seed=42, mode="index")
RUN_TIMEOUT_S = 3600


def _fresh_workspace(root: Path, name: str, flowers: Path):
    """A workspace of its own per run, so no run reuses another's cached features."""
    ws = open_workspace(root / name)
    datasets.import_folder(ws, flowers, name="flowers5", options=SPLIT)
    return ws


def _calibrated(ws, config: RunConfig, shared: Path) -> None:
    """This machine's speed for the config, measured once as the Model page does it."""
    speeds = json.loads(shared.read_text()) if shared.exists() else {}
    key = estimate.speed_key(config, 224)
    if key not in speeds:
        subprocess.run(
            [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), "calibrate",
             "--backbone", config.backbone, "--alpha", str(config.alpha),
             "--batch-size", str(config.batch_size)],
            check=True, capture_output=True,
        )  # fmt: skip
        speeds[key] = estimate.read_speeds(ws)[key]
        shared.write_text(json.dumps(speeds))
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    (ws.cache_dir / estimate.SPEED_FILE).write_text(json.dumps(speeds))


def _train(ws, config: RunConfig) -> tuple[str, float, dict]:
    _calibrated(ws, config, ws.root.parent / "speed.json")
    planned = estimate.estimate_run(ws, config)
    started = time.perf_counter()
    run_id = jobs.submit(ws, config)
    record = jobs.wait_for(ws, run_id, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    if record.state != runs.FINISHED:
        raise SystemExit(f"run {run_id} ended {record.state}: {record.status.error}")
    return run_id, wall, planned


def _row(ws, run_id: str, wall: float, planned: dict) -> dict:
    result = evaluate.load_evaluation(ws, run_id)
    summary = runs.read_run(ws, run_id).status.summary
    m = result.metrics
    return {
        "run_id": run_id,
        "workspace": str(ws.root),
        "split": result.split,
        "accuracy": m.accuracy,
        "n": m.num_samples,
        "ci95": list(stats.accuracy_interval(m.accuracy, m.num_samples)),
        "macro_f1": m.macro_avg.f1,
        "collapsed": m.collapse is not None,
        "val_accuracy": summary.get("val_accuracy"),
        "val_samples": summary.get("val_samples"),
        "validation_method": summary.get("validation_method"),
        "wall_s": round(wall, 1),
        "estimate_s": round(planned["total_seconds"], 1),
        "estimate_ratio": round(planned["total_seconds"] / wall, 2),
        "estimate_basis": planned["basis"],
        "_result": result,
    }


def reestimate(path: Path) -> int:
    """Fresh calibrations, then the estimate of each earlier run beside its wall time."""
    earlier = json.loads(path.read_text())
    shared = Path(tempfile.mkdtemp(prefix="tls-bench-speed-")) / "speed.json"
    ratios = []
    for backbone_key, rows in earlier["backbones"].items():
        for recipe, row in rows.items():
            ws = open_workspace(Path(row["workspace"]))
            config = runs.read_run(ws, row["run_id"]).config
            _calibrated(ws, config, shared)
            planned = estimate.estimate_run(ws, config)
            ratio = planned["total_seconds"] / row["wall_s"]
            ratios.append(ratio)
            print(
                f"{backbone_key:<16} {recipe:<18} wall {row['wall_s']:6.0f} s  estimate "
                f"{planned['total_seconds']:6.0f} s  ratio {ratio:.2f}",
                flush=True,
            )
    inside = sum(abs(r - 1) <= estimate.ACCURACY for r in ratios)
    print(f"{inside} of {len(ratios)} estimates within ±{estimate.ACCURACY:.0%} of the wall time")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--flowers", default=os.environ.get("TLS_FLOWERS_DIR", "../shared/datasets/flowers5")
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--no-twin", action="store_true", help="skip the from-scratch twins")
    parser.add_argument(
        "--reestimate",
        metavar="JSON",
        help="only measure this machine again and estimate the runs of an earlier --json "
        "output (their workspaces must still exist), beside their measured wall times",
    )
    args = parser.parse_args()
    if args.reestimate:
        return reestimate(Path(args.reestimate))
    flowers = Path(args.flowers).resolve()
    missing = [
        f"{b} alpha {a}" for b, a in BACKBONES if not imagenet_weights_status(b, a, 224).available
    ]
    if missing:
        raise SystemExit(
            f"ImageNet weights missing for {', '.join(missing)}: set KERAS_HOME to a writable "
            "copy of ../shared/keras_home."
        )
    root = Path(tempfile.mkdtemp(prefix="tls-bench-recipes-"))
    out: dict = {"flowers": str(flowers), "split": "60/15/25 per class, seed 42", "backbones": {}}
    for backbone, alpha in BACKBONES:
        rows = {}
        for recipe in RECIPES:
            ws = _fresh_workspace(root, f"{backbone}-{alpha}-{recipe}", flowers)
            config = presets.apply_preset(
                RunConfig(dataset="flowers5", backbone=backbone, alpha=alpha, name=recipe), recipe
            )
            run_id, wall, planned = _train(ws, config)
            rows[recipe] = _row(ws, run_id, wall, planned)
            r = rows[recipe]
            shown = stats.format_accuracy(r["accuracy"], r["n"])
            print(
                f"{backbone} a{alpha:g} {recipe:<18} test {shown}"
                f"  wall {r['wall_s']:.0f} s  estimate {r['estimate_s']:.0f} s "
                f"(x{r['estimate_ratio']:.2f})",
                flush=True,
            )
        best = rows["recommended"]
        for recipe in RECIPES[1:]:
            comparison = compare.paired_comparison(best["_result"], rows[recipe]["_result"])
            rows[recipe]["vs_recommended"] = comparison.to_dict()
            print(f"  recommended vs {recipe}: {comparison.wording('recommended', recipe)}")
        if not args.no_twin:
            ws = open_workspace(Path(best["workspace"]))
            twin_config = sweep.baseline_config(runs.read_run(ws, best["run_id"]).config, "x")
            _calibrated(ws, twin_config, root / "speed.json")
            planned = estimate.estimate_run(ws, twin_config)
            started = time.perf_counter()
            twin_id = sweep.start_baseline(ws, best["run_id"])
            jobs.wait_for(ws, twin_id, timeout=RUN_TIMEOUT_S)
            twin = _row(ws, twin_id, time.perf_counter() - started, planned)
            verdict = compare.baseline_comparison(ws, best["run_id"])
            twin["verdict"], twin["reason"] = verdict.verdict, verdict.reason
            rows["from_scratch_twin"] = twin
            print(
                f"  twin from scratch: test {stats.format_accuracy(twin['accuracy'], twin['n'])}"
                f", collapsed={twin['collapsed']}, wall {twin['wall_s']:.0f} s, estimate "
                f"{twin['estimate_s']:.0f} s (x{twin['estimate_ratio']:.2f}); {verdict.reason}",
                flush=True,
            )
        for row in rows.values():
            row.pop("_result", None)
        out["backbones"][f"{backbone}@{alpha:g}"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
