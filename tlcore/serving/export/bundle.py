"""Exporting a run: each chosen format written and checked, then everything zipped.

`export_run` stages the bundle folder next to the target, runs every format's writer and
checker (`tlcore.serving.export.formats`), writes the model card, the class names and
``usage.py``, and zips the folder atomically; `list_exports` and `bundle_summary` read
earlier bundles back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tlcore.fileio import StorageError, atomic_write_json, atomic_write_text, read_json
from tlcore.model import model_store
from tlcore.serving.export.formats import (
    CLASSES_JSON,
    EXPORT_FORMATS,
    LABELS_FILE,
    MODEL_CARD_JSON,
    MODEL_CARD_MARKDOWN,
    USAGE_FILE,
    AgreementCheck,
    FormatResult,
    check_formats,
    usage_order,
)
from tlcore.serving.export.model_card import build_model_card, model_card_markdown
from tlcore.serving.export.rendering import render
from tlcore.serving.export.writers import (
    LAYERS_MODULE_FILE,
    ExportError,
    ExportJob,
    keras_probabilities,
    spread,
)
from tlcore.store import runs
from tlcore.store.run_layout import CLASSES_FILE, EXPORTS_DIR
from tlcore.store.workspace import Workspace

VERIFY_SAMPLES = 32
SPLIT_PREFERENCE = ("test", "val", "train")
USAGE_TEMPLATE = "usage.py.j2"

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ExportResult:
    """What `export_run` made: the bundle zip, each format's result and the model card."""

    bundle: Path
    formats: list[FormatResult]
    card: dict
    samples_from: str

    @property
    def failed(self) -> list[FormatResult]:
        return [r for r in self.formats if not r.ok]


def list_exports(run_dir: str | os.PathLike) -> list[Path]:
    """The export bundles of a run, newest first."""
    folder = Path(run_dir) / EXPORTS_DIR
    if not folder.is_dir():
        return []
    bundles = [p for p in folder.glob("*.zip") if not p.name.startswith(".")]
    return sorted(bundles, key=lambda p: p.name, reverse=True)


def export_run(
    ws: Workspace,
    run_id: str,
    formats: Sequence[str],
    *,
    out_dir: str | os.PathLike | None = None,
    samples: int = VERIFY_SAMPLES,
    progress: Progress | None = None,
) -> ExportResult:
    """Exports a finished run's model in ``formats``, checks each and bundles them.

    Args:
        ws: the workspace.
        run_id: a finished run.
        formats: keys of `FORMATS` (``keras``, ``savedmodel``, ``tflite``,
            ``tflite-int8``, ``onnx``).
        out_dir: the folder for the bundle; default ``<run>/exports/``.
        samples: images to compare each format with the Keras model on (default 32).
        progress: called as ``progress(fraction, message)``.

    Returns:
        An `ExportResult`; formats that could not be made carry an ``error`` and are
        left out of the bundle.

    Raises:
        ValueError: an unknown format.
        tlcore.model.model_store.ModelLoadError: the run is not finished or its model cannot
            be loaded (`ModelIntegrityError`: changed after training).
        ExportError: no format could be made.
        StorageError: the bundle could not be written.
    """
    chosen = check_formats(formats)
    report = progress or (lambda fraction, message: None)
    report(0.0, "Loading and checking the model")
    record = runs.read_run(ws, run_id)
    loaded = model_store.load_run_model(ws, run_id)
    model = loaded.model
    classes = model_store.run_classes(record.dir)
    size = int(model.input_shape[1])
    target_dir = Path(out_dir).expanduser() if out_dir else record.dir / EXPORTS_DIR
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"Could not create {target_dir}: {exc.strerror or exc}."
        ) from exc

    report(0.05, "Loading sample images")
    dataset = _run_dataset(ws, record)
    x, samples_from = _sample_images(dataset, size, samples, record.config.seed)
    reference = keras_probabilities(model, x)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    bundle_name = f"{run_id}-export"
    staging = target_dir / f".staging-{stamp}-{secrets.token_hex(3)}"
    folder = staging / bundle_name
    folder.mkdir(parents=True)
    job = ExportJob(
        model=model,
        model_sha256=loaded.sha256,
        run_dir=record.dir,
        folder=folder,
        scratch=staging / "scratch",
        x=x,
        dataset=dataset,
        size=size,
    )
    job.scratch.mkdir()
    results: list[FormatResult] = []
    try:
        span = 0.8 / len(chosen)
        for i, key in enumerate(chosen):
            report(0.1 + i * span, f"Exporting {EXPORT_FORMATS[key].label} and checking it")
            results.append(_export_one(key, job, reference))
        made = [r for r in results if r.ok]
        if not made:
            reasons = " ".join(f"{r.label}: {r.error}" for r in results)
            raise ExportError(f"No format could be exported. {reasons}")
        report(0.9, "Writing the model card and the bundle")
        card = build_model_card(ws, record, classes, size, loaded.sha256, results, samples_from)
        _write_bundle_texts(folder, card, classes, size, [r.format for r in made], run_id)
        bundle = target_dir / f"{run_id}_export_{stamp}.zip"
        _zip_atomically(folder, bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(1.0, "Done")
    return ExportResult(bundle=bundle, formats=results, card=card, samples_from=samples_from)


def _run_dataset(ws: Workspace, record: runs.RunRecord):
    from tlcore.data import datasets

    try:
        info = read_json(record.dir / CLASSES_FILE)
    except (OSError, ValueError):
        info = {}
    for ref in (info.get("dataset_id"), record.config.dataset):
        if not ref:
            continue
        try:
            return datasets.load_dataset(ws, ref)
        except (datasets.DatasetError, ValueError, OSError):
            continue
    return None


def _sample_images(dataset, size: int, count: int, seed: int) -> tuple[np.ndarray, str]:
    """Images to compare formats on: held-out images of the run's dataset if it is here."""
    from tlcore.data import images, pipeline

    if dataset is not None:
        for split in SPLIT_PREFERENCE:
            items = dataset.items(split)
            if items:
                try:
                    x = pipeline.load_images_array(spread(items, count), size)
                except images.ImageError:
                    break
                return x, f"{len(x)} images of the {split} split of dataset {dataset.name!r}"
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    return x, f"{count} random images (the run's dataset is not in this workspace)"


def agreement(reference: np.ndarray, probs: np.ndarray, check: AgreementCheck) -> dict:
    """How a format's probabilities agree with the Keras model's on the same images, and
    whether that passes ``check`` (the thresholds are recorded with the verdict)."""
    probs = np.asarray(probs, dtype=np.float32)
    diff = np.abs(probs - reference)
    top1 = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
    worst = float(diff.max())
    return {
        "samples": len(reference),
        "top1_match_rate": top1,
        "max_abs_prob_diff": worst,
        "mean_abs_prob_diff": float(diff.mean()),
        "passed": check.passes(top1, worst),
        "min_top1_match_rate": check.min_top1,
        "max_abs_prob_diff_allowed": check.max_prob_diff,
        "rule": check.rule,
    }


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _export_one(key: str, job: ExportJob, reference: np.ndarray) -> FormatResult:
    """Writes one format and checks it with its own runtime; a failure is recorded, and
    what the format had written by then is removed (it stays out of the bundle)."""
    fmt = EXPORT_FORMATS[key]
    started = time.perf_counter()
    folder = job.folder
    try:
        reason = fmt.unavailable()
        if reason:
            raise ExportError(reason)
        fmt.writer(job, fmt)
        probs = fmt.checker(folder / fmt.main_file, job.x)
    except Exception as exc:  # one format failing must not lose the others
        for name in fmt.files:
            _remove(folder / name)
        return FormatResult(
            format=key,
            label=fmt.label,
            seconds=round(time.perf_counter() - started, 2),
            error=_format_error(fmt.label, exc),
            runtime=fmt.runtime,
        )
    files = [name for name in fmt.files if (folder / name).exists()]
    return FormatResult(
        format=key,
        label=fmt.label,
        files=files,
        size_bytes=sum(_size_of(folder / name) for name in files),
        seconds=round(time.perf_counter() - started, 2),
        agreement=agreement(reference, probs, fmt.check),
        runtime=fmt.runtime,
    )


def _format_error(label: str, exc: Exception) -> str:
    if isinstance(exc, ExportError):
        return str(exc)
    text = str(exc).strip().splitlines()
    detail = text[0][:300] if text else type(exc).__name__
    return f"{label} export failed ({type(exc).__name__}: {detail})."


# -- the bundle's texts and the zip -------------------------------------------------------------
def usage_script(run_id: str, size: int, formats: Sequence[str]) -> str:
    """The bundle's ``usage.py`` for ``formats`` (the bundle's, any order)."""
    return render(
        USAGE_TEMPLATE,
        run_id=run_id,
        size=size,
        formats=usage_order(formats),
        files={key: f.main_file for key, f in EXPORT_FORMATS.items()},
        labels_file=LABELS_FILE,
        layers_module=Path(LAYERS_MODULE_FILE).stem,
    )


def _write_bundle_texts(
    folder: Path, card: dict, classes: list[str], size: int, formats: list[str], run_id: str
) -> None:
    atomic_write_json(folder / MODEL_CARD_JSON, card)
    atomic_write_text(folder / MODEL_CARD_MARKDOWN, model_card_markdown(card))
    atomic_write_json(folder / CLASSES_JSON, {"classes": classes})
    atomic_write_text(folder / LABELS_FILE, "\n".join(classes) + "\n")
    atomic_write_text(folder / USAGE_FILE, usage_script(run_id, size, formats))


def _zip_atomically(folder: Path, bundle: Path) -> None:
    """Zips ``folder`` (as the archive's one top folder) into ``bundle``, atomically."""
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder.parent).as_posix())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, bundle)
    except OSError as exc:
        raise StorageError(
            exc.errno, f"Could not write the export bundle {bundle}: {exc.strerror or exc}."
        ) from exc
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def bundle_summary(bundle: str | os.PathLike) -> dict:
    """The model card inside an export bundle (for listing earlier exports); {} if none."""
    try:
        with zipfile.ZipFile(bundle) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/{MODEL_CARD_JSON}")]
            return json.loads(archive.read(names[0])) if names else {}
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
