"""The local validator rejects what kube-apiserver rejects, naming the field, and applies defaults."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from frugal.operator.api import (
    HardwareProfile,
    ModelDeployment,
    ModelDeploymentSpec,
    ValidationFailed,
    check,
    load_documents,
    parse_resource,
)

REPO = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((REPO / "tests" / "cases" / "invalid_resources.yaml").read_text())
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def minimal_md(**spec: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits"},
        "spec": {
            "model": {"uri": "zoo://digits-mlp"},
            "serving": {"hardwareProfiles": ["local-cpu"], "slo": {"latencyP95Ms": 50}},
        },
    }
    document["spec"].update(spec)
    return document


def minimal_hwp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "HardwareProfile",
        "metadata": {"name": "cpu"},
        "spec": {"accelerator": {"kind": "cpu"}, "costPerHour": "0.10", **spec},
    }


def md_spec(document: dict[str, Any]) -> ModelDeploymentSpec:
    deployment = parse_resource(document)
    assert isinstance(deployment, ModelDeployment)
    return deployment.spec


def error_paths(document: Any) -> set[str]:
    return {error.path for error in check(document).errors if error.path}


# --- the table of invalid resources ---------------------------------------------------------------


def test_the_table_is_large_and_well_formed() -> None:
    assert len(CASES) >= 15
    assert len({case["name"] for case in CASES}) == len(CASES)
    assert all(set(case) == {"name", "field", "document"} for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_each_invalid_resource_is_rejected_naming_exactly_its_field(case: dict[str, Any]) -> None:
    assert error_paths(case["document"]) == {case["field"]}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_each_invalid_resource_raises_with_the_field_in_the_message(case: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as failure:
        parse_resource(case["document"])
    assert f"{case['field']}: " in str(failure.value)


# --- examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    resources = load_documents(path)
    assert resources
    for resource in resources:
        assert check(resource.to_dict()).ok


def test_examples_refer_only_to_hardware_profiles_that_examples_define() -> None:
    resources = [resource for path in EXAMPLES for resource in load_documents(path)]
    profiles = {r.metadata.name for r in resources if isinstance(r, HardwareProfile)}
    deployments = [r for r in resources if isinstance(r, ModelDeployment)]
    assert {"digits", "digits-sharded", "minilm"} <= {d.metadata.name for d in deployments}
    for deployment in deployments:
        assert set(deployment.spec.serving.hardware_profiles) <= profiles
        assert deployment.spec.compression.hardware_profile in (None, *profiles)


def test_the_digits_example_is_the_walking_skeleton() -> None:
    deployment, profile = load_documents(REPO / "examples" / "digits.yaml")
    assert isinstance(deployment, ModelDeployment) and isinstance(profile, HardwareProfile)
    assert deployment.spec.model.uri == "zoo://digits-mlp"
    assert deployment.spec.compression.quantization is not None
    assert deployment.spec.compression.quantization.method == "dynamic-int8"
    assert deployment.spec.compression.accuracy_budget.max_drop == 0.01
    assert deployment.spec.serving.hardware_profiles == (profile.metadata.name,)
    assert profile.spec.execution_provider == "CPUExecutionProvider"
    assert deployment.model_name == "digits"


# --- defaults -------------------------------------------------------------------------------------


def test_schema_defaults_are_applied_to_a_minimal_model_deployment() -> None:
    spec = md_spec(minimal_md())
    assert (
        spec.serving.shards,
        spec.serving.batching.max_batch_size,
        spec.serving.batching.max_queue_size,
    ) == (1, 32, 1024)
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 4)
    assert spec.autoscaling.scale_to_zero_after_seconds is None
    assert spec.autoscaling.power.source == "estimate"
    assert str(spec.autoscaling.power.price_per_kwh) == "0.15"
    assert (spec.compression.accuracy_budget.metric, spec.compression.accuracy_budget.max_drop) == (
        "accuracy",
        0.01,
    )
    assert spec.compression.pruning is None and spec.compression.quantization is None
    assert spec.model.format == "auto" and spec.storage.retain_artifacts is True


def test_defaults_fill_nested_objects_but_keep_what_the_user_set() -> None:
    document = minimal_md(
        compression={"pruning": {"method": "magnitude"}, "distillation": {"workers": 2}},
        autoscaling={"maxReplicas": 9},
    )
    spec = md_spec(document)
    assert spec.compression.pruning is not None and spec.compression.pruning.sparsity == 0.5
    assert spec.compression.distillation is not None
    assert (spec.compression.distillation.workers, spec.compression.distillation.student.width_factor) == (
        2,
        0.5,
    )
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 9)


def test_null_fields_are_defaulted_like_the_api_server_does() -> None:
    spec = md_spec(minimal_md(autoscaling=None))
    assert spec.autoscaling.max_replicas == 4


def test_defaulting_does_not_change_the_input() -> None:
    document = minimal_md()
    before = copy.deepcopy(document)
    check(document)
    assert document == before


def test_hardware_profile_defaults() -> None:
    profile = parse_resource(minimal_hwp(tolerations=[{"key": "pool", "value": "ml"}]))
    assert isinstance(profile, HardwareProfile)
    assert profile.spec.execution_provider == "CPUExecutionProvider"
    assert profile.spec.accelerator.count == 1
    assert profile.spec.tolerations[0].operator == "Equal"
    assert str(profile.spec.cost_per_hour) == "0.10"


# --- CEL and typing details -----------------------------------------------------------------------


def test_numbers_reach_cel_typed_by_the_schema() -> None:
    # idleWatts written as a float and maxWatts as an integer: both are `number`, so CEL compares doubles.
    assert check(minimal_hwp(power={"idleWatts": 0.5, "maxWatts": 10})).ok
    assert error_paths(minimal_hwp(power={"idleWatts": 10.5, "maxWatts": 10})) == {"spec.power.maxWatts"}


def test_scale_to_zero_is_accepted_with_min_replicas_zero() -> None:
    assert check(minimal_md(autoscaling={"minReplicas": 0, "scaleToZeroAfterSeconds": 60})).ok


def test_a_state_dict_of_a_zoo_architecture_needs_no_data_of_its_own() -> None:
    model = {"uri": "file:///models/student.pt", "format": "pytorch", "architecture": "all-minilm-l6-v2"}
    assert check(minimal_md(model=model, compression={"quantization": {"method": "static-int8"}})).ok
    assert error_paths(minimal_md(model={"uri": "file:///models/student.pt"})) == {"spec.data.validation"}


def test_weight_only_quantization_methods_are_accepted() -> None:
    for method in ("int8-weight", "int4-weight"):
        assert check(minimal_md(compression={"quantization": {"method": method}})).ok


def test_quantities_may_be_integers_or_strings() -> None:
    resources = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}}
    document = minimal_hwp(
        accelerator={"kind": "nvidia-gpu"}, executionProvider="CUDAExecutionProvider", resources=resources
    )
    assert check(document).ok
    bad = minimal_hwp(resources={"limits": {"cpu": "lots"}})
    assert error_paths(bad) == {"spec.resources.limits.cpu"}


def test_several_problems_are_all_reported() -> None:
    document = minimal_md(
        autoscaling={"minReplicas": 5, "maxReplicas": 2}, compression={"quantization": {"method": "uniform"}}
    )
    assert error_paths(document) == {"spec.autoscaling.minReplicas", "spec.compression.quantization.bits"}


def test_wrong_api_version_and_kind_are_named() -> None:
    document = minimal_md()
    document.update(apiVersion="frugal.dev/v1", kind="Modeldeployment")
    assert error_paths(document) == {"apiVersion", "kind"}


def test_status_is_validated_too() -> None:
    document = minimal_md()
    document["status"] = {"phase": "Sleeping"}
    assert error_paths(document) == {"status.phase"}


# --- rendering ------------------------------------------------------------------------------------


def test_errors_render_with_file_document_field_and_what_to_change(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    bad = minimal_md(autoscaling={"minReplicas": 5, "maxReplicas": 2})
    bad["spec"]["serving"]["hardwareProfiles"] = []
    path.write_text(yaml.safe_dump_all([minimal_hwp(), bad]))
    with pytest.raises(ValidationFailed) as failure:
        load_documents(path)
    lines = str(failure.value).splitlines()
    assert lines[0] == "2 invalid fields; change these and try again:"
    assert lines[1] == f"{path}, document 2 (ModelDeployment digits):"
    assert lines[2].startswith(
        "  - spec.serving.hardwareProfiles: Invalid value: []: must have at least 1 item(s)"
    )
    assert lines[3] == (
        "  - spec.autoscaling.minReplicas: Invalid value: minReplicas must not exceed maxReplicas: "
        "lower minReplicas or raise maxReplicas"
    )
    assert [error.path for error in failure.value.errors] == [
        "spec.serving.hardwareProfiles",
        "spec.autoscaling.minReplicas",
    ]


def test_messages_say_what_to_change() -> None:
    rendered = {error.path: error.render() for error in check(minimal_hwp(costPerHour=0.35)).errors}
    assert 'write it in quotes, e.g. "0.35"' in rendered["spec.costPerHour"]
    rendered = {error.path: error.render() for error in check(minimal_md(replica=3)).errors}
    assert "remove it or fix its spelling" in rendered["spec.replica"]
    assert "autoscaling" in rendered["spec.replica"]
    rendered = {
        e.path: e.render() for e in check(minimal_md(autoscaling={"minReplicas": 3, "maxReplicas": 2})).errors
    }
    assert "lower minReplicas or raise maxReplicas" in rendered["spec.autoscaling.minReplicas"]


def test_yaml_errors_and_non_mappings_are_validation_errors_not_tracebacks() -> None:
    with pytest.raises(ValidationFailed, match="not valid YAML"):
        load_documents("kind: [unclosed\n")
    with pytest.raises(ValidationFailed, match="must be a YAML mapping"):
        load_documents("- a list\n- not a resource\n")


def test_missing_files_are_reported_as_missing() -> None:
    with pytest.raises(FileNotFoundError):
        load_documents("examples/no-such-example.yaml")


def test_timestamps_stay_strings_as_kubernetes_reads_them() -> None:
    text = yaml.safe_dump(minimal_md()).replace(
        "name: digits", "name: digits\n  annotations:\n    built: 2026-11-28"
    )
    (deployment,) = load_documents(text)
    assert deployment.metadata.annotations == {"built": "2026-11-28"}


# --- typed models match the schema ----------------------------------------------------------------

FULL_STATUS = {
    "phase": "Serving",
    "observedGeneration": 2,
    "message": "serving int8-dynamic on local-cpu",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Serving",
            "message": "all shards ready",
            "lastTransitionTime": "2026-11-28T16:00:00Z",
            "observedGeneration": 2,
        }
    ],
    "artifacts": {"uri": "pvc://frugal-artifacts/default/digits/2", "generation": 2},
    "variants": [
        {
            "name": "int8-dynamic",
            "steps": ["quantization:dynamic-int8"],
            "sizeBytes": 12345,
            "metric": {"name": "accuracy", "value": 0.97, "baseline": 0.975, "drop": 0.005},
            "accepted": True,
            "reason": "cheapest within the SLO",
            "profiles": [
                {
                    "hardwareProfile": "local-cpu",
                    "shards": 1,
                    "latencyP95Ms": 1.5,
                    "throughputRps": 900.0,
                    "costPer1kRequests": "0.000006",
                    "meetsSlo": True,
                }
            ],
        }
    ],
    "selected": {
        "variant": "int8-dynamic",
        "hardwareProfile": "local-cpu",
        "shards": 1,
        "reason": "cheapest",
    },
    "shards": [{"index": 0, "replicas": 2, "readyReplicas": 2}],
    "replicas": 2,
    "readyReplicas": 2,
    "endpoint": "http://digits.default.svc:8080",
    "latencyP95Ms": 3.5,
    "cost": {"perHour": "0.04", "per1kRequests": "0.00001", "energyPerRequestJoules": 0.02},
    "kopf": {"progress": {"anything": {"retries": 1}}},
}


def full_md() -> dict[str, Any]:
    tensor = {"name": "input", "datatype": "FP32", "shape": [-1, 64]}
    document = minimal_md(
        model={
            "uri": "file:///models/digits.onnx",
            "format": "onnx",
            "name": "digits",
            "inputs": [tensor],
            "outputs": [{**tensor, "name": "logits", "shape": [-1, 10]}],
        },
        data={
            "validation": {"uri": "file:///data/val.npz", "maxSamples": 500},
            "calibration": {"uri": "s3://datasets/calib.npz"},
        },
        compression={
            "hardwareProfile": "gpu-a100",
            "pruning": {"method": "threshold", "sparsity": 0.2, "thresholdScale": 1.5},
            "quantization": {"method": "static-int8", "perChannel": True},
            "distillation": {
                "student": {"widthFactor": 0.25, "depthFactor": 0.5},
                "epochs": 3,
                "temperature": 2.0,
                "alpha": 0.7,
                "learningRate": 0.01,
                "workers": 2,
            },
            "accuracyBudget": {"metric": "f1", "maxDrop": 0.02},
        },
        serving={
            "hardwareProfiles": ["cpu-small", "gpu-t4"],
            "shards": 2,
            "slo": {"latencyP95Ms": 20.5},
            "batching": {"maxBatchSize": 8, "maxDelayMs": 1.5, "maxQueueSize": 64},
        },
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 6,
            "scaleToZeroAfterSeconds": 120,
            "stabilizationWindowSeconds": 30,
            "power": {"capWatts": 500.0, "pricePerKWh": "0.21", "source": "dcgm"},
            "prometheus": {"url": "http://prometheus-operated.monitoring:9090"},
        },
        storage={"uri": "pvc://models/frugal", "retainArtifacts": False},
        objectStore={
            "secretName": "bucket-keys",
            "endpoint": "http://seaweedfs.storage:8333",
            "region": "us-east-1",
            "addressingStyle": "path",
            "project": "frugal-models",
            "accountName": "frugalmodels",
        },
    )
    document["status"] = FULL_STATUS
    return document


def full_hwp() -> dict[str, Any]:
    return minimal_hwp(
        accelerator={"kind": "nvidia-gpu", "model": "T4", "count": 2, "memoryGiB": 16},
        nodeSelector={"pool": "t4"},
        tolerations=[
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "spot",
                "operator": "Equal",
                "value": "true",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ],
        resources={"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 2}},
        executionProvider="TensorrtExecutionProvider",
        image="ghcr.io/example/frugal-gpu:0.1",
        costPerHour="1.08",
        power={"idleWatts": 60, "maxWatts": 140},
    )


@pytest.mark.parametrize("build", [full_md, full_hwp])
def test_a_document_using_every_field_round_trips_through_the_typed_model(build: Any) -> None:
    document = build()
    checked = check(document)
    assert checked.ok, checked.errors
    resource = parse_resource(document)
    assert resource.to_dict() == {**checked.document, "metadata": resource.to_dict()["metadata"]}


def test_the_model_name_defaults_to_the_resource_name() -> None:
    deployment = parse_resource(minimal_md())
    assert isinstance(deployment, ModelDeployment)
    assert deployment.model_name == "digits"
    named = parse_resource(full_md())
    assert isinstance(named, ModelDeployment) and named.status is not None
    assert named.status.cost is not None and str(named.status.cost.per_hour) == "0.04"
