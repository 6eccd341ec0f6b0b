#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv) from the pinned requirements.
# Idempotent: when the requirement files have not changed since the last install, it does
# nothing. Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-runtime}"
req=requirements.txt
[ "$profile" = dev ] && req=requirements-dev.txt

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Transfer Learning Studio needs Python 3.11 or newer ('$python_bin' is older or missing)." >&2
  echo "Install it, or point PYTHON at one: PYTHON=python3.12 $0" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment in .venv ..." >&2
  "$python_bin" -m venv .venv
fi

stamp=".venv/.installed-$profile"
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "Installing $req into .venv (first time: about a minute) ..." >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
