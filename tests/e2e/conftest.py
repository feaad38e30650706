"""E2E tier: a real single-node cluster; every pod runs in a container started by the kubelet.

Real: etcd, kube-apiserver, kube-controller-manager (all default controllers), kube-scheduler,
kubelet and kube-proxy 1.35 (``scripts/controlplane-binaries.sh``), containerd 1.6 + runc from
Debian, the CNI bridge on ``frugal0`` (10.244.0.0/24, kept off every other interface), CoreDNS for
cluster.local only, and the pause and busybox images built by ``scripts/node-binaries.sh``. All run
as local processes of this machine, as root (the node needs it: cgroups, mounts, bridges, iptables).

Nothing is mocked or simulated. If the binaries cannot be built or the node cannot start, every
test here errors with the servers' logs: this tier never skips.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controlplane"))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/: the S3 server's harness

from node_harness import RealCluster

# What the session's node registers with (test_node checks them). The taint is a soft one, so
# pods that do not tolerate it (the journey's) still schedule; a test adds its own pool taint.
NODE_LABELS = {"frugal.dev/e2e": "node", "node-role.kubernetes.io/worker": ""}
NODE_TAINTS = ["frugal.dev/e2e=node:PreferNoSchedule"]


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[RealCluster]:
    """The running cluster for the whole session, its node Ready with the pause and busybox images:
    ``kubectl(...)``, ``helm(...)``, ``env``, ``api_client()``, ``load_images(...)``,
    ``host_path_volume(...)``, ``wait_pod_ready(...)``, ``log_tails()``."""
    # Not under pytest's numbered temporary folders: a later pytest session deletes the oldest of
    # those, and this one holds the kubelet's mounts while the node runs.
    workdir = Path(tempfile.mkdtemp(prefix="frugal-e2e-"))
    cluster = RealCluster(workdir, node_labels=NODE_LABELS, node_taints=NODE_TAINTS)
    cluster.start()
    print(f"\nreal cluster: node {cluster.node_name} Ready {cluster.startup_seconds:.1f} s after start()")
    try:
        cluster.load_images([cluster.nodebin.pause_archive, cluster.nodebin.busybox_archive])
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the tail of every server's log (containerd's and the kubelet's included)."""
    report = yield
    cluster = next((v for v in getattr(item, "funcargs", {}).values() if isinstance(v, RealCluster)), None)
    if report.failed and cluster is not None:
        for name, tail in cluster.log_tails(40).items():
            report.sections.append((f"{name} log (last 40 lines)", tail))
    return report
