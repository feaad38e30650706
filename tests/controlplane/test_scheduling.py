"""Pods land where the HardwareProfiles say, by the real kube-scheduler.

This module runs its own control plane with kube-scheduler and registers one Node per pool of
`examples/hardwareprofiles.yaml` — its labels, its taints, its allocatable CPU, memory and
`nvidia.com/gpu` / `google.com/tpu` — as a cloud's node pools would. The profiles are the examples'
with the CPU execution provider (this machine runs the Jobs' commands for the kubelet that is not
there); what scheduling reads — node selectors, tolerations, resources, the accelerator — is theirs.

The compression pod is bound to the GPU pool, each profiling pod to its candidate's pool, the serving
pods to the chosen profile's pool; a profile whose pool has no Node keeps its pod Pending and the
ModelDeployment says so: Degraded, reason Unschedulable, naming the profile and the scheduler's reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import CRD_DIR, EXAMPLES_DIR, ControlPlane, ensure_binaries
from operator_harness import (
    Operator,
    chart_identity,
    create_namespace,
    events_for,
    job_pods,
    kubectl_json,
    now,
    run_job_command,
    status_of,
    terminate_as_kubelet,
    wait_for,
    wait_object,
)

from frugal.operator.manifests.pod_specs import ACCELERATOR_RESOURCES

MD = """
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{uri: "zoo://digits-mlp"}}
  compression:
    hardwareProfile: {compression}
    quantization: {{method: dynamic-int8}}
    accuracyBudget: {{metric: accuracy, maxDrop: 0.02}}
  serving: {{hardwareProfiles: [{serving}], slo: {{latencyP95Ms: 200}}}}
"""


def pools() -> list[dict[str, Any]]:
    """The example profiles, on the CPU execution provider."""
    profiles = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "hardwareprofiles.yaml").read_text()) if d]
    for profile in profiles:
        profile["spec"]["executionProvider"] = "CPUExecutionProvider"
    return profiles


def node_for(profile: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Node of `profile`'s pool (its object and its status): the labels its nodeSelector asks for,
    the taints its tolerations tolerate, room for a few of its pods, and its accelerators."""
    spec, name = profile["spec"], f"{profile['metadata']['name']}-node"
    taints = [{"key": t["key"], "effect": t["effect"], **({"value": t["value"]} if "value" in t else {})}
              for t in spec.get("tolerations", [])]  # fmt: skip
    allocatable = {"cpu": "96", "memory": "512Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    extended = ACCELERATOR_RESOURCES.get(spec["accelerator"]["kind"])
    if extended:
        allocatable[extended] = str(4 * int(spec["accelerator"].get("count", 1)))
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **spec.get("nodeSelector", {})}},
        "spec": {"taints": taints},
    }  # fmt: skip
    status = {
        "capacity": allocatable, "allocatable": allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "played by the test",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
    }  # fmt: skip
    return node, status


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    work = tmp_path_factory.mktemp("scheduling")
    cluster = ControlPlane(ensure_binaries(), work / "controlplane", with_scheduler=True)
    cluster.start()
    operator = Operator(cluster, work / "artifacts", work / "operator.log")
    try:
        # As the chart runs it: its ServiceAccount, bound only by its rendered RBAC.
        operator.kubeconfig = chart_identity(cluster, work)
        cluster.kubectl("apply", "-f", CRD_DIR)
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", CRD_DIR)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pools()))
        for profile in pools():
            node, status = node_for(profile)
            cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(node))
            cluster.kubectl("patch", "node", node["metadata"]["name"], "--subresource=status", "--type=merge",
                            "-p", yaml.safe_dump({"status": status}))  # fmt: skip
            # The API server taints a new Node not-ready until the node lifecycle controller sees it
            # Ready; that controller does not run here, so its part is played: the pool's own taints.
            cluster.kubectl("patch", "node", node["metadata"]["name"], "--type=merge",
                            "-p", yaml.safe_dump({"spec": {"taints": node["spec"]["taints"]}}))  # fmt: skip
        operator.start()
        yield operator
    finally:
        operator.stop()
        cluster.stop()


def bound_node(operator: Operator, job: dict[str, Any]) -> str:
    """The Node the scheduler bound the Job's pod to (waits for the Job controller and the scheduler)."""

    def placed() -> str | None:
        names = [p["spec"].get("nodeName") for p in job_pods(operator.cluster, job)]
        return next((n for n in names if n), None)

    return str(wait_for(f"a pod of {job['metadata']['name']} bound to a node", placed, operator))


def run_as_kubelet(operator: Operator, job: dict[str, Any], workdir: Path) -> None:
    """Run the Job's command here and end its pod as the kubelet would; the Job controller completes it."""
    proc = run_job_command(job, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminate_as_kubelet(operator.cluster, job, 0, proc.stdout + proc.stderr)


def test_each_pod_lands_on_its_profiles_pool(scheduled: Operator, tmp_path: Path) -> None:
    operator, cluster = scheduled, scheduled.cluster
    ns = create_namespace(cluster, "placed")
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=MD.format(name="placed", compression="gpu-t4", serving="cpu-small, gpu-t4"))  # fmt: skip
    compress = wait_object(cluster, operator, "job", ns, "placed-g1-compress")
    assert bound_node(operator, compress) == "gpu-t4-node"
    run_as_kubelet(operator, compress, tmp_path)
    for profile in ("cpu-small", "gpu-t4"):
        profiling = wait_object(cluster, operator, "job", ns, f"placed-g1-profile-{profile}")
        assert bound_node(operator, profiling) == f"{profile}-node"
        run_as_kubelet(operator, profiling, tmp_path)
    status = wait_for("a choice", lambda: (s := status_of(cluster, ns, "placed")).get("selected") and s, operator)
    chosen = status["selected"]["hardwareProfile"]
    deployment = wait_object(cluster, operator, "deployment", ns, "placed-g1-shard-0")
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())

    def serving_nodes() -> set[str] | None:
        pods = kubectl_json(cluster, "get", "pods", "-n", ns, "-l", selector)["items"]
        nodes = {p["spec"].get("nodeName") for p in pods}
        return nodes if pods and None not in nodes else None

    assert wait_for("the serving pods bound", serving_nodes, operator) == {f"{chosen}-node"}


def stranded(operator: Operator, profile: dict[str, Any], name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Apply `profile`, then a ModelDeployment `name` compressing on it in a namespace of the same name;
    its compression Job and the Unschedulable condition the operator then sets."""
    cluster = operator.cluster
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(profile))
    ns = create_namespace(cluster, name)
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=MD.format(name=name, compression=profile["metadata"]["name"], serving="cpu-small"))  # fmt: skip
    job = wait_object(cluster, operator, "job", ns, f"{name}-g1-compress")

    def unschedulable() -> dict[str, Any] | None:
        conditions = status_of(cluster, ns, name).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Degraded" and c["reason"] == "Unschedulable"), None)

    return ns, job, wait_for("the Unschedulable condition", unschedulable, operator)


def test_a_profile_whose_pool_has_no_node_says_why(scheduled: Operator) -> None:
    operator, cluster = scheduled, scheduled.cluster
    h100 = next(p for p in pools() if p["metadata"]["name"] == "gpu-a100")
    h100["metadata"]["name"] = "gpu-h100"
    h100["spec"]["nodeSelector"] = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    ns, job, found = stranded(operator, h100, "stranded")
    assert "gpu-h100" in found["message"] and "node affinity/selector" in found["message"], found["message"]
    assert status_of(cluster, ns, "stranded")["phase"] == "Compressing"  # a node may still join the pool
    assert [p["spec"].get("nodeName") for p in job_pods(cluster, job)] == [None]
    warnings = [e for e in events_for(cluster, ns, "stranded") if e["reason"] == "Unschedulable"]
    assert warnings and warnings[0]["type"] == "Warning" and "gpu-h100" in warnings[0]["message"]


def test_a_pool_too_small_for_the_profile_says_why(scheduled: Operator) -> None:
    """The pool's node exists and the pod may go there, but it asks for more GPUs than the node has."""
    operator, cluster = scheduled, scheduled.cluster
    wide = next(p for p in pools() if p["metadata"]["name"] == "gpu-t4")
    wide["metadata"]["name"] = "gpu-t4-x8"
    wide["spec"]["accelerator"]["count"] = 8
    wide["spec"]["resources"]["limits"]["nvidia.com/gpu"] = 8  # the T4 node has 4
    _, job, found = stranded(operator, wide, "squeezed")
    assert "gpu-t4-x8" in found["message"] and "Insufficient nvidia.com/gpu" in found["message"], found["message"]
    assert [p["spec"].get("nodeName") for p in job_pods(cluster, job)] == [None]
