"""Evaluation: how good a finished run is and where it goes wrong."""

from ui.common import empty_state, page_header, workspace

ws = workspace()
page_header("Evaluation", "Accuracy, per-class metrics, confusion matrix and comparison of runs.")
empty_state(
    "No finished runs to evaluate yet. Train a model first.",
    action="Go to Training",
    page="training",
)
