"""Predict: classify new images with a finished run's model, see where it looked, export it.

The model is loaded once per run and model hash (``st.cache_resource``, shared by every
session) after `tlcore.model.model_store` has checked the file against the hash recorded when
training saved it. Predictions, Grad-CAM overlays and batch results are kept in the
session, so moving a widget does not redo work. The live camera (`ui.live_camera`) sends one
frame at a time and reruns only its own fragment per frame. An export runs as a background
task in its own process (`tlcore.store.tasks`); the page follows it and any tab shows its
bundle.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from tlcore.data import archives, images
from tlcore.model import model_store
from tlcore.model.weights import WeightsMismatchError
from tlcore.serving import predict
from tlcore.store import runs
from tlcore.store.workspace import Workspace
from tlcore.training import kept_model
from ui import shared_folders
from ui.charts import CHART_CONFIG
from ui.common import empty_state, page_header, workspace
from ui.predict_charts import class_counts_figure, top_k_figure
from ui.predict_export import render_export_tab
from ui.predict_live import render_live_tab

QUERY_PARAM = "run"
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
WEIGHTS_TYPES = ["h5", "hdf5", "keras"]
MAX_DETAILED = 12  # images shown with chart and heatmap; the table lists them all
DISPLAY_SIDE = 360  # pixels of the longer side of the pictures shown
HEATMAP_ALPHA = 0.55
CHART_CLASSES = 15  # most frequent classes drawn in a batch's chart
KEY = "predict_"  # prefix of this page's session keys


# -- loading the model (shared by all sessions) -------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _run_predictor(root: str, run_id: str, model_key: tuple) -> predict.Predictor:
    """A run's predictor; ``model_key`` (recorded hash, size, mtime) makes a changed file
    load again, so it is checked again."""
    return predict.Predictor.for_run(Workspace(Path(root)), run_id)


@st.cache_resource(show_spinner=False, max_entries=2)
def _upload_predictor(
    root: str, run_id: str, digest: str, name: str, allow_full: bool, _data: bytes
) -> predict.Predictor:
    return predict.Predictor.for_weights_upload(
        Workspace(Path(root)), run_id, _data, name, allow_full_model=allow_full
    )


def _model_key(run_dir: Path) -> tuple:
    path = run_dir / runs.MODEL_FILE
    try:
        stat = path.stat()
    except OSError:
        return (None, 0, 0)
    return (model_store.recorded_hash(run_dir), stat.st_size, stat.st_mtime_ns)


def _show_load_error(exc: Exception) -> None:
    if isinstance(exc, model_store.ModelIntegrityError):
        st.error(f"**This model will not be loaded.** {exc}", icon=":material/gpp_bad:")
    else:
        st.error(f"**The model cannot be loaded.** {exc}", icon=":material/error:")


# -- choosing the run ---------------------------------------------------------------------
def _run_label(record: runs.RunRecord) -> str:
    headline = kept_model.headline(record.status.summary if record.status else {})
    return f"{record.title}{' · ' + headline if headline else ''} · {record.id}"


def _choose_run(finished: list[runs.RunRecord]) -> runs.RunRecord:
    by_id = {r.id: r for r in finished}
    wanted = st.query_params.get(QUERY_PARAM)
    ids = list(by_id)
    index = ids.index(wanted) if wanted in by_id else 0
    chosen = st.selectbox(
        "Model",
        ids,
        index=index,
        format_func=lambda run_id: _run_label(by_id[run_id]),
        help="Every finished run's best model. The newest run is first.",
        key=f"{KEY}run",
    )
    if st.query_params.get(QUERY_PARAM) != chosen:
        st.query_params[QUERY_PARAM] = chosen
    return by_id[chosen]


def _facts(record: runs.RunRecord, predictor: predict.Predictor) -> None:
    cfg = record.config
    summary = record.status.summary if record.status else {}
    items = [
        f":material/category: {len(predictor.classes)} classes",
        f":material/crop_free: {predictor.image_size}×{predictor.image_size} px",
        f":material/account_tree: {cfg.backbone}",
    ]
    if kept_model.headline(summary):
        items.append(f":material/insights: {kept_model.headline(summary)}")
    if predictor.source == "run":
        items.append(
            f":green-badge[:material/verified_user: verified model `{predictor.model_sha256[:10]}`]"
        )
    else:
        items.append(f":orange-badge[:material/upload_file: weights: {predictor.weights_name}]")
    st.markdown(" &nbsp;·&nbsp; ".join(items))


def _other_weights(record: runs.RunRecord) -> predict.Predictor | None:
    """The 'use weights from a file' panel; returns a predictor when the user gave one."""
    with st.expander("Use weights from a file instead", icon=":material/upload_file:"):
        st.caption(
            "Upload a Keras weights file (`.weights.h5` or `.h5`) for this run's "
            "architecture — the same backbone, image size, head and classes. Uploaded models "
            "are never loaded as models: only their weight arrays are read."
        )
        upload = st.file_uploader(
            "Weights file", type=WEIGHTS_TYPES, key=f"{KEY}weights_{record.id}"
        )
        allow_full = st.checkbox(
            "Import only its weights",
            key=f"{KEY}allow_full_{record.id}",
            help="For a full model (.keras or .h5 saved with model.save): read only its "
            "weight arrays into this run's architecture; its stored architecture is ignored.",
        )
        if upload is None:
            return None
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        try:
            with st.spinner("Loading the weights…"):
                return _upload_predictor(
                    str(ws.root), record.id, digest, upload.name, allow_full, data
                )
        except model_store.UnsafeModelError as exc:
            st.warning(f"**Not loaded.** {exc}", icon=":material/gpp_maybe:")
        except (WeightsMismatchError, ValueError, model_store.ModelLoadError) as exc:
            st.error(f"**These weights cannot be used.** {exc}", icon=":material/error:")
    return None


# -- single images -----------------------------------------------------------------------
def _sources(uploads, camera) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str]]]:
    """``(id, name, bytes)`` of every distinct picture given, uploads first, and for each
    picture given again (the same bytes, whatever its name) ``(its name, the name it was
    first added as)``: a picture is classified and shown once."""
    given = [(u.file_id, u.name, u.getvalue()) for u in uploads or []]
    if camera is not None:
        given.append((camera.file_id, "Camera picture", camera.getvalue()))
    found, repeats, first_name = [], [], {}
    for source in given:
        digest = hashlib.sha256(source[2]).hexdigest()
        if digest in first_name:
            repeats.append((source[1], first_name[digest]))
        else:
            first_name[digest] = source[1]
            found.append(source)
    return found, repeats


def _say_repeats(repeats: list[tuple[str, str]]) -> None:
    """Says which pictures were given twice, rather than listing them twice."""
    if not repeats:
        return
    items = [
        f"**{name}** is already added" + ("" if name == first else f" (as *{first}*)")
        for name, first in repeats
    ]
    st.info(
        "; ".join(items) + ". The same picture is classified once; remove the repeat from "
        "the list above if you like.",
        icon=":material/content_copy:",
    )


def _predictions(predictor, model_id: str, sources, top_k: int) -> list[predict.Prediction]:
    key = (model_id, tuple(s[0] for s in sources), top_k)
    cached = st.session_state.get(f"{KEY}predictions")
    if cached and cached[0] == key:
        return cached[1]
    with st.spinner("Predicting…"):
        results = predictor.predict_images([(name, data) for _, name, data in sources], top_k)
    st.session_state[f"{KEY}predictions"] = (key, results)
    return results


def _display_image(data: bytes, name: str):
    picture = images.load_image(data, name=name)
    picture.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    return picture


def _heatmap(predictor, model_id: str, source_id: str, name: str, data: bytes, class_index):
    """The Grad-CAM overlay of one picture for one class, cached in the session."""
    cache = st.session_state.setdefault(f"{KEY}heatmaps", {})
    key = (model_id, source_id, class_index)
    if key not in cache:
        from tlcore.serving.explain import overlay_heatmap

        pixels = predictor.load_pixels(data, name)
        result = predictor.explain(pixels, class_index)
        overlay = overlay_heatmap(_display_image(data, name), result.heatmap, alpha=HEATMAP_ALPHA)
        if len(cache) > 4 * MAX_DETAILED:
            cache.clear()
        cache[key] = (overlay, result)
    return cache[key]


def _image_card(predictor, model_id: str, source, prediction: predict.Prediction) -> None:
    source_id, name, data = source
    with st.container(border=True):
        if not prediction.ok:
            st.markdown(f"**{name}**")
            st.error(prediction.error, icon=":material/broken_image:")
            return
        st.markdown(
            f"**{name}** &nbsp; :blue-badge[{prediction.predicted_class}] "
            f":gray[{prediction.confidence:.1%}]"
        )
        picture_col, heat_col, chart_col = st.columns([1, 1, 1.25], gap="medium")
        classes = predictor.classes
        with chart_col:  # first, so the class chosen here is the one drawn beside it
            st.plotly_chart(
                top_k_figure(prediction.top, title=f"Top {len(prediction.top)} classes"),
                config=CHART_CONFIG,
                key=f"{KEY}chart_{source_id}",
            )
            choice = st.selectbox(
                "Show the evidence for",
                range(len(classes)),
                index=classes.index(prediction.predicted_class),
                format_func=lambda i: (
                    classes[i]
                    + ("  (predicted)" if classes[i] == prediction.predicted_class else "")
                ),
                key=f"{KEY}explain_{source_id}",
                help="Grad-CAM: where in the image the model found evidence for a class.",
            )
        overlay, result = _heatmap(predictor, model_id, source_id, name, data, choice)
        with picture_col:
            st.markdown(":small[:gray[Image]]")
            st.image(_display_image(data, name), width="stretch")
        with heat_col:
            st.markdown(f":small[:gray[Where it looked for **{result.class_name}**]]")
            st.image(overlay, width="stretch")
            if result.empty:
                st.caption(f"Nothing in the image counts as evidence for {result.class_name}.")
            else:
                st.caption(
                    f"{result.class_name}: {result.probability:.1%}. Red marks the strongest "
                    "evidence, blue the weakest."
                )


def _images_tab(predictor, model_id: str) -> None:
    max_k = min(10, len(predictor.classes))
    upload_col, options_col = st.columns([2, 1], gap="medium")
    with upload_col:
        uploads = st.file_uploader(
            "Images",
            type=IMAGE_TYPES,
            accept_multiple_files=True,
            key=f"{KEY}uploads",
            help="JPEG, PNG, BMP, GIF, WebP or TIFF; the content decides, not the name.",
        )
    with options_col:
        top_k = st.number_input("Classes per image", 1, max_k, min(3, max_k), key=f"{KEY}top_k")
        use_camera = st.toggle("Use the camera", key=f"{KEY}camera_on")
    camera = st.camera_input("Take a picture", key=f"{KEY}camera") if use_camera else None
    sources, repeats = _sources(uploads, camera)
    _say_repeats(repeats)
    if not sources:
        st.caption(
            ":material/info: Drop images here to classify them. Each gets its top classes and "
            "a heatmap of where the model looked."
        )
        return
    results = _predictions(predictor, model_id, sources, int(top_k))
    if len(results) > 1:
        summary = predict.summarize(results)
        st.markdown(
            f"**{summary['predicted']} of {summary['images']} images classified**"
            + (f" · :red[{summary['failed']} could not be read]" if summary["failed"] else "")
        )
        st.dataframe(
            _table(results),
            hide_index=True,
            width="stretch",
            column_config=_table_columns(),
        )
    if len(results) > MAX_DETAILED:
        st.caption(
            f"Details for the first {MAX_DETAILED} images; the table lists all {len(results)}. "
            "For many images, use **Batch**."
        )
    for source, prediction in list(zip(sources, results, strict=True))[:MAX_DETAILED]:
        _image_card(predictor, model_id, source, prediction)


def _table(results) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "File": p.name,
                "Predicted": p.predicted_class or "",
                "Confidence": None if p.confidence is None else 100 * p.confidence,
                "Other classes": ", ".join(f"{c} {v:.0%}" for c, v in p.top[1:]),
                "Problem": p.error or "",
            }
            for p in results
        ]
    )


def _table_columns() -> dict:
    return {
        "Confidence": st.column_config.ProgressColumn(
            "Confidence", format="%.1f%%", min_value=0.0, max_value=100.0
        ),
        "Problem": st.column_config.TextColumn("Problem", width="large"),
    }


# -- batch -------------------------------------------------------------------------------
def _batch_tab(predictor, model_id: str) -> None:
    where = st.segmented_control(
        "Images from",
        ["Zip file", "Folder on the server"],
        default="Zip file",
        key=f"{KEY}batch_source",
    )
    top_k = min(3, len(predictor.classes))
    zip_upload, folder, roots = None, "", None
    if where == "Folder on the server":
        roots = shared_folders.shared_roots(ws)
        folder = st.text_input(
            "Folder",
            placeholder=str(ws.incoming_dir / "new-photos"),
            key=f"{KEY}batch_folder",
            help=shared_folders.help_text(roots, "a folder") + " Read recursively.",
        )
        shared_folders.caption(roots, "the images")
    else:
        zip_upload = st.file_uploader(
            "Zip of images", type=["zip"], key=f"{KEY}batch_zip", help="Folders inside are fine."
        )
    if where == "Folder on the server":
        ready = bool(folder.strip()) and roots is not None
    else:
        ready = zip_upload is not None
    if st.button("Predict all", type="primary", icon=":material/play_arrow:", disabled=not ready):
        _run_batch(predictor, model_id, zip_upload, folder.strip(), top_k, roots)
    stored = st.session_state.get(f"{KEY}batch")
    if stored and stored["model_id"] == model_id:
        _batch_results(stored)


def _run_batch(predictor, model_id: str, zip_upload, folder: str, top_k: int, roots) -> None:
    if zip_upload is None and roots is None:  # never a server folder without confinement
        st.error(
            "**Nothing was predicted:** no folder on this server can be read.",
            icon=":material/error:",
        )
        return
    bar = st.progress(0.0, text="Reading the images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{done} of {total} images")

    try:
        if zip_upload is not None:
            label = zip_upload.name
            with tempfile.TemporaryDirectory(prefix="tls-batch-") as tmp:
                path = Path(tmp) / "upload.zip"
                path.write_bytes(zip_upload.getvalue())
                results = predictor.predict_zip(path, top_k, progress=progress)
        else:
            label = folder
            results = predictor.predict_folder(folder, top_k, progress=progress, roots=roots)
    except (archives.ArchiveError, FileNotFoundError, ValueError, OSError) as exc:
        bar.empty()
        st.error(f"**Nothing was predicted.** {exc}", icon=":material/error:")
        return
    bar.empty()
    if not results:
        st.warning(f"**{label} holds no files.**", icon=":material/folder_off:")
        return
    st.session_state[f"{KEY}batch"] = {
        "model_id": model_id,
        "label": label,
        "results": results,
        "csv": predict.predictions_csv(results, top_k),
    }


def _batch_results(stored: dict) -> None:
    results = stored["results"]
    summary = predict.summarize(results)
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**:material/folder_zip: {stored['label']}**", width="stretch")
            st.download_button(
                "Download CSV",
                stored["csv"],
                file_name=f"predictions-{Path(stored['label']).stem or 'batch'}.csv",
                mime="text/csv",
                icon=":material/download:",
                key=f"{KEY}csv",
            )
        tiles = st.columns(3)
        tiles[0].metric("Images", summary["images"], border=True)
        tiles[1].metric("Classified", summary["predicted"], border=True)
        tiles[2].metric("Could not be read", summary["failed"], border=True)
        if summary["by_class"]:
            top = dict(list(summary["by_class"].items())[:CHART_CLASSES])
            st.plotly_chart(class_counts_figure(top), config=CHART_CONFIG, key=f"{KEY}batch_chart")
        st.dataframe(
            _table(results), hide_index=True, width="stretch", column_config=_table_columns()
        )


# -- the page ----------------------------------------------------------------------------
ws = workspace()
page_header(
    "Predict", "Classify new images with a trained model, see where it looked, and export it."
)
finished = [r for r in runs.list_runs(ws) if r.state == runs.FINISHED and r.config is not None]
if not finished:
    empty_state(
        "**No finished runs yet.** Once a run finishes, its model can classify new images "
        "here, show where it looked, and be exported.",
        action="Go to Training",
        page="training",
        icon=":material/center_focus_strong:",
    )
    st.stop()

record = _choose_run(finished)
try:
    with st.spinner("Checking and loading the model…"):
        predictor = _run_predictor(str(ws.root), record.id, _model_key(record.dir))
except (model_store.ModelLoadError, runs.RunNotFoundError, OSError) as exc:
    _show_load_error(exc)
    st.stop()
facts = st.container()
classes_col, weights_col = st.columns(2)
with weights_col:
    uploaded = _other_weights(record)
if uploaded is not None:
    predictor = uploaded
with facts:
    _facts(record, predictor)
with classes_col, st.expander(f"Classes ({len(predictor.classes)})", icon=":material/list:"):
    st.markdown(", ".join(f"`{c}`" for c in predictor.classes))
model_id = f"{record.id}:{predictor.source}:{predictor.model_sha256}"

images_tab, live_tab, batch_tab, export_tab = st.tabs(
    [
        ":material/image: Images",
        ":material/videocam: Live camera",
        ":material/folder_zip: Batch",
        ":material/package_2: Export",
    ]
)
with images_tab:
    _images_tab(predictor, model_id)
with live_tab:
    render_live_tab(predictor, model_id)
with batch_tab:
    _batch_tab(predictor, model_id)
with export_tab:
    if predictor.source != "run":
        st.info(
            "Export uses the run's own model. Remove the uploaded weights above to export.",
            icon=":material/info:",
        )
    else:
        render_export_tab(ws, record)
