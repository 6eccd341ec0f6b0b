"""The live camera: a small custom component that sends camera frames, one at a time.

The browser side (``live_camera_frontend/index.html``, plain JavaScript served by the app's
own server, no build step) shows the camera and sends a downscaled JPEG frame as the
component's value. The page classifies it and renders the component again with
``answered`` set to that frame; only then does the browser take the next frame, no sooner
than ``interval_ms`` after the previous one. One frame is in flight at a time, so a slow
model gets fewer frames rather than a queue. Everything travels over Streamlit's own
websocket: no WebRTC, no UDP, nothing a proxy in front of the server has to allow.

`LiveState` is the page's memory between frames (the last prediction, frames per second),
a plain object kept in ``st.session_state``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlit.components.v1 import declare_component

FRONTEND_DIR = Path(__file__).with_name("live_camera_frontend")
DEFAULT_INTERVAL_MS = 400  # at most one frame this often (the model may be slower)
DEFAULT_SIDE = 224  # pixels of the shorter side of a frame sent
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 50, 10_000
MIN_SIDE, MAX_SIDE = 32, 1024
MAX_FRAME_BYTES = 2_000_000  # a JPEG of MAX_SIDE is far smaller; anything bigger is refused
MAX_STREAM_ID = 64
FPS_WINDOW = 10  # frames/s is measured over the last this many frames

_component = declare_component("live_camera", path=str(FRONTEND_DIR))


class FrameError(ValueError):
    """A component value that is not a frame this module sent.

    Attributes:
        ident: ``(stream, seq)`` when those could be read (answer it, or the browser waits
            for that frame until it gives up on it), else None.
    """

    def __init__(self, message: str, ident: tuple[str, int] | None = None):
        super().__init__(message)
        self.ident = ident


@dataclass(frozen=True)
class LiveFrame:
    """One camera frame as the browser sent it.

    Attributes:
        stream: an id the browser makes each time Start is pressed.
        seq: the frame's number in its stream, from 1.
        data: the JPEG bytes.
        width: the frame's width in pixels, as the browser reported it.
        height: the frame's height in pixels, as the browser reported it.
    """

    stream: str
    seq: int
    data: bytes
    width: int = 0
    height: int = 0

    @property
    def ident(self) -> tuple[str, int]:
        return (self.stream, self.seq)


def decode_frame(value: Any) -> LiveFrame | None:
    """The frame in a component value; None when the camera has sent nothing yet.

    Raises:
        FrameError: the value is not a frame (its message names the field at fault).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FrameError(f"a camera frame must be an object. Received: {type(value).__name__}")
    stream, seq, image = value.get("stream"), value.get("seq"), value.get("image")
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_ID:
        raise FrameError(f"a camera frame needs a stream id. Received: stream={stream!r:.80}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise FrameError(
            f"a camera frame needs a positive sequence number. Received: seq={seq!r:.40}"
        )
    ident = (stream, seq)
    if not isinstance(image, str) or not image:
        raise FrameError(f"camera frame {seq} carries no image.", ident)
    if len(image) > MAX_FRAME_BYTES * 4 // 3 + 4:
        raise FrameError(
            f"camera frame {seq} is too large ({len(image):,} characters; at most "
            f"{MAX_FRAME_BYTES:,} bytes).",
            ident,
        )
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(f"camera frame {seq} is not base64 ({exc}).", ident) from None
    return LiveFrame(
        stream=stream,
        seq=seq,
        data=data,
        width=_dimension(value.get("width")),
        height=_dimension(value.get("height")),
    )


def _dimension(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def frames_per_second(times: Any) -> float | None:
    """Frames per second over the given frame times (seconds, oldest first); None when
    fewer than two frames or no time passed between them."""
    times = list(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass
class LiveState:
    """What the page remembers between frames of one model.

    Attributes:
        model_id: the model the frames were classified with.
        last: ``(stream, seq)`` of the last frame classified.
        prediction: its prediction (a `tlcore.serving.predict.Prediction`).
        frames: frames classified so far.
        model_ms: milliseconds the last frame took to decode and classify.
        times: when the last `FPS_WINDOW` frames were classified (``time.monotonic``).
    """

    model_id: str
    last: tuple[str, int] | None = None
    prediction: Any = None
    frames: int = 0
    model_ms: float | None = None
    times: deque = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))

    def is_new(self, frame: LiveFrame | None) -> bool:
        return frame is not None and frame.ident != self.last

    def record(
        self, frame: LiveFrame, prediction: Any, model_ms: float, now: float | None = None
    ) -> None:
        """Remembers a classified frame; a new stream (Start pressed again) restarts the
        frames-per-second window."""
        if self.last is not None and self.last[0] != frame.stream:
            self.times.clear()
        self.last = frame.ident
        self.prediction = prediction
        self.frames += 1
        self.model_ms = model_ms
        self.times.append(time.monotonic() if now is None else now)

    @property
    def fps(self) -> float | None:
        """Frames classified per second over the last `FPS_WINDOW` frames."""
        return frames_per_second(self.times)


def live_camera(
    *,
    key: str,
    answered: tuple[str, int] | None = None,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    side: int = DEFAULT_SIDE,
    label: str = "",
) -> Any:
    """Shows the live camera; returns its raw value (see `decode_frame`).

    Read the value from ``st.session_state[key]`` before calling this, classify the frame,
    then call this with ``answered`` set to it: the browser sends the next frame only once
    it sees its last one answered.

    Args:
        key: the widget key (required: the component must keep its identity across reruns).
        answered: ``(stream, seq)`` of the last frame classified (`LiveState.last`); None
            before the first.
        interval_ms: the least time between two frames sent, in ms (default 400).
        side: pixels of the shorter side of the frames sent (default 224; never enlarged).
        label: a line shown over the video (the top class); default none.
    """
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int):
        raise ValueError(f"interval_ms must be an integer. Received: interval_ms={interval_ms!r}")
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise ValueError(
            f"interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}. "
            f"Received: interval_ms={interval_ms}"
        )
    if isinstance(side, bool) or not isinstance(side, int) or not MIN_SIDE <= side <= MAX_SIDE:
        raise ValueError(
            f"side must be an integer between {MIN_SIDE} and {MAX_SIDE}. Received: side={side!r}"
        )
    echo = {"stream": answered[0], "seq": answered[1]} if answered else None
    return _component(
        answered=echo,
        interval_ms=interval_ms,
        side=side,
        label=label,
        key=key,
        default=None,
    )
