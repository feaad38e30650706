"""Desired-state builders: names, labels, Jobs, serving objects — pure functions of the spec."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from frugal.operator.api.models import ObjectStore
from frugal.operator.api.spec import (
    BatchInferenceSpec,
    ModelDeploymentSpec,
    parse_batch_inference,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.decision.decide import artifact_location
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.decision.planner import Option
from frugal.operator.manifests import batch_jobs, container_commands, jobs, names, pod_specs, serving_objects
from frugal.operator.manifests.storage import CLAIMS_MOUNT, POD_MOUNT, claim_volume_name, locate
from frugal.schema.artifact_format import TensorSpec
from frugal.schema.wake_annotation import WAKE_ANNOTATION, deployments_to_wake

MD: dict[str, Any] = {
    "apiVersion": "frugal.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1", "generation": 3},
    "spec": {
        "model": {"uri": "zoo://digits-mlp", "format": "auto"},
        "compression": {
            "hardwareProfile": "gpu-t4",
            "quantization": {"method": "dynamic-int8", "perChannel": False},
            "accuracyBudget": {"metric": "accuracy", "maxDrop": 0.01},
        },
        "serving": {
            "hardwareProfiles": ["cpu-small", "gpu-t4"],
            "shards": 2,
            "slo": {"latencyP95Ms": 50},
            "batching": {"maxBatchSize": 16, "maxDelayMs": 2, "maxQueueSize": 64},
        },
        "autoscaling": {"minReplicas": 0, "maxReplicas": 4},
    },
}
GPU = parse_hardware_profile(
    {
        "metadata": {"name": "gpu-t4"},
        "spec": {
            "accelerator": {"kind": "nvidia-gpu", "model": "T4", "count": 1, "memoryGiB": 16},
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "16Gi"}},
            "executionProvider": "CUDAExecutionProvider",
            "costPerHour": "0.54",
            "power": {"idleWatts": 30, "maxWatts": 70},
        },
    }
)
IMAGE = "registry.example/frugal:test"


def md_with(**spec_changes: Any) -> ModelDeploymentSpec:
    body = copy.deepcopy(MD)
    for path, value in spec_changes.items():
        node = body["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return parse_model_deployment(body)


SPEC = md_with()
DIGITS_INPUTS = (TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),)  # the served variant's inputs
ARTIFACTS = locate("pvc://frugal-artifacts/store", SPEC.owner)


@pytest.mark.parametrize(
    ("parts", "limit", "expected_len", "hashed"),
    [
        (("digits", "g1", "compress"), 52, len("digits-g1-compress"), False),
        (("x" * 60, "g12", "profile", "gpu-a100"), 52, 52, True),
        (("y" * 70,), 63, 63, True),
        (("Mixed_Case", "A.B"), 63, len("mixed-case-a-b"), False),
    ],
)
def test_names_are_bounded_dns_labels(
    parts: tuple[str, ...], limit: int, expected_len: int, hashed: bool
) -> None:
    name = names.bounded(*parts, limit=limit)
    assert len(name) == expected_len
    assert name == names.bounded(*parts, limit=limit)  # deterministic
    assert name[0].isalnum() and name[-1].isalnum()
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)
    if hashed:
        other = names.bounded(*parts[:-1], parts[-1] + "z", limit=limit)
        assert other != name and len(other) == expected_len


def test_generation_is_in_every_name_and_label() -> None:
    job = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)
    assert job["metadata"]["name"] == "digits-g3-compress"
    assert job["metadata"]["labels"][names.LABEL_GENERATION] == "3"
    gen4 = parse_model_deployment({**MD, "metadata": {**MD["metadata"], "generation": 4}})
    assert names.shard(gen4.owner, 0) == "digits-g4-shard-0" != names.shard(SPEC.owner, 0)


def test_compression_job_lands_on_its_pool_with_restricted_security() -> None:
    job = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "digits",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == jobs.BACKOFF_LIMIT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "frugal-artifacts"}} in pod["volumes"]
    assert "completionMode" not in job["spec"]
    assert container["command"][:3] == ["frugal", "compress", "--config-json"]


@pytest.mark.parametrize("kind", ["compression", "profiling"])
def test_jobs_are_bounded_and_fail_at_once_on_bad_input(kind: str) -> None:
    if kind == "compression":
        job, deadline = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS), jobs.COMPRESSION_DEADLINE_SECONDS
    else:
        job, deadline = jobs.desired_profiling_job(SPEC, GPU, IMAGE, ARTIFACTS), jobs.PROFILING_DEADLINE_SECONDS
    spec = job["spec"]
    assert spec["backoffLimit"] == jobs.BACKOFF_LIMIT and spec["activeDeadlineSeconds"] == deadline
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}} in rules
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    container = spec["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_compression_command_carries_the_spec_in_the_compression_components_shape() -> None:
    config = json.loads(container_commands.compress(SPEC, "/out")[3])
    assert config == {
        "model": {"uri": "zoo://digits-mlp"},
        "data": {},
        "quantization": {"method": "dynamic-int8", "perChannel": False},
        "accuracyBudget": {"metric": "accuracy", "maxDrop": 0.01},
        "output": "/out",
        "name": "digits",
        "generation": 3,
        "servingBatchSize": 16,
        "shardCounts": [2],
    }


def test_a_state_dict_source_carries_its_architecture_to_the_compression_job() -> None:
    md = md_with(
        model={"uri": "pvc://models/student.pt", "format": "pytorch", "architecture": "all-minilm-l6-v2"}
    )
    config = json.loads(container_commands.compress(md, "/out")[3])
    assert config["model"]["format"] == "pytorch"
    assert config["model"]["architecture"] == "all-minilm-l6-v2"


def test_head_pruning_reaches_the_compression_component() -> None:
    md = md_with(compression__pruning={"method": "structured", "sparsity": 0.3, "attentionHeads": 0.25})
    pruning = json.loads(container_commands.compress(md, "/out")[3])["pruning"]
    assert pruning == {"method": "structured", "sparsity": 0.3, "attentionHeads": 0.25, "thresholdScale": 1.0}


def test_data_max_samples_reach_the_compression_component() -> None:
    md = md_with(
        model={"uri": "file:///models/digits.onnx"},
        data={
            "validation": {"uri": "file:///d/v.npz", "maxSamples": 500},
            "calibration": {"uri": "file:///d/c.npz"},
        },
    )
    data = json.loads(container_commands.compress(md, "/out")[3])["data"]
    assert data == {
        "validation": "file:///d/v.npz",
        "validationMaxSamples": 500,
        "calibration": "file:///d/c.npz",
    }


def test_distillation_workers_make_an_indexed_job_and_a_headless_service() -> None:
    md = md_with(compression__distillation={"workers": 3, "epochs": 2, "student": {"widthFactor": 0.25}})
    job = jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS)
    service = jobs.desired_distillation_service(md)
    assert service is not None
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == "digits-g3-workers"
    assert service["spec"]["clusterIP"] == "None"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == jobs.COMPLETION_INDEX
    assert env["WORLD_SIZE"]["value"] == "3"
    assert env["MASTER_ADDR"]["value"] == "digits-g3-compress-0.digits-g3-workers.ml.svc"
    selector = service["spec"]["selector"]
    assert all(job["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())
    config = json.loads(pod["containers"][0]["command"][3])
    crd_defaults = {"temperature": 4.0, "alpha": 0.5, "learningRate": 0.001}  # applied as the API server does
    assert config["distillation"] == {"student": {"width": 0.25}, "epochs": 2, "workers": 3, **crd_defaults}
    assert jobs.desired_distillation_service(SPEC) is None


def claims_of(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """The pod's claim volumes by claim, the container's mounts by path, and its env by name."""
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {
        v["persistentVolumeClaim"]["claimName"]: v
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v and v["name"] != "artifacts"
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    return volumes, mounts, env


PVC_MODEL = {"uri": "pvc://models/minilm/student.pt", "format": "pytorch", "architecture": "all-minilm-l6-v2"}


def test_compression_job_mounts_the_claims_its_inputs_name_read_only() -> None:
    md = md_with(model=PVC_MODEL, data={"validation": {"uri": "pvc://datasets/val.npz"}})
    volumes, mounts, env = claims_of(jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS))
    assert set(volumes) == {"models", "datasets"}
    for claim in ("models", "datasets"):
        volume = volumes[claim]
        assert volume == {
            "name": f"input-{claim}",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        assert mounts[f"{CLAIMS_MOUNT}/{claim}"] == {
            "name": volume["name"],
            "mountPath": f"{CLAIMS_MOUNT}/{claim}",
            "readOnly": True,
        }
    # The compression component reads pvc://models/minilm/student.pt as $FRUGAL_PVC_ROOT/models/minilm/...
    assert env["FRUGAL_PVC_ROOT"] == CLAIMS_MOUNT == "/var/lib/frugal/claims"


def test_a_claim_named_twice_is_one_volume() -> None:
    md = md_with(
        model=PVC_MODEL,
        data={
            "validation": {"uri": "pvc://models/val.npz"},
            "calibration": {"uri": "pvc://models/cal/x.npz"},
        },
    )
    job = jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS)
    volumes, mounts, _ = claims_of(job)
    assert list(volumes) == ["models"]
    names_in_pod = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
    assert len(names_in_pod) == len(set(names_in_pod))
    assert [p for p in mounts if p.startswith(CLAIMS_MOUNT)] == [f"{CLAIMS_MOUNT}/models"]


def test_inputs_on_the_artifacts_claim_reuse_the_artifacts_volume() -> None:
    """Two volumes of one claim in a pod can keep it from starting: mount the artifacts volume again."""
    md = md_with(model={**PVC_MODEL, "uri": "pvc://frugal-artifacts/models/student.pt"})
    job = jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS)
    pod = job["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["frugal-artifacts"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[f"{CLAIMS_MOUNT}/frugal-artifacts"] == {
        "name": "artifacts",
        "mountPath": f"{CLAIMS_MOUNT}/frugal-artifacts",
        "readOnly": True,
    }
    assert mounts[f"{POD_MOUNT}"]["readOnly"] is False  # compression still writes its artifacts


def test_inputs_off_claims_add_no_volume_and_no_pvc_root() -> None:
    md = md_with(model={"uri": "zoo://digits-mlp"}, data={"validation": {"uri": "s3://bucket/val.npz"}})
    job = jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS)
    baseline = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)
    pod, base_pod = job["spec"]["template"]["spec"], baseline["spec"]["template"]["spec"]
    assert pod["volumes"] == base_pod["volumes"]
    assert pod["containers"][0]["volumeMounts"] == base_pod["containers"][0]["volumeMounts"]
    assert "FRUGAL_PVC_ROOT" not in {e["name"] for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize(
    "claim",
    ["c" * 63, "c" * 253, "models.v2.example", "a-" * 40 + "z", "trailing-"],
)
def test_claim_volume_names_are_bounded_dns_labels(claim: str) -> None:
    name = claim_volume_name(claim)
    assert len(name) <= names.DNS_LABEL_MAX
    assert name[0].isalnum() and name[-1].isalnum()
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)
    assert name.startswith("input-") and name == claim_volume_name(claim)


def test_claims_that_sanitize_alike_get_distinct_volumes() -> None:
    assert claim_volume_name("a.b") != claim_volume_name("a-b") == "input-a-b"
    assert claim_volume_name("c" * 57) == "input-" + "c" * 57  # exactly 63: kept as is
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    assert claim_volume_name(long_a) != claim_volume_name(long_b)


def test_a_long_claim_gets_a_valid_volume_in_every_distillation_worker() -> None:
    claim = "team-" + "very-long-claim-name-" * 10 + "x"
    md = md_with(
        model={**PVC_MODEL, "uri": f"pvc://{claim}/student.pt"},
        compression__distillation={"workers": 3, "epochs": 1, "student": {"widthFactor": 0.5}},
    )
    job = jobs.desired_compression_job(md, GPU, IMAGE, ARTIFACTS)
    assert job["spec"]["completionMode"] == "Indexed"  # one template: every worker gets the same mounts
    volumes, mounts, env = claims_of(job)
    volume = volumes[claim]
    assert len(volume["name"]) <= names.DNS_LABEL_MAX and volume["name"] == claim_volume_name(claim)
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert mounts[f"{CLAIMS_MOUNT}/{claim}"] == {
        "name": volume["name"],
        "mountPath": f"{CLAIMS_MOUNT}/{claim}",
        "readOnly": True,
    }
    assert env["FRUGAL_PVC_ROOT"] == CLAIMS_MOUNT and env["WORLD_SIZE"] == "3"


def test_profiling_job_uses_the_profiles_image_provider_and_pool() -> None:
    job = jobs.desired_profiling_job(SPEC, GPU, IMAGE, ARTIFACTS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["metadata"]["name"] == "digits-g3-profile-gpu-t4"
    assert job["metadata"]["labels"][names.LABEL_PROFILE] == "gpu-t4"
    command = container["command"]
    assert command[command.index("--provider") + 1] == "CUDAExecutionProvider"
    assert command[command.index("--batch-size") + 1] == "16"
    assert command[command.index("--artifacts") + 1] == f"{POD_MOUNT}/store/ml/digits/gen-3"


@pytest.mark.parametrize("index", [0, 1])
def test_shard_deployment(index: int) -> None:
    selection = Option("int8", "gpu-t4", 2)
    deployment = serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, index)
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert deployment["metadata"]["name"] == f"digits-g3-shard-{index}"
    assert "replicas" not in deployment["spec"]  # the autoscaler's field (serving_objects.desired_replicas)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(template["metadata"]["labels"][k] == v for k, v in selector.items())
    assert selector[names.LABEL_SHARD] == str(index) and selector[names.LABEL_GENERATION] == "3"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": serving_objects.DRAIN_SECONDS}}
    assert container["securityContext"] == pod_specs.CONTAINER_SECURITY
    assert container["volumeMounts"][0]["readOnly"] is True
    assert template["spec"]["nodeSelector"] == dict(GPU.node_selector)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FRUGAL_EXECUTION_PROVIDER"] == "CUDAExecutionProvider"
    assert env["FRUGAL_IDLE_WATTS"] == "30" and env["FRUGAL_MAX_WATTS"] == "70"
    command = container["command"]
    assert command[command.index("--variant") + 1] == "int8"
    assert command[command.index("--shard-index") + 1] == str(index)
    if index == 0:
        assert command[command.index("--next-stage") + 1] == "http://digits-g3-shard-1.ml.svc:8080"
    else:
        assert "--next-stage" not in command


def test_serving_set_has_deployment_service_and_pdb_per_shard() -> None:
    selection = Option("int8", "gpu-t4", 2)
    objects = [
        obj
        for index in range(selection.shards)
        for obj in serving_objects.desired_shard(SPEC, GPU, IMAGE, ARTIFACTS, selection, index)
    ]
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Deployment", "digits-g3-shard-0"),
        ("Service", "digits-g3-shard-0"),
        ("PodDisruptionBudget", "digits-g3-shard-0"),
        ("Deployment", "digits-g3-shard-1"),
        ("Service", "digits-g3-shard-1"),
        ("PodDisruptionBudget", "digits-g3-shard-1"),
    ]
    assert serving_objects.desired_replicas(SPEC.owner, 1, 3) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "digits-g3-shard-1", "namespace": "ml"},
        "spec": {"replicas": 3},
    }
    assert objects[2]["spec"] == {"maxUnavailable": 1, "selector": objects[0]["spec"]["selector"]}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "frugal"
        assert labels["app.kubernetes.io/managed-by"] == "frugal-operator"
        assert labels["app.kubernetes.io/instance"] == "digits"


def test_endpoint_service_follows_the_live_generation() -> None:
    always_on = md_with(autoscaling__minReplicas=1)
    service = serving_objects.desired_endpoint_service(always_on, serving_objects.Live(2))
    assert service["metadata"]["name"] == "digits"
    assert service["spec"]["selector"][names.LABEL_GENERATION] == "2"
    assert service["spec"]["selector"][names.LABEL_REVISION] == "0"
    assert service["spec"]["selector"][names.LABEL_SHARD] == "0"
    replanned = serving_objects.desired_endpoint_service(always_on, serving_objects.Live(2, 1))
    assert replanned["spec"]["selector"][names.LABEL_REVISION] == "1"
    assert replanned["metadata"]["labels"][names.LABEL_REVISION] == "1"


def test_grpc_is_served_and_exposed_wherever_rest_is_through_the_front_too() -> None:
    selection = Option("int8", "gpu-t4", 2)
    deployment = serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, 0)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "grpc": 8081}
    assert container["command"][container["command"].index("--grpc-port") + 1] == "8081"

    def ports(service: dict[str, Any]) -> dict[str, tuple[int, str]]:
        return {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}

    both = {"http": (8080, "http"), "grpc": (8081, "grpc")}
    assert ports(serving_objects.desired_shard_service(SPEC, selection, 1)) == both
    assert ports(serving_objects.desired_live_service(SPEC, serving_objects.Live(3), 1)) == both
    always_on = md_with(autoscaling__minReplicas=1)
    assert ports(serving_objects.desired_endpoint_service(always_on, serving_objects.Live(3))) == both
    # the front holds gRPC calls as it holds REST requests: the endpoint offers both, on the front's ports
    assert ports(serving_objects.desired_endpoint_service(SPEC, serving_objects.Live(3))) == both
    front = serving_objects.desired_front(SPEC, IMAGE, inputs=DIGITS_INPUTS)
    (container,) = front["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "grpc": 8081}
    command = container["command"]
    assert command[command.index("--grpc-port") + 1] == "8081"
    assert command[command.index("--grpc-upstream") + 1] == "digits-live.ml.svc:8081"
    assert serving_objects.grpc_endpoint(always_on) == "digits.ml.svc:8081"
    assert serving_objects.grpc_endpoint(SPEC) == "digits.ml.svc:8081"


def test_a_model_that_may_scale_to_zero_is_reached_through_its_front() -> None:
    assert SPEC.min_replicas == 0
    endpoint = serving_objects.desired_endpoint_service(SPEC, serving_objects.Live(2))
    assert endpoint["spec"]["selector"] == serving_objects.front_selector(SPEC.owner)
    live = serving_objects.desired_live_service(SPEC, serving_objects.Live(2), 1)
    assert live["metadata"]["name"] == "digits-live"
    assert live["spec"]["selector"][names.LABEL_GENERATION] == "2"
    front = serving_objects.desired_front(SPEC, "img:1", inputs=DIGITS_INPUTS)
    pod = front["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # its own token, of its own account: what lets it wake the model (test_the_front_may_wake_...)
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "digits-front"
    command = container["command"]
    assert command[command.index("--wake-service") + 1] == "digits-live"
    assert command[command.index("--hold-max-requests") + 1] == str(SPEC.max_queue_size)
    assert float(command[command.index("--hold-deadline-s") + 1]) == serving_objects.HOLD_DEADLINE_SECONDS
    # held requests may take the whole deadline: the grace period lets them finish on shutdown
    assert pod["terminationGracePeriodSeconds"] > serving_objects.HOLD_DEADLINE_SECONDS
    monitor = serving_objects.desired_pod_monitor(SPEC)
    roles = monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    assert set(roles) == {"serving", "front"}


def test_the_front_may_wake_exactly_the_live_revisions_shards_and_read_only_its_upstream() -> None:
    live = serving_objects.Live(3, 2)
    role = serving_objects.desired_front_role(SPEC, live, 2)
    service_rule, scale_rule = role["rules"]
    assert service_rule == {"apiGroups": [""], "resources": ["services"], "verbs": ["get"],
                            "resourceNames": ["digits-live"]}  # fmt: skip
    assert scale_rule == {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"],
                          "resourceNames": ["digits-g3-r2-shard-0", "digits-g3-r2-shard-1"]}  # fmt: skip
    # the names are the shard Deployments' own, and the same list the front reads off <name>-live
    assert scale_rule["resourceNames"] == [names.shard(SPEC.owner, i, 3, 2) for i in range(2)]
    upstream = serving_objects.desired_live_service(SPEC, live, 2)
    assert deployments_to_wake(upstream["metadata"]["annotations"][WAKE_ANNOTATION]) == tuple(
        scale_rule["resourceNames"]
    )
    with pytest.raises(ValueError):  # an empty resourceNames would allow every Deployment in the namespace
        serving_objects.desired_front_role(SPEC, live, 0)
    account = serving_objects.desired_front_account(SPEC)
    same_role, binding = serving_objects.desired_front_access(SPEC, live, 2)
    assert same_role == role
    assert account["kind"] == "ServiceAccount" and account["automountServiceAccountToken"] is False
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == account["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-front", "namespace": "ml"}]
    for obj in (account, binding, role):  # garbage-collected with the ModelDeployment
        assert obj["metadata"]["ownerReferences"][0]["uid"] == SPEC.owner.uid


def batch(**spec: Any) -> BatchInferenceSpec:
    return parse_batch_inference({
        "apiVersion": "frugal.dev/v1alpha1", "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": "ml", "generation": 1, "uid": "u-b"},
        "spec": {"model": {"modelDeployment": "digits"}, "input": {"uri": "pvc://data/in.npz"},
                 "output": {"uri": "pvc://data/out"}, "hardwareProfiles": ["gpu-t4"], **spec},
    })  # fmt: skip


def batch_children(job: BatchInferenceSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    locations = {
        batch_jobs.INPUT: batch_jobs.locate(job.input_uri, None),
        batch_jobs.OUTPUT: batch_jobs.locate(job.output_uri, None),
        batch_jobs.ARTIFACTS: batch_jobs.locate("pvc://frugal-artifacts/ml/digits/gen-1", None),
    }
    return (
        batch_jobs.desired_worker_job(job, GPU, IMAGE, locations, {}, 2),
        batch_jobs.desired_aggregate_job(job, GPU, IMAGE, locations, {}),
    )


def test_batch_jobs_end_at_the_authors_deadline_or_at_a_documented_default() -> None:
    score, aggregate = batch_children(batch(deadlineSeconds=900))
    assert score["spec"]["activeDeadlineSeconds"] == 900
    assert aggregate["spec"]["activeDeadlineSeconds"] == batch_jobs.AGGREGATE_DEADLINE_SECONDS
    score, _ = batch_children(batch())
    assert score["spec"]["activeDeadlineSeconds"] == batch_jobs.SCORE_DEADLINE_SECONDS


def test_a_batch_in_a_bucket_mounts_no_volume_and_its_pods_get_the_store_and_references_to_its_keys() -> None:
    from frugal.operator.decision.batch_inference import ResolvedModel, batch_store_access

    store = {"secretName": "batch-keys", "endpoint": "http://s3.storage:8333", "addressingStyle": "path"}
    job = batch(input={"uri": "s3://data/digits/"}, output={"uri": "s3://scores/digits"}, objectStore=store)
    locations = {
        batch_jobs.INPUT: batch_jobs.locate(job.input_uri, None),
        batch_jobs.OUTPUT: batch_jobs.locate(job.output_uri, None),
        batch_jobs.ARTIFACTS: batch_jobs.locate("s3://models/ml/digits/gen-1", None),
    }
    assert all(loc.in_object_store and loc.operator_path is None for loc in locations.values())
    config = batch_jobs.worker_config(job, locations, "int8", GPU, 0.15)
    assert (config["input"], config["output"], config["artifacts"]) == (
        "s3://data/digits/", "s3://scores/digits", "s3://models/ml/digits/gen-1",
    )  # fmt: skip
    model_store = ObjectStore(secret_name="model-keys", addressing_style="auto")
    model = ResolvedModel("int8", "s3://models/ml/digits/gen-1", object_store=model_store)
    access = batch_store_access(job, model, locations, None)
    assert access is not None and access.secret_name == "batch-keys"  # the batch's own store first
    for made in (batch_jobs.desired_worker_job(job, GPU, IMAGE, locations, config, 2, access),
                 batch_jobs.desired_aggregate_job(job, GPU, IMAGE, locations, config, access)):  # fmt: skip
        pod = made["spec"]["template"]["spec"]
        assert [v["name"] for v in pod["volumes"]] == [pod_specs.SCRATCH_VOLUME]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert json.loads(env["FSSPEC_S3"]["value"])["endpoint_url"] == "http://s3.storage:8333"
        refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
        assert {ref["name"] for ref in refs.values()} == {"batch-keys"}
        assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    unnamed = batch(input={"uri": "s3://data/digits/"}, output={"uri": "s3://scores/digits"})
    inherited = batch_store_access(unnamed, model, locations, None)
    assert inherited is not None and inherited.secret_name == "model-keys"  # then the ModelDeployment's
    default = ObjectStore(secret_name="operator-keys", addressing_style="auto")
    fallback = batch_store_access(unnamed, None, locations, default)
    assert fallback is not None and fallback.secret_name == "operator-keys"  # then the operator's
    on_claims = {role: batch_jobs.locate(uri, None) for role, uri in (
        (batch_jobs.INPUT, "pvc://data/in.npz"), (batch_jobs.OUTPUT, "pvc://data/out"))}  # fmt: skip
    assert batch_store_access(job, model, on_claims, default) is None  # no bucket, no keys in the pods
    with pytest.raises(ValueError, match="s3://<bucket>"):
        batch_jobs.locate("s3:///no-bucket", None)


def test_a_batch_on_gcs_mounts_the_key_file_its_credentials_variable_names() -> None:
    from frugal.operator.decision.batch_inference import batch_store_access

    job = batch(input={"uri": "gs://data/digits/"}, output={"uri": "gs://scores/digits"},
                objectStore={"secretName": "gcs-key", "project": "ml"})  # fmt: skip
    locations = {role: batch_jobs.locate(uri, None) for role, uri in (
        (batch_jobs.INPUT, job.input_uri), (batch_jobs.OUTPUT, job.output_uri),
        (batch_jobs.ARTIFACTS, "gs://models/ml/digits/gen-1"))}  # fmt: skip
    access = batch_store_access(job, None, locations, None)
    pod = batch_jobs.desired_worker_job(job, GPU, IMAGE, locations, {}, 2, access)["spec"]["template"]["spec"]
    [key] = [v for v in pod["volumes"] if "secret" in v]
    assert key["secret"]["secretName"] == "gcs-key"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == key["name"])
    assert mount["readOnly"] is True and env["GOOGLE_APPLICATION_CREDENTIALS"].startswith(mount["mountPath"])


def every_pod_template() -> dict[str, dict[str, Any]]:
    """The pod template of every kind of workload the operator creates, by what it is."""
    selection = Option("int8", "gpu-t4", 1)
    score, aggregate = batch_children(batch())
    workloads = {
        "compress": jobs.desired_compression_job(md_with(compression__distillation={"workers": 2}), GPU, IMAGE, ARTIFACTS),
        "profile": jobs.desired_profiling_job(SPEC, GPU, IMAGE, ARTIFACTS),
        "shard": serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, 0),
        "shard-node-cache": serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, 0, True),
        "front": serving_objects.desired_front(SPEC, IMAGE, inputs=DIGITS_INPUTS),
        "batch-score": score,
        "batch-aggregate": aggregate,
    }  # fmt: skip
    return {what: workload["spec"]["template"]["spec"] for what, workload in workloads.items()}


@pytest.mark.parametrize("what", sorted(every_pod_template()))
def test_every_container_says_why_it_failed_and_every_scratch_volume_is_bounded(what: str) -> None:
    pod = every_pod_template()[what]
    for container in pod["containers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container["name"]
    empty_dirs = [v for v in pod["volumes"] if "emptyDir" in v]
    assert empty_dirs and all(v["emptyDir"].get("sizeLimit") for v in empty_dirs), empty_dirs


@pytest.mark.parametrize(
    ("root", "uri", "pod_path", "volume_key"),
    [
        ("file:///srv/art", "file:///srv/art/ml/digits/gen-3", "/srv/art/ml/digits/gen-3", "hostPath"),
        (
            "pvc://claim/a/b",
            "pvc://claim/a/b/ml/digits/gen-3",
            f"{POD_MOUNT}/a/b/ml/digits/gen-3",
            "persistentVolumeClaim",
        ),
    ],
)
def test_artifact_locations(root: str, uri: str, pod_path: str, volume_key: str) -> None:
    location = locate(root, SPEC.owner)
    assert (location.uri, location.pod_path) == (uri, pod_path)
    assert volume_key in location.volume


BUCKET_MD = md_with(
    storage={"uri": "s3://models/frugal/", "retainArtifacts": True},
    objectStore={"secretName": "bucket-keys", "endpoint": "http://store:8333", "addressingStyle": "path"},
)


def test_a_bucket_is_an_artifact_location_that_pods_reach_without_a_volume() -> None:
    location = artifact_location(BUCKET_MD, Settings(image=IMAGE))
    assert location.uri == location.pod_path == "s3://models/frugal/ml/digits/gen-3"
    assert location.operator_path is None and location.claim is None
    pods = {
        "compression": jobs.desired_compression_job(BUCKET_MD, GPU, IMAGE, location)["spec"]["template"]["spec"],
        "profiling": jobs.desired_profiling_job(BUCKET_MD, GPU, IMAGE, location)["spec"]["template"]["spec"],
        "serving": serving_objects.desired_shard_deployment(
            BUCKET_MD, GPU, IMAGE, location, Option("int8", "gpu-t4", 2), 1
        )["spec"]["template"]["spec"],
    }
    for role, pod in pods.items():
        container = pod["containers"][0]
        assert "artifacts" not in {v["name"] for v in pod["volumes"]}, role
        assert location.uri in json.dumps(container["command"]), role
        env = {e["name"]: e for e in container["env"]}
        assert json.loads(env["FSSPEC_S3"]["value"]) == {
            "endpoint_url": "http://store:8333",
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        }, role
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "bucket-keys", role
        assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_operators_object_store_applies_only_where_a_uri_is_in_a_bucket() -> None:
    default = ObjectStore(secret_name="team-keys", addressing_style="auto")
    settings = Settings(image=IMAGE, object_store=default)
    on_claim = artifact_location(SPEC, settings)
    assert on_claim.access is None and on_claim.env() == []
    model_in_bucket = md_with(model={"uri": "s3://models/digits.onnx", "format": "onnx"})
    access = artifact_location(model_in_bucket, settings).access
    assert access is not None and access.secret_name == "team-keys" and access.settings.environment() == {}
    own = artifact_location(BUCKET_MD, settings).access
    assert own is not None and own.secret_name == "bucket-keys"  # the spec's objectStore wins


def test_gcs_and_azure_are_artifact_locations_and_other_schemes_are_not() -> None:
    for root in ("gs://bucket/x", "az://container/x"):
        located = locate(root, SPEC.owner)
        assert located.uri == located.pod_path == f"{root}/{SPEC.owner.namespace}/{SPEC.owner.name}/gen-{SPEC.owner.generation}"
        assert located.in_object_store and located.volumes() == [] and located.mount(True) == []
    with pytest.raises(ValueError, match="use s3://, gs:// or az://<bucket>/<prefix>, pvc://<claim>/<path>"):
        locate("https://host/x", SPEC.owner)


def test_pod_monitor_scrapes_every_serving_pod_of_the_model() -> None:
    monitor = serving_objects.desired_pod_monitor(SPEC)
    deployment = serving_objects.desired_shard_deployment(
        SPEC, GPU, IMAGE, ARTIFACTS, Option("int8", "gpu-t4", 2), 1
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_decisions_import_no_cluster_client() -> None:
    """The planner, builders and pipeline stay light: the local runtime imports them without kopf."""
    code = (
        "import sys, frugal.operator.decision.planner, frugal.operator.decision.decide, "
        "frugal.operator.decision.conditions; "
        "print(sorted(m for m in ('kopf', 'kubernetes', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_threshold_scale_depth_factor_and_f1_reach_the_compression_component() -> None:
    from frugal.compression.config import CompressionConfig

    md = md_with(
        compression__pruning={"method": "threshold", "thresholdScale": 1.5},
        compression__distillation={"student": {"widthFactor": 0.5, "depthFactor": 0.5}, "epochs": 2},
        compression__accuracyBudget={"metric": "f1", "maxDrop": 0.02},
    )
    wire = json.loads(container_commands.compress(md, "/out")[3])
    assert wire["pruning"]["thresholdScale"] == 1.5
    assert wire["distillation"]["student"] == {"width": 0.5, "depthFactor": 0.5}
    assert wire["accuracyBudget"] == {"metric": "f1", "maxDrop": 0.02}
    config = CompressionConfig.model_validate(wire)  # what the Job's `frugal compress` parses
    assert config.pruning[0].threshold_scale == 1.5
    assert config.distillation is not None and config.distillation.student.depth_factor == 0.5
    assert config.accuracy_budget.metric == "f1"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector's verdict (matchLabels and In expressions, what these policies use)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def test_network_policies_select_the_pods_they_confine() -> None:
    from frugal.operator.manifests.network_policies import desired_network_policies

    serving, jobs_policy, rendezvous = desired_network_policies(SPEC, "observability")
    shard = serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, Option("int8", "gpu-t4", 1), 0)
    compress = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)
    profile = jobs.desired_profiling_job(SPEC, GPU, IMAGE, ARTIFACTS)
    # The next generation's compression Job: another Job of the same ModelDeployment.
    later = dataclasses.replace(SPEC, owner=dataclasses.replace(SPEC.owner, generation=SPEC.owner.generation + 1))
    compress_later = jobs.desired_compression_job(later, GPU, IMAGE, locate("pvc://frugal-artifacts/store", later.owner))
    pod_labels = {
        "shard": shard["spec"]["template"]["metadata"]["labels"],
        "compress": compress["spec"]["template"]["metadata"]["labels"],
        "profile": profile["spec"]["template"]["metadata"]["labels"],
        "compress-later": compress_later["spec"]["template"]["metadata"]["labels"],
    }
    selected = {p["metadata"]["name"]: {k for k, v in pod_labels.items() if _selects(p["spec"]["podSelector"], v)}
                for p in (serving, jobs_policy, rendezvous)}  # fmt: skip
    assert selected == {
        "digits-serving": {"shard"},
        "digits-jobs": {"compress", "profile", "compress-later"},
        "digits-rendezvous": {"compress"},
    }
    other = {**pod_labels["shard"], names.LABEL_MD: "someone-else"}
    assert not _selects(serving["spec"]["podSelector"], other)
    [serving_from] = serving["spec"]["ingress"]
    assert {"podSelector": {}} in serving_from["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}} in serving_from["from"]
    assert jobs_policy["spec"]["ingress"] == []  # NetworkPolicies add up: what the rendezvous opens, and nothing else
    # The rendezvous port, and only from the same Job's pods: not profiling, not another generation's
    # Job, not another ModelDeployment's.
    [workers] = rendezvous["spec"]["ingress"]
    assert workers["ports"] == [{"protocol": "TCP", "port": container_commands.DISTRIBUTED_PORT}]
    [source] = workers["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector: this namespace only
    admitted = {k for k, v in pod_labels.items() if _selects(source["podSelector"], v)}
    assert admitted == {"compress"}
    assert not _selects(source["podSelector"], {**pod_labels["compress"], names.LABEL_MD: "someone-else"})
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in (serving, jobs_policy, rendezvous))


def test_every_serving_pod_counts_answers_against_the_specs_latency_target() -> None:
    selection = Option("int8", "gpu-t4", 2)
    for index in (0, 1):
        deployment = serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, index)
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        assert float(command[command.index("--latency-target-ms") + 1]) == SPEC.slo_p95_ms
        assert "--max-body-bytes" not in command  # derived by the server from the model's own inputs


def test_a_mig_profile_asks_for_exactly_its_slice_and_no_whole_gpu() -> None:
    """Defect class: scheduling asks. A HardwareProfile naming a MIG slice also got `nvidia.com/gpu: 1`,
    so its pods asked for a whole GPU and a slice, and scheduled on neither as intended."""
    body = {
        "metadata": {"name": "a100-1g"},
        "spec": {
            "accelerator": {"kind": "nvidia-gpu", "model": "A100", "count": 1, "memoryGiB": 10},
            "resources": {"limits": {"nvidia.com/mig-1g.10gb": 1, "memory": "8Gi"}},
            "executionProvider": "CUDAExecutionProvider",
            "costPerHour": "0.40",
            "power": {"idleWatts": 10, "maxWatts": 50},
        },
    }
    container = jobs.desired_compression_job(SPEC, parse_hardware_profile(body), IMAGE, ARTIFACTS)["spec"][
        "template"
    ]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "1" and "nvidia.com/gpu" not in limits
    # A whole-GPU profile still gets its count.
    whole = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)["spec"]["template"]["spec"]["containers"][0]
    assert whole["resources"]["limits"]["nvidia.com/gpu"] == "1"
