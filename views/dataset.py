"""Dataset: import images, inspect the report, manage datasets."""

from ui.common import empty_state, page_header, workspace

ws = workspace()
page_header(
    "Dataset",
    "Bring your own images: a zip of class folders, images per class, or a server folder.",
)
empty_state("No datasets yet. Import a zip of class folders or the built-in demo dataset to begin.")
