#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install frugal with exactly the versions in
# requirements/<EXTRAS>.txt, the lock the test suite last passed on (hash-checked).
# Usage: scripts/bootstrap.sh [all|dev]   (default: all; the test command uses dev)
# To move to newer versions, run scripts/upgrade-deps.sh: it rewrites the locks and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
VENV="${FRUGAL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
LOCK="requirements/$EXTRAS.txt"
[[ -f "$LOCK" ]] || { echo "bootstrap: no lock $LOCK; use 'all' or 'dev'" >&2; exit 2; }
platform="$("$PYTHON" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}.{sys.version_info[1]}-{platform.system()}-{platform.machine()}")' 2>/dev/null || echo "not runnable")"
if [[ "$platform" != "cpython3.11-Linux-x86_64" ]]; then
  echo "bootstrap: the locks in requirements/ are for CPython 3.11 on x86_64 Linux, and $PYTHON is $platform;" \
       "set PYTHON=python3.11, or install the ranges in pyproject.toml with pip install -e '.[$EXTRAS]'" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.frugal-lock-$EXTRAS.sha256"
digest="$(sha256sum "$LOCK" setup.py pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
  echo "bootstrap: $VENV already matches $LOCK" >&2
  exit 0
fi
echo "bootstrap: installing $LOCK (the first time brings torch: a few GB)" >&2
# The install needs about 8 GB in the venv and, while it runs, the wheels once more in the temp dir.
free_kb="$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')"
if [[ -n "$free_kb" && "$free_kb" -lt $((12 * 1024 * 1024)) ]]; then
  echo "bootstrap: warning: only $((free_kb / 1024 / 1024)) GB free where $VENV goes; the install needs about 12 GB" >&2
fi
# --no-deps: the lock names every package, so nothing is resolved again (a fresh venv's bundled pip
# would re-resolve extras such as fsspec[http] to the newest release, outside the lock, and fail).
# --no-cache-dir: a cached copy of every wheel would cost another 3 GB of disk, for a download that
# happens once per lock.
"$VENV/bin/python" -m pip install --quiet --progress-bar off --no-cache-dir --no-deps --require-hashes -r "$LOCK"
"$VENV/bin/python" -m pip check
# frugal itself, built with the locked setuptools. Strict editable mode lets type checkers follow the
# frugal.* -> folder mapping (see setup.py); scripts/dev-install.sh re-links it after adding modules.
"$VENV/bin/python" -m pip install --quiet --progress-bar off --no-deps --no-build-isolation \
  -e . --config-settings editable_mode=strict
echo "$digest" >"$stamp"
