"""What a ModelDeployment author cannot make the operator do, asked of the real API server and an
operator started as the chart starts it: without --allow-host-path, a file:// URI — a directory of
the node (hostPath) or of the image — is refused with a condition naming the field and an Event, and
nothing is created; a pvc:// store is used as usual, and no pod the operator writes mounts the node.
With --network-policies the pods are confined by NetworkPolicies the API server accepts, which select
the very pods the Job controller creates — the rendezvous admits exactly the workers of the one Job —
and go with the ModelDeployment. The operator runs as the chart's ServiceAccount, bound only by the
chart's rendered RBAC.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from controlplane_harness import ControlPlane
from operator_harness import (
    Operator,
    chart_identity,
    condition,
    create_namespace,
    events_for,
    job_pods,
    kubectl_json,
    status_of,
    wait_for,
    wait_object,
)

from frugal.operator.manifests.container_commands import DISTRIBUTED_PORT

PROFILE = """
apiVersion: frugal.dev/v1alpha1
kind: HardwareProfile
metadata: {name: confined-cpu}
spec:
  accelerator: {kind: cpu, model: x86-64, count: 1}
  costPerHour: "0.05"
"""


def model_deployment(name: str, model_uri: str, storage: str, compression: str = "") -> str:
    data = "" if model_uri.startswith("zoo:") else "\n  data: {validation: {uri: pvc://datasets/digits-val.npz}}"
    compression = f"\n  compression: {{{compression}}}" if compression else ""
    return f"""
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{uri: "{model_uri}"}}{data}{compression}
  serving: {{hardwareProfiles: [confined-cpu], slo: {{latencyP95Ms: 50}}}}
  storage: {{{storage}}}
"""


def label_selector(selector: dict[str, Any]) -> str:
    """A NetworkPolicy's podSelector as kubectl's -l (matchLabels, and In expressions: what ours use)."""
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    terms += [f"{e['key']} in ({','.join(e['values'])})" for e in selector.get("matchExpressions", [])]
    assert terms, "an empty selector would select every pod"
    return ",".join(terms)


@pytest.fixture(scope="module")
def operator(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    work = tmp_path_factory.mktemp("confined")
    identity = chart_identity(crds_installed, work)
    running = Operator(crds_installed, work / "artifacts", work / "operator.log", ["--network-policies"],
                       host_path=False, kubeconfig=identity)  # fmt: skip
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
    for kind in ("jobs", "deployments", "services", "networkpolicies"):
        assert kubectl_json(cluster, "get", kind, "-n", ns)["items"] == [], kind


def test_a_pvc_store_is_used_and_no_pod_mounts_the_node(operator: Operator) -> None:
    cluster = operator.cluster
    ns = create_namespace(cluster, "confined-pvc")
    distilled = "distillation: {workers: 2, student: {widthFactor: 0.5}}"
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=model_deployment("on-claim", "zoo://digits-mlp", "uri: pvc://models/store", distilled))  # fmt: skip
    job = wait_object(cluster, operator, "job", ns, "on-claim-g1-compress")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert not any("hostPath" in v for v in volumes), volumes
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "models"}} in volumes
    assert status_of(cluster, ns, "on-claim").get("phase") == "Compressing"

    policies = {p["metadata"]["name"]: p["spec"] for p in kubectl_json(cluster, "get", "networkpolicies", "-n", ns)["items"]}
    assert set(policies) == {"on-claim-serving", "on-claim-jobs", "on-claim-rendezvous"}
    # The Job controller's pods (it labels them with the Job's name): both distillation workers.
    workers = wait_for("the Job controller's two workers",
                       lambda: len(pods := job_pods(cluster, job)) == 2 and pods, operator)  # fmt: skip
    job_pod_names = {p["metadata"]["name"] for p in workers}
    # Ingress-type with no rule (the API server drops the empty list): nothing may reach these pods...
    assert policies["on-claim-jobs"]["policyTypes"] == ["Ingress"] and not policies["on-claim-jobs"].get("ingress")
    # ...but what the rendezvous policy adds: its port, from its own Job's pods.
    [rule] = policies["on-claim-rendezvous"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [DISTRIBUTED_PORT]
    [source] = rule["from"]
    for what, selector in (("confined", policies["on-claim-jobs"]["podSelector"]),
                           ("given the rendezvous", policies["on-claim-rendezvous"]["podSelector"]),
                           ("admitted to it", source["podSelector"])):  # fmt: skip
        found = kubectl_json(cluster, "get", "pods", "-n", ns, "-l", label_selector(selector))["items"]
        assert {p["metadata"]["name"] for p in found} == job_pod_names, what
    cluster.kubectl("delete", "md", "on-claim", "-n", ns, "--wait=false")
    wait_for("the policies to go with it", lambda: kubectl_json(cluster, "get", "networkpolicies", "-n", ns)["items"] == [],
             operator)  # fmt: skip


def test_the_operator_log_says_nothing_went_wrong(operator: Operator) -> None:
    """A refusal is a condition, not an error: the operator reconciled without raising."""
    assert "Traceback" not in operator.tail(400), operator.tail(80)


def test_a_batch_inference_writing_to_the_node_is_refused(operator: Operator) -> None:
    cluster = operator.cluster
    ns = create_namespace(cluster, "confined-batch")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input="""
apiVersion: frugal.dev/v1alpha1
kind: BatchInference
metadata: {name: to-the-node}
spec:
  model: {artifacts: {uri: "pvc://models/digits/gen-1", variant: fp32}}
  input: {uri: "pvc://data/digits.npz"}
  output: {uri: "file:///etc/cron.d"}
  hardwareProfiles: [confined-cpu]
""")
    status = wait_for("the BatchInference to fail", lambda: (s := (kubectl_json(cluster, "get", "batchinference",
                      "to-the-node", "-n", ns).get("status") or {})).get("phase") == "Failed" and s, operator)  # fmt: skip
    planned = condition(status, "Planned")
    assert planned["reason"] == "HostPathNotAllowed" and planned["message"].startswith("spec.output.uri")
    assert kubectl_json(cluster, "get", "jobs", "-n", ns)["items"] == []
