"""A user's day on a cluster, on a real node: every pod is run by the kubelet in a container.

`helm install` with the images `scripts/build-images.sh` built, in a namespace that enforces the
restricted Pod Security Standard; the artifacts claim bound to a PersistentVolume the test provides
as a provisioner would; the node labelled and tainted as one pool; `kubectl apply` of the digits
example. Then the model is asked over its Service's ClusterIP (REST and gRPC), the leading operator
pod (of the chart's two) is deleted mid-pipeline and the standby finishes, the failures a new user meets (an image the node does not have, a Job killed
at its memory limit) are read back from the conditions, and `helm uninstall` keeps the CRDs and the
claim. Nothing here runs a pod's command as a process of the test.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from controlplane_harness import CHART_DIR, CRD_DIR, EXAMPLES_DIR
from journey_support import (
    JOURNEY_NAMESPACE,
    POOL_LABEL,
    POOL_TAINT,
    BuiltImages,
    Load,
    MemoryWatch,
    PodDiscovery,
    container_states,
    held_out_accuracy,
    pods_of,
    pool_profile,
    restricted_namespace,
    seconds_to_ready,
)
from prometheus_harness import Prometheus
from s3_harness import S3Server, ensure_weed_binary

from frugal.operator.manifests.container_commands import GRPC_PORT, SERVING_PORT
from frugal.schema.artifact_format import read_manifest

PIPELINE_TIMEOUT_S = 1200.0
RELEASE = "frugal"
MODEL_CACHE_NAMESPACE = "frugal-node"
BUCKET_SECRET = "frugal-bucket"  # what examples/digits-bucket.yaml names
FROM_NODE_CACHE = "from the node cache"  # what `frugal serve` logs when it loads the agent's copy


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, on_timeout: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(2.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{on_timeout()}")


@pytest.fixture(scope="module")
def measured() -> Iterator[dict[str, Any]]:
    """What the journey measured (pod starts, the wake): printed at the end, and written as JSON to
    $FRUGAL_E2E_REPORT when set (BENCHMARKS.md's real-pod numbers come from it)."""
    found: dict[str, Any] = {}
    started = time.monotonic()
    yield found
    found["journey duration (s)"] = round(time.monotonic() - started, 1)
    print("\n" + json.dumps(found, indent=1))
    if report := os.environ.get("FRUGAL_E2E_REPORT"):
        Path(report).write_text(json.dumps(found, indent=1) + "\n")


@pytest.fixture(scope="module")
def built_images() -> BuiltImages:
    """The serving and full images, built by scripts/build-images.sh (seconds when the tree is unchanged)."""
    return BuiltImages.build("serving", "full")


@pytest.fixture(scope="module")
def prometheus(real_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus outside the cluster, on the pod network's gateway so the operator pod can
    query it, scraping the serving pods the API server lists (PodDiscovery)."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), interval_s=2.0, listen_host=real_cluster.pod_gateway_ip)
    server.start()
    try:
        with PodDiscovery(real_cluster, server, JOURNEY_NAMESPACE):
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_store(real_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) outside the cluster, on the pod network's gateway like Prometheus,
    so the operator's and the model's pods reach it with the keys of a Secret."""
    with S3Server(ensure_weed_binary(), tmp_path_factory.mktemp("s3"), host=real_cluster.pod_gateway_ip) as server:
        server.make_bucket("frugal-models")
        yield server


@pytest.fixture(scope="module")
def installed(real_cluster: Any, built_images: BuiltImages, prometheus: Prometheus) -> Iterator[Any]:
    """The chart installed as a user would, with the built images, on the pool's node."""
    cluster = real_cluster
    cluster.load_images([built_images.archive("full"), built_images.archive("serving")])
    restricted_namespace(cluster, JOURNEY_NAMESPACE)
    # The node model cache's agent needs hostPath: a namespace of its own that admits it; the models'
    # namespace stays restricted and reaches the cache through the claim the operator makes.
    cluster.create_namespace(MODEL_CACHE_NAMESPACE, {"pod-security.kubernetes.io/enforce": "privileged"})
    model_cache = cluster.volume_path("model-cache")
    cluster.host_path_volume("frugal-artifacts", "20Gi", ["ReadWriteMany"], owner_uid=65532)
    cluster.kubectl("label", "node", cluster.node_name, f"{POOL_LABEL}=cpu", "--overwrite")
    cluster.kubectl("taint", "node", cluster.node_name, f"{POOL_TAINT}=cpu:NoSchedule", "--overwrite")
    toleration = [{"key": POOL_TAINT, "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}]
    repository, tag = built_images.reference("full").rsplit(":", 1)
    cluster.helm(
        "install", RELEASE, CHART_DIR, "--namespace", JOURNEY_NAMESPACE,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"operator.prometheusUrl={prometheus.url}",
        "--set", "operator.autoscaleInterval=5",
        "--set-json", f"operator.tolerations={json.dumps(toleration)}",
        "--set-json", 'operator.extraEnv=[{"name": "FRUGAL_RATE_WINDOW", "value": "10s"}]',
        "--set", "artifacts.size=20Gi",
        "--set", "modelCache.enabled=true", "--set", f"modelCache.namespace={MODEL_CACHE_NAMESPACE}",
        "--set", f"modelCache.hostPath={model_cache}",
        "--set-json", f"modelCache.tolerations={json.dumps(toleration)}",
        "--set-json", f'objectStore.secretNames=["{BUCKET_SECRET}"]',  # the one Secret it may read
        "--wait", "--timeout", "10m",
    )  # fmt: skip
    yield cluster


def pod_log(cluster: Any, pod: dict[str, Any]) -> str:
    return str(cluster.kubectl("logs", "-n", JOURNEY_NAMESPACE, pod["metadata"]["name"], check=False).stdout)


def md_status(cluster: Any, name: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", "modeldeployment", name, "-n", JOURNEY_NAMESPACE, "-o", "json", check=False)
    return (json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def operator_diagnostics(cluster: Any) -> str:
    pods = cluster.kubectl("get", "pods", "-n", JOURNEY_NAMESPACE, "-o", "wide", check=False).stdout
    logs = cluster.kubectl(
        "logs", "-n", JOURNEY_NAMESPACE, "-l", "app.kubernetes.io/name=frugal", "--tail=60", check=False
    ).stdout
    events = cluster.kubectl("get", "events", "-n", JOURNEY_NAMESPACE, "--sort-by=.lastTimestamp", check=False)
    return f"--- pods ---\n{pods}\n--- operator log ---\n{logs}\n--- events ---\n{events.stdout[-4000:]}"


OPERATOR_PODS = "app.kubernetes.io/name=frugal"
LEASE = RELEASE  # the chart names the Lease after the release (frugal.fullname)


def leader_pod(cluster: Any) -> str | None:
    """The operator pod that holds the leader-election Lease (its identity is the pod's name + a suffix)."""
    proc = cluster.kubectl("get", "lease", LEASE, "-n", JOURNEY_NAMESPACE, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    holder = json.loads(proc.stdout)["spec"].get("holderIdentity") or ""
    return holder.rsplit("_", 1)[0] or None


def test_the_operator_runs_as_the_charts_two_pods_under_the_restricted_standard(installed: Any) -> None:
    cluster = installed
    pods = pods_of(cluster, JOURNEY_NAMESPACE, OPERATOR_PODS)
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]  # the chart's default: a leader and a standby
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == RELEASE
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
        [state] = container_states(pod)
        assert state.container_id.startswith("containerd://") and state.ready and state.restarts == 0
    leading = wait_until(
        "one operator pod leading", lambda: leader_pod(cluster), 60.0, lambda: operator_diagnostics(cluster)
    )
    assert leading in {p["metadata"]["name"] for p in pods}
    labels = json.loads(cluster.kubectl("get", "namespace", JOURNEY_NAMESPACE, "-o", "json").stdout)["metadata"]
    assert labels["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.fixture(scope="module")
def served(installed: Any, measured: dict[str, Any]) -> dict[str, Any]:
    """examples/digits.yaml, its HardwareProfile placed on the pool, driven to Serving by the operator pod."""
    cluster = installed
    documents = list(yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text()))
    documents = [pool_profile(d) if d["kind"] == "HardwareProfile" else d for d in documents]
    started = time.monotonic()
    with MemoryWatch(cluster, JOURNEY_NAMESPACE, "batch.kubernetes.io/job-name=digits-g1-compress") as memory:
        cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump_all(documents))
        status = wait_serving(cluster, "digits")
    # Serving means the shard's pods are Ready; the endpoint controller and kube-proxy program the
    # Service's address after that, on their own time, and until then a connection is refused.
    cluster.wait_service_endpoints(JOURNEY_NAMESPACE, "digits")
    measured["digits: apply -> Serving (s)"] = round(time.monotonic() - started, 1)
    mib = 1024 * 1024
    limit = next(d for d in documents if d["kind"] == "HardwareProfile")["spec"]["resources"]["limits"]["memory"]
    measured[f"digits compression Job, peak memory incl. page cache (MiB, limit {limit})"] = [
        round(v / mib) for v in memory.peak_usage.values()
    ]
    measured["digits compression Job, peak anonymous memory (MiB)"] = [round(v / mib) for v in memory.peak_rss.values()]
    return status


def test_digits_is_compressed_profiled_and_served_by_containers(installed: Any, served: dict[str, Any]) -> None:
    cluster = installed
    jobs = {"compression": "digits-g1-compress", "profiling": "digits-g1-profile-local-cpu"}
    for what, job in jobs.items():
        pods = pods_of(cluster, JOURNEY_NAMESPACE, f"batch.kubernetes.io/job-name={job}")
        assert [p["status"]["phase"] for p in pods] == ["Succeeded"], f"{what}: {pods}"
        [state] = container_states(pods[0])
        assert state.container_id.startswith("containerd://"), state
        assert state.terminated_reason == "Completed" and state.restarts == 0, state
    serving = pods_of(cluster, JOURNEY_NAMESPACE, "app.kubernetes.io/component=serving")
    assert serving and all(p["status"]["phase"] == "Running" for p in serving)
    for pod in serving:
        for state in container_states(pod):
            assert state.ready and state.restarts == 0 and state.container_id.startswith("containerd://"), state
            assert state.last_terminated_reason != "OOMKilled"


def test_the_nodes_cache_agent_publishes_the_served_variant_read_only(installed: Any, served: dict[str, Any]) -> None:
    """The serving pod verified its variant and offered it through its namespace's claim; the agent of
    the DaemonSet (in its own privileged namespace) published it, read-only, under that namespace."""
    cluster = installed
    [agent] = pods_of(cluster, MODEL_CACHE_NAMESPACE, "app.kubernetes.io/name=frugal-model-cache")
    assert all(s.ready and s.container_id.startswith("containerd://") for s in container_states(agent))
    variants = cluster.volume_path("model-cache") / JOURNEY_NAMESPACE / "variants"
    entries = wait_until("the served variant in the node cache", lambda: variants.is_dir() and list(variants.iterdir()),
                         60.0, lambda: operator_diagnostics(cluster))  # fmt: skip
    files = [p for entry in entries for p in entry.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o444 for p in files), files
    claim = json.loads(cluster.kubectl("get", "pvc", "frugal-model-cache", "-n", JOURNEY_NAMESPACE, "-o", "json").stdout)
    assert claim["status"]["phase"] == "Bound"


def digits_on(name: str, profile: str) -> dict[str, Any]:
    """The digits example's ModelDeployment, renamed, on another HardwareProfile."""
    documents = yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text())
    md: dict[str, Any] = next(d for d in documents if d["kind"] == "ModelDeployment")
    md["metadata"]["name"] = name
    md["spec"]["serving"]["hardwareProfiles"] = [profile]
    return md


def service_ip(cluster: Any, name: str) -> str:
    service = json.loads(cluster.kubectl("get", "service", name, "-n", JOURNEY_NAMESPACE, "-o", "json").stdout)
    return str(service["spec"]["clusterIP"])


def test_the_model_answers_over_its_cluster_ip_with_the_held_out_accuracy(
    installed: Any, served: dict[str, Any]
) -> None:
    cluster = installed
    address = service_ip(cluster, "digits")
    manifest_uri = served["artifacts"]["uri"]  # pvc://frugal-artifacts/<ns>/digits/gen-1
    claim_path = manifest_uri.removeprefix("pvc://frugal-artifacts/")
    manifest = read_manifest(cluster.volume_path("frugal-artifacts") / claim_path)
    entry = manifest.variant(served["selected"]["variant"])
    accuracy, rows = held_out_accuracy(f"http://{address}:{SERVING_PORT}", "digits", entry)
    assert rows > 100 and entry.metric is not None
    # Dynamic INT8 quantizes activations per request batch, so another batching may flip a row or two.
    assert accuracy == pytest.approx(entry.metric.value, abs=0.005), (accuracy, entry.metric)
    assert accuracy >= 0.95

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{address}:{GRPC_PORT}")
    assert client.is_model_ready("digits")
    spec = entry.inputs[0]
    tensor = grpcclient.InferInput(spec.name, [1, *spec.shape[1:]], spec.datatype)
    tensor.set_data_from_numpy(np.zeros([1, *spec.shape[1:]], dtype=np.float32))
    answer = client.infer("digits", [tensor]).as_numpy(entry.outputs[0].name)
    assert answer is not None and answer.shape[0] == 1


def test_a_model_in_a_bucket_is_compressed_profiled_and_served_by_pods_holding_only_a_secret(
    installed: Any, served: dict[str, Any], s3_store: S3Server, measured: dict[str, Any]
) -> None:
    """examples/digits-bucket.yaml on the real node: the compression Job's container publishes to the
    bucket, the profiling Job's and the serving pod's containers fetch from it, each with the keys of
    the Secret as environment references, and no claim is mounted; the operator pod reads the manifest
    and profiles with the same Secret (the chart lets it read that one name)."""
    cluster, name = installed, "digits-bucket"
    keys = s3_store.identities["admin"]
    cluster.kubectl("create", "secret", "generic", BUCKET_SECRET, "-n", JOURNEY_NAMESPACE,
                    f"--from-literal=AWS_ACCESS_KEY_ID={keys.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={keys.secret_key}")  # fmt: skip
    [md] = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "digits-bucket.yaml").read_text()) if d]
    md["spec"]["objectStore"]["endpoint"] = s3_store.endpoint_url
    started = time.monotonic()
    cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump(md))
    status = wait_serving(cluster, name)
    measured["digits-bucket: apply -> Serving, artifacts in S3 (s)"] = round(time.monotonic() - started, 1)
    generation = f"frugal-models/artifacts/{JOURNEY_NAMESPACE}/{name}/gen-1"
    assert status["artifacts"]["uri"] == f"s3://{generation}"
    stored = s3_store.filesystem("admin").find(generation)
    assert f"{generation}/manifest.json" in stored and f"{generation}/profiles/local-cpu.json" in stored, stored
    pods = [*pods_of(cluster, JOURNEY_NAMESPACE, f"batch.kubernetes.io/job-name={name}-g1-compress"),
            *shard_pods(cluster, name)]  # fmt: skip
    assert pods
    for pod in pods:
        volumes = pod["spec"]["volumes"]
        assert not [v for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") == "frugal-artifacts"]
        env = pod["spec"]["containers"][0]["env"]
        assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})} == {BUCKET_SECRET}
        assert keys.secret_key not in json.dumps(pod)
    cluster.wait_service_endpoints(JOURNEY_NAMESPACE, name)
    url = f"http://{service_ip(cluster, name)}:{SERVING_PORT}/v2/models/{name}/infer"
    request = urllib.request.Request(url, json.dumps(ONE_ROW).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200 and json.loads(reply.read())["outputs"][0]["shape"] == [1, 10]
    logs = cluster.kubectl("logs", "-n", JOURNEY_NAMESPACE, "-l", OPERATOR_PODS, "--tail=-1", check=False).stdout
    assert keys.secret_key not in logs
    cluster.kubectl("delete", "modeldeployment", name, "-n", JOURNEY_NAMESPACE, "--wait=true", "--timeout=120s")
    # Its pods drain for their grace period after the model is gone: until then they hold the node's CPU
    # requests, which the next test's Job pods need to be scheduled.
    wait_until(f"{name}'s pods gone", lambda: not pods_of(cluster, JOURNEY_NAMESPACE, f"frugal.dev/model-deployment={name}"),
               120.0, lambda: operator_diagnostics(cluster))  # fmt: skip


def wait_serving(cluster: Any, name: str) -> dict[str, Any]:
    status: dict[str, Any] = wait_until(
        f"{name} to serve",
        lambda: (s := md_status(cluster, name)).get("phase") == "Serving" and s,
        PIPELINE_TIMEOUT_S,
        lambda: json.dumps(md_status(cluster, name), indent=1)[-3000:] + operator_diagnostics(cluster),
    )
    return status


def test_distillation_workers_meet_by_dns_and_the_standby_takes_over_from_a_deleted_leader(
    installed: Any, served: dict[str, Any], measured: dict[str, Any]
) -> None:
    """Two distillation workers rendezvous over TCP at the headless Service's DNS name; the leading
    operator pod is deleted while they run, and the standby takes the Lease over and finishes the job."""
    cluster = installed
    md = digits_on("digits-distilled", "local-cpu")
    md["spec"]["compression"]["distillation"] = {"workers": 2, "student": {"widthFactor": 0.5}, "epochs": 1}
    # One epoch makes a student no accuracy budget would keep; this one keeps it, to show it was made.
    md["spec"]["compression"]["accuracyBudget"] = {"metric": "accuracy", "maxDrop": 1.0}
    cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump(md))
    selector = "batch.kubernetes.io/job-name=digits-distilled-g1-compress"
    wait_until(
        "both distillation workers running",
        lambda: sum(p["status"].get("phase") == "Running" for p in pods_of(cluster, JOURNEY_NAMESPACE, selector)) == 2,
        PIPELINE_TIMEOUT_S,
        lambda: operator_diagnostics(cluster),
    )
    before = leader_pod(cluster)
    standbys = {p["metadata"]["name"] for p in pods_of(cluster, JOURNEY_NAMESPACE, OPERATOR_PODS)} - {before}
    assert before is not None and len(standbys) == 1, (before, standbys)
    deleted = time.monotonic()
    cluster.kubectl("delete", "pod", before, "-n", JOURNEY_NAMESPACE, "--wait=false")
    after = wait_until("the standby leading", lambda: (p := leader_pod(cluster)) in standbys and p, 120.0,
                       lambda: operator_diagnostics(cluster))  # fmt: skip
    measured["operator: leader pod deleted -> standby leads (s)"] = round(time.monotonic() - deleted, 1)
    status = wait_serving(cluster, "digits-distilled")
    pods = pods_of(cluster, JOURNEY_NAMESPACE, OPERATOR_PODS)
    assert before not in {p["metadata"]["name"] for p in pods} and after in {p["metadata"]["name"] for p in pods}
    assert all(s.restarts == 0 for p in pods for s in container_states(p))

    workers = pods_of(cluster, JOURNEY_NAMESPACE, selector)
    assert sorted(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] for p in workers) == ["0", "1"]
    for pod in workers:
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        [state] = container_states(pod)
        assert state.container_id.startswith("containerd://") and state.restarts == 0, state
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}
        rendezvous = " ".join(env.values()) + " ".join(pod["spec"]["containers"][0]["command"])
        assert "digits-distilled-g1-compress-0.digits-distilled-g1-workers.frugal.svc" in rendezvous, rendezvous
    manifest_path = status["artifacts"]["uri"].removeprefix("pvc://frugal-artifacts/")
    manifest = json.loads((cluster.volume_path("frugal-artifacts") / manifest_path / "manifest.json").read_text())
    assert any(v["name"].startswith("student") for v in manifest["variants"]), [v["name"] for v in manifest["variants"]]
    cluster.kubectl("delete", "modeldeployment", "digits-distilled", "-n", JOURNEY_NAMESPACE, "--wait=false")


AUTOSCALED = "digits-autoscaled"
ONE_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
SCALE_TIMEOUT_S = 300.0


def cpu_pool_profile(name: str, requests: dict[str, str], limits: dict[str, str], **extra: str) -> dict[str, Any]:
    """A one-core HardwareProfile on the journey's pool, with these resources (and e.g. an image)."""
    spec = {
        "accelerator": {"kind": "cpu", "count": 1},
        "resources": {"requests": requests, "limits": limits},
        "costPerHour": "0.02",
        "power": {"idleWatts": 5, "maxWatts": 15},
        **extra,
    }
    return pool_profile({"apiVersion": "frugal.dev/v1alpha1", "kind": "HardwareProfile",
                         "metadata": {"name": name}, "spec": spec})  # fmt: skip


def small_profile() -> dict[str, Any]:
    """A pool profile whose replicas request a quarter core, so three fit beside the rest on 2 cores."""
    return cpu_pool_profile("pool-small", {"cpu": "250m", "memory": "256Mi"}, {"cpu": "1", "memory": "512Mi"})


def shard_pods(cluster: Any, name: str) -> list[dict[str, Any]]:
    return pods_of(cluster, JOURNEY_NAMESPACE, f"frugal.dev/model-deployment={name},app.kubernetes.io/component=serving")


def shard_replicas(cluster: Any, name: str) -> int:
    proc = cluster.kubectl("get", "deployment", f"{name}-g1-shard-0", "-n", JOURNEY_NAMESPACE, "-o", "json")
    return int(json.loads(proc.stdout)["spec"].get("replicas", 1))


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if all(s.ready for s in container_states(p)) and container_states(p)]


def test_load_adds_real_pods_and_the_scale_down_drains_without_a_failed_request(
    installed: Any, served: dict[str, Any], measured: dict[str, Any]
) -> None:
    """A tight SLO (3 ms) under 8 closed-loop clients: the autoscaler, reading the real Prometheus
    that scrapes the pods, adds replicas that start as real pods; with the load down to a trickle the
    count falls back through each retired pod's preStop drain, and a client still sending (at most
    20 a second, well inside one replica) sees no failure."""
    cluster = installed
    md = digits_on(AUTOSCALED, "pool-small")
    md["spec"]["serving"]["slo"] = {"latencyP95Ms": 3}
    md["spec"]["serving"]["batching"] = {"maxBatchSize": 8, "maxDelayMs": 0.5}
    md["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "stabilizationWindowSeconds": 20}
    cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump_all([small_profile(), md]))
    wait_serving(cluster, AUTOSCALED)
    cluster.wait_service_endpoints(JOURNEY_NAMESPACE, AUTOSCALED)
    url = f"http://{service_ip(cluster, AUTOSCALED)}:{SERVING_PORT}/v2/models/{AUTOSCALED}/infer"
    [first] = shard_pods(cluster, AUTOSCALED)

    with Load(url, ONE_ROW, clients=8) as heavy:
        added = wait_until(
            "a second replica Ready under load",
            lambda: len(pods := ready_pods(shard_pods(cluster, AUTOSCALED))) > 1 and pods,
            SCALE_TIMEOUT_S,
            lambda: json.dumps(md_status(cluster, AUTOSCALED).get("autoscaling"), indent=1) + operator_diagnostics(cluster),
        )
    new = [p for p in added if p["metadata"]["uid"] != first["metadata"]["uid"]]
    starts = [t for t in (seconds_to_ready(p) for p in new) if t is not None]
    assert starts, new
    measured["serving pod created -> Ready, digits (s)"] = starts
    for pod in new:
        assert all(s.container_id.startswith("containerd://") and s.restarts == 0 for s in container_states(pod))
        # The first replica verified the variant and offered it; the node's agent published it, so a
        # replica added on this node loads it without reading the claim's copy or hashing it.
        assert FROM_NODE_CACHE in pod_log(cluster, pod), pod_log(cluster, pod)[-3000:]

    with Load(url, ONE_ROW, clients=1, pause_s=0.05) as light:  # at most 20 requests a second
        wait_until(
            "the count back to 1 and the retired pods gone",
            lambda: shard_replicas(cluster, AUTOSCALED) == 1 and len(shard_pods(cluster, AUTOSCALED)) == 1,
            SCALE_TIMEOUT_S,
            lambda: json.dumps(md_status(cluster, AUTOSCALED).get("autoscaling"), indent=1) + operator_diagnostics(cluster),
        )
        # requests keep flowing to the survivor after the last retirement
        flowing = light.answered() + 20
        wait_until("20 more answers from the survivor", lambda: light.answered() >= flowing, 60.0,
                   lambda: str(light.codes))  # fmt: skip
    assert heavy.answered() > 100 and heavy.failed() == 0, heavy.codes
    assert light.answered() > 10 and light.failed() == 0, light.codes
    events = cluster.kubectl("get", "events", "-n", JOURNEY_NAMESPACE, "--field-selector",
                             f"involvedObject.name={AUTOSCALED}", "-o", "json").stdout  # fmt: skip
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"ScaledUp", "ScaledDown"} <= reasons, reasons


def test_a_sigkilled_serving_pod_fails_only_requests_sent_its_way_and_comes_back(
    installed: Any, served: dict[str, Any], measured: dict[str, Any]
) -> None:
    """Two replicas under load through the Service's ClusterIP; one container gets SIGKILL (no preStop,
    no drain: a crash). What fails is what that pod held or was sent before the kubelet marked it
    unready and kube-proxy dropped it; the kubelet restarts the container, and once it is Ready again
    no request fails. Counted and timed here (docs/operations.md, "Faults and what you see")."""
    cluster = installed
    cluster.kubectl("patch", "modeldeployment", AUTOSCALED, "-n", JOURNEY_NAMESPACE, "--type=merge",
                    "-p", json.dumps({"spec": {"autoscaling": {"minReplicas": 2}}}))  # fmt: skip
    pods = wait_until(
        "two replicas Ready", lambda: len(p := ready_pods(shard_pods(cluster, AUTOSCALED))) == 2 and p,
        SCALE_TIMEOUT_S, lambda: operator_diagnostics(cluster),
    )  # fmt: skip
    cluster.wait_service_endpoints(JOURNEY_NAMESPACE, AUTOSCALED)
    url = f"http://{service_ip(cluster, AUTOSCALED)}:{SERVING_PORT}/v2/models/{AUTOSCALED}/infer"
    victim = pods[0]
    [state] = container_states(victim)
    with Load(url, ONE_ROW, clients=2, pause_s=0.01) as load:
        wait_until("50 answers before the kill", lambda: load.answered() >= 50, 60.0, lambda: str(load.codes))
        killed = time.monotonic()
        cluster.kill_container(state.container_id)

        def back() -> bool:
            pod = next((p for p in shard_pods(cluster, AUTOSCALED) if p["metadata"]["uid"] == victim["metadata"]["uid"]), None)
            return pod is not None and all(s.ready and s.restarts == 1 for s in container_states(pod))

        wait_until("the killed container restarted and Ready", back, 180.0, lambda: operator_diagnostics(cluster))
        ready_again = time.monotonic() - killed
        cluster.wait_service_endpoints(JOURNEY_NAMESPACE, AUTOSCALED)
        settled = load.answered() + 100
        wait_until("100 more answers", lambda: load.answered() >= settled, 60.0, lambda: str(load.codes))
    failures = [t - killed for t in load.failed_at]
    measured["serving pod SIGKILLed under load: failed requests, of answered"] = [len(failures), load.answered()]
    measured["serving pod SIGKILLed: failures within (s of the kill)"] = round(max(failures, default=0.0), 2)
    measured["serving pod SIGKILLed -> Ready again (s)"] = round(ready_again, 1)
    print(f"fault: serving-pod-sigkill failed_requests={len(failures)} answered={load.answered()} "
          f"failures_within_s={max(failures, default=0.0):.2f} ready_again_s={ready_again:.1f}")  # fmt: skip
    # Every failure came after the kill and before the pod was Ready again; none before, none after.
    assert all(0 <= t <= ready_again for t in failures), failures
    cluster.kubectl("patch", "modeldeployment", AUTOSCALED, "-n", JOURNEY_NAMESPACE, "--type=merge",
                    "-p", json.dumps({"spec": {"autoscaling": {"minReplicas": 1}}}))  # fmt: skip


def test_a_model_at_zero_wakes_on_a_request_to_its_front(
    installed: Any, served: dict[str, Any], measured: dict[str, Any]
) -> None:
    """minReplicas 0: idle, the model goes to zero pods and its Service selects the front; one request
    wakes it (a real pod start) and is answered."""
    cluster = installed
    patch = {"spec": {"autoscaling": {"minReplicas": 0, "scaleToZeroAfterSeconds": 15}}}
    cluster.kubectl("patch", "modeldeployment", AUTOSCALED, "-n", JOURNEY_NAMESPACE, "--type=merge",
                    "-p", json.dumps(patch))  # fmt: skip
    wait_until(
        "zero replicas and a ready front",
        lambda: shard_replicas(cluster, AUTOSCALED) == 0
        and not shard_pods(cluster, AUTOSCALED)
        and ready_pods(pods_of(cluster, JOURNEY_NAMESPACE, f"frugal.dev/model-deployment={AUTOSCALED},app.kubernetes.io/component=front")),
        SCALE_TIMEOUT_S,
        lambda: json.dumps(md_status(cluster, AUTOSCALED).get("autoscaling"), indent=1) + operator_diagnostics(cluster),
    )
    cluster.wait_service_endpoints(JOURNEY_NAMESPACE, AUTOSCALED)
    url = f"http://{service_ip(cluster, AUTOSCALED)}:{SERVING_PORT}/v2/models/{AUTOSCALED}/infer"
    started = time.monotonic()
    with Load(url, ONE_ROW, clients=1) as one:
        wait_until("the first answer", one.answered, 120.0, lambda: operator_diagnostics(cluster))
    assert one.first_answer_at is not None
    woke = one.first_answer_at - started
    assert one.failed() == 0, one.codes
    [pod] = ready_pods(shard_pods(cluster, AUTOSCALED))
    assert all(s.container_id.startswith("containerd://") for s in container_states(pod))
    assert FROM_NODE_CACHE in pod_log(cluster, pod), pod_log(cluster, pod)[-3000:]
    measured["wake from zero: request -> answer, digits, node cache warm (s)"] = round(woke, 2)
    cluster.kubectl("delete", "modeldeployment", AUTOSCALED, "-n", JOURNEY_NAMESPACE, "--wait=false")


def test_an_image_the_node_lacks_is_named_in_the_condition(installed: Any, served: dict[str, Any]) -> None:
    cluster = installed
    missing = "localhost/frugal-missing:0.0.0"
    profile = cpu_pool_profile("pool-missing-image", {"cpu": "100m", "memory": "256Mi"}, {"memory": "512Mi"},
                               image=missing)  # fmt: skip
    md = digits_on("digits-missing-image", "pool-missing-image")
    cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump_all([profile, md]))
    degraded = wait_until(
        "the Degraded condition naming the image",
        lambda: (c := condition(md_status(cluster, "digits-missing-image"), "Degraded")).get("reason")
        == "ImagePullFailed"
        and c,
        PIPELINE_TIMEOUT_S,
        lambda: operator_diagnostics(cluster),
    )
    assert missing in degraded["message"] and "HardwareProfile pool-missing-image" in degraded["message"]
    cluster.kubectl("delete", "modeldeployment", "digits-missing-image", "-n", JOURNEY_NAMESPACE, "--wait=false")


def test_a_job_killed_at_its_memory_limit_says_which_limit_to_raise(installed: Any, served: dict[str, Any]) -> None:
    cluster = installed
    profile = cpu_pool_profile("pool-tiny-memory", {"cpu": "100m", "memory": "96Mi"}, {"memory": "96Mi"})
    md = digits_on("digits-tiny-memory", "pool-tiny-memory")
    cluster.kubectl("apply", "-n", JOURNEY_NAMESPACE, "-f", "-", input=yaml.safe_dump_all([profile, md]))

    def oom_condition() -> dict[str, Any] | None:
        status = md_status(cluster, "digits-tiny-memory")
        for kind in ("Degraded", "Compressed"):
            found = condition(status, kind)
            if "OOMKilled" in found.get("message", "") or found.get("reason") == "OOMKilled":
                return found
        return None

    found = wait_until("an OOMKilled condition", oom_condition, PIPELINE_TIMEOUT_S, lambda: operator_diagnostics(cluster))
    assert "memory limit 96Mi" in found["message"] and "spec.resources.limits.memory" in found["message"]
    assert "HardwareProfile pool-tiny-memory" in found["message"]
    pods = pods_of(cluster, JOURNEY_NAMESPACE, "batch.kubernetes.io/job-name=digits-tiny-memory-g1-compress")
    reasons = {s.terminated_reason or s.last_terminated_reason for p in pods for s in container_states(p)}
    assert "OOMKilled" in reasons, reasons
    cluster.kubectl("delete", "modeldeployment", "digits-tiny-memory", "-n", JOURNEY_NAMESPACE, "--wait=false")


def test_uninstall_keeps_the_crds_and_the_claim(installed: Any, served: dict[str, Any]) -> None:
    cluster = installed
    cluster.helm("uninstall", RELEASE, "--namespace", JOURNEY_NAMESPACE, "--wait", "--timeout", "5m")
    gone = cluster.kubectl("get", "deployment", "-n", JOURNEY_NAMESPACE, "-l", "app.kubernetes.io/name=frugal",
                           "-o", "name").stdout  # fmt: skip
    assert gone.strip() == ""
    crds = {Path(p).stem for p in CRD_DIR.glob("*.yaml")}
    assert crds, CRD_DIR
    names = cluster.kubectl("get", "crd", "-o", "name").stdout
    for crd in ("modeldeployments.frugal.dev", "hardwareprofiles.frugal.dev"):
        assert crd in names
    claim = json.loads(
        cluster.kubectl("get", "pvc", "frugal-artifacts", "-n", JOURNEY_NAMESPACE, "-o", "json").stdout
    )
    assert claim["status"]["phase"] == "Bound"
