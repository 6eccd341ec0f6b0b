"""The folders on the server that the pages may read a typed path from (Dataset's server
folder, Predict's batch folder, Model's weights file): where they are, said once per box.

The confinement itself is in `tlcore.store.server_paths`; the pages pass these roots to the
core functions, which refuse any other path before reading anything.
"""

from __future__ import annotations

import streamlit as st

from tlcore.store.server_paths import SERVER_ROOTS_ENV, ServerPathError, ServerRoots
from tlcore.store.workspace import Workspace


def shared_roots(ws: Workspace) -> ServerRoots | None:
    """This server's shared folders and caps; None (after an error box) when misconfigured."""
    try:
        return ServerRoots.from_env(ws)
    except ServerPathError as exc:
        st.error(
            f"**Server folders are switched off:** {exc} Ask the administrator to fix it.",
            icon=":material/error:",
        )
        return None


def help_text(roots: ServerRoots | None, what: str) -> str:
    """The help of a path box: which folders it may name (``what``: 'a folder', 'a file')."""
    if roots is None:
        return "No folder on this server can be read until its settings are fixed."
    return (
        f"{what[0].upper()}{what[1:]} on the machine running the studio, not on your computer, "
        f"inside the folders it shares: {roots.describe()}. A relative path is taken inside "
        f"{roots.roots[0]}."
    )


def caption(roots: ServerRoots | None, what: str) -> None:
    """A caption under a path box naming the shared folders and how to add one."""
    if roots is None:
        return
    listed = ", ".join(f"`{r}`" for r in roots.roots)
    st.caption(
        f":material/folder_shared: This server shares {listed}: copy {what} there (a "
        f"relative path is taken inside the first). Other folders need the administrator to "
        f"add them to `{SERVER_ROOTS_ENV}`."
    )
