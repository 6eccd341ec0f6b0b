#!/usr/bin/env bash
# Installs what the app needs (first time only) and opens Transfer Learning Studio
# at http://127.0.0.1:8501. Extra arguments go to `streamlit run` (e.g. --server.port 8600).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh runtime
echo "Transfer Learning Studio: http://127.0.0.1:8501  (Ctrl+C stops the server; training runs continue)" >&2
exec .venv/bin/python -m streamlit run app.py "$@"
