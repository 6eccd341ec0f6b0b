"""What a label check found, as stored in the workspace (``cache/label_check/<id>.json``).

Written by `tlcore.training.label_errors` (which needs Keras for the features) and read by
the Dataset page (which must not import it), so the stored form lives here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tlcore.fileio import atomic_write_json, read_json
from tlcore.store.workspace import Workspace

FORMAT_VERSION = 1
CACHE_DIR = "label_check"


@dataclass(frozen=True)
class Suspect:
    """One image whose label looks wrong. ``path`` as inside the dataset
    (``train/bees/123.jpg``); ``score`` in [0, 1], higher is more suspicious."""

    path: str
    given: str
    suggested: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LabelCheck:
    """What one check found, as stored for the pages."""

    dataset_id: str
    backbone: str
    alpha: float
    images: int
    folds: int
    cv_accuracy: float
    suspects: list[Suspect]
    created_at: float

    def to_dict(self) -> dict:
        return asdict(self) | {"format_version": FORMAT_VERSION}


def store(ws: Workspace, check: LabelCheck) -> None:
    path = _result_path(ws, check.dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, check.to_dict())


def stored(ws: Workspace, dataset_id: str) -> LabelCheck | None:
    """The last check of a dataset, or None (never checked, or unreadable)."""
    try:
        data = read_json(_result_path(ws, dataset_id))
        return LabelCheck(
            dataset_id=str(data["dataset_id"]),
            backbone=str(data["backbone"]),
            alpha=float(data["alpha"]),
            images=int(data["images"]),
            folds=int(data["folds"]),
            cv_accuracy=float(data["cv_accuracy"]),
            suspects=[Suspect(**s) for s in data["suspects"]],
            created_at=float(data["created_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _result_path(ws: Workspace, dataset_id: str) -> Path:
    return ws.cache_dir / CACHE_DIR / f"{dataset_id}.json"
