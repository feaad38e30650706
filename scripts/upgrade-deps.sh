#!/usr/bin/env bash
# Refresh the locks in requirements/ to the newest versions the registry serves today, reinstall
# .venv from them and run the whole test suite. Upgrading is this one deliberate step; everything
# else (bootstrap, the test command, CI) installs exactly what the locks say.
#   scripts/upgrade-deps.sh                 # newest of everything, then scripts/test.sh
#   scripts/upgrade-deps.sh --no-test       # only rewrite the locks
#   UPGRADE_PACKAGES="torch transformers" scripts/upgrade-deps.sh   # move only these, keep the rest
# The locks are for CPython 3.11 on x86_64 Linux (manylinux_2_28), the platform CI and the
# developers run; pyproject.toml keeps the ranges people installing frugal as a library get.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_TESTS=1
[[ "${1:-}" == "--no-test" ]] && RUN_TESTS=0
LOCK_PYTHON="3.11"
LOCK_PLATFORM="x86_64-manylinux_2_28"

scripts/bootstrap.sh dev   # the current lock, which brings uv
UV="${FRUGAL_VENV:-.venv}/bin/uv"
upgrade=(--upgrade)
if [[ -n "${UPGRADE_PACKAGES:-}" ]]; then
  upgrade=()
  for package in $UPGRADE_PACKAGES; do upgrade+=(--upgrade-package "$package"); done
fi
compile() {  # compile OUT INPUT... [-- uv options]
  local out="$1"; shift
  "$UV" pip compile --quiet --generate-hashes --python-version "$LOCK_PYTHON" \
    --python-platform "$LOCK_PLATFORM" --custom-compile-command "scripts/upgrade-deps.sh" \
    "${upgrade[@]}" -o "$out" "$@"
}
compile requirements/dev.txt pyproject.toml requirements/build.in --extra dev
# 'all' is the same resolution without the dev tools: constrained by the dev lock, never newer.
compile requirements/all.txt pyproject.toml requirements/build.in --extra all --constraint requirements/dev.txt
# The container images' locks (Containerfile), constrained by all.txt: the same versions, no newer.
# serving: frugal's core dependencies and the [serving] extra only (no torch).
compile requirements/serving.txt pyproject.toml requirements/serving.in --extra serving --constraint requirements/all.txt
# gpu: all.txt with onnxruntime-gpu (no newer than all.txt's onnxruntime: its releases can trail on PyPI)
# in place of onnxruntime.
ort_version="$(sed -n 's/^onnxruntime==\([^ ]*\).*/\1/p' requirements/all.txt)"
pins="$(mktemp -d)"
trap 'rm -rf "$pins"' EXIT
echo "onnxruntime-gpu<=$ort_version" >"$pins/onnxruntime-gpu.txt"
compile requirements/gpu.txt pyproject.toml requirements/build.in requirements/gpu.in --extra all \
  --constraint requirements/all.txt --constraint "$pins/onnxruntime-gpu.txt" --no-emit-package onnxruntime
sed -i "s|-c $pins/onnxruntime-gpu.txt|onnxruntime-gpu<=$ort_version (all.txt's onnxruntime)|" requirements/gpu.txt
compile requirements/kserve-client.txt requirements/kserve-client.in
compile requirements/mlserver.txt requirements/mlserver.in
git --no-pager diff --stat -- requirements/ || true

if [[ "$RUN_TESTS" == 1 ]]; then
  scripts/test.sh
fi
