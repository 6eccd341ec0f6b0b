"""The server's own timing of page runs (`ui.page_timing`), read by bench/bench_server.py."""

from __future__ import annotations

import json

import pytest

from ui import page_timing


class RerunException(Exception):  # named like Streamlit's own control-flow exception
    pass


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(page_timing.TIMES_ENV, raising=False)
    with page_timing.PageRun().until_end("Home"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_each_run_is_one_line_with_its_page_time_and_outcome(tmp_path, monkeypatch):
    target = tmp_path / "times.jsonl"
    monkeypatch.setenv(page_timing.TIMES_ENV, str(target))
    with page_timing.PageRun().until_end("Home"):
        pass
    with pytest.raises(RerunException), page_timing.PageRun().until_end("Training"):
        raise RerunException()
    with pytest.raises(ValueError), page_timing.PageRun().until_end("Model"):
        raise ValueError("a bug")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["page"], r["outcome"]) for r in lines] == [
        ("Home", "done"),
        ("Training", "rerun"),
        ("Model", "error"),
    ]
    assert all(r["seconds"] >= 0 and r["start"] > 0 for r in lines)
