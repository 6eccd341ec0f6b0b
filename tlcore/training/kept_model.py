"""Which epoch's model a run keeps — one stated rule, used everywhere.

The checkpoint callback keeps the model of the best epoch by this rule, and a run's
summary reports *that* epoch's figures, so Home, lists, Predict, the model card and the
report all show the accuracy of the model that is actually saved.

Rule: the best validation accuracy; among epochs tied on it, the lower validation
loss. Without a validation split: the lowest training loss.
"""

from __future__ import annotations

import math

RULE = "the epoch with the best validation accuracy (ties: the lower validation loss)"
RULE_WITHOUT_VALIDATION = "the epoch with the lowest training loss (no validation split)"


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rank(logs: dict | None) -> tuple[float, ...] | None:
    """A sort key for one epoch's logs, smaller is better; None when it can't be ranked.

    Epochs with a validation accuracy rank before (better than) epochs ranked only by
    training loss, so a run's ranking never mixes the two.
    """
    logs = logs or {}
    val_accuracy = _finite(logs.get("val_accuracy"))
    if val_accuracy is not None:
        val_loss = _finite(logs.get("val_loss"))
        return (0.0, -val_accuracy, val_loss if val_loss is not None else math.inf)
    loss = _finite(logs.get("loss"))
    return (1.0, loss) if loss is not None else None


def is_better(candidate: tuple | None, best: tuple | None) -> bool:
    return candidate is not None and (best is None or candidate < best)


def kept_epoch(history: list[dict]) -> dict | None:
    """The history row of the epoch the rule keeps (first of exact ties), or None."""
    best_row, best_key = None, None
    for row in history:
        key = rank(row)
        if is_better(key, best_key):
            best_row, best_key = row, key
    return best_row


def rule_text(has_validation: bool) -> str:
    return RULE if has_validation else RULE_WITHOUT_VALIDATION


def headline(summary: dict | None) -> str:
    """The kept model's figures in a few words, for lists and dropdowns.

    ``"86.0% val. (epoch 7) · 84.7% test"``; ``"86.0% val. (5-fold CV)"`` for a head
    chosen by cross-validation; ``""`` when the run has no figures yet.
    """
    summary = summary or {}
    parts = []
    val = summary.get("val_accuracy")
    if isinstance(val, (int, float)):
        if str(summary.get("validation_method", "")).startswith(tuple("0123456789")):
            where = summary["validation_method"].split(" on ")[0].replace("cross-validation", "CV")
        elif summary.get("kept_epoch"):
            where = f"epoch {summary['kept_epoch']}"
        else:
            where = ""
        parts.append(f"{val:.1%} val." + (f" ({where})" if where else ""))
    test = summary.get("test_accuracy")
    if isinstance(test, (int, float)):
        label = "test" if summary.get("evaluated_split", "test") == "test" else "evaluated"
        parts.append(f"{test:.1%} {label}")
    return " · ".join(parts)
