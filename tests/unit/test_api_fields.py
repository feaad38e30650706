"""Every field a user can set does something: the CRD schemas walked field by field against what the
operator's code reads from the typed view while it runs a fully populated ModelDeployment through
every phase (compression, profiling, serving) and builds every object and command.

A field no code reads is accepted and ignored, which is worse than a field that does not exist. The
fields whose feature is still being built are listed, with the issue that builds them; the test also
fails when a listed field starts being read, so the list cannot go stale.
"""

from __future__ import annotations

import contextlib
import copy
import typing
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from test_decide import manifest_of, profile_of
from test_validation import full_hwp, full_md

from frugal.operator.api import crds, models
from frugal.operator.api.spec import parse_batch_inference, parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import artifact_files, scaling
from frugal.operator.decision.batch_inference import BatchObserved, Progress, ResolvedModel, decide_batch
from frugal.operator.decision.conditions import Job, JobState
from frugal.operator.decision.decide import ClusterState, artifacts_to_remove, decide
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.decision.replanning import ReplanMemory
from frugal.operator.manifests import batch_jobs, container_commands
from frugal.operator.telemetry import OperatorMetrics

# Read by nothing yet. Each entry names what will read it.
NOT_YET_READ: set[str] = set()
# Kubernetes objects handed to pods whole: their own fields are Kubernetes', not ours to read.
PASSED_WHOLE = {
    "HardwareProfile.spec.tolerations",
    "HardwareProfile.spec.nodeSelector",
    "HardwareProfile.spec.resources",
}


@contextlib.contextmanager
def reads_recorded() -> Iterator[set[tuple[str, str]]]:
    """Record the (model class, field) pairs read from the typed view inside the block."""
    seen: set[tuple[str, str]] = set()
    original = models.ApiModel.__getattribute__

    def recording(self: Any, name: str) -> Any:
        cls = type(self)
        if name in cls.model_fields:
            seen.add((cls.__name__, name))
        return original(self, name)

    models.ApiModel.__getattribute__ = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        models.ApiModel.__getattribute__ = original  # type: ignore[method-assign]


def read_fields() -> set[tuple[str, str]]:
    """(model class, field) pairs the operator reads while it takes `full_md()` from nothing to
    serving, on `full_hwp()`-shaped profiles."""
    with reads_recorded() as seen:
        run_every_phase()
    return seen


def run_every_phase() -> None:
    md = parse_model_deployment(
        {**full_md(), "metadata": {"name": "digits", "namespace": "ml", "generation": 1}}
    )
    profiles = {}
    for name in ("cpu-small", "gpu-t4", "gpu-a100"):
        body = full_hwp()
        body["metadata"]["name"] = name
        profiles[name] = parse_hardware_profile(body)
    settings = Settings(image="img", storage_uri="file:///store", allow_host_path=True)
    done = Job(JobState.SUCCEEDED, name="x")
    manifest = manifest_of(
        [
            {
                "name": "fp32",
                "sizeBytes": 4000,
                "steps": [],
                "metric": {"name": "f1", "value": 0.97, "baseline": 0.97, "drop": 0.0},
            }
        ],
        stage_counts=(2,),
    )
    measured = [{"name": "fp32", "latencyP95Ms": 3, "throughputRps": 1500}]
    artifacts = artifact_files.Artifacts(manifest, None, {name: profile_of(name, measured) for name in profiles})
    states = [
        (ClusterState(), None),
        (ClusterState(compression=done), artifact_files.Artifacts(manifest, None, {})),
        (
            ClusterState(compression=done, profiling=dict.fromkeys(profiles, done), pod_monitors=True),
            artifacts,
        ),
        (
            ClusterState(
                compression=done,
                profiling=dict.fromkeys(profiles, done),
                shard_replicas={0: 1, 1: 1},
                shard_ready={0: 1, 1: 1},
                live_generation=1,
            ),
            artifacts,
        ),
    ]
    for state, found in states:
        decision = decide(md, profiles, state, found, settings)
        if decision.selection is not None:
            OperatorMetrics().observe(md, decision.selection, decision.status.get("shards", []))
            scaling.targets_for(md, profiles[decision.selection.profile], capacity_rps=100.0)
            scaling.metrics_source(md, default_prometheus_url=None)
            running = scaling.running_choice(decision.status)
            settings_at_load = scaling.replan_settings(md)
            scaling.replan_at_load(md, None, running, (1,), settings_at_load, ReplanMemory(), 0.0)
    container_commands.compression_config(md, "/out")
    artifacts_to_remove(md, settings)
    run_every_batch_phase(profiles)


def full_batch() -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": "ml", "generation": 1},
        "spec": {
            "model": {"artifacts": {"uri": "pvc://models/digits", "variant": "fp32"}},
            "input": {"uri": "pvc://data/digits.npz"},
            "output": {"uri": "s3://scores/digits", "overwrite": True},
            "objectStore": {"secretName": "keys", "endpoint": "http://s3.storage:8333", "region": "us-east-1",
                            "addressingStyle": "path"},
            "hardwareProfiles": ["cpu-small", "gpu-t4"],
            "workers": 2,
            "maxWorkers": 4,
            "deadlineSeconds": 600,
            "batchSize": 128,
            "rowsPerShard": 500,
        },
    }


def run_every_batch_phase(profiles: dict[str, Any]) -> None:
    """A fully populated BatchInference from nothing to Succeeded (the cluster side), and placed as
    `frugal batch` places it."""
    for model in ({"artifacts": {"uri": "pvc://models/digits", "variant": "fp32"}}, {"modelDeployment": "digits"}):
        body = full_batch()
        body["spec"]["model"] = model
        job = parse_batch_inference(body)
        # What the reconciler and frugal batch read to resolve the model (BatchReconciler._model).
        if job.artifacts is not None:
            ResolvedModel(job.artifacts.variant, job.artifacts.uri)
        else:
            assert job.model_deployment == "digits"
    job = parse_batch_inference(full_batch())
    locations = {
        batch_jobs.INPUT: batch_jobs.locate(job.input_uri, None),
        batch_jobs.OUTPUT: batch_jobs.locate(job.output_uri, None),
        batch_jobs.ARTIFACTS: batch_jobs.locate("pvc://models/digits", None),
    }
    model = ResolvedModel("fp32", "pvc://models/digits", {"cpu-small": 1000.0, "gpu-t4": 4000.0})
    done = Job(JobState.SUCCEEDED, name="x")
    summary = {"rows": 1000, "shards": 2, "rowsPerSecond": 900.0, "costUsd": 0.001, "energyJoules": 5.0}
    selected = None
    for workers, aggregate, found in ((Job(JobState.ABSENT), Job(JobState.ABSENT), None), (done, done, summary)):
        progress = Progress(shards_total=2, rows_total=1000)
        observed = BatchObserved(model, workers=workers, aggregate=aggregate, progress=progress, summary=found,
                                 selected=selected)  # fmt: skip
        decision = decide_batch(job, profiles, locations, observed, "img")
        selected = models.BatchInferenceStatus.from_status(decision.status).selected


def schema_fields(
    schema: dict[str, Any], model: type[pydantic.BaseModel], path: str
) -> Iterator[tuple[str, str, str]]:
    """(CRD path, model class, field) for every property, through nested objects and arrays."""
    by_alias = {(info.alias or name): name for name, info in model.model_fields.items()}
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}"
        assert key in by_alias, f"{here} is in the CRD but not in {model.__name__}: add it to the typed view"
        field = by_alias[key]
        yield here, model.__name__, field
        if here in PASSED_WHOLE:
            continue
        nested = model_of(model.model_fields[field].annotation)
        if nested is not None:
            yield from schema_fields(
                sub.get("items", sub) if sub.get("type") == "array" else sub, nested, here
            )


def model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `tuple[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = model_of(argument)
        if found is not None:
            return found
    return None


def crd_fields() -> list[tuple[str, str, str]]:
    found = []
    for kind, model in (
        ("ModelDeployment", models.ModelDeploymentSpec),
        ("HardwareProfile", models.HardwareProfileSpec),
        ("BatchInference", models.BatchInferenceSpec),
    ):
        found += list(schema_fields(crds.schema(kind)["properties"]["spec"], model, f"{kind}.spec"))
    return found


def printer_columns() -> set[str]:
    """Fields kubectl get shows: read by the API server for the user (`.spec.x.y` -> `Kind.spec.x.y`)."""
    return {
        kind + column["jsonPath"]
        for kind in ("ModelDeployment", "HardwareProfile", "BatchInference")
        for column in crds.crd(kind)["spec"]["versions"][0].get("additionalPrinterColumns", [])
        if column["jsonPath"].startswith(".spec.")
    }


@pytest.fixture(scope="module")
def fields_read() -> set[tuple[str, str]]:
    return read_fields()


def test_every_crd_field_is_read_by_the_operator(fields_read: set[tuple[str, str]]) -> None:
    unread = [
        path
        for path, model, field in crd_fields()
        if (model, field) not in fields_read and path not in NOT_YET_READ | printer_columns()
    ]
    assert unread == [], "accepted and ignored: wire these fields, or take them out of the CRD"


def test_fields_listed_as_not_yet_read_are_indeed_unread(fields_read: set[tuple[str, str]]) -> None:
    paths = {path: (model, field) for path, model, field in crd_fields()}
    assert paths.keys() >= NOT_YET_READ, "a listed field is not in the CRD any more"
    read_now = sorted(path for path in NOT_YET_READ if paths[path] in fields_read)
    assert read_now == [], "now read: take these out of NOT_YET_READ"


def test_the_walk_sees_nested_and_array_fields() -> None:
    paths = {path for path, _, _ in crd_fields()}
    assert {
        "ModelDeployment.spec.compression.distillation.student.depthFactor",
        "ModelDeployment.spec.model.inputs.shape",
        "HardwareProfile.spec.accelerator.memoryGiB",
    } <= paths
    assert len(paths) > 60


def test_the_recorder_notices_a_field_that_is_read() -> None:
    md = parse_model_deployment(copy.deepcopy(full_md()))
    with reads_recorded() as seen:
        md.resource.spec.serving.batching.max_queue_size  # noqa: B018
    assert ("Batching", "max_queue_size") in seen
    assert ("Batching", "max_batch_size") not in seen


def test_frugal_compress_defaults_are_the_crds() -> None:
    """`frugal compress` run by hand must behave like the compression Job of a ModelDeployment that
    leaves the same fields out. The compression component cannot read the CRD (it never imports the
    operator), so this test holds every default the mapping carries equal to the CRD's."""
    from frugal.compression.config import CompressionConfig

    md = parse_model_deployment(
        {
            "metadata": {"name": "digits", "namespace": "ml"},
            "spec": {
                "model": {"uri": "zoo://digits-mlp"},
                "compression": {"pruning": {"method": "threshold"}, "distillation": {}},
                "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 50}},
            },
        }
    )
    from_crd = CompressionConfig.model_validate(container_commands.compression_config(md, "/out"))
    by_hand = CompressionConfig.model_validate(
        {
            "model": {"uri": "zoo://digits-mlp"},
            "pruning": {"method": "threshold"},
            "distillation": {},
            "accuracyBudget": {"metric": "accuracy"},
            "output": "/out",
            "name": "digits",
            "servingBatchSize": md.max_batch_size,
        }
    )
    assert from_crd.distillation == by_hand.distillation
    assert from_crd.pruning == by_hand.pruning
    assert from_crd.accuracy_budget == by_hand.accuracy_budget
