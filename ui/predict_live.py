"""The Predict page's live camera tab: camera frames classified one at a time.

The component (`ui.live_camera`) sends a frame only once the last one was answered; each
frame reruns only this tab's fragment. Keras runs in the web process here (the loaded model
is the page's cached predictor), as live prediction must.
"""

from __future__ import annotations

import time

import streamlit as st

from ui import live_camera
from ui.charts import CHART_CONFIG
from ui.predict_charts import top_k_figure

KEY = "predict_"  # the Predict page's session-key prefix (views/predict.py)
LIVE_KEY = f"{KEY}live_camera"  # the component's value: the latest frame
LIVE_PACES = {200: "5 frames/s", 400: "2.5 frames/s", 1000: "1 frame/s"}  # ms between frames


@st.fragment
def render_live_tab(predictor, model_id: str) -> None:
    """Camera frames classified as they come; each frame reruns only this fragment.

    The frame is read from the component's state first, classified, and then the component
    is drawn with that frame as answered: that is what lets the browser send the next one.
    """
    state = st.session_state.get(f"{KEY}live")
    if state is None or state.model_id != model_id:
        state = st.session_state[f"{KEY}live"] = live_camera.LiveState(model_id)
    max_k = min(10, len(predictor.classes))
    problem = None
    try:
        frame = live_camera.decode_frame(st.session_state.get(LIVE_KEY))
    except live_camera.FrameError as exc:
        frame, problem = None, str(exc)
        state.last = exc.ident or state.last  # answered all the same: the loop goes on
    if frame is not None and state.is_new(frame):
        started = time.perf_counter()
        source = (f"Camera frame {frame.seq}", frame.data)
        prediction = predictor.predict_images([source], max_k)[0]
        state.record(frame, prediction, 1000 * (time.perf_counter() - started))
    camera_col, result_col = st.columns([1.1, 1], gap="medium")
    with result_col:
        pace_col, k_col = st.columns(2)
        interval = pace_col.selectbox(
            "Pace",
            list(LIVE_PACES),
            index=1,
            format_func=LIVE_PACES.get,
            key=f"{KEY}live_pace",
            help="At most this many frames are sent; when the model is slower, fewer.",
        )
        top_k = k_col.number_input("Classes shown", 1, max_k, min(3, max_k), key=f"{KEY}live_top_k")
        _live_result(state, int(top_k), problem)
    with camera_col:
        shown = state.prediction
        live_camera.live_camera(
            key=LIVE_KEY,
            answered=state.last,
            interval_ms=int(interval),
            side=max(live_camera.DEFAULT_SIDE, predictor.image_size),
            label=f"{shown.predicted_class} · {shown.confidence:.0%}" if shown and shown.ok else "",
        )


def _live_result(state: live_camera.LiveState, top_k: int, problem: str | None) -> None:
    if problem:
        st.warning(f"**A frame was skipped:** {problem}", icon=":material/broken_image:")
    if state.prediction is None:
        st.caption(
            ":material/info: Press **Start** under the picture: the model classifies what the "
            "camera sees, frame after frame, and the bars follow."
        )
        return
    fps = state.fps
    tiles = st.columns(2)
    tiles[0].metric("Frames classified", state.frames, border=True)
    tiles[1].metric(
        "Frames per second",
        "—" if fps is None else f"{fps:.1f}",
        border=True,
        help=f"Achieved over the last {live_camera.FPS_WINDOW} frames, from the camera to "
        "the answer. The pace above is the most; a slower model or network gets fewer.",
    )
    prediction = state.prediction
    if not prediction.ok:
        st.error(prediction.error, icon=":material/broken_image:")
    else:
        top = prediction.top[:top_k]
        st.plotly_chart(
            top_k_figure(top, title=f"Top {len(top)} classes"),
            config=CHART_CONFIG,
            key=f"{KEY}live_chart",
        )
        st.caption(f"{prediction.name}: {state.model_ms:.0f} ms on the server to classify.")
