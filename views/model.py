"""Model: backbone, weights, head and freezing strategy for the next run."""

from ui.common import empty_state, page_header, workspace

ws = workspace()
page_header("Model", "Pick a pretrained backbone, its weights, a new head, and what stays frozen.")
empty_state(
    "Import a dataset first: the model's output layer needs its classes.",
    action="Import a dataset",
    page="dataset",
)
