"""The Model page's weights overview (`ui.weights_form`, AppTest): a table that fits the
page's narrow column, with each backbone's details on demand."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT
from tlcore.store import jobs

TIMEOUT_S = 120
# The expander's inside at a 1400 px wide window: about 340 px, 35 of them the row checkbox.
COLUMNS_ROOM_PX = 305
MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.fixture(autouse=True)
def empty_keras_home(tmp_path, monkeypatch):
    (tmp_path / "keras_home" / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(jobs, "schedule", lambda ws: [])


def _overview(at: AppTest):
    (table,) = [d for d in at.dataframe if d.key == "weights_overview"]
    return table


def test_the_weights_overview_fits_its_column_and_shows_details_on_demand(ws, tiny_dataset):
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page("views/model.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = _overview(at)
    frame = table.value
    assert list(frame.columns) == ["backbone", "imagenet", "params"]
    config = json.loads(table.proto.columns)
    widths = [config[name]["width"] for name in frame.columns]
    assert sum(widths) <= COLUMNS_ROOM_PX, widths
    assert "Select a backbone" in " ".join(c.value for c in at.caption)

    row = frame.index[frame["backbone"] == "MobileNet v2"][0]
    at.session_state["weights_overview"] = {
        "selection": {"rows": [int(row)], "columns": [], "cells": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    details = " ".join(str(m.value) for m in at.markdown)
    assert "**MobileNet v2** · 224 px by default" in details
    assert "widths with weights: 0.35, 0.5, 0.75, 1, 1.3, 1.4" in details
    assert f"Keras looks for `{MOBILENET_V2_FILE}`" in details
