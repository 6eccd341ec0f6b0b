"""Shared pieces of the Streamlit pages: workspace access, headers, empty states, badges.

Pages stay thin: they read session state, call `tlcore`, and render with these helpers.
Nothing here imports Keras.
"""
