"""Every file in examples/ is accepted by the real API server as it is, and lists with its printer columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.y*ml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_examples_of_both_kinds() -> None:
    kinds = {d["kind"] for path in EXAMPLES for d in documents(path)}
    assert {"ModelDeployment", "HardwareProfile"} <= kinds, kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_cleanly(crds_installed: ControlPlane, namespace: str, path: Path) -> None:
    kubectl = crds_installed.kubectl
    dry = kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", path, "-o", "json")
    assert dry.returncode == 0
    # Strict validation above rejects unknown fields; the real apply must then store every document.
    kubectl("apply", "--validate=strict", "-n", namespace, "-f", path)
    for doc in documents(path):
        plural = {
            "ModelDeployment": "modeldeployments.frugal.dev",
            "HardwareProfile": "hardwareprofiles.frugal.dev",
            "BatchInference": "batchinferences.frugal.dev",
        }
        resource = plural.get(doc["kind"], doc["kind"])
        scope = (
            ["-n", doc["metadata"].get("namespace", namespace)] if doc["kind"] != "HardwareProfile" else []
        )
        stored = json.loads(kubectl("get", resource, doc["metadata"]["name"], *scope, "-o", "json").stdout)
        assert _contains(stored["spec"], doc["spec"]), (
            f"{path.name}: the server changed {doc['metadata']['name']}'s spec beyond adding defaults"
        )


def _contains(stored: Any, written: Any) -> bool:
    """Everything written is still there (the server only adds defaults, never drops or changes)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            k in stored and _contains(stored[k], v) for k, v in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(stored, list) and len(stored) == len(written) and all(map(_contains, stored, written))
        )
    if isinstance(written, float | int) and not isinstance(written, bool):
        return stored == written
    return bool(stored == written)


def test_get_lists_examples_with_printer_columns(crds_installed: ControlPlane, namespace: str) -> None:
    for path in EXAMPLES:
        crds_installed.kubectl("apply", "-n", namespace, "-f", path)
    names = [
        d["metadata"]["name"] for path in EXAMPLES for d in documents(path) if d["kind"] == "ModelDeployment"
    ]
    out = crds_installed.kubectl("get", "md", "-n", namespace).stdout.splitlines()
    header = out[0].split()
    assert header[:2] == ["NAME", "PHASE"], out[0]
    for column in ("VARIANT", "HARDWARE", "REPLICAS", "P95", "COST/H", "AGE"):
        assert column in header, (column, out[0])
    listed = {line.split()[0] for line in out[1:]}
    assert set(names) <= listed, (names, out)
    hwp = crds_installed.kubectl("get", "hwp").stdout.splitlines()
    for column in ("ACCELERATOR", "MODEL", "PROVIDER", "COST/H", "AGE"):
        assert column in hwp[0].split(), (column, hwp[0])
