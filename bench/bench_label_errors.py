"""How well the suspected-label-errors list finds wrong labels planted in real photos.

flowers5 is imported as the studio imports it (seeded split); only its **training split** is
used (a version without the validation and test images), so nothing here looks at the
images defaults are never tuned on. In each trial a share of the images is moved to a
random other class (a new version, as a user's mistakes would be), the check runs on it, and
precision and recall against the planted images are printed for each ranking method, with
Wilson 95 % intervals over all trials pooled. flowers5 may hold genuine label errors or
ambiguous photos of its own: a flagged image that was not planted counts against precision.

Usage::

    KERAS_HOME=/tmp/kh .venv/bin/python bench/bench_label_errors.py [--trials 3] [--noise 0.05]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from tlcore.data import datasets, versions  # noqa: E402
from tlcore.data.versions import VersionChanges  # noqa: E402
from tlcore.store.workspace import open_workspace  # noqa: E402
from tlcore.training import label_errors  # noqa: E402


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flowers", default=os.environ.get("TLS_FLOWERS_DIR"))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.05, help="share of images planted")
    parser.add_argument("--backbone", default=label_errors.DEFAULT_BACKBONE)
    parser.add_argument("--alpha", type=float, default=label_errors.DEFAULT_ALPHA)
    args = parser.parse_args()
    flowers = Path(args.flowers or REPO.parent / "shared" / "datasets" / "flowers5")

    ws = open_workspace(Path(tempfile.mkdtemp(prefix="bench-labels-")) / "ws")
    full = datasets.import_folder(ws, flowers, name="flowers5")
    held = tuple(i.rel_path for i in full.items() if i.split != "train")
    train_only = versions.make_version(ws, full.id, VersionChanges(excluded=held))
    items = train_only.items()
    print(
        f"flowers5 training split: {len(items)} images, {len(train_only.classes)} classes; "
        f"{args.noise:.0%} planted per trial, {args.trials} trials; "
        f"{args.backbone} alpha {args.alpha}"
    )

    totals = {m: [0, 0, 0] for m in label_errors.RANKINGS}  # found, flagged, planted
    for trial in range(args.trials):
        rng = random.Random(trial)
        planted = rng.sample(items, round(args.noise * len(items)))
        moves = tuple(
            (i.rel_path, rng.choice([c for c in train_only.classes if c != i.class_name]))
            for i in planted
        )
        noisy = versions.make_version(ws, train_only.id, VersionChanges(moved=moves))
        planted_paths = {m["new_path"] for m in noisy.manifest["changes"]["moved"]}
        start = time.perf_counter()
        check = label_errors.find_suspects(ws, noisy, backbone=args.backbone, alpha=args.alpha)
        seconds = time.perf_counter() - start
        # The other rankings from the same out-of-fold probabilities.
        noisy_items = noisy.items()
        labels = np.asarray([i.label for i in noisy_items])
        feats = label_errors._features(ws, noisy, _config(noisy, args), noisy_items, None)
        probs, accuracy, folds = label_errors.out_of_fold_probabilities(
            feats, labels, len(noisy.classes)
        )
        line = [f"trial {trial}: {len(planted_paths)} planted, check {seconds:.1f} s"]
        line.append(f"({folds}-fold accuracy {accuracy:.1%}, n={len(labels)})")
        for method in label_errors.RANKINGS:
            flagged = {noisy_items[i].rel_path for i in label_errors.rank_label_issues(
                labels, probs, method=method)}  # fmt: skip
            found = len(flagged & planted_paths)
            t = totals[method]
            t[0], t[1], t[2] = t[0] + found, t[1] + len(flagged), t[2] + len(planted_paths)
            line.append(f"{method}: {found}/{len(flagged)} flagged are planted")
        stored = {s.path for s in check.suspects}
        assert stored == {
            noisy_items[i].rel_path for i in label_errors.rank_label_issues(labels, probs)
        }, "the stored list differs from the default ranking of the same probabilities"
        print("; ".join(line))
    print("\npooled over trials (Wilson 95 % intervals):")
    for method, (found, flagged, planted) in totals.items():
        p_lo, p_hi = wilson(found, flagged)
        r_lo, r_hi = wilson(found, planted)
        default = " (default)" if method == label_errors.DEFAULT_RANKING else ""
        print(
            f"  {method}{default}: precision {found}/{flagged} = {found / max(flagged, 1):.1%} "
            f"[{p_lo:.1%}, {p_hi:.1%}], recall {found}/{planted} = "
            f"{found / max(planted, 1):.1%} [{r_lo:.1%}, {r_hi:.1%}]"
        )


def _config(dataset, args):
    return label_errors.check_config(dataset, args.backbone, args.alpha)


if __name__ == "__main__":
    main()
