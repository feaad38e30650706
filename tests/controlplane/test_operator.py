"""The operator against the real API server: examples → Jobs → profiling → serving, and what goes wrong.

The operator runs as its own process (`python -m frugal.operator.cluster.operator_command`) with a token
of the chart's ServiceAccount, bound only by the chart's rendered RBAC: a verb the code needs and the
chart lacks fails here. No kubelet exists, so the test plays its part (`operator_harness`).
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    IDENTITY_USER,
    Operator,
    chart_identity,
    condition,
    create_namespace,
    events_for,
    get,
    http,
    job_pods,
    kubectl_json,
    mark_ready,
    operator_counter,
    run_and_finish,
    serve_from_template,
    status_of,
    terminate_as_kubelet,
    wait_for,
    wait_object,
    wait_ticks,
)

from frugal.operator.manifests.jobs import BACKOFF_LIMIT


@pytest.fixture(scope="module")
def operator(crds_installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as the chart runs it: authenticated as the chart's ServiceAccount, allowed only
    what the chart's ClusterRole grants, for the whole journey (apply, compress, profile, serve,
    restart, fail, delete)."""
    work = tmp_path_factory.mktemp("operator")
    identity = chart_identity(crds_installed, work)
    running = Operator(crds_installed, work / "artifacts", work / "operator.log", kubeconfig=identity)
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- the journey of the digits example -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """examples/digits.yaml applied and driven to Serving (one full pipeline run for the module)."""
    cluster, ns = operator.cluster, create_namespace(operator.cluster, "op-journey")
    work = tmp_path_factory.mktemp("pods")
    cluster.kubectl("apply", "-n", ns, "-f", EXAMPLES_DIR / "digits.yaml")

    compress = wait_object(cluster, operator, "job", ns, "digits-g1-compress")
    proc = run_and_finish(cluster, compress, work)
    assert proc.returncode == 0, proc.stderr[-3000:]

    profile = wait_object(cluster, operator, "job", ns, "digits-g1-profile-local-cpu")
    proc = run_and_finish(cluster, profile, work)
    assert proc.returncode == 0, proc.stderr[-3000:]

    deployment = wait_object(cluster, operator, "deployment", ns, "digits-g1-shard-0")
    server, port = serve_from_template(deployment, work)
    try:
        ready = wait_for("the server to be ready", lambda: http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200,
                         operator)  # fmt: skip
        inference = http("POST", f"http://127.0.0.1:{port}/v2/models/digits/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}],
        })  # fmt: skip
        metadata = http("GET", f"http://127.0.0.1:{port}/v2/models/digits")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    mark_ready(cluster, deployment)
    wait_for("phase Serving", lambda: status_of(cluster, ns, "digits").get("phase") == "Serving", operator)
    return {"namespace": ns, "deployment": deployment, "ready": ready, "inference": inference, "metadata": metadata,
            "compress": compress, "work": work}  # fmt: skip


def test_digits_example_is_compressed_profiled_planned_and_served(
    served: dict[str, Any], operator: Operator
) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    code, body = served["inference"]
    assert code == 200, body
    assert body["outputs"][0]["shape"] == [1, 10]
    assert served["metadata"][0] == 200
    status = status_of(cluster, ns, "digits")
    assert status["selected"]["hardwareProfile"] == "local-cpu"
    assert status["selected"]["variant"] in {v["name"] for v in status["variants"]}
    assert condition(status, "Compressed")["status"] == "True"
    assert condition(status, "Profiled")["reason"] == "ProfilesMeasured"
    assert condition(status, "Ready")["reason"] == "ServingReady"
    assert condition(status, "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 1 and status["replicas"] == 1
    # the autoscaler's tick prices what runs; without a Prometheus it says so and holds the count
    status = wait_for("the autoscaler's cost of the ready replica",
                      lambda: float(((s := status_of(cluster, ns, "digits")).get("cost") or {}).get("perHour", 0)) > 0 and s,
                      operator)  # fmt: skip
    assert condition(status, "MetricsAvailable")["status"] == "False"
    assert "no Prometheus to read" in condition(status, "MetricsAvailable")["message"]
    assert status["autoscaling"]["reason"] == "MetricsStale" and status["autoscaling"]["desiredReplicas"] == [1]
    table = cluster.kubectl("get", "md", "digits", "-n", ns).stdout
    assert "Serving" in table and "local-cpu" in table and status["selected"]["variant"] in table
    verdicts = {(v["name"], p["hardwareProfile"]): p["verdict"] for v in status["variants"] for p in v["profiles"]}
    assert verdicts[(status["selected"]["variant"], "local-cpu")] == "chosen"  # kept by the API server's schema
    described = cluster.kubectl("describe", "md", "digits", "-n", ns).stdout
    assert "Verdict:" in described and "Joules Per Request:" in described, described[-2000:]
    reasons = {e["reason"] for e in events_for(cluster, ns, "digits")}
    assert {"CompressionRunning", "ArtifactsReady", "ServingReady", "PhaseServing"} <= reasons


def test_children_carry_owner_references_labels_and_the_endpoint(
    served: dict[str, Any], operator: Operator
) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    md_uid = kubectl_json(cluster, "get", "md", "digits", "-n", ns)["metadata"]["uid"]
    for kind, name in (("job", "digits-g1-compress"), ("deployment", "digits-g1-shard-0"),
                       ("service", "digits-g1-shard-0"), ("poddisruptionbudget", "digits-g1-shard-0"),
                       ("service", "digits")):  # fmt: skip
        obj = kubectl_json(cluster, "get", kind, name, "-n", ns, "--show-managed-fields")
        assert obj["metadata"]["ownerReferences"][0]["uid"] == md_uid
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "frugal-operator"
        applied = [m for m in obj["metadata"]["managedFields"] if m.get("operation") == "Apply"]
        managers = {m["manager"] for m in applied}
        if kind == "deployment":  # spec.replicas is the autoscaler's alone
            assert managers == {"frugal-operator", "frugal-autoscaler"}, (kind, name, managers)
            owners = {m["manager"] for m in applied if "f:replicas" in m["fieldsV1"].get("f:spec", {})}
            assert owners == {"frugal-autoscaler"}
        else:
            assert managers == {"frugal-operator"}, (kind, name, managers)
    endpoint = get(cluster, "service", ns, "digits")
    assert endpoint is not None and endpoint["spec"]["selector"]["frugal.dev/generation"] == "1"


def test_operator_metrics_are_exposed(served: dict[str, Any], operator: Operator) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "frugal_operator_reconcile_duration_seconds_count" in text
    per_model = f'model="digits",model_deployment="digits",namespace="{served["namespace"]}"'
    assert f'frugal_replicas{{hardware_profile="local-cpu",{per_model},shard="0"' in text
    assert f"frugal_cost_per_hour_usd{{{per_model}}}" in text
    assert f"frugal_slo_latency_p95_seconds{{{per_model}}} 0.05" in text
    assert f'frugal_variant_size_bytes{{{per_model},variant="' in text  # the compression report
    assert f'frugal_variant_accepted{{{per_model},variant="' in text
    per_md = f'model_deployment="digits",namespace="{served["namespace"]}"'
    assert f'frugal_model_deployment_phase{{{per_md},phase="Serving"}} 1.0' in text
    assert f'frugal_model_deployment_phase{{{per_md},phase="Compressing"}} 0.0' in text
    assert f'frugal_model_deployment_failed_jobs{{{per_md},stage="compression"}} 0.0' in text
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=10) as response:
        assert response.status == 200  # kopf's liveness endpoint, what the chart's probe reads


def test_a_settled_model_deployment_costs_no_api_request(served: dict[str, Any], operator: Operator) -> None:
    """Serving, nothing changing: the 1 s periodic pass and the 1 s autoscaler tick read and write
    nothing per ModelDeployment (the tick's three lists are all it costs)."""
    cluster, ns = operator.cluster, served["namespace"]
    wait_for("the autoscaler's status", lambda: status_of(cluster, ns, "digits").get("autoscaling"), operator)
    wait_ticks(operator, 3)  # whatever the last change set off has settled
    writes = operator_counter(operator, "frugal_operator_api_writes_total")
    requests = operator_counter(operator, "frugal_operator_api_requests_total")
    reconciles = operator_counter(operator, "frugal_operator_reconcile_duration_seconds_count")
    ticks = operator_counter(operator, "frugal_autoscaler_tick_duration_seconds_count")
    wait_ticks(operator, 5)
    assert operator_counter(operator, "frugal_operator_api_writes_total") == writes
    assert operator_counter(operator, "frugal_operator_reconcile_duration_seconds_count") == reconciles
    ticks_requests = operator_counter(operator, "frugal_operator_api_requests_total") - requests
    ticks = operator_counter(operator, "frugal_autoscaler_tick_duration_seconds_count") - ticks
    assert ticks >= 3, ticks  # the 1 s tick kept running
    # The tick lists ModelDeployments, Deployments and HardwareProfiles: 3 requests. In the full suite
    # the operator also serves earlier tests' ModelDeployments, whose own passes read too (28 requests
    # over 5 ticks seen there, within 3 a tick alone); twice the tick's cost bounds both until it gets an
    # operator of its own (issue 14, item 5).
    assert ticks_requests <= 6 * (ticks + 1), (ticks_requests, ticks)


def test_spec_change_rolls_out_a_new_generation_beside_the_old(
    served: dict[str, Any], operator: Operator
) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    cluster.kubectl("patch", "md", "digits", "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"serving": {"slo": {"latencyP95Ms": 40}}}}))  # fmt: skip
    wait_object(cluster, operator, "job", ns, "digits-g2-compress")
    status = wait_for("generation 2 observed", lambda: (s := status_of(cluster, ns, "digits"))
                      .get("observedGeneration") == 2 and s, operator)  # fmt: skip
    assert status["phase"] == "Compressing"
    assert condition(status, "Ready")["reason"] == "PreviousGenerationServing"
    assert get(cluster, "deployment", ns, "digits-g1-shard-0") is not None
    endpoint = get(cluster, "service", ns, "digits")
    assert endpoint is not None and endpoint["spec"]["selector"]["frugal.dev/generation"] == "1"


def test_restart_mid_pipeline_resumes_without_duplicates(served: dict[str, Any], operator: Operator) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    wait_object(cluster, operator, "job", ns, "digits-g2-compress")
    operator.kill()  # no graceful shutdown: whatever it was doing stops mid-way
    operator.start()
    job = wait_object(cluster, operator, "job", ns, "digits-g2-compress")
    terminate_as_kubelet(cluster, job, 2, "loading zoo://digits-mlp\nfrugal compress: error: the model file is truncated")
    status = wait_for("the failure after restart", lambda: (s := status_of(cluster, ns, "digits"))
                      .get("phase") == "Failed" and s, operator)  # fmt: skip
    assert "the model file is truncated" in condition(status, "Compressed")["message"]
    jobs = kubectl_json(cluster, "get", "jobs", "-n", ns, "-l", "frugal.dev/model-deployment=digits")["items"]
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert names == ["digits-g1-compress", "digits-g1-profile-local-cpu", "digits-g2-compress"]
    assert condition(status, "Ready")["reason"] == "PreviousGenerationServing"


def test_the_operator_wrote_every_child_as_the_charts_service_account(
    served: dict[str, Any], operator: Operator
) -> None:
    """The audit log: every Deployment, Service and PodDisruptionBudget the journey applied was written
    by the chart's ServiceAccount (the test itself only writes Deployment status, playing the kubelet)."""
    writes = [e for e in operator.cluster.audit_events(served["namespace"])
              if e["verb"] in ("create", "patch", "update") and not e["objectRef"].get("subresource")]  # fmt: skip
    assert {e["objectRef"]["resource"] for e in writes} >= {"deployments", "services", "poddisruptionbudgets"}
    assert {e["user"]["username"] for e in writes} == {IDENTITY_USER}


def test_deletion_cleans_up_every_child(served: dict[str, Any], operator: Operator) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    finalizers = kubectl_json(cluster, "get", "md", "digits", "-n", ns)["metadata"].get("finalizers", [])
    assert finalizers, "the operator holds a finalizer so that it can clean up"
    cluster.kubectl("delete", "md", "digits", "-n", ns, "--wait=false")
    wait_for("the ModelDeployment to be gone", lambda: get(cluster, "md", ns, "digits") is None, operator)
    selector = "frugal.dev/model-deployment=digits"
    for kind in ("jobs", "deployments", "services", "poddisruptionbudgets"):
        left = kubectl_json(cluster, "get", kind, "-n", ns, "-l", selector)["items"]
        assert left == [], f"{kind} left behind: {[i['metadata']['name'] for i in left]}"
    artifacts = operator.storage / ns / "digits" / "gen-1" / "manifest.json"
    assert artifacts.is_file()  # retainArtifacts defaults to true


def test_sharded_example_serves_through_both_stages(operator: Operator, tmp_path: Path) -> None:
    """examples/digits-sharded.yaml: two shard Deployments whose commands chain into one OIP endpoint."""
    cluster = operator.cluster
    ns = create_namespace(cluster, "op-sharded")
    profiles = [
        d
        for d in yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text())
        if d["kind"] == "HardwareProfile"
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(profiles))
    cluster.kubectl("apply", "-n", ns, "-f", EXAMPLES_DIR / "digits-sharded.yaml")
    for job in ("digits-sharded-g1-compress", "digits-sharded-g1-profile-local-cpu"):
        proc = run_and_finish(cluster, wait_object(cluster, operator, "job", ns, job), tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    back = wait_object(cluster, operator, "deployment", ns, "digits-sharded-g1-shard-1")
    front = wait_object(cluster, operator, "deployment", ns, "digits-sharded-g1-shard-0")
    front_command = front["spec"]["template"]["spec"]["containers"][0]["command"]
    assert (
        front_command[front_command.index("--next-stage") + 1]
        == f"http://digits-sharded-g1-shard-1.{ns}.svc:8080"
    )
    servers = []
    try:
        back_server, back_port = serve_from_template(back, tmp_path)
        servers.append(back_server)
        # No cluster DNS here: the next stage's Service name is swapped for its loopback address.
        front_server, front_port = serve_from_template(
            front, tmp_path, next_stage=f"http://127.0.0.1:{back_port}"
        )
        servers.append(front_server)
        url = f"http://127.0.0.1:{front_port}"
        # Each stage loads on its own; a front that is ready before the stage behind it answers 503.
        for stage, port in (("back", back_port), ("front", front_port)):
            ready = f"http://127.0.0.1:{port}/v2/health/ready"
            wait_for(
                f"the {stage} stage to be ready", lambda ready=ready: http("GET", ready)[0] == 200, operator
            )
        code, body = http("POST", f"{url}/v2/models/digits/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [0.5] * 128}],
        })  # fmt: skip
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    assert code == 200, body
    assert body["outputs"][0]["shape"] == [2, 10]
    mark_ready(cluster, back)
    mark_ready(cluster, front)
    status = wait_for("phase Serving", lambda: (s := status_of(cluster, ns, "digits-sharded")).get("phase") == "Serving" and s, operator)  # fmt: skip
    assert status["selected"]["shards"] == 2
    assert [s["index"] for s in status["shards"]] == [0, 1] and status["replicas"] == 2
    for index in (0, 1):
        assert get(cluster, "poddisruptionbudget", ns, f"digits-sharded-g1-shard-{index}") is not None


# -- what goes wrong -------------------------------------------------------------------------------------


MD_TEMPLATE = """
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{uri: "{uri}"}}
  serving: {{hardwareProfiles: [{profile}], slo: {{latencyP95Ms: 50}}}}
  storage: {{retainArtifacts: false}}
"""
PROFILE_TEMPLATE = """
apiVersion: frugal.dev/v1alpha1
kind: HardwareProfile
metadata: {{name: {name}}}
spec:
  accelerator: {{kind: cpu, model: x86-64, count: 1}}
  costPerHour: "0.05"
  power: {{idleWatts: 5, maxWatts: 15}}
"""


def compressing(operator: Operator, namespace: str, name: str, uri: str = "zoo://digits-mlp") -> tuple[str, dict[str, Any]]:
    """A fresh namespace holding ModelDeployment `name` of `uri` on a profile of its own: the
    namespace and the compression Job the operator created for it."""
    cluster = operator.cluster
    ns = create_namespace(cluster, namespace)
    cluster.kubectl("apply", "-f", "-", input=PROFILE_TEMPLATE.format(name=f"{name}-cpu"))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=MD_TEMPLATE.format(name=name, uri=uri, profile=f"{name}-cpu"))
    return ns, wait_object(cluster, operator, "job", ns, f"{name}-g1-compress")


def test_missing_hardware_profile_is_a_condition_until_it_is_created(operator: Operator) -> None:
    cluster = operator.cluster
    ns = create_namespace(cluster, "op-missing-profile")
    cluster.kubectl("apply", "-n", ns, "-f", "-",
                    input=MD_TEMPLATE.format(name="lost", uri="zoo://digits-mlp", profile="not-yet"))  # fmt: skip
    status = wait_for("HardwareProfileMissing", lambda: (s := status_of(cluster, ns, "lost"))
                      .get("phase") == "Pending" and s, operator)  # fmt: skip
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "HardwareProfileMissing" and "not-yet" in compressed["message"]
    assert condition(status, "Degraded")["status"] == "True"
    warnings = [e for e in events_for(cluster, ns, "lost") if e["reason"] == "HardwareProfileMissing"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert kubectl_json(cluster, "get", "jobs", "-n", ns)["items"] == []

    cluster.kubectl("apply", "-f", "-", input=PROFILE_TEMPLATE.format(name="not-yet"))
    wait_object(cluster, operator, "job", ns, "lost-g1-compress")
    status = wait_for("Compressing", lambda: (s := status_of(cluster, ns, "lost"))
                      .get("phase") == "Compressing" and s, operator)  # fmt: skip
    assert condition(status, "Degraded")["status"] == "False"


def test_unreadable_model_fails_the_job_and_says_what_to_fix(operator: Operator, tmp_path: Path) -> None:
    cluster = operator.cluster
    ns, job = compressing(operator, "op-bad-model", "nomodel", "zoo://no-such-model")
    proc = run_and_finish(cluster, job, tmp_path)
    assert proc.returncode != 0 and "no-such-model" in proc.stderr
    status = wait_for("phase Failed", lambda: (s := status_of(cluster, ns, "nomodel"))
                      .get("phase") == "Failed" and s, operator)  # fmt: skip
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "CompressionFailed"
    assert "no-such-model" in compressed["message"]
    failed = [e for e in events_for(cluster, ns, "nomodel") if e["reason"] == "CompressionFailed"]
    assert failed and failed[0]["type"] == "Warning"
    # What FrugalCompressionJobFailed and FrugalModelDeploymentNotServing read.
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    per_md = f'model_deployment="nomodel",namespace="{ns}"'
    assert f'frugal_model_deployment_failed_jobs{{{per_md},stage="compression"}} 1.0' in text
    assert f'frugal_model_deployment_phase{{{per_md},phase="Failed"}} 1.0' in text
    assert f'frugal_model_deployment_phase{{{per_md},phase="Serving"}} 0.0' in text
    wait_ticks(operator, 3)  # several resync intervals: still one Job, no crash loop
    assert [j["metadata"]["name"] for j in kubectl_json(cluster, "get", "jobs", "-n", ns)["items"]] == [
        "nomodel-g1-compress"
    ]
    assert operator.proc is not None and operator.proc.poll() is None

    # retainArtifacts: false — the finalizer removes the artifacts (no garbage collector touches files).
    leftover = operator.storage / ns / "nomodel" / "gen-1" / "partial.onnx"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"x")
    cluster.kubectl("delete", "md", "nomodel", "-n", ns, "--wait=false")
    wait_for("the ModelDeployment to be gone", lambda: get(cluster, "md", ns, "nomodel") is None, operator)
    assert not (operator.storage / ns / "nomodel").exists()


def test_a_sigkilled_operator_resumes_its_own_pipeline_without_duplicates(operator: Operator, tmp_path: Path) -> None:
    """Its own ModelDeployment, from nothing: the operator is SIGKILLed the moment its compression Job
    appears (the pass that applied it had not written the status yet), the Job runs while it is down,
    and the restarted operator goes on from what the cluster holds: one compression Job, one profiling
    Job, the status caught up."""
    cluster = operator.cluster
    ns, job = compressing(operator, "op-killed", "killed")
    operator.kill()
    proc = run_and_finish(cluster, job, tmp_path)  # the Job's pod runs on without the operator
    assert proc.returncode == 0, proc.stderr[-2000:]
    operator.start()
    wait_object(cluster, operator, "job", ns, "killed-g1-profile-killed-cpu")
    status = wait_for("phase Profiling", lambda: (s := status_of(cluster, ns, "killed"))
                      .get("phase") == "Profiling" and s, operator)  # fmt: skip
    assert status["observedGeneration"] == 1 and condition(status, "Compressed")["status"] == "True"
    names = sorted(j["metadata"]["name"] for j in kubectl_json(cluster, "get", "jobs", "-n", ns)["items"])
    assert names == ["killed-g1-compress", "killed-g1-profile-killed-cpu"]


def test_a_job_that_keeps_failing_is_retried_then_fails_with_the_pods_message(operator: Operator) -> None:
    """A failure that may pass on another try (exit code 1: here a GPU fault) is retried by the Job
    controller up to the Job's backoffLimit while the ModelDeployment stays Compressing; the last one
    fails the Job, and the termination message the kubelet wrote into the pod's status is what the
    condition and the Event say."""
    cluster = operator.cluster
    ns, job = compressing(operator, "op-retried", "flaky")
    log = "epoch 1/3\nRuntimeError: CUDA error: an illegal memory access was encountered"

    def failed_pods() -> int:
        return int(((get(cluster, "job", ns, "flaky-g1-compress") or {}).get("status") or {}).get("failed", 0))

    for attempt in range(BACKOFF_LIMIT + 1):
        terminate_as_kubelet(cluster, job, 1, log, timeout_s=120)  # the controller's back-off: 10 s, then 20 s
        wait_for(f"failure {attempt + 1} counted", lambda n=attempt + 1: failed_pods() == n, operator)  # type: ignore[misc]
        if attempt < BACKOFF_LIMIT:
            assert status_of(cluster, ns, "flaky").get("phase") == "Compressing"
    status = wait_for("phase Failed", lambda: (s := status_of(cluster, ns, "flaky"))
                      .get("phase") == "Failed" and s, operator)  # fmt: skip
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "CompressionFailed"
    assert "BackoffLimitExceeded" in compressed["message"] and "illegal memory access" in compressed["message"]
    assert len(job_pods(cluster, job)) == BACKOFF_LIMIT + 1
    failed = [e for e in events_for(cluster, ns, "flaky") if e["reason"] == "CompressionFailed"]
    assert failed and "illegal memory access" in failed[0]["message"]


# -- fields that shape compression ------------------------------------------------------------------------

SHAPED_MD = """
apiVersion: frugal.dev/v1alpha1
kind: ModelDeployment
metadata: {name: shaped}
spec:
  model: {uri: "zoo://digits-mlp"}
  compression:
    pruning: {method: threshold, thresholdScale: 2.0}
    distillation: {student: {widthFactor: 0.5, depthFactor: 0.5}, epochs: 1}
    accuracyBudget: {metric: f1, maxDrop: 1.0}
  serving: {hardwareProfiles: [shaped-cpu], slo: {latencyP95Ms: 50}}
  storage: {retainArtifacts: false}
"""


def weight_matrices(path: Path) -> list[Any]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 2]


def test_threshold_scale_depth_factor_and_f1_shape_what_the_compression_job_builds(
    operator: Operator, tmp_path: Path
) -> None:
    """Applied through the API server, run as the operator's Job: the threshold variant zeroes exactly
    the weights below 2 x their layer's mean |w|, the student keeps half the hidden layers, and every
    variant is scored by macro F1."""
    cluster = operator.cluster
    ns = create_namespace(cluster, "op-shaped")
    cluster.kubectl("apply", "-f", "-", input=PROFILE_TEMPLATE.format(name="shaped-cpu"))
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=SHAPED_MD)
    job = wait_object(cluster, operator, "job", ns, "shaped-g1-compress")
    proc = run_and_finish(cluster, job, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    generation = operator.storage / ns / "shaped" / "gen-1"
    report = json.loads((generation / "report.json").read_text())
    assert report["metric"] == "f1"
    assert {v["metric"]["name"] for v in report["variants"] if v["metric"]} == {"f1"}
    manifest = json.loads((generation / "manifest.json").read_text())
    files = {v["name"]: generation / v["file"] for v in manifest["variants"]}
    fp32, pruned = weight_matrices(files["fp32"]), weight_matrices(files["pruned-threshold-200"])
    assert len(fp32) == len(pruned)
    for teacher, thresholded in zip(fp32, pruned, strict=True):
        below = np.abs(teacher) < 2.0 * np.abs(teacher).mean()
        assert int((thresholded == 0).sum()) == int(below.sum())
    student = weight_matrices(files["student"])
    assert len(student) == len(fp32) - 1  # one of the two hidden layers kept, plus the output layer
