"""One AppTest per page: it renders with an empty workspace and says what to do first."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT

# The first page to import TensorFlow in this process needs more than AppTest's 3 s.
TIMEOUT_S = 120

EMPTY_STATE_GUIDANCE = {
    "home": "Start by importing images",
    "dataset": "No datasets yet",
    "model": "Import a dataset first",
    "training": "Nothing is training",
    "evaluation": "No finished runs",
    "predict": "No finished runs yet",
}


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


def open_page(page: str) -> AppTest:
    """Runs the app and switches to ``page``, as a click in the sidebar would."""
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    if page != "home":
        at.switch_page(f"views/{page}.py").run()
    return at


@pytest.mark.parametrize("page", sorted(EMPTY_STATE_GUIDANCE))
def test_page_renders_empty_workspace_with_guidance(page, ws):
    at = open_page(page)
    assert not at.exception, [e.value for e in at.exception]
    assert EMPTY_STATE_GUIDANCE[page] in _text(at)


def test_app_builds_navigation(ws):
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Transfer Learning Studio"
