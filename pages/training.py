"""Training: the queue, the current run's live curves, stop and resume."""

from ui.common import empty_state, page_header, workspace

ws = workspace()
page_header("Training", "Runs train in the background; this page follows them live.")
empty_state(
    "Nothing is training. Configure a model, then start a run.",
    action="Choose a model",
    page="model",
)
