#!/usr/bin/env bash
# Installs what the tests need (first time only), then lints and runs the whole test suite,
# including the real-browser test. Extra arguments go to pytest (e.g. -k config, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh dev
scripts/ensure_chromium.sh

# Real ImageNet weights for the tests that need them: a writable copy of the shared Keras cache.
shared_keras_home="${TLS_SHARED_KERAS_HOME:-../shared/keras_home}"
if [ -z "${TLS_TEST_KERAS_HOME:-}" ] && [ -d "$shared_keras_home" ]; then
  TLS_TEST_KERAS_HOME=$(mktemp -d -t tls-keras-home.XXXXXX)
  cp -r "$shared_keras_home/." "$TLS_TEST_KERAS_HOME/"
  export TLS_TEST_KERAS_HOME
  trap 'rm -rf "$TLS_TEST_KERAS_HOME"' EXIT
fi
export TLS_FLOWERS_DIR="${TLS_FLOWERS_DIR:-../shared/datasets/flowers5}"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the layering contract in pyproject.toml
status=0
.venv/bin/python -m pytest "$@" || status=$?
# pytest's 5 means "no tests collected" (e.g. a -k that matches nothing): not a failure.
[ "$status" -eq 5 ] && status=0
exit "$status"
