#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install frugal with the given extras.
# Usage: scripts/bootstrap.sh [EXTRAS]   (default: all; the test command uses dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
VENV="${FRUGAL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
echo "bootstrap: installing frugal[$EXTRAS] (the first time brings torch: a few GB)" >&2
# Strict editable mode lets type checkers follow the frugal.* -> folder mapping (see setup.py).
"$VENV/bin/pip" install --quiet --progress-bar off -e ".[$EXTRAS]" --config-settings editable_mode=strict
