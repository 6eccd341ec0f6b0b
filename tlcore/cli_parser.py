"""The command line's grammar: every command, option and help text of ``python -m tlcore``.

`tlcore.cli` runs the commands; this module only describes them, so ``--help`` needs
nothing but argparse.
"""

from __future__ import annotations

import argparse

from tlcore.training import presets


def _add_config_args(parser: argparse.ArgumentParser, *, from_run: bool = False) -> None:
    """The options `config_from_args` reads; ``from_run`` adds ``--from RUN`` (train only),
    which excludes ``--config``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="a JSON run configuration")
    if from_run:
        source.add_argument(
            "--from",
            dest="from_run",
            metavar="RUN",
            help="train again with the settings of run RUN (a new run; --dataset and --set "
            "change them)",
        )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one configuration field (repeatable)",
    )
    parser.add_argument(
        "--dataset", help="the dataset to train on (shorthand for --set dataset=NAME)"
    )
    parser.add_argument(
        "--preset",
        choices=list(presets.PRESETS),
        help="start from a named recipe (default: recommended); --set overrides it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tlcore",
        description="Transfer Learning Studio: datasets, training runs, evaluation and export.",
    )
    parser.add_argument(
        "--workspace", help="workspace folder (default: $TLS_WORKSPACE or ./workspace)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_ds = sub.add_parser("datasets", help="import, list, show and delete datasets")
    ds_sub = p_ds.add_subparsers(dest="datasets_cmd", required=True, metavar="ACTION")
    p_imp = ds_sub.add_parser("import", help="import a zip, a folder, the demo or a Keras dataset")
    src = p_imp.add_mutually_exclusive_group()
    src.add_argument("--zip", help="a zip of class folders (or train/val/test/class folders)")
    src.add_argument("--folder", help="a folder on this machine with class folders")
    src.add_argument("--demo", action="store_true", help="the built-in demo dataset (offline)")
    src.add_argument(
        "--keras",
        choices=["cifar10", "mnist", "fashion_mnist"],
        help="a Keras sample dataset (needs internet the first time)",
    )
    p_imp.add_argument("--name", help="dataset name (default: from the file or folder)")
    p_imp.add_argument(
        "--mode",
        choices=["copy", "index"],
        default="copy",
        help="--folder only: copy the images, or index them in place (default copy)",
    )
    p_imp.add_argument("--val-fraction", type=float, default=0.15)
    p_imp.add_argument("--test-fraction", type=float, default=0.15)
    p_imp.add_argument("--seed", type=int, default=42)
    p_imp.add_argument("--max-per-class", type=int, default=None, help="--keras only")
    for name, help_text in (("list", "list datasets"),):
        p = ds_sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print JSON")
    p_show = ds_sub.add_parser("show", help="print a dataset's manifest and report as JSON")
    p_show.add_argument("name")
    p_del = ds_sub.add_parser("delete", help="delete a dataset (runs keep their records)")
    p_del.add_argument("name")
    p_del.add_argument("--yes", action="store_true", help="confirm")
    p_ver = ds_sub.add_parser("versions", help="a dataset's versions and what each changed")
    p_ver.add_argument("name")
    p_ver.add_argument("--json", action="store_true", help="print JSON")
    p_chg = ds_sub.add_parser(
        "change",
        help="make a new version: exclude images, move them to another class, add images",
        description="Make a new version of a dataset; the version changed stays as it was "
        "(runs keep the version they trained on). PATH is as inside the dataset, e.g. "
        "train/bees/123.jpg (see `datasets suspects` or `datasets show`). The dataset's name "
        "then means the new version.",
    )
    p_chg.add_argument("name", help="the dataset (a name means its newest version)")
    p_chg.add_argument("--exclude", action="append", metavar="PATH", help="repeatable")
    p_chg.add_argument("--move", action="append", metavar="PATH=CLASS", help="repeatable")
    p_chg.add_argument("--add", action="append", metavar="CLASS=FILE", help="repeatable")
    p_chg.add_argument("--note", help="why (shown in the versions list)")
    p_sus = ds_sub.add_parser(
        "suspects",
        help="list images that are likely mislabelled, most suspicious first",
        description="Out-of-fold class probabilities from a frozen pretrained backbone's "
        "features (k-fold logistic regression) ranked by confident learning (cleanlab). "
        "Prints {path, given, suggested, score} rows; score = 1 - the probability the "
        "given class received.",
    )
    p_sus.add_argument("name")
    p_sus.add_argument("--backbone", default="MobileNetV2", help="default MobileNetV2")
    p_sus.add_argument(
        "--alpha", type=float, default=None, help="default 0.35 for MobileNetV2, else 1.0"
    )
    p_sus.add_argument("--json", action="store_true", help="print a JSON list")
    p_sus.add_argument("--task", help=argparse.SUPPRESS)  # the app's background task id

    p_train = sub.add_parser(
        "train",
        help="start a training run",
        description="Start a training run. Fields come from --config (or --from RUN: an "
        "earlier run's settings, with a new name and outside its sweep), then --set overrides, "
        "e.g. --set backbone=MobileNet --set alpha=0.25 --set epochs=5.",
    )
    _add_config_args(p_train, from_run=True)
    p_train.add_argument(
        "--detach",
        action="store_true",
        help="return at once with the run id instead of following progress",
    )
    p_train.add_argument("--quiet", action="store_true", help="no progress bar")

    p_runs = sub.add_parser("runs", help="list, show, cancel and resume runs")
    runs_sub = p_runs.add_subparsers(dest="runs_cmd", required=True, metavar="ACTION")
    p_list = runs_sub.add_parser("list", help="list runs, newest first")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    for name, help_text in (
        ("show", "print a run's status and config"),
        ("cancel", "stop a run (idempotent)"),
        ("resume", "resume an interrupted or cancelled run"),
    ):
        p = runs_sub.add_parser(name, help=help_text)
        p.add_argument("run_id")
        if name == "resume":
            p.add_argument("--detach", action="store_true")
            p.add_argument("--quiet", action="store_true")
    runs_sub.add_parser("rebuild-index", help="rebuild the run/dataset index from the folders")

    p_eval = sub.add_parser(
        "evaluate",
        help="evaluate a finished run",
        description="Evaluate a finished run's model on its test split (or another dataset) "
        "and print the metrics. A stored evaluation of the same model is reused.",
    )
    p_eval.add_argument("run_id")
    p_eval.add_argument("--dataset", help="evaluate on another imported dataset")
    p_eval.add_argument(
        "--report", help="write a self-contained HTML report here (metrics JSON/CSV beside it)"
    )
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--fresh", action="store_true", help="evaluate again, even if stored")
    p_eval.add_argument("--task", help=argparse.SUPPRESS)  # report to this background task
    p_sweep = sub.add_parser(
        "sweep",
        help="train one run per freezing strategy and see which wins",
        description="Queue feature extraction, fine-tune top N, bias-only, two-phase and "
        "from-scratch runs with the same data, architecture and epoch budget.",
    )
    _add_config_args(p_sweep)
    p_sweep.add_argument(
        "--unfreeze", type=int, default=2, help="blocks fine-tune top N and two-phase unfreeze"
    )
    p_sweep.add_argument("--wait", action="store_true", help="wait for every run, then report")
    p_sweep.add_argument("--results", metavar="SWEEP_ID", help="print an earlier sweep's results")
    p_prev = sub.add_parser(
        "preview",
        help="build the Model page's architecture preview of a network (used by the app)",
        description="Build a network from a structure (a RunConfig JSON) with random weights "
        "and store its layer table per training phase in the workspace cache.",
    )
    p_prev.add_argument("--structure", required=True, help="the RunConfig JSON")
    p_prev.add_argument("--classes", type=int, required=True)
    p_prev.add_argument("--weights-file", help="also check this weights file against it")
    p_cal = sub.add_parser(
        "calibrate",
        help="measure this machine's speed for a backbone (for time estimates)",
        description="Time the TensorFlow import, model build, forward pass, training step and "
        "head fitting for one backbone, width and size; cached in the workspace and used by "
        "every time estimate. Takes 10-60 s.",
    )
    p_cal.add_argument("--backbone", default="MobileNetV2")
    p_cal.add_argument("--alpha", type=float, default=1.0)
    p_cal.add_argument("--image-size", type=int, default=0)
    p_cal.add_argument("--batch-size", type=int, default=32)
    p_cal.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p_base = sub.add_parser(
        "baseline",
        help="did transfer help? train a run's from-scratch twin",
        description="Queue the same architecture and data from random weights (with the "
        "epochs, schedule and augmentation training from scratch needs) and compare it with "
        "the pretrained run image by image (exact McNemar test on the test split).",
    )
    p_base.add_argument("run_id")
    p_base.add_argument("--wait", action="store_true", help="wait for both, then compare")
    p_base.add_argument(
        "--json",
        action="store_true",
        help="print the verdict as JSON: twin_run_id, verdict, p_value, reason, ...",
    )
    p_pred = sub.add_parser(
        "predict",
        help="predict images with a finished run's model",
        description="Classify images with a finished run's model (its file is checked against "
        "the hash recorded at training). Folders are read recursively; a .zip is extracted "
        "safely. A file that is not a usable image gets an error row; the exit code is then 1.",
    )
    p_pred.add_argument("run_id")
    p_pred.add_argument("images", nargs="+", help="image files, folders or .zip archives")
    p_pred.add_argument("--csv", help="write the predictions to this CSV file")
    p_pred.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="classes to list per image (default 3)"
    )
    p_pred.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p_sched = sub.add_parser(
        "scheduler",
        help="run the workspace's scheduler in the foreground (until SIGTERM)",
        description="Keep the queue moving: every second, runs whose worker died are marked "
        "interrupted and queued runs start when a slot is free, also after a restart. Keeps "
        "one warm worker with TensorFlow imported (TLS_WARM_WORKER=0: none). The app starts "
        "one when none is alive; only one serves a workspace.",
    )
    p_sched.add_argument(
        "--background",
        action="store_true",
        help="start one in its own process unless one is alive, and return at once",
    )
    p_exp = sub.add_parser(
        "export",
        help="export a finished run's model",
        description="Export a finished run's model, check every format against the Keras model "
        "on sample images, and bundle them with a model card and a usage script into one zip "
        "(default folder: <run>/exports/).",
    )
    p_exp.add_argument("run_id")
    p_exp.add_argument(
        "--format",
        action="append",
        metavar="FORMAT",
        help="keras, savedmodel, tflite, tflite-int8 or onnx; repeat or comma-separate "
        "for several (default keras)",
    )
    p_exp.add_argument("--out", help="folder to write the export bundle to")
    p_exp.add_argument("--task", help=argparse.SUPPRESS)  # report to this background task
    p_hash = sub.add_parser(
        "hash-password",
        help="make the hash of a login password (for .streamlit/secrets.toml or TLS_USERS)",
        description="Ask for a password twice (it is not echoed) and print its scrypt hash, "
        "the line to paste into the login settings. Nothing is stored.",
    )
    p_hash.add_argument(
        "--user", help="print a [studio_users] line for this user instead of the bare hash"
    )
    p_hash.add_argument(
        "--role", choices=["member", "admin"], default="member", help="with --user (default member)"
    )
    return parser
