"""The live camera's Python side: frames decoded and checked, frames per second, and the
Predict page's live tab (AppTest) classifying a frame and answering it, so the browser sends
the next one."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from tests.test_model_store import make_finished_run
from tests.test_predict_page import open_predict
from tlcore.serving import predict
from ui import live_camera

LIVE_KEY = "predict_live_camera"


def _jpeg(color=(220, 40, 40), size=(298, 224)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _value(seq: int, data: bytes | None = None, stream: str = "s1") -> dict:
    data = _jpeg() if data is None else data
    image = base64.b64encode(data).decode("ascii")
    return {"stream": stream, "seq": seq, "image": image, "width": 298, "height": 224}


def _component_args(at) -> dict:
    (component,) = at.get("component_instance")
    return json.loads(component.proto.json_args)


# -- frames ------------------------------------------------------------------------------
def test_a_frame_value_decodes_to_its_jpeg_bytes():
    data = _jpeg()
    frame = live_camera.decode_frame(_value(3, data))
    assert frame == live_camera.LiveFrame("s1", 3, data, 298, 224)
    assert frame.ident == ("s1", 3)
    assert live_camera.decode_frame(None) is None  # nothing sent yet


@pytest.mark.parametrize(
    ("value", "message", "ident"),
    [
        ("a string", "must be an object. Received: str", None),
        ({"seq": 1, "image": "AAAA"}, "needs a stream id. Received: stream=None", None),
        ({"stream": "s", "seq": 0, "image": "AAAA"}, "positive sequence number", None),
        ({"stream": "s", "seq": True, "image": "AAAA"}, "Received: seq=True", None),
        ({"stream": "s", "seq": 2}, "camera frame 2 carries no image", ("s", 2)),
        ({"stream": "s", "seq": 2, "image": "not base64!"}, "is not base64", ("s", 2)),
        (
            {"stream": "s", "seq": 2, "image": "A" * (live_camera.MAX_FRAME_BYTES * 2)},
            "camera frame 2 is too large",
            ("s", 2),
        ),
    ],
)
def test_a_value_that_is_not_a_frame_says_what_is_wrong(value, message, ident):
    with pytest.raises(live_camera.FrameError, match=message) as caught:
        live_camera.decode_frame(value)
    assert caught.value.ident == ident  # what can be answered, so the browser goes on


def test_frames_per_second_over_the_frames_classified():
    assert live_camera.frames_per_second([]) is None
    assert live_camera.frames_per_second([5.0]) is None
    assert live_camera.frames_per_second([5.0, 5.0]) is None
    assert live_camera.frames_per_second([0.0, 0.5, 1.0, 1.5, 2.0]) == pytest.approx(2.0)


def test_live_state_counts_frames_and_restarts_the_rate_with_a_new_stream():
    state = live_camera.LiveState("model")
    first = live_camera.LiveFrame("a", 1, b"")
    assert state.is_new(first) and not state.is_new(None)
    for i in range(15):
        state.record(live_camera.LiveFrame("a", i + 1, b""), "p", 5.0, now=i * 0.25)
    assert state.frames == 15 and state.last == ("a", 15)
    assert not state.is_new(live_camera.LiveFrame("a", 15, b""))
    assert len(state.times) == live_camera.FPS_WINDOW
    assert state.fps == pytest.approx(4.0)
    state.record(live_camera.LiveFrame("b", 1, b""), "p", 5.0, now=100.0)  # Start again
    assert state.fps is None and state.frames == 16


def test_the_component_arguments_are_checked():
    with pytest.raises(ValueError, match="Received: interval_ms=10"):
        live_camera.live_camera(key="k", interval_ms=10)
    with pytest.raises(ValueError, match="Received: side=4096"):
        live_camera.live_camera(key="k", side=4096)
    assert (live_camera.FRONTEND_DIR / "index.html").is_file()


# -- the page ----------------------------------------------------------------------------
def test_the_live_tab_classifies_each_new_frame_once_and_answers_it(ws):
    run_id, _ = make_finished_run(ws)
    expected = predict.Predictor.for_run(ws, run_id).predict_images([("f", _jpeg())], 3)[0]
    at = open_predict(run_id)
    assert "Press **Start** under the picture" in "\n".join(c.value for c in at.caption)
    args = _component_args(at)
    assert args["answered"] is None and args["interval_ms"] == 400 and args["side"] == 224

    at.session_state[LIVE_KEY] = _value(1)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _component_args(at)["answered"] == {"stream": "s1", "seq": 1}  # the echo
    assert [m.value for m in at.metric] == ["1", "—"]
    assert len(at.get("plotly_chart")) == 1
    label = f"{expected.predicted_class} · {expected.confidence:.0%}"
    assert _component_args(at)["label"] == label
    assert "Camera frame 1:" in "\n".join(c.value for c in at.caption)

    at.run()  # a rerun for something else: the same frame is not classified again
    assert [m.value for m in at.metric] == ["1", "—"]

    at.session_state[LIVE_KEY] = _value(2)
    at.run()
    assert _component_args(at)["answered"] == {"stream": "s1", "seq": 2}
    assert at.metric[0].value == "2" and at.metric[1].value != "—"

    at.selectbox(key="predict_live_pace").set_value(1000).run()
    assert _component_args(at)["interval_ms"] == 1000


def test_a_broken_frame_is_answered_and_said_so(ws):
    run_id, _ = make_finished_run(ws)
    at = open_predict(run_id)
    at.session_state[LIVE_KEY] = _value(1, data=b"not a picture")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _component_args(at)["answered"] == {"stream": "s1", "seq": 1}
    assert any("is not an image" in e.value for e in at.error), [e.value for e in at.error]

    at.session_state[LIVE_KEY] = {"stream": "s1", "seq": 2, "image": "%%%"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _component_args(at)["answered"] == {"stream": "s1", "seq": 2}
    assert any("A frame was skipped" in w.value for w in at.warning)
