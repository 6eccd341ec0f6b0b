"""Train again with these settings: a new run's configuration from an earlier run's.

`config_from_run` reads the run folder's frozen ``config.json`` and keeps every setting that
defines how the model is built and trained, so the new run repeats the old one, or a variant
of it (``overrides``, another ``dataset``). What belonged to that run only is dropped:

- its name: the new run is called ``"<old name> (again)"`` (``"(again 2)"``, ``"(again 3)"``
  for copies of copies); an unnamed run stays unnamed, so the studio's usual title
  (``"<backbone> on <dataset>"``) follows the dataset it now trains on;
- its membership of a strategy sweep (``extra["sweep"]``, ``extra["sweep_role"]``,
  ``extra["sweep_source"]``) and its being the from-scratch twin of another run
  (``extra["baseline_of"]``): a copy answers neither question, and counting it would
  change what the sweep or the "did transfer help?" verdict says;
- its resume state: status, progress, checkpoints and backups live in the run folder, not
  in the config, so the new run starts at epoch 1 in a folder of its own;
- a recipe label (``extra["preset"]``) the new settings no longer match.

The seed is kept: the same settings on the same dataset give the same initial head,
shuffling and augmentation, so training again repeats the run (as far as the hardware's
kernels are deterministic); ``--set seed=N`` draws another. Where the copy came from is
recorded as ``extra["trained_again_from"]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tlcore.config import RunConfig, apply_overrides
from tlcore.data import datasets
from tlcore.store import runs
from tlcore.store.workspace import Workspace
from tlcore.training import presets

EXTRA_FROM_RUN = "trained_again_from"  # config.extra: the run whose settings these are
SWEEP_SOURCE = "sweep_source"  # config.extra of a sweep's runs: the run the sweep started from
AGAIN = "again"
MAX_NAME = 120  # RunConfig.name's limit
_AGAIN_SUFFIX = re.compile(rf"\s*\({AGAIN}(?: (\d+))?\)$")


class CloneError(ValueError):
    """A run whose settings cannot be used again, with what to do instead."""


def again_name(name: str) -> str:
    """The name of a run trained again: ``"flowers"`` → ``"flowers (again)"`` →
    ``"flowers (again 2)"`` → ``"flowers (again 3)"``; an empty name stays empty."""
    name = name.strip()
    if not name:
        return ""
    found = _AGAIN_SUFFIX.search(name)
    count = 1
    if found:
        count = int(found.group(1) or 1) + 1
        name = name[: found.start()].rstrip()
    suffix = f" ({AGAIN})" if count == 1 else f" ({AGAIN} {count})"
    return name[: MAX_NAME - len(suffix)].rstrip() + suffix


def _run_only_extras() -> tuple[str, ...]:
    # Imported here: the sweep and comparison modules load scikit-learn, which pages and
    # commands that never train again should not wait for.
    from tlcore.evaluation.compare import EXTRA_BASELINE_OF
    from tlcore.training.sweep import EXTRA_ROLE, EXTRA_SWEEP

    return (EXTRA_SWEEP, EXTRA_ROLE, SWEEP_SOURCE, EXTRA_BASELINE_OF, EXTRA_FROM_RUN)


def config_from_run(
    ws: Workspace,
    run_id: str,
    *,
    dataset: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> RunConfig:
    """The configuration of a new run with ``run_id``'s settings (see the module docstring).

    Args:
        ws: the workspace.
        run_id: the run whose ``config.json`` to start from; it may be in any state.
        dataset: train on this dataset instead (a name or an id, checked like anything a
            user types); default None, the run's own.
        overrides: ``{field: value}`` as text, applied last and parsed exactly as
            ``train --set field=value`` (``{"epochs": "5", "dense_units": "256,128"}``);
            default None, none.

    Returns:
        A validated `RunConfig` for a dataset that exists in ``ws``.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no run ``run_id``.
        CloneError: the run's ``config.json`` is missing or unreadable.
        ValueError: an override names an unknown field or has a bad value, or the dataset
            does not exist (`tlcore.data.datasets.DatasetError`); each names the value.
    """
    record = runs.read_run(ws, run_id)
    if record.config is None:
        raise CloneError(
            f"Run {run_id}'s settings cannot be read ({record.problem}), so it cannot be "
            "trained again. Start a new run on the Model page, or with "
            "`python -m tlcore train --config FILE`."
        )
    old = record.config
    dropped = _run_only_extras()
    extra = {k: v for k, v in old.extra.items() if k not in dropped}
    base = old.to_dict() | {"name": again_name(old.name), "extra": extra | {EXTRA_FROM_RUN: run_id}}
    if dataset is not None:
        if not isinstance(dataset, str) or not dataset.strip():
            raise ValueError(
                f"dataset must name an imported dataset. Received: dataset={dataset!r}"
            )
        base["dataset"] = dataset.strip()
    config = apply_overrides(base, [f"{k}={v}" for k, v in (overrides or {}).items()])
    datasets.load_dataset(ws, config.dataset)  # DatasetError says which and what to do
    if "preset" in config.extra and not _has_preset(config, config.extra["preset"]):
        config = config.replace(extra={k: v for k, v in config.extra.items() if k != "preset"})
    return config


def _has_preset(config: RunConfig, name: object) -> bool:
    """Whether ``config`` still has every setting of the recipe called ``name``."""
    preset = presets.PRESETS.get(name) if isinstance(name, str) else None
    return preset is not None and all(getattr(config, k) == v for k, v in preset.settings.items())


def config_for_version(ws: Workspace, run_id: str, dataset_id: str) -> RunConfig:
    """``run_id``'s settings again on another version of its dataset (a fix), named after
    both: ``"<the run's title> · v2"``, so lists and charts tell the two runs apart."""
    config = config_from_run(ws, run_id, dataset=dataset_id)
    version = datasets.load_dataset(ws, dataset_id)
    record = runs.read_run(ws, run_id)
    title = record.config.name.strip() or f"{record.config.backbone} on {version.name}"
    title = _AGAIN_SUFFIX.sub("", title)
    suffix = f" · v{version.version}"
    return config.replace(name=title[: MAX_NAME - len(suffix)].rstrip() + suffix)
