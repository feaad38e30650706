"""The local runtime's view of a pod's environment."""

from __future__ import annotations

import pytest

from frugal.operator.local.processes import local_env

CONTAINER = {
    "env": [
        {"name": "FRUGAL_PVC_ROOT", "value": "/var/lib/frugal/claims"},
        {
            "name": "RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        },
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
}


def test_the_hosts_claim_root_wins_over_the_pods_mount_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRUGAL_PVC_ROOT", "/srv/claims")
    env = local_env(CONTAINER, "ml", completion_index=2)
    assert env["FRUGAL_PVC_ROOT"] == "/srv/claims"
    assert env["RANK"] == "2" and env["POD_NAMESPACE"] == "ml"


def test_without_a_host_claim_root_the_pods_value_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRUGAL_PVC_ROOT", raising=False)
    assert local_env(CONTAINER, "ml")["FRUGAL_PVC_ROOT"] == "/var/lib/frugal/claims"
