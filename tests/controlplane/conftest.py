"""Control-plane tier: tests against a real Kubernetes API server.

What is real: etcd 3.6 and kube-apiserver 1.35 (built from their Go modules by
``scripts/controlplane-binaries.sh``), kube-controller-manager (garbage collection, namespace deletion,
Deployment/ReplicaSet/Job controllers) when the script built it, and the real kubectl and helm
binaries. All of them run as local processes on 127.0.0.1; the admin identity is a bearer token in the
``system:masters`` group, the ``developer`` identity has no RBAC bindings.

What does not exist: a kubelet or a container runtime — Pods are stored but never run — and, but in
`test_scheduling` (its own control plane with kube-scheduler and registered Nodes), a scheduler or
nodes. ``s3_server`` is a real S3 server (SeaweedFS) for the tests of artifacts in a bucket. Nothing
is mocked. If the control plane cannot be built or started, every test here errors: this tier never
skips.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from controlplane_harness import CRD_DIR, ControlPlane, ensure_binaries

# Appended, not prepended: tests/ only has to provide s3_harness, never to shadow an installed module.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from s3_harness import S3Server, running_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server on loopback (SeaweedFS's S3 gateway, ``tests/s3_harness.py``), started only when a
    test asks for it; one that cannot start errors the test, never skips it."""
    with running_s3_server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane for the whole session; ``cluster.kubectl(...)``, ``cluster.helm(...)``,
    ``cluster.kubeconfig``, ``cluster.env`` (KUBECONFIG and PATH for subprocesses), ``cluster.api_client()``."""
    plane = ControlPlane(ensure_binaries(), tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def crds_installed(cluster: ControlPlane) -> ControlPlane:
    """The repository's CRDs applied and Established."""
    cluster.kubectl("apply", "-f", CRD_DIR)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", CRD_DIR)
    # Established does not mean published: the API server adds a CRD's schema to its OpenAPI
    # document (what kubectl explain reads) a little later, later still on a busy machine.
    deadline = time.monotonic() + 60
    for kind in ("modeldeployments", "hardwareprofiles", "batchinferences"):
        while cluster.kubectl("explain", kind, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"the API server never published the OpenAPI schema of {kind}"
            time.sleep(0.5)
    return cluster


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (named after the test, unique per test id), deleted afterwards: every
    later module's operator serves all namespaces, and what a test left there (an example's models and
    batches) would cost its passes."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"t-{slug[:40].strip('-')}-{digest}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the tail of every server's log to the report."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    plane = funcargs.get("cluster") or funcargs.get("crds_installed")
    if report.failed and isinstance(plane, ControlPlane):
        for name in plane.servers:
            report.sections.append((f"{name} log (last 40 lines)", plane.log_tail(name, 40)))
    return report
