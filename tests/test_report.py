"""The HTML report and the metrics files: the numbers are there, nothing leaks, files parse."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from importlib import resources

import jinja2
import pytest
from markupsafe import Markup
from PIL import Image

from tlcore.evaluation import metrics_files, report
from tlcore.evaluation.interpret import Interpretation
from tlcore.evaluation.metrics import compute_metrics
from tlcore.evaluation.report import (
    CONFUSION_CSV,
    METRICS_JSON,
    PER_CLASS_CSV,
    read_metrics_file,
    render_html_report,
    render_report_template,
    report_context,
    thumbnail_data_uri,
    write_metrics_files,
)

EVIL = "<script>alert(1)</script>"
CLASSES = ["cat, big", "dog & co", EVIL]
Y = [0, 0, 0, 1, 1, 1, 2, 2]
P = [
    [0.78, 0.16, 0.06],
    [0.55, 0.35, 0.10],
    [0.25, 0.65, 0.10],
    [0.10, 0.85, 0.05],
    [0.15, 0.75, 0.10],
    [0.05, 0.33, 0.62],
    [0.35, 0.45, 0.20],
    [0.10, 0.18, 0.72],
]  # accuracy 5/8, top-2 7/8, macro F1 131/210 = 0.6238, ECE 0.38375 (see test_metrics.py)
HISTORY = [
    {"epoch": 1, "phase": 1, "loss": 1.2, "accuracy": 0.5, "val_loss": 1.3, "val_accuracy": 0.45},
    {"epoch": 2, "phase": 1, "loss": 0.9, "accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.55},
    {"epoch": 3, "phase": 2, "loss": 0.7, "accuracy": 0.7, "val_loss": float("nan")},
]
# A src/href/url() that would fetch something: the report must have none.
REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?(?:https?:|//)""", re.I
)


@pytest.fixture(scope="module")
def metrics():
    return compute_metrics(Y, P, CLASSES, top_k=(1, 2))


def _render(metrics, **changes):
    args = dict(
        run_id="run-1",
        config={"backbone": "MobileNetV2", "learning_rate": 0.001, "name": '"quoted" <b>'},
        dataset_summary={"name": "pets", "images per class": {"cat, big": 3, "dog & co": 3}},
        history=HISTORY,
        metrics=metrics,
        generated_at="2025-01-01 00:00 UTC",
    )
    args.update(changes)
    return render_html_report(**args)


def _png(path, colour=(200, 30, 30), size=(300, 200)):
    Image.new("RGB", size, colour).save(path)
    return path


def test_report_prints_the_numbers(metrics):
    html = _render(metrics)
    assert "62.5%" in html  # accuracy
    assert "87.5%" in html  # top-2 accuracy
    assert "0.624" in html  # macro F1
    assert "0.384" in html  # ECE
    assert "run-1" in html
    for section in ("Setup", "Training curves", "Per-class metrics", "Confusion matrix"):
        assert f"<h2>{section}</h2>" in html
    assert "phase 2" in html  # the boundary between training phases is marked
    assert html.count("<svg") >= 5  # loss, accuracy, ROC, PR, reliability
    assert html.count("<section") == html.count("</section>")


def test_user_strings_are_escaped(metrics):
    html = _render(metrics, run_id='r"1<i>', title="<b>Title</b>")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "dog &amp; co" in html
    # Jinja's autoescape (markupsafe) writes a double quote as &#34;.
    assert "&#34;quoted&#34; &lt;b&gt;" in html
    assert "r&#34;1&lt;i&gt;" in html and 'r"1<i>' not in html
    assert "<title>&lt;b&gt;Title&lt;/b&gt;</title>" in html


def test_report_is_self_contained(metrics, tmp_path):
    rows = Interpretation(Y, P, CLASSES).top_losses(3)
    images = [_png(tmp_path / f"{i}.png") for i in range(3)]
    html = _render(metrics, worst_errors=rows, thumbnails=images)
    assert not REMOTE.search(html)
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html
    assert len(html) < 200_000  # no embedded charting library


def test_worst_errors_embed_small_jpeg_thumbnails(metrics, tmp_path):
    rows = Interpretation(Y, P, CLASSES, [f"img/{i}.png" for i in range(8)]).top_losses(3)
    images = [_png(tmp_path / f"{i}.png") for i in range(3)]
    html = _render(metrics, worst_errors=rows, thumbnails=images)
    uris = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 3
    thumb = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert thumb.format == "JPEG" and max(thumb.size) == 160
    assert "img/6.png" in html  # worst first
    assert html.index("img/6.png") < html.index("img/2.png") < html.index("img/5.png")


def test_thumbnails_from_a_callable_and_unreadable_images(metrics, tmp_path):
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    rows = [
        {"path": "a.png", "true": "cat, big", "predicted": EVIL, "confidence": 0.9, "loss": 2.3},
        {"path": "b.png", "true": "cat, big", "predicted": "dog & co", "confidence": 0.8},
    ]
    sources = {"a.png": good, "b.png": bad}
    html = _render(metrics, worst_errors=rows, thumbnails=lambda row: sources[row["path"]])
    assert html.count("data:image/jpeg;base64,") == 1
    assert "image unavailable" in html
    assert "90.0%" in html and "2.300" in html


def test_only_well_formed_image_data_uris_are_embedded(metrics):
    png = thumbnail_data_uri(Image.new("L", (20, 10)))
    rows = [
        {"path": "ok", "true": "a", "predicted": "b", "thumbnail": png},
        {
            "path": "x",
            "true": "a",
            "predicted": "b",
            "thumbnail": 'data:image/png;base64,A" onerror="alert(2)',
        },
        {"path": "y", "true": "a", "predicted": "b", "thumbnail": "javascript:alert(1)"},
    ]
    html = _render(metrics, worst_errors=rows)
    assert png in html
    assert "onerror" not in html and "javascript:" not in html
    assert html.count("image unavailable") == 2


def test_thumbnail_list_must_match_the_errors(metrics, tmp_path):
    rows = Interpretation(Y, P, CLASSES).top_losses(3)
    with pytest.raises(ValueError, match="Received: 1 thumbnails for 3 errors"):
        _render(metrics, worst_errors=rows, thumbnails=[tmp_path / "a.png"])


def test_report_without_history_or_errors_still_renders(metrics):
    html = _render(metrics, history=[], worst_errors=[], config={}, dataset_summary={})
    assert "No training history" in html
    assert "No misclassified images" in html


def test_report_notes_classes_without_a_curve():
    m = compute_metrics([0, 0, 1], [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]], CLASSES)
    html = _render(m)
    assert "No curve for &lt;script&gt;alert(1)&lt;/script&gt;: no samples of this class" in html


def test_report_refuses_something_that_is_not_metrics():
    with pytest.raises(TypeError, match="Received: dict"):
        _render({"accuracy": 0.5})


def test_write_metrics_files_writes_parseable_files(metrics, tmp_path):
    folder = tmp_path / "run" / "evaluation"
    paths = write_metrics_files(metrics, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [METRICS_JSON, PER_CLASS_CSV, CONFUSION_CSV]
    )  # no temp files left behind
    assert paths["metrics"] == folder / METRICS_JSON

    assert json.loads((folder / METRICS_JSON).read_text())["accuracy"] == 0.625
    assert read_metrics_file(folder) == metrics

    with open(folder / PER_CLASS_CSV, newline="", encoding="utf-8") as fh:
        per_class = list(csv.DictReader(fh))
    assert [r["class"] for r in per_class] == CLASSES  # a comma in a name survives
    assert float(per_class[0]["precision"]) == 1.0
    assert float(per_class[1]["f1"]) == pytest.approx(4 / 7)
    assert int(per_class[2]["support"]) == 2
    assert float(per_class[0]["roc_auc"]) == pytest.approx(14 / 15)

    with open(folder / CONFUSION_CSV, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    assert header == ["true \\ predicted", *CLASSES]
    assert rows == [
        ["cat, big", "2", "1", "0"],
        ["dog & co", "0", "2", "1"],
        [EVIL, "0", "1", "1"],
    ]


def test_write_metrics_files_leaves_empty_auc_blank(tmp_path):
    m = compute_metrics([0, 1], [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], ["a", "b", "c"])
    write_metrics_files(m, tmp_path)
    with open(tmp_path / PER_CLASS_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[2]["roc_auc"] == "" and rows[2]["average_precision"] == ""


# --------------------------------------------------------------------------- the template


def _context(metrics, **changes):
    args = dict(
        run_id="run-1",
        config={"backbone": "MobileNetV2"},
        dataset_summary={"name": "pets"},
        history=HISTORY,
        metrics=metrics,
        generated_at="2025-01-01 00:00 UTC",
    )
    args.update(changes)
    return report_context(**args)


class _Attributes(HTMLParser):
    """Every attribute name of every element, as a browser's parser would see them."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.names.update(name for name, _ in attrs)


def test_the_template_and_its_css_ship_inside_the_package():
    templates = resources.files("tlcore.evaluation") / "templates"
    assert (templates / "report.html.j2").is_file()
    assert (templates / "report.css").is_file()


def test_the_css_is_inlined_so_the_report_stays_one_file(metrics):
    css = (resources.files("tlcore.evaluation") / "templates" / "report.css").read_text("utf-8")
    html = _render(metrics)
    style = html[html.index("<style>") + len("<style>") : html.index("</style>")]
    assert style.strip() == css.strip()  # verbatim: neither escaped nor mangled by Jinja
    assert "<link" not in html
    assert html.count("<style>") == 1


def test_a_class_name_that_breaks_out_of_an_attribute_stays_text():
    hostile = 'x" onmouseover="alert(1)'
    m = compute_metrics([0, 1, 1], [[0.2, 0.8], [0.3, 0.7], [0.9, 0.1]], [hostile, EVIL])
    rows = Interpretation([0, 1, 1], [[0.2, 0.8], [0.3, 0.7], [0.9, 0.1]], m.class_names)
    html = _render(m, worst_errors=rows.top_losses(2))
    parser = _Attributes()
    parser.feed(html)
    assert "onmouseover" not in parser.names  # the confusion cells' titles, the legend
    assert "<script" not in html.lower()
    assert html.count("x&#34; onmouseover=&#34;alert(1)") >= 5


def test_charts_go_in_as_markup_built_from_escaped_labels(metrics):
    context = _context(metrics)
    roc = context["curves"]["roc"].svg
    assert isinstance(roc, Markup)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (0.917)" in roc
    assert "<script" not in roc
    assert isinstance(context["calibration"]["chart"].svg, Markup)
    assert all(isinstance(chart.svg, Markup) for _, chart in context["training_curves"])


def test_plain_strings_in_the_context_are_escaped_by_the_template(metrics):
    context = _context(metrics, run_id="<img src=x onerror=alert(1)>")
    assert not isinstance(context["run_id"], Markup)  # raw: the template escapes it
    html = render_report_template(context)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_field_missing_from_the_context_is_an_error(metrics):
    context = _context(metrics)
    del context["kpis"]
    with pytest.raises(jinja2.UndefinedError, match="kpis"):
        render_report_template(context)
    context = _context(metrics)
    context["worst_errors"] = [{"path": "a.png"}]  # a tile without its other fields
    with pytest.raises(jinja2.UndefinedError):
        render_report_template(context)


def test_the_metrics_files_are_still_importable_from_report():
    for name in (
        "METRICS_JSON",
        "PER_CLASS_CSV",
        "CONFUSION_CSV",
        "write_metrics_files",
        "read_metrics_file",
    ):
        assert getattr(report, name) is getattr(metrics_files, name)
