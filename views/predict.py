"""Predict: classify new images with a finished run's model."""

from ui.common import empty_state, page_header, workspace

ws = workspace()
page_header("Predict", "Point a trained model at new images and see why it decided.")
empty_state(
    "No finished runs yet. Once a run finishes, its model can classify new images here.",
    action="Go to Training",
    page="training",
)
