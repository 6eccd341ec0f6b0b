"""Tests for the dataset catalog's import options (tlcore.data.catalog): the training share."""

from __future__ import annotations

import pytest

from tlcore.data.catalog import MIN_TRAIN_FRACTION, DatasetError, ImportOptions


@pytest.mark.parametrize(("val", "test"), [(0.45, 0.45), (0.1, 0.8), (0.0, 0.9), (0.8, 0.1)])
def test_validation_and_test_may_take_all_but_the_training_share(val, test):
    options = ImportOptions(val_fraction=val, test_fraction=test)
    assert 1.0 - options.val_fraction - options.test_fraction == pytest.approx(MIN_TRAIN_FRACTION)


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.45), (0.0, 0.95), (0.46, 0.45)])
def test_less_than_the_training_share_left_is_refused_with_the_values(val, test):
    with pytest.raises(DatasetError) as err:
        ImportOptions(val_fraction=val, test_fraction=test)
    message = str(err.value)
    assert f"at least {MIN_TRAIN_FRACTION:.0%} for training" in message
    assert f"Received: val_fraction={val}, test_fraction={test}" in message
