"""What a ModelDeployment author cannot make the operator do, asked of the real API server and an
operator started as the chart starts it: without --allow-host-path, a file:// URI — a directory of
the node (hostPath) or of the image — is refused with a condition naming the field and an Event, and
nothing is created; a pvc:// store is used as usual, and no pod the operator writes mounts the node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from controlplane_harness import ControlPlane
from operator_harness import (
    Operator,
    condition,
    create_namespace,
    events_for,
    kubectl_json,
    status_of,
    wait_for,
    wait_object,
)

PROFILE = """
apiVersion: frugal.dev/v1alpha1
kind: HardwareProfile
metadata: {name: confined-cpu}
spec:
  accelerator: {kind: cpu, model: x86-64, count: 1}
  costPerHour: "0.05"
"""


def model_deployment(name: str, model_uri: str, storage: str) -> str:
    data = "" if model_uri.startswith("zoo:") else "\n  data: {validation: {uri: pvc://datasets/digits-val.npz}}"
    return f"""
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{uri: "{model_uri}"}}{data}
  serving: {{hardwareProfiles: [confined-cpu], slo: {{latencyP95Ms: 50}}}}
  storage: {{{storage}}}
"""


@pytest.fixture(scope="module")
def operator(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    work = tmp_path_factory.mktemp("confined")
    running = Operator(crds_installed, work / "artifacts", work / "operator.log", host_path=False)
    running.start()
    crds_installed.kubectl("apply", "-f", "-", input=PROFILE)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("name", "model_uri", "storage", "field"),
    [
        ("node-root", "zoo://digits-mlp", "uri: file:///", "spec.storage.uri"),
        ("image-file", "file:///models/digits.onnx", "retainArtifacts: false", "spec.model.uri"),
    ],
)
def test_a_file_uri_is_refused_with_a_condition_naming_the_field(
    operator: Operator, name: str, model_uri: str, storage: str, field: str
) -> None:
    cluster = operator.cluster
    ns = create_namespace(cluster, f"confined-{name}")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=model_deployment(name, model_uri, storage))
    status = wait_for("phase Failed", lambda: (s := status_of(cluster, ns, name)).get("phase") == "Failed" and s,
                      operator)  # fmt: skip
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "HostPathNotAllowed"
    assert compressed["message"].startswith(field) and "pvc://" in compressed["message"]
    assert condition(status, "Degraded")["status"] == "True"
    warnings = [e for e in events_for(cluster, ns, name) if e["reason"] == "HostPathNotAllowed"]
    assert warnings and warnings[0]["type"] == "Warning" and field in warnings[0]["message"]
    # The status is written after the decision that refused it: nothing was, or will be, created.
    for kind in ("jobs", "deployments", "services"):
        assert kubectl_json(cluster, "get", kind, "-n", ns)["items"] == [], kind


def test_a_pvc_store_is_used_and_no_pod_mounts_the_node(operator: Operator) -> None:
    cluster = operator.cluster
    ns = create_namespace(cluster, "confined-pvc")
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=model_deployment("on-claim", "zoo://digits-mlp", "uri: pvc://models/store"))  # fmt: skip
    job = wait_object(cluster, operator, "job", ns, "on-claim-g1-compress")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert not any("hostPath" in v for v in volumes), volumes
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "models"}} in volumes
    assert status_of(cluster, ns, "on-claim").get("phase") == "Compressing"


def test_the_operator_log_says_nothing_went_wrong(operator: Operator) -> None:
    """A refusal is a condition, not an error: the operator reconciled without raising."""
    assert "Traceback" not in operator.tail(400), operator.tail(80)
