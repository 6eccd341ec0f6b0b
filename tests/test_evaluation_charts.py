"""The Evaluation page's Plotly figures (`ui.evaluation_charts`)."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.evaluation.metrics import compute_metrics
from ui import evaluation_charts as charts


@pytest.fixture
def metrics():
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(3), 10)
    probs = rng.dirichlet(np.ones(3), size=len(y_true))
    return compute_metrics(y_true, probs, ["ants", "bees", "wasps"])


def _alpha(color: str) -> float:
    """The alpha of a CSS colour; 1 for a colour without one (#RRGGBB, a name)."""
    if color.startswith("rgba("):
        return float(color[5:-1].split(",")[3])
    return 1.0


@pytest.mark.parametrize("normalized", [False, True])
def test_the_confusion_matrix_cells_carry_no_paint_over_the_heatmap(metrics, normalized):
    # The clickable points on the cells once drew a faint black square inside every cell
    # (opacity 0.01), which showed as dark inner squares; they must draw nothing at all,
    # selected or not, and still carry every cell's hover text for the click.
    fig = charts.confusion_matrix_figure(metrics, normalized=normalized, selected=("ants", "bees"))
    (cells,) = [t for t in fig.data if t.type == "scatter"]
    marker = cells.marker
    paint = [marker.opacity, cells.selected.marker.opacity, cells.unselected.marker.opacity]
    assert paint == [0, 0, 0]
    assert _alpha(marker.color) == 0 and (marker.line.width or 0) == 0
    assert len(cells.customdata) == 9 and "true <b>ants</b>" in cells.customdata[0]
    assert "customdata" in cells.hovertemplate
    # The heatmap is still drawn, and the chosen cell outlined.
    assert any(t.type == "heatmap" for t in fig.data)
    assert len(fig.layout.shapes) == 1
