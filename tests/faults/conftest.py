"""Fault-injection tier: what a user sees, and what is lost, when a part the operator depends on fails.

What is real: the control-plane tier's parts, started by its own harness and fixtures (imported, not
copied): etcd, kube-apiserver and kube-controller-manager (Deployment, ReplicaSet, Job and garbage
collection controllers), a Prometheus server, the operator as its own process with the chart's
ServiceAccount, `frugal compress` and `frugal serve` processes run from the pod templates the operator
wrote. The faults are real too: the API server process stopped and started again on its port,
Prometheus stopped, a tmpfs too small for an artifact mounted where the compression Job writes, the
operator SIGKILLed. The test plays the kubelet and the endpoint Service (`played_serving`), as the
control-plane tier does. If a part cannot start, every test here errors: this tier never skips.

Each case prints one line, ``fault: NAME converged_s=... failed_requests=...``: ``pytest -s`` shows
them (docs/operations.md, "Faults and what you see", holds the numbers).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CONTROLPLANE = Path(__file__).resolve().parents[1] / "controlplane"
sys.path.insert(0, str(CONTROLPLANE))


def _controlplane_conftest() -> object:
    """The control-plane tier's conftest, under a name of its own (pytest loads that file as
    ``conftest`` for its own directory)."""
    spec = importlib.util.spec_from_file_location("controlplane_tier_conftest", CONTROLPLANE / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tier = _controlplane_conftest()
# Its fixtures and its failure hook (the servers' log tails on a failed test), reused as they are.
cluster = _tier.cluster  # type: ignore[attr-defined]
crds_installed = _tier.crds_installed  # type: ignore[attr-defined]
pytest_runtest_makereport = _tier.pytest_runtest_makereport  # type: ignore[attr-defined]
