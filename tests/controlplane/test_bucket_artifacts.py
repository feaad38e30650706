"""Artifacts in a bucket: the operator against the real API server and a real S3 server (SeaweedFS).

examples/digits-bucket.yaml runs with its storage and endpoint aimed at the test's S3 server: the
compression Job writes the artifacts into the bucket, the operator reads the manifest and profiles from
there with the keys of the Secret the spec names (it is allowed `get` on that Secret name only, by the
chart's RBAC), and the serving pod fetches, verifies and serves its variant from the bucket. The test
plays the kubelet as the rest of this tier does, including its part with Secrets: a pod's
``secretKeyRef`` is read from the API server (`operator_harness.pod_env`).

examples/digits-batch-bucket.yaml then scores .parquet objects with that model, its output in a bucket
too, and its predictions must equal a run of the same config on local files.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from controlplane_harness import EXAMPLES_DIR, ControlPlane
from operator_harness import (
    Operator,
    chart_operator,
    complete_job,
    condition,
    create_namespace,
    delete_namespaces,
    events_for,
    http,
    kubectl_json,
    mark_ready,
    pod_env,
    run_and_finish,
    serve_from_template,
    status_of,
    wait_for,
    wait_object,
)
from s3_harness import S3Identity, S3Server

BUCKET = "frugal-models"
DATA_BUCKET = "frugal-data"  # what examples/digits-batch-bucket.yaml reads and writes
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
    default_store = {"secretName": SECRET, "endpoint": s3_server.endpoint_url, "addressingStyle": "path"}
    with chart_operator(
        crds_installed, work, values=("--set-json", f"objectStore.secretNames={names}"), host_path=False,
        extra_args=["--storage-uri", f"s3://{bucket}/{PREFIX}", "--object-store", json.dumps(default_store)],
    ) as running:  # fmt: skip
        yield running
        delete_namespaces(crds_installed, "op-bucket")  # its models and batches, while it runs


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


def parquet_objects(s3_server: S3Server, prefix: str, local: Path) -> int:
    """The zoo's held-out digits as three .parquet objects under `prefix/` (one 64-float list per row),
    and the same files in `local`; returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from frugal.compression import zoo

    rows = np.asarray(zoo.load("digits-mlp").validation.inputs["input"], dtype=np.float32)
    local.mkdir(parents=True)
    fs = s3_server.filesystem("admin")
    for index, part in enumerate(np.array_split(rows, 3)):
        column = pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1), pa.float32()), 64)
        name = f"part-{index}.parquet"
        pq.write_table(pa.table({"input": column}), local / name)
        fs.put_file(str(local / name), f"{prefix}/{name}")
    return len(rows)


def run_index(cluster: ControlPlane, job: dict[str, Any], index: int, workdir: Path) -> subprocess.CompletedProcess[str]:
    """One completion index's pod: its command, its Secret's keys (as the kubelet reads secretKeyRefs)
    and JOB_COMPLETION_INDEX as the Job controller sets it."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = pod_env(container, {"metadata.namespace": job["metadata"]["namespace"]}, cluster)
    return subprocess.run(container["command"], env={**env, "JOB_COMPLETION_INDEX": str(index)}, cwd=workdir,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_a_batch_over_parquet_objects_writes_its_predictions_to_the_bucket_as_a_local_run_does(
    served: dict[str, Any], operator: Operator, s3_server: S3Server, tmp_path: Path
) -> None:
    """examples/digits-batch-bucket.yaml: the model's artifacts, the input and the output all in
    buckets, no claim anywhere; progress read from the bucket's markers with the Secret's keys."""
    cluster, ns = operator.cluster, served["namespace"]
    s3_server.make_bucket(DATA_BUCKET)
    rows = parquet_objects(s3_server, f"{DATA_BUCKET}/digits", tmp_path / "digits")
    [document] = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "digits-batch-bucket.yaml").read_text()) if d]
    document["metadata"]["namespace"] = ns
    document["spec"]["objectStore"]["endpoint"] = s3_server.endpoint_url
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))
    name = document["metadata"]["name"]

    def status() -> dict[str, Any]:
        found: dict[str, Any] = kubectl_json(cluster, "get", "batchinference", name, "-n", ns).get("status") or {}
        return found

    score = wait_object(cluster, operator, "job", ns, f"{name}-g1-score")
    pod = score["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v or "hostPath" in v], pod["volumes"]
    first = run_index(cluster, score, 0, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    partial = wait_for("progress read from the bucket",
                       lambda: (s := status()).get("progress", {}).get("shardsDone", 0) > 0 and s, operator)  # fmt: skip
    assert partial["phase"] == "Running"
    assert partial["progress"]["shardsTotal"] == 6 and partial["progress"]["shardsDone"] == 3  # 0, 2 and 4
    second = run_index(cluster, score, 1, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    complete_job(cluster, score)
    aggregate = wait_object(cluster, operator, "job", ns, f"{name}-g1-aggregate")
    joined = run_and_finish(cluster, aggregate, tmp_path)
    assert joined.returncode == 0, joined.stderr[-3000:]
    done = wait_for("phase Succeeded", lambda: (s := status()).get("phase") == "Succeeded" and s, operator)
    output = f"s3://{DATA_BUCKET}/scores/digits"
    assert done["outputUri"] == output and done["progress"]["rowsDone"] == rows

    # The same config with the input and the output on this machine: the same predictions, row for row.
    container = score["spec"]["template"]["spec"]["containers"][0]
    config = json.loads(next(e["value"] for e in container["env"] if e["name"] == "FRUGAL_BATCH_CONFIG"))
    config.update(input=str(tmp_path / "digits"), output=str(tmp_path / "local-scores"))
    (tmp_path / "local.json").write_text(json.dumps(config))
    env = pod_env(container, {"metadata.namespace": ns}, cluster)
    for command in (["frugal", "batch-worker", "--config", "local.json"], ["frugal", "batch-aggregate", "--config", "local.json"]):
        alone = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        assert alone.returncode == 0, alone.stderr[-3000:]
    fs = s3_server.filesystem("admin")
    ours = np.load(io.BytesIO(fs.cat_file(f"{DATA_BUCKET}/scores/digits/predictions.npz")))
    theirs = np.load(tmp_path / "local-scores" / "predictions.npz")
    assert sorted(ours.files) == sorted(theirs.files) and len(ours[ours.files[0]]) == rows
    for array in ours.files:
        np.testing.assert_array_equal(ours[array], theirs[array])

    keys = s3_server.identities["admin"]
    seen = json.dumps([status(), events_for(cluster, ns, name), score, aggregate]) + operator.log.read_text(
        errors="replace") + first.stderr + second.stderr + joined.stderr  # fmt: skip
    assert keys.secret_key not in seen and keys.access_key not in seen


def test_a_batch_whose_keys_the_bucket_refuses_fails_before_any_job_naming_the_uri_and_the_error(
    served: dict[str, Any], operator: Operator, s3_server: S3Server
) -> None:
    """The operator plans the batch from the input's footers with the batch's own Secret; a key the
    store refuses would refuse every worker too, so the batch fails at once, saying which URI and why,
    and the key appears nowhere."""
    cluster, ns = operator.cluster, served["namespace"]
    admin = s3_server.identities["admin"]
    wrong = S3Identity("wrong", admin.access_key, "not-the-secret-key", admin.actions)
    create_secret(cluster, ns, READ_ONLY_SECRET, wrong)
    [document] = [d for d in yaml.safe_load_all((EXAMPLES_DIR / "digits-batch-bucket.yaml").read_text()) if d]
    document["metadata"].update(name="refused-scores", namespace=ns)
    document["spec"]["objectStore"].update(endpoint=s3_server.endpoint_url, secretName=READ_ONLY_SECRET)
    document["spec"]["output"]["uri"] = f"s3://{DATA_BUCKET}/scores/refused"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))

    def failed() -> dict[str, Any] | None:
        body = kubectl_json(cluster, "get", "batchinference", "refused-scores", "-n", ns)
        status: dict[str, Any] = body.get("status") or {}
        return status if status.get("phase") == "Failed" else None

    status = wait_for("the batch Failed", failed, operator)
    planned = condition(status, "Planned")
    assert planned["reason"] == "InputUnreadable", planned
    assert f"s3://{DATA_BUCKET}/digits" in planned["message"] and "PermissionError" in planned["message"], planned
    assert kubectl_json(cluster, "get", "jobs", "-n", ns, "-l", "frugal.dev/batch-inference=refused-scores")["items"] == []
    assert wrong.secret_key not in json.dumps(status) + operator.log.read_text(errors="replace")
