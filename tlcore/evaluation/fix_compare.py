"""Before and after a fix: a run retrained on a corrected version of its dataset, compared
with the run it was retrained from on the same images.

The two runs trained on different versions, so their own evaluations are on different test
images (and labels). They are compared on the **newer version's test split**: the labels
as fixed, and images the earlier run never trained on either (a change keeps every image in
its split; added photos are split by content). The earlier run is evaluated on that version
too (``evaluate RUN --dataset NEWER``), then an exact McNemar test on the images both scored
says whether the fix made a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlcore.data import datasets
from tlcore.evaluation import compare, stats
from tlcore.evaluation.stored import EvaluationError, EvaluationResult, load_evaluation
from tlcore.store import run_layout, runs
from tlcore.store.workspace import Workspace

EXTRA_FROM_RUN = "trained_again_from"  # as `tlcore.training.clone` records it


@dataclass(frozen=True)
class BeforeAfter:
    """The two runs, the dataset version they are compared on, and what is known so far.

    Attributes:
        before, after: the earlier run and the one retrained on the fixed version.
        dataset_id, dataset_version: the version both are scored on (``after``'s).
        before_dataset_id: the version ``before`` trained on.
        before_result, after_result: their evaluations on ``dataset_id`` (None: not yet).
        paired: the McNemar test (before = A, after = B), once both are evaluated.
    """

    before: runs.RunRecord
    after: runs.RunRecord
    dataset_id: str
    dataset_version: int
    before_dataset_id: str
    before_result: EvaluationResult | None
    after_result: EvaluationResult | None
    paired: stats.PairedComparison | None

    @property
    def needs_evaluation(self) -> list[str]:
        """The runs (ids) still to be evaluated on ``dataset_id``, once they finished."""
        out = []
        for record, result in ((self.before, self.before_result), (self.after, self.after_result)):
            if result is None and record.state == runs.FINISHED:
                out.append(record.id)
        return out

    def verdict(self) -> str:
        """A sentence for people, e.g. "After the fix is better (p = 0.012; 9 of 90 …)"."""
        if self.paired is None:
            return "Waiting for both runs to be evaluated on the same images."
        return self.paired.wording("Before the fix", "After the fix")


def retrained_from(ws: Workspace, run_id: str) -> runs.RunRecord | None:
    """The run ``run_id`` was trained again from, when it trained on another version of the
    same dataset (a fix); else None."""
    after = runs.read_run(ws, run_id)
    source = (after.config.extra or {}).get(EXTRA_FROM_RUN) if after.config else None
    if not isinstance(source, str):
        return None
    try:
        before = runs.read_run(ws, source)
    except (runs.RunNotFoundError, ValueError):
        return None
    pair = (run_layout.trained_dataset_id(before.dir), run_layout.trained_dataset_id(after.dir))
    if None in pair or pair[0] == pair[1]:
        return None
    lineages = set()
    for dataset_id in pair:
        try:
            lineages.add(datasets.load_dataset(ws, dataset_id).lineage)
        except datasets.DatasetError:
            return None
    return before if len(lineages) == 1 else None


def before_after(ws: Workspace, run_id: str) -> BeforeAfter | None:
    """The comparison for a run retrained after a fix (see the module docstring), or None
    when ``run_id`` is not one.

    Raises:
        tlcore.store.runs.RunNotFoundError: there is no run ``run_id``.
    """
    before = retrained_from(ws, run_id)
    if before is None:
        return None
    after = runs.read_run(ws, run_id)
    dataset_id = run_layout.trained_dataset_id(after.dir)
    version = datasets.load_dataset(ws, dataset_id).version
    before_result = _evaluation(ws, before, dataset_id)
    after_result = _evaluation(ws, after, dataset_id)
    paired = None
    if before_result is not None and after_result is not None:
        paired = compare.paired_comparison(before_result, after_result)
    return BeforeAfter(
        before=before,
        after=after,
        dataset_id=dataset_id,
        dataset_version=version,
        before_dataset_id=run_layout.trained_dataset_id(before.dir),
        before_result=before_result,
        after_result=after_result,
        paired=paired,
    )


def _evaluation(ws: Workspace, record: runs.RunRecord, dataset_id: str):
    if record.state != runs.FINISHED:
        return None
    try:
        return load_evaluation(ws, record.id, dataset_id)
    except EvaluationError:  # changed since, or damaged: evaluated again
        return None
