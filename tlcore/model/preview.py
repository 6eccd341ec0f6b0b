"""The Model page's architecture preview, built outside the web server.

Building a network takes Keras (seconds, and memory the web server should not hold), so
`describe` runs in its own process (``python -m tlcore preview``, started by `request`)
and stores its result under ``<workspace>/cache/previews/<key>.json``; the page reads
it back with `cached` (plain JSON, no Keras) and shows a note while it is being built.
The same process checks a weights file against the network when one is given.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tlcore.config import RunConfig
from tlcore.fileio import atomic_write_json, read_json
from tlcore.model import strategies
from tlcore.store import jobs
from tlcore.store.workspace import Workspace

PREVIEW_DIR = "previews"
PENDING_TIMEOUT_S = 300  # a request older than this is retried (its process died)


def _key(structure: RunConfig, num_classes: int, weights_file: str | None) -> str:
    stamp = ""
    if weights_file:
        try:
            st = Path(weights_file).stat()
            stamp = f"{weights_file}:{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            stamp = f"{weights_file}:missing"
    blob = f"{structure.to_json()}|{num_classes}|{stamp}".encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _path(ws: Workspace, key: str) -> Path:
    return ws.cache_dir / PREVIEW_DIR / f"{key}.json"


def cached(
    ws: Workspace, structure: RunConfig, num_classes: int, weights_file: str | None = None
) -> dict | None:
    """The stored preview (see `describe`), or None when it has not been built yet."""
    try:
        data = read_json(_path(ws, _key(structure, num_classes, weights_file)))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "phases" in data else None


def request(
    ws: Workspace, structure: RunConfig, num_classes: int, weights_file: str | None = None
) -> None:
    """Starts building the preview in its own process, unless one is already at it."""
    key = _key(structure, num_classes, weights_file)
    pending = _path(ws, key).with_suffix(".pending")
    if pending.exists() and time.time() - pending.stat().st_mtime < PENDING_TIMEOUT_S:
        return
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.touch()
    args = ["preview", "--structure", structure.to_json(), "--classes", str(num_classes)]
    if weights_file:
        args += ["--weights-file", weights_file]
    jobs.start_cli(ws, *args)


def build_and_store(
    ws: Workspace, structure: RunConfig, num_classes: int, weights_file: str | None = None
) -> dict:
    """`describe` the network and store it where `cached` finds it (imports Keras)."""
    key = _key(structure, num_classes, weights_file)
    data = describe(structure, num_classes)
    data["weights_problem"] = weights_problem(structure, weights_file) if weights_file else None
    path = _path(ws, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)
    path.with_suffix(".pending").unlink(missing_ok=True)
    return data


def _shape_text(shape) -> str:
    if isinstance(shape, list):
        return " + ".join(_shape_text(s) for s in shape)
    dims = [str(d) for d in tuple(shape)[1:]]
    return "×".join(dims) if dims else ""


def _status(row: dict, phase_name: str) -> str:
    """How a layer takes part in a phase. Batch-norm moving statistics never count as
    trainable weights, so "partly" is reserved for bias-only training of the backbone."""
    if not row["params"]:
        return "no weights"
    if not row["trainable_params"]:
        return "frozen"
    if phase_name == "bias_only" and row["part"] == strategies.BACKBONE_NAME:
        return "partly"
    return "trains"


def describe(structure: RunConfig, num_classes: int) -> dict:
    """Layer rows and parameter totals per training phase, and the backbone's blocks.

    Returns:
        ``{"phases": [{"total", "trainable", "by_part", "rows": [{"block", "part",
        "layer", "type", "output", "params", "trainable_params", "status"}]}],
        "blocks": [{"block", "layers", "params"}]}``.
    """
    from tlcore.model import models

    model = models.build_model(structure, num_classes)
    phases = []
    for phase in strategies.training_phases(structure):
        models.apply_phase(model, structure, phase)
        summary = models.trainable_variables_summary(model)
        rows = []
        for row in models.describe_model(model, structure):
            part = row["part"]
            rows.append(
                {
                    "block": row["block"] if part == strategies.BACKBONE_NAME else part,
                    "part": part,
                    "layer": row["name"],
                    "type": row["type"].replace("BatchNormalization", "BatchNorm"),
                    "output": _shape_text(row["output_shape"]),
                    "params": int(row["params"]),
                    "trainable_params": int(row["trainable_params"]),
                    "status": _status(row, phase.name),
                }
            )
        phases.append(
            {
                "total": int(summary["total_params"]),
                "trainable": int(summary["trainable_params"]),
                "by_part": summary["by_part"],
                "rows": rows,
            }
        )
    blocks = [
        {"block": b["block"], "layers": len(b["layers"]), "params": int(b["params"])}
        for b in models.backbone_blocks(model, structure)
    ]
    return {"phases": phases, "blocks": blocks}


def weights_problem(structure: RunConfig, path: str) -> str | None:
    """Why the weights file does not fit the network, or None when it loads."""
    from tlcore.model import models
    from tlcore.model.weights import WeightsMismatchError

    try:
        models.build_model(structure.replace(weights=f"file:{path}"), 2)
    except (WeightsMismatchError, FileNotFoundError, ValueError, OSError) as exc:
        return str(exc)
    return None
