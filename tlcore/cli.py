"""The command line: ``python -m tlcore``. Calls the same functions as the pages.

Every command exits 0 on success, 1 when the thing asked for failed (a run failed), and
2 on a user error (bad value, unknown run), printing what happened and what to do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tlcore import jobs, runs
from tlcore.config import apply_overrides
from tlcore.fileio import StorageError, read_json
from tlcore.workspace import open_workspace

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


# -- output helpers -----------------------------------------------------------------
def _print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True, default=str))


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return ""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt_metric(value) -> str:
    return "" if value is None else f"{value:.3f}"


def run_row(record: runs.RunRecord) -> dict:
    """A run as a flat row for tables (the CLI's and the Home page's)."""
    cfg, st = record.config, record.status
    summary = st.summary if st else {}
    return {
        "id": record.id,
        "name": cfg.name if cfg else "",
        "state": record.state,
        "dataset": cfg.dataset if cfg else "",
        "backbone": cfg.backbone if cfg else "",
        "strategy": cfg.strategy if cfg else "",
        "val_accuracy": summary.get("val_accuracy"),
        "epochs": summary.get("epochs_completed"),
        "created": st.created_at if st else "",
        "problem": record.problem or (st.error if st else "") or "",
    }


# -- progress bar for foreground training -------------------------------------------
def _progress_line(events: list[dict], total_epochs: int) -> str:
    epoch_done = max((e["epoch"] for e in events if e.get("event") == "epoch_end"), default=0)
    last_batch = next(
        (e for e in reversed(events) if e.get("event") in ("batch", "epoch_end")), None
    )
    frac = epoch_done / total_epochs if total_epochs else 0.0
    detail = ""
    if last_batch and last_batch.get("event") == "batch":
        frac += last_batch["batch"] / max(last_batch["batches"], 1) / max(total_epochs, 1)
        detail = (
            f" batch {last_batch['batch']}/{last_batch['batches']}"
            f" {last_batch['images_per_sec']:.0f} img/s ETA {last_batch['eta_s']:.0f}s"
        )
    last_epoch = next((e for e in reversed(events) if e.get("event") == "epoch_end"), None)
    if last_epoch:
        logs = last_epoch.get("logs", {})
        detail += "  " + " ".join(
            f"{k}={logs[k]:.3f}"
            for k in ("loss", "accuracy", "val_loss", "val_accuracy")
            if k in logs
        )
    width = 30
    filled = int(width * min(frac, 1.0))
    return f"epoch {epoch_done}/{total_epochs} [{'#' * filled}{'.' * (width - filled)}]{detail}"


def _follow(ws, run_id: str, total_epochs: int, quiet: bool) -> runs.RunRecord:
    tty = sys.stderr.isatty()
    last = ""
    while True:
        record = runs.read_run(ws, run_id)
        if not quiet:
            line = f"{record.state}: " + _progress_line(
                runs.read_progress(record.dir), total_epochs
            )
            if line != last:
                print(("\r" if tty else "") + line + ("" if tty else "\n"), end="", file=sys.stderr)
                last = line
        if record.state in runs.FINAL_STATES or record.status is None:
            if not quiet and tty:
                print(file=sys.stderr)
            return record
        if record.state == runs.RUNNING and not jobs.worker_alive(record.status):
            jobs.reconcile(ws)
            continue
        time.sleep(0.5)


def _final_line(record: runs.RunRecord) -> dict:
    st = record.status
    return {
        "run_id": record.id,
        "status": record.state,
        "metrics": st.summary if st else {},
        "error": st.error if st else record.problem,
    }


# -- commands -------------------------------------------------------------------------
def cmd_train(args, ws) -> int:
    base: dict = {}
    if args.config:
        try:
            base = read_json(args.config)
        except FileNotFoundError:
            raise UserError(f"Config file {args.config} does not exist.") from None
        except ValueError as exc:
            raise UserError(f"Config file {args.config} is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise UserError(f"Config file {args.config} must hold a JSON object.")
    overrides = list(args.set or [])
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    config = apply_overrides(base, overrides)
    _check_dataset_exists(ws, config.dataset)
    run_id = jobs.submit(ws, config)
    if args.detach:
        _print_json({"run_id": run_id, "status": runs.read_run(ws, run_id).state})
        return EXIT_OK
    print(f"Run {run_id} started; Ctrl+C stops watching (training continues).", file=sys.stderr)
    try:
        record = _follow(ws, run_id, config.total_epochs, args.quiet)
    except KeyboardInterrupt:
        print(
            f"\nStopped watching. `python -m tlcore runs cancel {run_id}` stops the run.",
            file=sys.stderr,
        )
        return EXIT_OK
    _print_json(_final_line(record))
    return EXIT_OK if record.state == runs.FINISHED else EXIT_FAILED


def _check_dataset_exists(ws, name: str) -> None:
    try:
        from tlcore import datasets
    except ImportError:  # pragma: no cover - datasets is part of the package
        return
    try:
        datasets.load_dataset(ws, name)
    except datasets.DatasetError as exc:
        raise UserError(str(exc)) from None


def cmd_runs(args, ws) -> int:
    if args.runs_cmd == "list":
        rows = [run_row(r) for r in runs.list_runs(ws)]
        if args.json:
            _print_json(rows)
        elif not rows:
            print("No runs yet. Start one with `python -m tlcore train --set dataset=NAME`.")
        else:
            for row in rows:
                row["val_accuracy"] = _fmt_metric(row["val_accuracy"])
            print(
                _table(
                    rows,
                    ["id", "state", "dataset", "backbone", "strategy", "val_accuracy", "problem"],
                )
            )
        return EXIT_OK
    if args.runs_cmd == "rebuild-index":
        from tlcore import index

        n_runs, n_datasets = index.rebuild(ws)
        _print_json({"runs": n_runs, "datasets": n_datasets})
        return EXIT_OK
    record = runs.read_run(ws, args.run_id)
    if args.runs_cmd == "show":
        _print_json(
            {
                "id": record.id,
                "dir": str(record.dir),
                "state": record.state,
                "problem": record.problem,
                "status": record.status.__dict__ if record.status else None,
                "config": record.config.to_dict() if record.config else None,
            }
        )
        return EXIT_OK
    if args.runs_cmd == "cancel":
        state = jobs.cancel(ws, args.run_id)
        _print_json(
            {
                "run_id": args.run_id,
                "status": state,
                "cancel_requested": state in (runs.RUNNING, runs.CANCELLED),
            }
        )
        return EXIT_OK
    if args.runs_cmd == "resume":
        jobs.resume(ws, args.run_id)
        if args.detach:
            _print_json({"run_id": args.run_id, "status": runs.read_run(ws, args.run_id).state})
            return EXIT_OK
        record = _follow(ws, args.run_id, record.config.total_epochs, args.quiet)
        _print_json(_final_line(record))
        return EXIT_OK if record.state == runs.FINISHED else EXIT_FAILED
    raise UserError(f"unknown runs command {args.runs_cmd!r}")


def cmd_datasets(args, ws) -> int:
    from tlcore import datasets

    if args.datasets_cmd == "list":
        items = datasets.list_datasets(ws)
        rows = [_dataset_row(d) for d in items]
        if args.json:
            _print_json(rows)
        elif not rows:
            print("No datasets yet. Import one: `python -m tlcore datasets import --demo`.")
        else:
            print(_table(rows, ["id", "name", "classes", "images", "problem"]))
        return EXIT_OK
    if args.datasets_cmd == "show":
        ds = datasets.load_dataset(ws, args.name)
        _print_json({"manifest": ds.manifest, "report": ds.report})
        return EXIT_OK
    if args.datasets_cmd == "delete":
        if not args.yes:
            raise UserError(
                f"Deleting dataset {args.name!r} cannot be undone; add --yes to confirm."
            )
        datasets.delete_dataset(ws, args.name)
        _print_json({"deleted": args.name})
        return EXIT_OK
    # import
    options = datasets.ImportOptions(
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        mode=args.mode,
    )
    progress = _stderr_progress("Importing")
    if args.demo:
        ds = datasets.import_demo(ws, progress=progress)
    elif args.zip:
        ds = datasets.import_zip(
            ws, Path(args.zip), name=args.name, options=options, progress=progress
        )
    elif args.folder:
        ds = datasets.import_folder(
            ws, Path(args.folder), name=args.name, options=options, progress=progress
        )
    elif args.keras:
        ds = datasets.import_keras_dataset(
            ws, args.keras, max_per_class=args.max_per_class, progress=progress
        )
    else:
        raise UserError("Say what to import: --demo, --zip FILE, --folder DIR or --keras NAME.")
    print(file=sys.stderr)
    _print_json(
        {
            "id": ds.id,
            "name": ds.name,
            "classes": ds.classes,
            "images": ds.num_images,
            "already_existed": bool(getattr(ds, "already_existed", False)),
        }
    )
    return EXIT_OK


def _dataset_row(item) -> dict:
    manifest = getattr(item, "manifest", None) or {}
    return {
        "id": getattr(item, "id", manifest.get("id", "")),
        "name": getattr(item, "name", manifest.get("name", "")),
        "classes": len(manifest.get("classes", [])),
        "images": manifest.get("num_images", ""),
        "problem": getattr(item, "problem", "") or "",
    }


def _stderr_progress(label: str):
    tty = sys.stderr.isatty()
    last = [-1]

    def report(fraction: float, message: str = "") -> None:
        pct = int(fraction * 100)
        if pct == last[0] and not tty:
            return
        last[0] = pct
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        prefix, end = ("\r", "") if tty else ("", "\n")
        print(f"{prefix}{label} [{bar}] {pct:3d}% {message[:60]}", end=end, file=sys.stderr)

    return report


def cmd_not_yet(args, ws) -> int:
    raise UserError(
        f"`{args.command}` is not available in this version yet; see the README's roadmap."
    )


# -- parser ---------------------------------------------------------------------------
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

    p_train = sub.add_parser(
        "train",
        help="start a training run",
        description="Start a training run. Fields come from --config, then --set overrides, "
        "e.g. --set backbone=MobileNet --set alpha=0.25 --set epochs=5.",
    )
    p_train.add_argument("--config", help="a JSON run configuration")
    p_train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one configuration field (repeatable)",
    )
    p_train.add_argument("--dataset", help="shorthand for --set dataset=NAME")
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

    p_eval = sub.add_parser("evaluate", help="evaluate a finished run")
    p_eval.add_argument("run_id")
    p_eval.add_argument("--dataset", help="evaluate on another imported dataset")
    p_eval.add_argument("--report", help="write a self-contained HTML report here")
    p_pred = sub.add_parser("predict", help="predict images with a finished run's model")
    p_pred.add_argument("run_id")
    p_pred.add_argument("images", nargs="+", help="image files or folders")
    p_pred.add_argument("--csv", help="write the predictions to this CSV file")
    p_exp = sub.add_parser("export", help="export a finished run's model")
    p_exp.add_argument("run_id")
    p_exp.add_argument(
        "--format", default="keras", help="keras, savedmodel, tflite, tflite-int8, onnx"
    )
    p_exp.add_argument("--out", help="where to write the export bundle")
    return parser


COMMANDS = {
    "train": cmd_train,
    "runs": cmd_runs,
    "datasets": cmd_datasets,
    "evaluate": cmd_not_yet,
    "predict": cmd_not_yet,
    "export": cmd_not_yet,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ws = open_workspace(args.workspace)
        return COMMANDS[args.command](args, ws)
    except (UserError, ValueError, LookupError, StorageError, runs.InvalidTransitionError) as exc:
        if isinstance(exc, StorageError):
            message = exc.strerror
        elif isinstance(exc, KeyError) and exc.args:
            message = exc.args[0]
        else:
            message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
