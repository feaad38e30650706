"""Artifacts in a bucket: the operator against the real API server and a real S3 server (SeaweedFS).

examples/digits-bucket.yaml runs with its storage and endpoint aimed at the test's S3 server: the
compression Job writes the artifacts into the bucket, the operator reads the manifest and profiles from
there with the keys of the Secret the spec names (it is allowed `get` on that Secret name only, by the
chart's RBAC), and the serving pod fetches, verifies and serves its variant from the bucket. The test
plays the kubelet as the rest of this tier does, including its part with Secrets: a pod's
``secretKeyRef`` is read from the API server (`operator_harness.pod_env`).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    chart_identity,
    condition,
    create_namespace,
    events_for,
    http,
    kubectl_json,
    mark_ready,
    run_and_finish,
    serve_from_template,
    status_of,
    wait_for,
    wait_object,
)
from s3_harness import S3Identity, S3Server

BUCKET = "frugal-models"
PREFIX = "artifacts"
SECRET = "frugal-bucket"  # what examples/digits-bucket.yaml names
READ_ONLY_SECRET = "frugal-bucket-read-only"


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.make_bucket(BUCKET)


@pytest.fixture(scope="module")
def operator(
    crds_installed: ControlPlane, s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator as the chart runs it, told it may read the two Secrets' names (objectStore.secretNames)
    and with no claim at all: its default storage is the bucket."""
    work = tmp_path_factory.mktemp("operator-bucket")
    names = json.dumps([SECRET, READ_ONLY_SECRET])
    identity = chart_identity(crds_installed, work, values=("--set-json", f"objectStore.secretNames={names}"))
    default_store = {"secretName": SECRET, "endpoint": s3_server.endpoint_url, "addressingStyle": "path"}
    running = Operator(
        crds_installed, work / "unused", work / "operator.log", host_path=False, kubeconfig=identity,
        extra_args=["--storage-uri", f"s3://{bucket}/{PREFIX}", "--object-store", json.dumps(default_store)],
    )  # fmt: skip
    running.start()
    try:
        yield running
    finally:
        running.stop()


def create_secret(cluster: ControlPlane, namespace: str, name: str, identity: S3Identity) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": identity.access_key, "AWS_SECRET_ACCESS_KEY": identity.secret_key},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def bucket_example(s3_server: S3Server, bucket: str) -> list[dict[str, Any]]:
    """examples/digits-bucket.yaml aimed at this S3 server, and the local-cpu profile it names."""
    documents = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "digits-bucket.yaml").read_text()) if d]
    [md] = documents
    md["spec"]["storage"]["uri"] = f"s3://{bucket}/{PREFIX}"
    md["spec"]["objectStore"]["endpoint"] = s3_server.endpoint_url
    profile = next(
        d
        for d in yaml.safe_load_all((EXAMPLES_DIR / "digits.yaml").read_text())
        if d and d["kind"] == "HardwareProfile"
    )
    return [md, profile]


@pytest.fixture(scope="module")
def served(
    operator: Operator, s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    cluster, ns = operator.cluster, create_namespace(operator.cluster, "op-bucket")
    work = tmp_path_factory.mktemp("bucket-pods")
    create_secret(cluster, ns, SECRET, s3_server.identities["admin"])
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(bucket_example(s3_server, bucket)))
    compress = wait_object(cluster, operator, "job", ns, "digits-bucket-g1-compress")
    compressed = run_and_finish(cluster, compress, work)
    assert compressed.returncode == 0, compressed.stderr[-3000:]
    profile = wait_object(cluster, operator, "job", ns, "digits-bucket-g1-profile-local-cpu")
    profiled = run_and_finish(cluster, profile, work)
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    deployment = wait_object(cluster, operator, "deployment", ns, "digits-bucket-g1-shard-0")
    server, port = serve_from_template(deployment, work, cluster=cluster)
    try:
        wait_for("the server to be ready", lambda: http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200,
                 operator)  # fmt: skip
        inference = http("POST", f"http://127.0.0.1:{port}/v2/models/digits-bucket/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}],
        })  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    server_log = (work / f"serve-{port}.log").read_text(errors="replace")
    mark_ready(cluster, deployment)
    wait_for("phase Serving", lambda: status_of(cluster, ns, "digits-bucket").get("phase") == "Serving", operator)
    return {"namespace": ns, "compress": compress, "profile": profile, "deployment": deployment,
            "inference": inference, "outputs": compressed.stdout + compressed.stderr + profiled.stdout
            + profiled.stderr + server_log}  # fmt: skip


def objects_under(s3_server: S3Server, prefix: str) -> list[str]:
    """The objects under `prefix/` (SeaweedFS keeps an emptied folder as a directory entry: not one)."""
    fs = s3_server.filesystem("admin")
    fs.invalidate_cache()
    return sorted(key for key, info in fs.find(prefix, detail=True).items() if info["type"] == "file")


def test_the_bucket_example_is_compressed_profiled_and_served_with_no_claim(
    served: dict[str, Any], operator: Operator, s3_server: S3Server, bucket: str
) -> None:
    ns = served["namespace"]
    code, body = served["inference"]
    assert code == 200, body
    assert body["outputs"][0]["shape"] == [1, 10]
    generation = f"{bucket}/{PREFIX}/{ns}/digits-bucket/gen-1"
    stored = objects_under(s3_server, generation)
    assert f"{generation}/manifest.json" in stored and f"{generation}/profiles/local-cpu.json" in stored, stored
    for role in ("compress", "profile"):
        pod = served[role]["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v or "hostPath" in v], pod["volumes"]
    status = status_of(operator.cluster, ns, "digits-bucket")
    assert status["artifacts"]["uri"] == f"s3://{generation}"
    assert condition(status, "Profiled")["reason"] == "ProfilesMeasured"
    assert condition(status, "Ready")["reason"] == "ServingReady"


def test_the_secrets_values_appear_in_no_status_event_log_manifest_or_artifact(
    served: dict[str, Any], operator: Operator, s3_server: S3Server, bucket: str
) -> None:
    cluster, ns = operator.cluster, served["namespace"]
    secret_key = s3_server.identities["admin"].secret_key
    access_key = s3_server.identities["admin"].access_key
    seen = {
        "status": json.dumps(status_of(cluster, ns, "digits-bucket")),
        "events": json.dumps(events_for(cluster, ns, "digits-bucket")),
        "operator log": operator.log.read_text(errors="replace"),
        "the pods' output": served["outputs"],
        "children": json.dumps([kubectl_json(cluster, "get", kind, "-n", ns) for kind in ("jobs", "deployments")]),
    }
    fs = s3_server.filesystem("admin")
    for key in objects_under(s3_server, f"{bucket}/{PREFIX}/{ns}"):
        seen[f"s3://{key}"] = fs.cat_file(key).decode(errors="replace")
    for where, text in seen.items():
        assert secret_key not in text, f"the secret key is in {where}"
        assert access_key not in text, f"the access key id is in {where}"
    pods = served["deployment"]["spec"]["template"]["spec"]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in pods["containers"][0]["env"] if "valueFrom" in e
            and "secretKeyRef" in e["valueFrom"]]  # fmt: skip
    assert refs and set(refs) == {SECRET}


def test_a_denied_write_fails_the_job_naming_the_uri_and_leaves_nothing_half_written(
    operator: Operator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    cluster, ns = operator.cluster, create_namespace(operator.cluster, "op-bucket-denied")
    reader = s3_server.identities["reader"]
    create_secret(cluster, ns, READ_ONLY_SECRET, reader)
    md, profile = bucket_example(s3_server, bucket)
    md["metadata"]["name"] = "denied"
    md["spec"]["objectStore"]["secretName"] = READ_ONLY_SECRET
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([md, profile]))
    job = wait_object(cluster, operator, "job", ns, "denied-g1-compress")
    proc = run_and_finish(cluster, job, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    generation = f"s3://{bucket}/{PREFIX}/{ns}/denied/gen-1"
    status = wait_for("phase Failed", lambda: (s := status_of(cluster, ns, "denied"))
                      .get("phase") == "Failed" and s, operator)  # fmt: skip
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "CompressionFailed"
    assert generation in compressed["message"] and "PermissionError" in compressed["message"], compressed
    assert reader.secret_key not in proc.stdout + proc.stderr + json.dumps(status)
    assert objects_under(s3_server, f"{bucket}/{PREFIX}/{ns}/denied") == []


def test_a_secret_the_operator_may_not_read_is_a_condition_that_names_the_chart_value(
    operator: Operator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The compression Job gets its keys (the pod may reference any Secret of its namespace), but the
    operator reads only the Secret names it was given: its read of the manifest says which to add."""
    cluster, ns = operator.cluster, create_namespace(operator.cluster, "op-bucket-unlisted")
    create_secret(cluster, ns, "team-keys", s3_server.identities["admin"])
    md, profile = bucket_example(s3_server, bucket)
    md["metadata"]["name"] = "unlisted"
    md["spec"]["objectStore"]["secretName"] = "team-keys"
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([md, profile]))
    job = wait_object(cluster, operator, "job", ns, "unlisted-g1-compress")
    proc = run_and_finish(cluster, job, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def refused() -> dict[str, Any] | None:
        status = status_of(cluster, ns, "unlisted")
        message = " ".join(c.get("message", "") for c in status.get("conditions", []))
        return status if "objectStore.secretNames" in message else None

    status = wait_for("a condition naming objectStore.secretNames", refused, operator)
    assert "team-keys" in json.dumps(status["conditions"])


def test_deleting_a_model_deployment_that_keeps_nothing_empties_its_prefix_and_only_that(
    operator: Operator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """On the operator's own bucket and store (no spec.storage.uri, no spec.objectStore), with
    retainArtifacts: false; a neighbour's artifacts under the same prefix stay."""
    cluster, ns = operator.cluster, create_namespace(operator.cluster, "op-bucket-delete")
    create_secret(cluster, ns, SECRET, s3_server.identities["admin"])
    md, profile = bucket_example(s3_server, bucket)
    md["metadata"]["name"] = "doomed"
    md["spec"]["storage"] = {"retainArtifacts": False}
    del md["spec"]["objectStore"]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([md, profile]))
    job = wait_object(cluster, operator, "job", ns, "doomed-g1-compress")
    proc = run_and_finish(cluster, job, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own, neighbour = f"{bucket}/{PREFIX}/{ns}/doomed", f"{bucket}/{PREFIX}/{ns}/doomed-2"
    s3_server.filesystem("admin").pipe_file(f"{neighbour}/gen-1/manifest.json", b"{}")
    assert f"{own}/gen-1/manifest.json" in objects_under(s3_server, own)
    cluster.kubectl("delete", "modeldeployment", "doomed", "-n", ns, "--wait=true", "--timeout=90s")
    assert objects_under(s3_server, own) == []
    assert objects_under(s3_server, neighbour) == [f"{neighbour}/gen-1/manifest.json"]


def test_a_batch_of_a_model_in_a_bucket_says_it_reads_claims_only_so_far(
    served: dict[str, Any], operator: Operator
) -> None:
    """Not supported yet (issue 31), and said so in the BatchInference's status rather than failing the
    operator's pass over it."""
    cluster, ns = operator.cluster, served["namespace"]
    batch = {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": ns},
        "spec": {
            "model": {"modelDeployment": "digits-bucket"},
            "input": {"uri": "pvc://data/digits.npz"},
            "output": {"uri": "pvc://data/scores"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(batch))

    def said() -> dict[str, Any] | None:
        body = kubectl_json(cluster, "get", "batchinference", "scores", "-n", ns)
        text = json.dumps((body.get("status") or {}).get("conditions") or [])
        return body if "keeps its artifacts in a bucket" in text else None

    wait_for("a condition saying bucket artifacts are not read yet", said, operator)
