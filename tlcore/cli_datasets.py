"""``python -m tlcore datasets …``: import, list, show, delete, versions, change, suspects."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from tlcore.cli_output import EXIT_OK, UserError, print_json, stderr_progress, table
from tlcore.store import tasks


def cmd_datasets(args, ws) -> int:
    from tlcore.data import datasets

    command = args.datasets_cmd
    if command == "list":
        return _list(args, ws)
    if command == "show":
        ds = datasets.load_dataset(ws, args.name)
        print_json({"manifest": ds.manifest, "report": ds.report})
        return EXIT_OK
    if command == "delete":
        if not args.yes:
            raise UserError(
                f"Deleting dataset {args.name!r} cannot be undone; add --yes to confirm."
            )
        datasets.delete_dataset(ws, args.name)
        print_json({"deleted": args.name})
        return EXIT_OK
    if command == "versions":
        return _versions(args, ws)
    if command == "change":
        return _change(args, ws)
    if command == "suspects":
        return _suspects(args, ws)
    return _import(args, ws)


def _list(args, ws) -> int:
    from tlcore.data import datasets

    rows = [_dataset_row(d) for d in datasets.list_datasets(ws)]
    if args.json:
        print_json(rows)
    elif not rows:
        print("No datasets yet. Import one: `python -m tlcore datasets import --demo`.")
    else:
        print(table(rows, ["id", "name", "version", "classes", "images", "problem"]))
    return EXIT_OK


def _dataset_row(item) -> dict:
    manifest = getattr(item, "manifest", None) or {}
    return {
        "id": getattr(item, "id", manifest.get("id", "")),
        "name": getattr(item, "name", manifest.get("name", "")),
        "version": getattr(item, "version", 1),
        "classes": len(manifest.get("classes", [])),
        "images": manifest.get("num_images", ""),
        "problem": getattr(item, "problem", "") or "",
    }


def _versions(args, ws) -> int:
    from tlcore.data import versions

    rows = versions.summarize_changes(versions.versions(ws, args.name))
    if args.json:
        print_json(rows)
    else:
        print(table(rows, ["version", "id", "images", "created", "by", "changes"]))
    return EXIT_OK


def _change(args, ws) -> int:
    from tlcore.data import versions

    moves = []
    for spec in args.move or ():
        path, sep, new_class = spec.rpartition("=")
        if not sep or not path or not new_class:
            raise UserError(f"--move takes PATH=CLASS, e.g. train/bees/12.jpg=ants. Got {spec!r}.")
        moves.append((path, new_class))
    added = []
    for spec in args.add or ():
        new_class, sep, file_name = spec.partition("=")
        if not sep or not Path(file_name).is_file():
            raise UserError(f"--add takes CLASS=FILE with an existing file. Got {spec!r}.")
        data = Path(file_name).read_bytes()
        added.append(versions.NewImage(Path(file_name).name, data, new_class))
    changes = versions.VersionChanges(
        excluded=tuple(args.exclude or ()),
        moved=tuple(moves),
        added=tuple(added),
        note=args.note or "",
    )
    ds = versions.make_version(ws, args.name, changes)
    print_json(
        {
            "id": ds.id,
            "name": ds.name,
            "version": ds.version,
            "images": ds.num_images,
            "changes": versions.change_summary(ds.manifest),
            "already_existed": bool(ds.already_existed),
        }
    )
    return EXIT_OK


def _suspects(args, ws) -> int:
    from tlcore.data import datasets
    from tlcore.training import label_errors

    dataset = datasets.load_dataset(ws, args.name)
    subject = tasks.dataset_subject(dataset.id)
    reporter = tasks.TaskReporter(ws, subject, args.task) if args.task else nullcontext()
    with reporter as task:  # the app's background task, when it started this
        check = label_errors.find_suspects(
            ws,
            dataset,
            backbone=args.backbone,
            alpha=args.alpha,
            progress=task.progress if task else stderr_progress("Checking labels"),
        )
        if task:
            task.finish({"dataset_id": dataset.id, "suspects": len(check.suspects)})
    rows = [s.to_dict() for s in check.suspects]
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"No likely label errors among {check.images} images.")
    else:
        print(table(rows, ["path", "given", "suggested", "score"]))
        print(
            f"{len(rows)} likely mislabelled of {check.images} "
            f"({check.folds}-fold cross-validated accuracy {check.cv_accuracy:.1%})."
        )
    return EXIT_OK


def _import(args, ws) -> int:
    from tlcore.data import datasets

    options = datasets.ImportOptions(
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        mode=args.mode,
    )
    progress = stderr_progress("Importing")
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
    print_json(
        {
            "id": ds.id,
            "name": ds.name,
            "classes": ds.classes,
            "images": ds.num_images,
            "already_existed": bool(getattr(ds, "already_existed", False)),
        }
    )
    return EXIT_OK
