"""The Home page (AppTest): its runs table shows every column, whole, at a usual window."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT, tiny_config
from tlcore.store import runs

TIMEOUT_S = 120
# The page's content at a 1400 px wide window with the sidebar open is about 940 px; the
# row checkbox takes about 35 of them.
COLUMNS_ROOM_PX = 905


def _finished(ws, name: str, summary: dict) -> str:
    record = runs.create_run(ws, tiny_config("flowers5", name=name))
    runs.set_state(ws, record.id, runs.RUNNING)
    runs.set_state(ws, record.id, runs.FINISHED, summary=summary)
    return record.id


def _home(ws) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_runs_table_fits_the_page_and_shows_whole_numbers(ws):
    _finished(
        ws,
        "flowers5 · sweep 2 · fine-tune top",
        {"val_accuracy": 0.5434, "test_accuracy": 0.7712, "epochs_completed": 5, "kept_epoch": 3},
    )
    failed = runs.create_run(ws, tiny_config("flowers5", name="old experiment"))
    runs.set_state(ws, failed.id, runs.FAILED, error="The weights file is not an HDF5 file. " * 4)
    at = _home(ws)
    (table,) = [d for d in at.dataframe if d.key == "home_runs"]
    frame = table.value
    assert list(frame.columns) == [
        "Run",
        "State",
        "Dataset",
        "Backbone",
        "Strategy",
        "Val. acc.",
        "Test acc.",
        "Epochs",
        "Created",
    ]  # Epochs and Created are there; a long problem is not a column that pushes them off
    config = json.loads(table.proto.columns)
    widths = {name: config[name]["width"] for name in frame.columns}
    assert all(isinstance(w, int) for w in widths.values()), widths
    assert sum(widths.values()) <= COLUMNS_ROOM_PX, widths
    finished = frame.iloc[1]
    # The dataset has its own column: the name starts with what tells the run apart.
    assert finished["Run"] == "sweep 2 · fine-tune top"
    assert finished["Strategy"] == "Full fine-tune"
    assert finished["Epochs"] == "5 (kept 3)"
    assert finished["Created"] == "just now"
    # Accuracies are numbers shown whole, with one decimal and the unit ("54.3 %").
    assert round(finished["Val. acc."], 2) == 54.34 and round(finished["Test acc."], 2) == 77.12
    for column in ("Val. acc.", "Test acc."):
        assert config[column]["type_config"]["format"] == "%.1f %%", config[column]
    assert frame.iloc[0]["State"] == "failed" and frame.iloc[0]["Epochs"] == ""


def test_an_owner_column_takes_its_room_from_the_run_names(ws):
    record = runs.create_run(ws, tiny_config("flowers5", name="pets"), owner="ana")
    runs.set_state(ws, record.id, runs.RUNNING)
    at = _home(ws)
    (table,) = [d for d in at.dataframe if d.key == "home_runs"]
    assert table.value.iloc[0]["Owner"] == "ana"
    config = json.loads(table.proto.columns)
    assert sum(config[name]["width"] for name in table.value.columns) <= COLUMNS_ROOM_PX


def test_a_selected_run_with_a_problem_shows_it_below_the_table(ws):
    failed = runs.create_run(ws, tiny_config("flowers5", name="old experiment"))
    runs.set_state(ws, failed.id, runs.FAILED, error="The weights file is not an HDF5 file.")
    at = _home(ws)
    at.session_state["home_runs"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("old experiment" in e and "not an HDF5 file" in e for e in errors), errors
