"""The command line: ``python -m tlcore``. Calls the same functions as the pages.

Every command exits 0 on success, 1 when the thing asked for failed (a run failed), and
2 on a user error (bad value, unknown run), printing what happened and what to do.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from tlcore.cli_datasets import cmd_datasets
from tlcore.cli_output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UserError,
    escape_control,
    fmt_metric,
    follow_run,
    print_json,
    stderr_progress,
    table,
)
from tlcore.cli_parser import build_parser
from tlcore.config import RunConfig, apply_overrides, parse_override
from tlcore.evaluation import stats
from tlcore.fileio import StorageError, read_json
from tlcore.store import jobs, runs, tasks
from tlcore.store.workspace import open_workspace
from tlcore.training import presets
from tlcore.training.progress import schedule_label


def _final_line(record: runs.RunRecord) -> dict:
    st = record.status
    return {
        "run_id": record.id,
        "status": record.state,
        "metrics": st.summary if st else {},
        "error": st.error if st else record.problem,
    }


# -- commands -------------------------------------------------------------------------
def config_from_args(ws, args) -> RunConfig:
    """The run configuration of ``--config FILE`` plus ``--set`` and ``--dataset`` overrides,
    validated, for a dataset that exists."""
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
    preset = getattr(args, "preset", None)
    if preset:
        chosen = presets.get_preset(preset)
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in chosen.settings.items()}
        base = base | settings | {"extra": base.get("extra", {}) | {"preset": preset}}
    config = apply_overrides(base, overrides)
    _check_dataset_exists(ws, config.dataset)
    return config


def _config_from_run(ws, args) -> RunConfig:
    """The settings of run ``--from RUN`` with ``--dataset`` and ``--set`` applied."""
    from tlcore.training import clone

    if getattr(args, "preset", None):
        raise UserError(
            "--from takes every setting of the run; --preset would replace them. Leave out "
            "--preset, or change single settings with --set KEY=VALUE."
        )
    overrides: dict[str, str] = {}
    for item in args.set or []:
        key, _ = parse_override(item)  # the error `train --set` gives for a bad one
        overrides[key] = item.split("=", 1)[1].strip()
    return clone.config_from_run(ws, args.from_run, dataset=args.dataset, overrides=overrides)


def cmd_train(args, ws) -> int:
    if getattr(args, "from_run", None):
        config = _config_from_run(ws, args)
    else:
        config = config_from_args(ws, args)
    run_id = jobs.submit(ws, config)
    if args.detach:
        print_json({"run_id": run_id, "status": runs.read_run(ws, run_id).state})
        return EXIT_OK
    print(f"Run {run_id} started; Ctrl+C stops watching (training continues).", file=sys.stderr)
    try:
        record = follow_run(ws, run_id, config.total_epochs, args.quiet)
    except KeyboardInterrupt:
        print(
            f"\nStopped watching. `python -m tlcore runs cancel {run_id}` stops the run.",
            file=sys.stderr,
        )
        return EXIT_OK
    print_json(_final_line(record))
    return EXIT_OK if record.state == runs.FINISHED else EXIT_FAILED


def _check_dataset_exists(ws, name: str) -> None:
    try:
        from tlcore.data import datasets
    except ImportError:  # pragma: no cover - datasets is part of the package
        return
    try:
        datasets.load_dataset(ws, name)
    except datasets.DatasetError as exc:
        raise UserError(str(exc)) from None


def cmd_runs(args, ws) -> int:
    if args.runs_cmd == "list":
        rows = [runs.run_row(r) for r in runs.list_runs(ws)]
        if args.json:
            print_json(rows)
        elif not rows:
            print("No runs yet. Start one with `python -m tlcore train --set dataset=NAME`.")
        else:
            for row in rows:
                row["val_accuracy"] = fmt_metric(row["val_accuracy"])
            print(
                table(
                    rows,
                    ["id", "state", "dataset", "backbone", "strategy", "val_accuracy", "problem"],
                )
            )
        return EXIT_OK
    if args.runs_cmd == "rebuild-index":
        from tlcore.data import datasets
        from tlcore.store import index

        n_runs, n_datasets = index.rebuild(ws, runs.index_rows(ws), datasets.manifests(ws))
        print_json({"runs": n_runs, "datasets": n_datasets})
        return EXIT_OK
    record = runs.read_run(ws, args.run_id)
    if args.runs_cmd == "show":
        print_json(
            {
                "id": record.id,
                "dir": str(record.dir),
                "state": record.state,
                "problem": record.problem,
                "status": record.status.__dict__ if record.status else None,
                "config": record.config.to_dict() if record.config else None,
                "schedule": schedule_label(record.config) if record.config else None,
            }
        )
        return EXIT_OK
    if args.runs_cmd == "cancel":
        state = jobs.cancel(ws, args.run_id)
        print_json(
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
            print_json({"run_id": args.run_id, "status": runs.read_run(ws, args.run_id).state})
            return EXIT_OK
        record = follow_run(ws, args.run_id, record.config.total_epochs, args.quiet)
        print_json(_final_line(record))
        return EXIT_OK if record.state == runs.FINISHED else EXIT_FAILED
    raise UserError(f"unknown runs command {args.runs_cmd!r}")


# -- evaluation, sweeps and baselines ---------------------------------------------------
def _task_reporter(args, ws) -> tasks.TaskReporter | contextlib.nullcontext:
    """The background task this command reports to (``--task``, used by the app), or a
    stand-in that reports nowhere."""
    if not args.task:
        return contextlib.nullcontext()
    return tasks.TaskReporter(ws, args.run_id, args.task)


def cmd_evaluate(args, ws) -> int:
    with _task_reporter(args, ws) as task:
        return _evaluate(args, ws, task)


def _evaluate(args, ws, task: tasks.TaskReporter | None) -> int:
    from tlcore.evaluation import evaluate, run_report

    if task is not None:
        progress = task.progress
    else:
        progress = None if args.json else stderr_progress("Evaluating")
    if args.fresh:
        result = evaluate.evaluate_run(ws, args.run_id, dataset=args.dataset, progress=progress)
    else:
        result = evaluate.ensure_evaluation(
            ws, args.run_id, dataset=args.dataset, progress=progress
        )
    record = runs.read_run(ws, args.run_id)
    divergence = ((record.status.summary if record.status else None) or {}).get("divergence")
    headline = json.loads(evaluate.summary_json(result, divergence))
    if task is not None:
        task.finish(headline)
    written = {}
    if args.report:
        written = run_report.export_report(
            ws, args.run_id, args.report, dataset_id=result.dataset_id
        )
    if args.json:
        data = headline
        data["report"] = {k: str(v) for k, v in written.items()} or None
        print_json(data)
        return EXIT_OK
    summary = result.summary()
    print(f"Run {result.run_id} on {result.dataset_name!r}, {result.split_label}:")
    if result.note:
        print(f"  note: {escape_control(result.note)}")
    shown = stats.format_accuracy(result.metrics.accuracy, result.metrics.num_samples)
    print(f"  {'accuracy':<24} {shown}")
    for key, value in summary.items():
        if value is not None and key not in ("accuracy", "accuracy_ci95", "collapsed"):
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"  {key:<24} {shown}")
    if result.validation is not None:
        shown = stats.format_accuracy(result.validation.accuracy, result.validation.num_samples)
        print(f"  {'validation accuracy':<24} {shown}")
    found = result.metrics.collapse
    if found:
        message = stats.collapse_message(found, result.class_names, result.split_label)
        print("  WARNING: " + escape_control(message))
    if divergence:
        print("  WARNING: " + escape_control(divergence))
    print(f"  stored in {result.folder}")
    for key, path in written.items():
        print(f"  {key} written to {path}")
    return EXIT_OK


def cmd_sweep(args, ws) -> int:
    from tlcore.training import sweep

    if args.results:
        results = sweep.sweep_results(ws, args.results)
        print_json(_sweep_json(results))
        return EXIT_OK
    if not args.dataset:
        raise UserError("Say which dataset to sweep on: --dataset NAME (or --results SWEEP_ID).")
    config = config_from_args(ws, args)
    started = sweep.start_sweep(ws, config, unfreeze=args.unfreeze)
    if not args.wait:
        print_json({"sweep_id": started.id, "runs": started.runs})
        return EXIT_OK
    print(
        f"Sweep {started.id}: {len(started.runs)} runs queued; waiting for them "
        "(Ctrl+C stops waiting, training continues).",
        file=sys.stderr,
    )
    try:
        for role, run_id in started.runs.items():
            record = jobs.wait_for(ws, run_id)
            print(f"  {role}: {record.state}", file=sys.stderr)
    except KeyboardInterrupt:
        print(
            f"\nStopped waiting. `python -m tlcore sweep --results {started.id}` shows results.",
            file=sys.stderr,
        )
        return EXIT_OK
    results = sweep.sweep_results(ws, started.id)
    print_json(_sweep_json(results))
    chosen = results.winner or results.tied  # a tie is an answer too
    return EXIT_OK if chosen else EXIT_FAILED


def _sweep_json(results) -> dict:
    return {
        "sweep_id": results.sweep.id,
        "winner": results.winner,
        "tied": list(results.tied),
        "message": results.message,
        "note": results.note,
        "finished": results.finished,
        "pending": results.pending,
        "runs": results.rows,
    }


def cmd_baseline(args, ws) -> int:
    from tlcore.evaluation import compare
    from tlcore.training import sweep

    baseline_id = sweep.start_baseline(ws, args.run_id)
    if not args.wait:
        print_json({"run_id": args.run_id, "baseline_id": baseline_id})
        return EXIT_OK
    print(f"Baseline {baseline_id} queued; waiting for it.", file=sys.stderr)
    jobs.wait_for(ws, args.run_id)
    jobs.wait_for(ws, baseline_id)
    verdict = compare.baseline_comparison(ws, args.run_id)
    if verdict is None:
        print_json(
            {
                "twin_run_id": baseline_id,
                "verdict": "inconclusive",
                "p_value": None,
                "reason": "The twin could not be found after it finished.",
            }
        )
        return EXIT_FAILED
    if args.json:
        print_json(verdict.to_dict())
    else:
        print(escape_control(verdict.reason))
    return EXIT_OK if verdict.baseline_state == runs.FINISHED else EXIT_FAILED


# -- prediction and export ------------------------------------------------------------
def cmd_predict(args, ws) -> int:
    import zipfile

    from tlcore import fileio
    from tlcore.serving import predict

    predictor = predict.Predictor.for_run(ws, args.run_id)
    results: list = []
    for raw in args.images:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = predictor.predict_folder(path, args.top_k)
        elif path.is_file() and path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            found = predictor.predict_zip(path, args.top_k)
        else:
            results.extend(predictor.predict_images([path], args.top_k))
            continue
        prefix = raw.rstrip("/")
        results.extend(
            predict.Prediction(f"{prefix}/{p.name}", p.top, p.error, p.reason) for p in found
        )
    rows = predict.prediction_rows(results, args.top_k)
    if args.json:
        print_json(rows)
    else:
        shown = []
        for p in results:
            others = ", ".join(f"{c} {v:.3f}" for c, v in p.top[1:])
            shown.append(
                {
                    "file": p.name,
                    "predicted": p.predicted_class or "-",
                    "probability": fmt_metric(p.confidence) or "-",
                    "next": others if p.ok else p.error,
                }
            )
        print(table(shown, ["file", "predicted", "probability", "next"]))
    summary = predict.summarize(results)
    if args.csv:
        fileio.atomic_write_text(args.csv, predict.predictions_csv(results, args.top_k))
        summary["csv"] = str(args.csv)
    print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    return EXIT_OK if summary["failed"] == 0 else EXIT_FAILED


def cmd_export(args, ws) -> int:
    with _task_reporter(args, ws) as task:
        return _export(args, ws, task)


def _export(args, ws, task: tasks.TaskReporter | None) -> int:
    from tlcore.serving import export

    formats = [f.strip() for item in (args.format or ["keras"]) for f in item.split(",")]
    formats = export.check_formats([f for f in formats if f])
    progress = task.progress if task is not None else stderr_progress("Exporting")
    try:
        result = export.export_run(ws, args.run_id, formats, out_dir=args.out, progress=progress)
    except export.ExportError as exc:
        if task is not None:
            task.fail(str(exc))
        print(f"error: {escape_control(exc)}", file=sys.stderr)
        return EXIT_FAILED
    made = {
        "run_id": args.run_id,
        "bundle": str(result.bundle),
        "agreement_measured_on": result.samples_from,
        "formats": [
            {
                "format": r.format,
                "label": r.label,
                "files": r.files,
                "size_bytes": r.size_bytes,
                "agreement": r.agreement,
                "error": r.error,
            }
            for r in result.formats
        ],
    }
    if task is not None:
        task.finish(made)
    print_json(made)
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_scheduler(args, ws) -> int:
    from tlcore.store import scheduler

    if args.background:
        started = scheduler.ensure_running(ws)
        pid = scheduler.status(ws).pid
        print(
            f"Scheduler started for {ws.root}."
            if started
            else f"A scheduler already serves {ws.root} (pid {pid}).",
            file=sys.stderr,
        )
        return 0
    return scheduler.serve(ws)


def cmd_hash_password(args) -> int:
    """Prompts for a password twice and prints its hash; needs no workspace."""
    import getpass

    from tlcore.store import accounts

    if args.user:
        try:
            accounts.check_name(args.user, what="--user")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    password = getpass.getpass("Password: ")
    if getpass.getpass("Same password again: ") != password:
        raise UserError("The two passwords differ; nothing was printed. Run the command again.")
    line = accounts.hash_password(password)
    if args.user:
        name = json.dumps(args.user.strip())  # a TOML basic string is a JSON string
        print(f'{name} = {{ password_hash = "{line}", role = "{args.role}" }}')
        print("Paste it under [studio_users] in .streamlit/secrets.toml.", file=sys.stderr)
    else:
        print(line)
        print(
            "Paste it as password_hash (in [studio_users] or [studio] of "
            ".streamlit/secrets.toml), or set it as TLS_PASSWORD_HASH.",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_preview(args, ws) -> int:
    from tlcore.model import preview

    try:
        structure = RunConfig.from_json(args.structure)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    data = preview.build_and_store(ws, structure, args.classes, args.weights_file)
    print(f"{len(data['phases'])} phase(s), {data['phases'][0]['total']:,} parameters")
    return EXIT_OK


def cmd_calibrate(args, ws) -> int:
    from tlcore.training import estimate

    try:
        config = RunConfig(
            dataset="calibration",
            backbone=args.backbone,
            alpha=args.alpha,
            image_size=args.image_size,
            batch_size=args.batch_size,
        )
        from tlcore.model.models import validate_model_config

        validate_model_config(config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    entry = estimate.calibrate(ws, config)
    if args.json:
        print_json(entry)
    else:
        print(
            f"{args.backbone} alpha {args.alpha:g}: {entry['forward_ips']:.1f} images/s forward, "
            f"{entry['train_ips']:.1f} training; TensorFlow import {entry['import_s']:.1f} s."
        )
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------
COMMANDS = {
    "train": cmd_train,
    "runs": cmd_runs,
    "datasets": cmd_datasets,
    "evaluate": cmd_evaluate,
    "sweep": cmd_sweep,
    "baseline": cmd_baseline,
    "predict": cmd_predict,
    "export": cmd_export,
    "calibrate": cmd_calibrate,
    "preview": cmd_preview,
    "scheduler": cmd_scheduler,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "hash-password":
            return cmd_hash_password(args)
        ws = open_workspace(args.workspace)
        if args.command in ("runs", "train"):
            try:  # runs whose worker died are shown (and resumable) as interrupted
                jobs.reconcile(ws)
            except OSError as exc:  # disk full: list them as they are, marked next time
                print(f"warning: {exc.strerror or exc}", file=sys.stderr)
        return COMMANDS[args.command](args, ws)
    except (UserError, ValueError, LookupError, StorageError, runs.InvalidTransitionError) as exc:
        if isinstance(exc, StorageError):
            message = exc.strerror
        elif isinstance(exc, KeyError) and exc.args:
            message = exc.args[0]
        else:
            message = str(exc)
        print(f"error: {escape_control(message)}", file=sys.stderr)
        return EXIT_USAGE
