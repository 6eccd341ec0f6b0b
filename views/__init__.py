"""The page scripts of the web UI (run by Streamlit, see app.py)."""
