#!/usr/bin/env bash
# Re-link the editable install so new modules are visible (strict mode keeps type checkers able to
# follow the frugal.* -> folder mapping, but only links files that exist at install time).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FRUGAL_VENV:-.venv}"
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
