#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install, prepare the real control plane and node, build the
# container images, lint, type-check, check the import contracts, then run every tier (unit, component,
# controlplane, e2e, system, and every benchmark in its smoke mode). The e2e tier runs a real node
# (kubelet, containerd, runc): it needs root.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
scripts/controlplane-binaries.sh
scripts/prometheus-binary.sh
scripts/seaweedfs-binary.sh  # the component tier's S3 server (SeaweedFS's S3 gateway)
scripts/fake-gcs-server-binary.sh  # its GCS emulator (fake-gcs-server)
scripts/azurite-binary.sh  # its Azure Blob Storage emulator (Azurite, from npm)
scripts/kube-score-binary.sh
scripts/node-binaries.sh
echo "== images: the Containerfile's serving and full targets (cached by the hash of what goes in)" >&2
scripts/build-images.sh serving full
VENV="${FRUGAL_VENV:-.venv}"
echo "== peer clients: KServe's SDK in its own cached venv (its pins conflict with ours)" >&2
"$VENV/bin/python" -c "import sys; sys.path.insert(0, 'tests/component'); from serving_support import kserve_python; print(kserve_python())"
echo "== ruff" >&2
"$VENV/bin/ruff" check .
echo "== import contracts" >&2
"$VENV/bin/lint-imports"
echo "== mypy" >&2
"$VENV/bin/mypy" -p frugal.operator -p frugal.serving -p frugal.compression -p frugal.schema -p frugal.storage
echo "== pytest" >&2
"$VENV/bin/python" -m pytest "${@:-tests}"
