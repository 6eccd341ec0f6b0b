"""The report's inline SVG charts: round axes, gaps for missing values, escaped labels."""

from __future__ import annotations

import math
import re

from markupsafe import Markup

from tlcore.evaluation.metrics import CalibrationBin, Curve
from tlcore.evaluation.svg_charts import (
    MAX_CURVES,
    UNIT_AXIS,
    Series,
    axis,
    is_finite,
    line_chart,
    nice_step,
    path_data,
    pr_chart,
    reliability_diagram,
    roc_chart,
    training_charts,
)

EVIL = "<script>alert(1)</script>"


def _identity(v):
    return v


def test_nice_steps_are_1_2_2_5_or_5_times_a_power_of_ten():
    assert nice_step(1.0, 5) == 0.2
    assert nice_step(137, 5) == 50
    assert nice_step(0.974, 5) == 0.2
    assert nice_step(12, 4) == 5
    assert nice_step(1, 4) == 0.25


def test_axis_ticks_are_round_and_cover_the_range():
    assert axis(0.013, 0.987) == (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # no 0.6000000001
    start, stop, ticks = axis(0.0, 1.37)
    assert (start, stop, ticks) == (0.0, 1.5, [0.0, 0.5, 1.0, 1.5])
    start, stop, ticks = axis(1, 23, target=8)
    assert start <= 1 and stop >= 23
    assert all(t == round(t) for t in ticks)


def test_an_empty_or_undefined_range_still_gives_an_axis():
    start, stop, ticks = axis(3.0, 3.0)  # one epoch, or a constant loss
    assert start < 3.0 < stop and len(ticks) >= 2
    assert axis(math.nan, math.nan)[:2] == (0.0, 1.0)


def test_a_nan_breaks_the_line_and_it_goes_on_after():
    d = path_data([1, 2, 3, 4], [1.0, math.nan, 3.0, 4.0], _identity, _identity, step=False)
    assert d == "M1.0,1.0M3.0,3.0L4.0,4.0"
    assert path_data([1, 2], [math.nan, None], _identity, _identity, step=False) == ""


def test_a_step_path_goes_across_then_up():
    d = path_data([0, 1], [0.0, 1.0], _identity, _identity, step=True)
    assert d == "M0.0,0.0L1.0,0.0L1.0,1.0"


def test_finite_means_a_plottable_number():
    assert is_finite(0.5) and is_finite(3)
    assert not any(is_finite(v) for v in (math.nan, math.inf, None, True, "1"))


def test_a_line_chart_escapes_its_labels_and_is_markup():
    series = [Series(EVIL, "#4e79a7", (0.0, 0.5, 1.0), (0.0, math.nan, 1.0), markers=True)]
    svg = line_chart(
        series,
        x_range=UNIT_AXIS,
        y_range=UNIT_AXIS,
        x_label=EVIL,
        y_label='"quoted"',
        vlines=[(0.5, EVIL)],
    )
    assert isinstance(svg, Markup)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script" not in svg
    assert svg.count("&lt;script&gt;") >= 4  # title, marker titles, axis title, vline label
    assert 'aria-label="&#34;quoted&#34; by &lt;script&gt;' in svg
    (d,) = re.findall(r'<path d="([^"]+)"', svg)
    assert d.count("M") == 2  # the NaN in the middle leaves a gap
    assert svg.count("<circle") == 2  # no marker for the missing point


def test_a_series_without_a_finite_point_draws_nothing():
    svg = line_chart(
        [Series("empty", "#000", (1.0, 2.0), (math.nan, math.nan))],
        x_range=UNIT_AXIS,
        y_range=UNIT_AXIS,
        x_label="x",
        y_label="y",
    )
    assert "<path" not in svg


def test_the_reliability_diagram_draws_a_bar_per_non_empty_bin():
    bins = [
        CalibrationBin(lower=0.0, upper=0.5, count=0, mean_confidence=None, accuracy=None),
        CalibrationBin(lower=0.5, upper=0.8, count=3, mean_confidence=0.7, accuracy=0.4),
        CalibrationBin(lower=0.8, upper=1.0, count=5, mean_confidence=0.9, accuracy=1.0),
    ]
    svg = reliability_diagram(bins)
    assert isinstance(svg, Markup)
    assert svg.count("<g>") == 2  # the empty bin draws nothing
    assert svg.count('opacity="0.22"') == 1  # over-confidence only where confidence > accuracy
    assert "confidence 0.5–0.8: 3 images, accuracy 0.400, mean confidence 0.700" in svg


def test_training_charts_mark_the_phase_change_and_skip_an_unrecorded_metric():
    history = [
        {"epoch": 1, "phase": 1, "loss": 1.2, "val_loss": 1.3},
        {"epoch": 2, "phase": 2, "loss": 0.9, "val_loss": math.nan},
    ]
    (loss_title, loss), (accuracy_title, accuracy) = training_charts(history)
    assert (loss_title, accuracy_title) == ("Loss", "Accuracy")
    assert accuracy is None  # no accuracy in this history: "Not recorded"
    assert [s.label for s in loss.series] == ["train loss", "validation loss"]
    assert loss.series[1].dash and not loss.series[0].dash
    assert "phase 2" in loss.svg
    assert training_charts([]) == []


def _curve(name, auc):
    return Curve(name, "roc", (0.0, 1.0), (0.0, 1.0), auc)


def test_roc_and_pr_charts_show_at_most_the_lowest_auc_curves():
    curves = [_curve(f"c{i}", 0.5 + i / 100) for i in range(MAX_CURVES + 3)]
    curves.append(Curve("none", "roc", (), (), None, "no samples of this class"))
    roc = roc_chart(curves)
    assert len(roc.series) == MAX_CURVES
    assert roc.series[0].label == "c0 (0.500)"  # the weakest first
    assert "c12" not in roc.svg
    assert all(s.step for s in pr_chart(curves).series)
    assert roc_chart([curves[-1]]) is None  # no class has a curve
