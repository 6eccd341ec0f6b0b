"""The model card of an export: what the model is, how it was trained, its numbers.

`build_model_card` gathers the card as data (the bundle's ``model_card.json``);
`model_card_markdown` renders it for people (``model_card.md``, from the template
``templates/model_card.md.j2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tlcore.evaluation import stats
from tlcore.fileio import read_json
from tlcore.serving.export.formats import EXPORT_FORMATS, USAGE_FILE, FormatResult
from tlcore.serving.export.rendering import render
from tlcore.serving.export.writers import LAYERS_MODULE_FILE
from tlcore.store import runs
from tlcore.store.run_layout import CLASSES_FILE
from tlcore.store.workspace import Workspace

MODEL_CARD_TEMPLATE = "model_card.md.j2"
PREPROCESSING_TEXT = "raw RGB 0–255, resized to {s}×{s}; preprocessing is inside the model"
RESIZE_TEXT = "bilinear, whole image squeezed into the square (aspect ratio not kept)"
OUTPUT_TEXT = "probabilities (softmax), one per class in the order of 'classes'"


def _software() -> dict:
    import keras
    import tensorflow as tf

    from tlcore import __version__

    versions = {"tlcore": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import tf2onnx

        versions["tf2onnx"] = tf2onnx.__version__
    except ImportError:
        pass
    return versions


def _weights_origin(weights: str) -> str:
    kind, _, ref = weights.partition(":")
    return {
        "imagenet": "ImageNet (Keras applications)",
        "none": "none (random initialisation)",
        "file": f"weights file {Path(ref).name}",
        "run": f"the backbone of run {ref}",
    }.get(kind, weights)


def _input_dtype_text(results: Sequence[FormatResult]) -> str:
    """The input dtype of the exported formats: ``"float32"``, or which ones differ."""
    labels: dict[str, list[str]] = {}
    for r in results:
        if r.ok:
            labels.setdefault(EXPORT_FORMATS[r.format].input_dtype, []).append(r.label)
    if not labels:
        return "float32"
    main = max(labels, key=lambda dtype: len(labels[dtype]))
    others = [f"{dtype} for {', '.join(names)}" for dtype, names in labels.items() if dtype != main]
    return main + (f", except {'; '.join(others)}" if others else "")


def build_model_card(
    ws: Workspace,
    record: runs.RunRecord,
    classes: list[str],
    size: int,
    model_sha256: str,
    results: list[FormatResult],
    samples_from: str,
) -> dict:
    """The model card of an export of ``record``'s model, as JSON-ready data.

    Args:
        ws: the workspace.
        record: the run.
        classes: class names in output order.
        size: the model's input side in pixels.
        model_sha256: the exported model file's hash.
        results: every format asked for, made or not.
        samples_from: what the formats were compared with the Keras model on.
    """
    from tlcore.model.models import training_phases
    from tlcore.model.registry import get_backbone

    config = record.config
    spec = get_backbone(config.backbone)
    try:
        info = read_json(record.dir / CLASSES_FILE)
    except (OSError, ValueError):
        info = {}
    backbone = {"name": spec.name, "display_name": spec.display_name}
    if spec.has_alpha:
        backbone["alpha"] = float(config.alpha)
    return {
        "run_id": record.id,
        "name": config.name or f"{config.backbone} on {config.dataset}",
        "exported_at": runs.now_iso(),
        "classes": classes,
        "num_classes": len(classes),
        "backbone": backbone,
        "weights_origin": _weights_origin(config.weights),
        "strategy": config.strategy,
        "phases": [p.description for p in training_phases(config)],
        "dataset": {
            "name": config.dataset,
            "id": info.get("dataset_id"),
            "content_hash": info.get("dataset_hash"),
        },
        "metrics": runs.read_metrics(record.dir),
        "input": {
            "shape": [None, size, size, 3],
            "dtype": _input_dtype_text(results),
            "layout": "NHWC, RGB",
            "preprocessing": PREPROCESSING_TEXT.format(s=size),
            "resize": RESIZE_TEXT,
        },
        "output": OUTPUT_TEXT,
        "model_sha256": model_sha256,
        "agreement_measured_on": samples_from,
        "formats": [asdict(r) for r in results],
        "software": _software(),
        "config": config.to_dict(),
    }


def _kept_text(metrics: dict) -> str:
    search = metrics.get("head_search")
    if search:
        return f"head chosen by cross-validation ({search.get('description', '')})"
    epoch = metrics.get("kept_epoch")
    return f"epoch {epoch} of {metrics.get('epochs_completed', '?')}" if epoch else "–"


def model_card_markdown(card: dict) -> str:
    """``card`` (from `build_model_card`) as the bundle's ``model_card.md``."""
    backbone = card["backbone"]["display_name"]
    if "alpha" in card["backbone"]:
        backbone += f" (alpha {card['backbone']['alpha']})"
    metrics = card["metrics"] or {}
    made = [f for f in card["formats"] if not f.get("error")]
    checks: dict = {}
    for f in made:  # one line per check, naming the formats it applies to
        check = EXPORT_FORMATS[f["format"]].check
        checks.setdefault(check, []).append(f["label"])
    return render(
        MODEL_CARD_TEMPLATE,
        card=card,
        checks=[
            {"formats": labels, "rule": check.rule, "why": check.why}
            for check, labels in checks.items()
        ],
        failed_checks=[f["label"] for f in made if not f["agreement"].get("passed")],
        size=card["input"]["shape"][1],
        backbone=backbone,
        keep_rule=metrics.get("keep_rule") or "the model saved at the end of training",
        kept=_kept_text(metrics),
        validation_method=metrics.get("validation_method") or "validation split",
        val_accuracy=stats.format_accuracy(metrics.get("val_accuracy"), metrics.get("val_samples")),
        test_accuracy=stats.format_accuracy(
            metrics.get("test_accuracy"), metrics.get("test_samples")
        ),
        train_accuracy=metrics.get("accuracy"),
        epochs=metrics.get("epochs_completed", "–"),
        usage_file=USAGE_FILE,
        keras_file=EXPORT_FORMATS["keras"].main_file,
        layers_file=LAYERS_MODULE_FILE,
    )
