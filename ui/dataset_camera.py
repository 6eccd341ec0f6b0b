"""Photos taken with the browser's camera, class by class, for a new or an existing dataset.

`capture_photos` is one camera per class: each photo taken is kept (in the session) and the
camera is ready for the next one at once, so a class's twenty photos are twenty clicks.
The photos then go into a new dataset (the import panel's classes tab) or into a new version
of the dataset shown (`render_add_photos`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import streamlit as st

from tlcore.data.datasets import Dataset
from tlcore.data.versions import NewImage, VersionChanges
from ui import auth
from ui.dataset_fix import OnNewVersion, announce, make_version_or_explain

THUMBS_PER_ROW = 8


@dataclass(frozen=True)
class CapturedPhoto:
    """A photo from the camera, shaped like an uploaded file (``name``, ``getvalue()``)."""

    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def _photos(key: str) -> list[CapturedPhoto]:
    return st.session_state.setdefault(f"{key}::photos", [])


def _camera_key(key: str) -> str:
    return f"{key}::camera::{st.session_state.get(f'{key}::shots', 0)}"


def _keep_photo(key: str) -> None:
    """Called when the camera took a photo: keep it, and give the next run a fresh camera."""
    shot = st.session_state.get(_camera_key(key))
    if shot is None:
        return
    data = shot.getvalue()
    photos = _photos(key)
    if any(hashlib.sha256(p.data).digest() == hashlib.sha256(data).digest() for p in photos):
        return
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    photos.append(CapturedPhoto(f"camera-{stamp}-{len(photos) + 1:03d}.jpg", data))
    st.session_state[f"{key}::shots"] = st.session_state.get(f"{key}::shots", 0) + 1


def clear_photos(key: str) -> None:
    _photos(key).clear()


def capture_photos(key: str, label: str) -> list[CapturedPhoto]:
    """A camera whose photos accumulate under ``key``; returns them, oldest first."""
    st.camera_input(label, key=_camera_key(key), on_change=_keep_photo, args=(key,), width=520)
    photos = _photos(key)
    if photos:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**{len(photos)} photo{'s' if len(photos) != 1 else ''} taken**")
            st.button(
                "Discard them",
                key=f"{key}::clear",
                icon=":material/delete_sweep:",
                type="tertiary",
                on_click=clear_photos,
                args=(key,),
            )
        st.image([p.data for p in photos[-THUMBS_PER_ROW:]], width=72)
    return list(photos)


def render_add_photos(ws, dataset: Dataset, on_new_version: OnNewVersion) -> None:
    """Take photos for one class of the dataset shown; adding them makes a new version."""
    st.markdown(
        "Take photos with this device's camera for one class at a time; they are added as a "
        "new version of the dataset (the one shown is kept). Each photo goes to the training, "
        "validation or test split by the dataset's own shares, decided by its content."
    )
    shown, enabled, override = auth.may_change(
        dataset.owner, "dataset", key=f"cam_override::{dataset.id}", verbs="change"
    )
    target = st.selectbox("Class", dataset.classes, key=f"cam_class::{dataset.id}")
    key = f"cam::{dataset.id}::{target}"
    photos = capture_photos(key, f"A photo of {target}")
    if st.button(
        f"Add {len(photos)} photo(s) to {target}" if photos else "Add the photos",
        type="primary",
        icon=":material/add_a_photo:",
        key=f"cam_add::{dataset.id}",
        disabled=not (photos and shown and enabled),
    ):
        added = tuple(NewImage(p.name, p.data, target) for p in photos)
        changes = VersionChanges(added=added, note=f"{len(added)} camera photo(s) of {target}")
        made = make_version_or_explain(ws, dataset, changes, override)
        if made is not None:  # kept until they are safely in a version
            clear_photos(key)
            announce(dataset, made, on_new_version)
