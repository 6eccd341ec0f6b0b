"""The one rule that picks a run's kept model, and the summary built from it."""

import math

from tlcore.training import kept_model


def _row(epoch, **logs):
    return {"epoch": epoch, **logs}


def test_best_validation_accuracy_wins_over_lower_loss():
    history = [
        _row(1, val_accuracy=0.70, val_loss=0.40),
        _row(2, val_accuracy=0.80, val_loss=0.60),
        _row(3, val_accuracy=0.75, val_loss=0.30),
    ]
    assert kept_model.kept_epoch(history)["epoch"] == 2


def test_ties_on_accuracy_go_to_the_lower_validation_loss():
    history = [
        _row(1, val_accuracy=0.80, val_loss=0.60),
        _row(2, val_accuracy=0.80, val_loss=0.50),
        _row(3, val_accuracy=0.80, val_loss=0.55),
    ]
    assert kept_model.kept_epoch(history)["epoch"] == 2


def test_without_validation_the_lowest_training_loss_is_kept():
    history = [_row(1, loss=0.9, accuracy=0.9), _row(2, loss=0.5, accuracy=0.8)]
    assert kept_model.kept_epoch(history)["epoch"] == 2
    assert kept_model.rule_text(False) != kept_model.rule_text(True)


def test_non_finite_epochs_are_never_kept():
    history = [_row(1, val_accuracy=math.nan, val_loss=1.0), _row(2, loss=math.inf)]
    assert kept_model.kept_epoch(history) is None
    assert kept_model.rank({"val_accuracy": "high"}) is None
