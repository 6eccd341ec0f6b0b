#!/usr/bin/env bash
# Installs what the app needs (first time only) and opens Transfer Learning Studio
# at http://127.0.0.1:8501. Extra arguments go to `streamlit run` (e.g. --server.port 8600).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh runtime
echo "Transfer Learning Studio: http://127.0.0.1:8501  (Ctrl+C stops the server; training runs continue)" >&2
# The queue's scheduler starts with the server, not with the first visit: after a reboot, runs
# that were queued start even if nobody opens a page. It outlives the server (its own session).
if [[ "${TLS_SCHEDULER:-on}" != "off" ]]; then
  .venv/bin/python -m tlcore scheduler --background || echo "The scheduler did not start; the app will try again." >&2
fi
exec .venv/bin/python -m streamlit run app.py "$@"
