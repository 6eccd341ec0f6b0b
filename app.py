"""Transfer Learning Studio: the Streamlit entry point. Only navigation and shared chrome."""

import streamlit as st

from ui import auth
from ui.common import PAGES, workspace
from ui.page_timing import PageRun

this_run = PageRun()  # times the run when TLS_PAGE_TIMES is set (bench/bench_server.py)

st.set_page_config(
    page_title="Transfer Learning Studio",
    page_icon=":material/model_training:",
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"Get help": None, "Report a bug": None, "About": "Transfer Learning Studio"},
)

# The login comes before any page: a locked studio builds its navigation (so a deep link
# still lands on its page after logging in) but shows and runs none of it.
workspace()  # opened (and its scheduler started) even while the login page is showing
actor = auth.gate()
navigation = st.navigation(
    {
        "": [st.Page(PAGES["home"], title="Home", icon=":material/home:", default=True)],
        "Build": [
            st.Page(PAGES["dataset"], title="Dataset", icon=":material/photo_library:"),
            st.Page(PAGES["model"], title="Model", icon=":material/account_tree:"),
            st.Page(PAGES["training"], title="Training", icon=":material/model_training:"),
        ],
        "Use": [
            st.Page(PAGES["evaluation"], title="Evaluation", icon=":material/insights:"),
            st.Page(PAGES["predict"], title="Predict", icon=":material/center_focus_strong:"),
        ],
    },
    position="sidebar" if actor is not None else "hidden",
)
if actor is None:
    st.stop()
with st.sidebar:
    auth.sidebar_account(actor)
    st.caption("Transfer Learning Studio · pretrained Keras networks for your own images")
with this_run.until_end(navigation.title):
    navigation.run()
