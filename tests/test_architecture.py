"""The architecture holds: no import cycles in the core, and the web server renders its
pages without TensorFlow (the layer contract itself is `lint-imports`, run by run-tests.sh).
Predict is the one page that loads Keras: it runs the model live.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "tlcore"


def _module_graph() -> dict[str, set[str]]:
    """``{module: tlcore modules it imports}``, from every import statement (lazy ones too)."""
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tlcore"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else node.module
                    if target in modules and target != name and not target.endswith("__init__"):
                        graph[name].add(target)
    return graph


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_core_has_no_import_cycle():
    assert _a_cycle(_module_graph()) is None


def test_the_cycle_finder_finds_one():
    assert _a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.slow
@pytest.mark.parametrize("page", ["home", "dataset", "model", "training"])
def test_the_web_server_renders_a_page_without_tensorflow(page, tmp_path):
    from tests.conftest import write_class_folders
    from tlcore.data import datasets
    from tlcore.store.workspace import open_workspace

    ws = open_workspace(tmp_path / "workspace")
    datasets.import_folder(ws, write_class_folders(tmp_path / "src", {"a": 8, "b": 8}), name="ab")
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["TLS_WORKSPACE"] = {str(tmp_path / "workspace")!r}
        os.environ["TLS_AUTO_CALIBRATE"] = "0"
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=120)
        at.run()
        if {page!r} != "home":
            at.switch_page("views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        print("LOADED", loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout, done.stdout[-2000:]


def test_every_strategy_has_one_row_of_facts():
    from tlcore.config import STRATEGIES
    from tlcore.model.strategies import STRATEGY_TABLE
    from tlcore.training.sweep import SWEEP_STRATEGIES

    assert tuple(STRATEGY_TABLE) == STRATEGIES
    assert set(SWEEP_STRATEGIES) <= set(STRATEGIES)


def test_a_phase_is_structured_data():
    from tlcore.config import RunConfig
    from tlcore.model.strategies import training_phases

    config = RunConfig(dataset="d", strategy="two_phase", fine_tune_learning_rate=1e-5)
    first, second = training_phases(config)
    assert first.trains == "training the head on a frozen backbone"
    assert second.trains == "fine-tuning the top 2 blocks of the backbone"
    assert second.description == (
        "phase 2 of 2: fine-tuning the top 2 blocks of the backbone at learning rate 1e-05"
    )
