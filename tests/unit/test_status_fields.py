"""The status is typed: the CRDs' status schemas walked field by field against the status models, the
statuses the operator's pure code produces validated by those models (and by the CRD), and every
field of the schemas written by some producer.

The statuses are built as the writers build them: the pure pieces (decide, the conditions, the
autoscaler's scaling functions, decide_batch) composed the way the reconcilers' status writes compose
them (phase, observedGeneration, message and the merged conditions around the decision's fields). A
field the CRD has and nothing writes is a field kubectl shows empty forever; the fields written by
something else than the operator are listed, with what writes them, and the test also fails when a
listed field starts being written, so the list cannot go stale.
"""

from __future__ import annotations

import copy
import json
import tempfile
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest

from frugal.operator.api import check, crds, models, parse_resource
from frugal.operator.api.models import BatchInferenceStatus, ModelDeploymentStatus
from frugal.operator.api.spec import parse_batch_inference, parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import artifact_files, scaling, status_writes
from frugal.operator.decision.autoscaling import Memory, Observation, ShardObservation, recommend
from frugal.operator.decision.batch_inference import BatchObserved, Progress, ResolvedModel, decide_batch
from frugal.operator.decision.conditions import Assessment, Condition, Job, JobState
from frugal.operator.decision.decide import ClusterState, decide
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.decision.replanning import ReplanMemory
from frugal.operator.decision.revisions import rollover_from_status
from frugal.operator.manifests import batch_jobs

STATUS_MODELS: dict[str, type[models.StatusModel]] = {
    "ModelDeployment": models.ModelDeploymentStatus,
    "BatchInference": models.BatchInferenceStatus,
}
# Written by something other than the operator's code. Each entry names what writes it.
NOT_OURS = {
    "ModelDeployment.status.kopf": "kopf, its handler progress (x-kubernetes-preserve-unknown-fields)",
}
# Objects kept whole: their own fields are not ours to walk.
PASSED_WHOLE = {"ModelDeployment.status.kopf"}
NOW = "2026-01-02T03:04:05Z"


# --- the walk: CRD status schema against the status model ---------------------------------------


def status_fields(schema: Mapping[str, Any], model: type[pydantic.BaseModel], path: str) -> Iterator[str]:
    """Every property path of `schema` (an object), through nested objects and arrays; fails on a
    property the model lacks, a model field the CRD lacks, a type, enum or required that differ."""
    by_alias = {models.json_key(name, info): info for name, info in model.model_fields.items()}
    properties = schema.get("properties") or {}
    extra = sorted(set(by_alias) - set(properties))
    assert extra == [], (
        f"{path}: {model.__name__} has {extra}, which the CRD does not: the API server drops them"
    )
    required = set(schema.get("required") or ())
    for key, sub in properties.items():
        here = f"{path}.{key}"
        assert key in by_alias, f"{here} is in the CRD but not in {model.__name__}: add it to the model"
        info = by_alias[key]
        assert info.is_required() == (key in required), f"{here}: required in the CRD iff in the model"
        if not info.is_required():
            assert info.default in (None, ()), (
                f"{here}: an optional field defaults to None (or () for arrays)"
            )
        yield here
        yield from value_fields(sub, info.annotation, here)


def value_fields(schema: Mapping[str, Any], annotation: Any, path: str) -> Iterator[str]:
    """Check `annotation` against the value schema `schema`; the nested property paths."""
    annotation = strip(annotation)
    kind = schema.get("type")
    if kind == "object":
        if path in PASSED_WHOLE:
            assert schema.get("x-kubernetes-preserve-unknown-fields"), path
            assert typing.get_origin(annotation) is dict, f"{path}: an object kept whole is a dict"
            return
        assert isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel), (
            f"{path}: an object is a nested model, not {annotation}"
        )
        yield from status_fields(schema, annotation, path)
    elif kind == "array":
        assert typing.get_origin(annotation) is tuple, f"{path}: an array is a tuple, not {annotation}"
        item, ellipsis = typing.get_args(annotation)
        assert ellipsis is Ellipsis, path
        yield from value_fields(schema["items"], item, path)
    elif kind == "string" and "enum" in schema:
        assert typing.get_origin(annotation) is typing.Literal, f"{path}: an enum is a Literal"
        assert set(typing.get_args(annotation)) == set(schema["enum"]), f"{path}: the enum differs"
    else:
        python = {"string": str, "integer": int, "number": float, "boolean": bool}[str(kind)]
        assert annotation is python, f"{path}: {kind} is {python.__name__}, not {annotation}"


def strip(annotation: Any) -> Any:
    """`X` from `X | None` and `Annotated[X, ...]`."""
    if typing.get_origin(annotation) is typing.Annotated:
        return strip(typing.get_args(annotation)[0])
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and len(arguments) == 1:
        return strip(arguments[0])
    return annotation


def crd_status_fields() -> list[str]:
    found = []
    for kind, model in STATUS_MODELS.items():
        found += list(status_fields(crds.schema(kind)["properties"]["status"], model, f"{kind}.status"))
    return found


def test_the_status_models_are_the_crds_status_schemas() -> None:
    paths = crd_status_fields()
    assert len(paths) == len(set(paths))


def test_the_walk_sees_nested_and_array_fields() -> None:
    paths = set(crd_status_fields())
    assert {
        "ModelDeployment.status.grpcEndpoint",
        "ModelDeployment.status.conditions.lastTransitionTime",
        "ModelDeployment.status.variants.profiles.costPer1kRequests",
        "ModelDeployment.status.planAtLoad.options.rejections",
        "ModelDeployment.status.replan.from.hardwareProfile",
        "BatchInference.status.plan.costPerMillionRows",
        "BatchInference.status.progress.summary",
    } <= paths
    assert len(paths) > 120


class _Row(models.StatusModel):
    name: str
    count: int | None = None


class _Table(models.StatusModel):
    rows: models.Items[_Row] = ()
    phase: typing.Literal["A", "B"] | None = None


@pytest.mark.parametrize(
    ("schema", "mentions"),
    [
        ({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object",
          "properties": {"name": {"type": "string"}, "count": {"type": "integer"}}, "required": ["name"]}},
          "phase": {"type": "string", "enum": ["A", "B"]}}}, None),
        ({"type": "object", "properties": {"rows": {"type": "array"}}}, "has ['phase']"),
        ({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object",
          "properties": {"name": {"type": "string"}, "count": {"type": "number"}}, "required": ["name"]}},
          "phase": {"type": "string", "enum": ["A", "B"]}}}, "number is float"),
        ({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object",
          "properties": {"name": {"type": "string"}, "count": {"type": "integer"}}}},
          "phase": {"type": "string", "enum": ["A", "B"]}}}, "required"),
        ({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object",
          "properties": {"name": {"type": "string"}, "count": {"type": "integer"}}, "required": ["name"]}},
          "phase": {"type": "string", "enum": ["A", "C"]}}}, "enum differs"),
        ({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object",
          "properties": {"name": {"type": "string"}, "count": {"type": "integer"}, "more": {"type": "string"}},
          "required": ["name"]}}, "phase": {"type": "string", "enum": ["A", "B"]}}}, "not in _Row"),
    ],
)  # fmt: skip
def test_the_walk_notices_a_difference(schema: dict[str, Any], mentions: str | None) -> None:
    if mentions is None:
        assert set(status_fields(schema, _Table, "T")) == {"T.rows", "T.rows.name", "T.rows.count", "T.phase"}
        return
    with pytest.raises(AssertionError, match=mentions.replace("[", r"\[").replace("]", r"\]")):
        list(status_fields(schema, _Table, "T"))


# --- what the operator writes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One status patch a writer sends: which kind, at which step (the test's id)."""

    kind: str
    step: str
    patch: dict[str, Any]


def hwp(name: str, cost: str, idle: float, peak: float) -> Any:
    return parse_hardware_profile({"metadata": {"name": name}, "spec": {
        "accelerator": {"kind": "cpu", "count": 1}, "costPerHour": cost,
        "power": {"idleWatts": idle, "maxWatts": peak}}})  # fmt: skip


# Cheap to rent but power-hungry under load, against dearer and frugal: the deploy-time plan (at
# saturation) chooses "big", a few requests a second make "small" cheaper, so re-planning rolls over.
PROFILES = {"small": hwp("small", "0.10", 1, 1000), "big": hwp("big", "0.12", 20, 21)}
MD_BODY: dict[str, Any] = {
    "apiVersion": "frugal.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
    "spec": {"model": {"uri": "zoo://digits-mlp"},
             "serving": {"hardwareProfiles": ["small", "big"], "slo": {"latencyP95Ms": 20}},
             "autoscaling": {"minReplicas": 1, "maxReplicas": 4,
                             "power": {"pricePerKWh": "1.0", "capWatts": 500},
                             "replanning": {"windowSeconds": 0}}},
}  # fmt: skip
SETTINGS = Settings(image="img", storage_uri="file:///store", allow_host_path=True)
DONE, FAILED = Job(JobState.SUCCEEDED, name="x"), Job(JobState.FAILED, "OOMKilled", name="x")


def variant_entry(name: str, steps: list[str], size: int, value: float) -> dict[str, Any]:
    """A manifest.json variant as compression writes it."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [-1, 64]}
    return {
        "name": name,
        "file": f"{name}/model.onnx",
        "steps": steps,
        "inputs": [tensor],
        "outputs": [{**tensor, "name": "logits", "shape": [-1, 10]}],
        "sizeBytes": size,
        "metric": {"name": "accuracy", "value": value, "baseline": 0.97, "drop": round(0.97 - value, 6)},
        "latency": {"batch1Ms": 0.2, "batchMs": 1.0, "batchSize": 8, "throughputPerS": 8000.0,
                    "batchSpread": 0.1, "threads": 1},
    }  # fmt: skip


def profile_file(name: str) -> dict[str, Any]:
    """profiles/<name>.json as the profiling Job writes it: fp32 over the SLO (timed on its session),
    int8 within it (measured through a server, with its peak memory)."""
    row = {"shards": 1, "batchSize": 8}
    return {
        "schemaVersion": 2,
        "hardwareProfile": name,
        "provider": "CPUExecutionProvider",
        "variants": [
            {**row, "name": "fp32", "latencyP95Ms": 30.0, "throughputRps": 500.0},
            {**row, "name": "int8", "latencyP95Ms": 5.0, "throughputRps": 1000.0, "method": "servers",
             "memoryBytes": 150_000_000},
        ],
    }  # fmt: skip


def read_artifacts() -> artifact_files.Artifacts:
    """The artifacts of a generation, read as the reconciler reads them (artifact_files.read)."""
    variants = [
        variant_entry("fp32", [], 4000, 0.97),
        variant_entry("int8", ["quantization:dynamic-int8"], 1000, 0.968),
    ]
    manifest = {
        "schemaVersion": 2, "model": "digits", "generation": 1, "source": "zoo://digits-mlp", "createdAt": NOW,
        "files": {v["file"]: {"sha256": "0" * 64, "sizeBytes": v["sizeBytes"]} for v in variants},
        "variants": variants,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "manifest.json").write_text(json.dumps(manifest))
        (root / "profiles").mkdir()
        for name in PROFILES:
            (root / "profiles" / f"{name}.json").write_text(json.dumps(profile_file(name)))
        return artifact_files.read(root, list(PROFILES))


ARTIFACTS = read_artifacts()


def reconciler_status(
    generation: int,
    assessment: Assessment,
    extra: Mapping[str, Any],
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ModelDeployment reconciler's status write (the status after it, from `previous` conditions)."""
    old = ModelDeploymentStatus.from_status({"conditions": list(previous)})
    patch = status_writes.reconciler_patch(old, assessment, extra, generation, NOW)
    return after_patch(old.to_patch(), patch or {})


def autoscaler_status(
    generation: int,
    fields: Mapping[str, Any],
    conditions: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The autoscaler's status write: its fields and its conditions, the others' kept."""
    old = ModelDeploymentStatus.from_status({"conditions": list(previous)})
    patch, _ = status_writes.autoscaler_patch(old, fields, conditions, generation, NOW)
    return after_patch(old.to_patch(), patch)


def after_patch(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The status once a merge patch of top-level fields is applied (None removes one)."""
    merged = {**old, **patch}
    return {k: v for k, v in merged.items() if v is not None}


def model_deployment_statuses() -> Iterator[Written]:
    """A ModelDeployment from nothing to serving, autoscaled, re-planned and rolled over, and the
    ways it fails on the way."""
    md = parse_model_deployment(MD_BODY)
    gen = md.owner.generation
    for step, state, found, profiles in [
        ("profile-missing", ClusterState(), None, {"small": PROFILES["small"]}),
        ("compressing", ClusterState(), None, PROFILES),
        ("compression-failed", ClusterState(compression=FAILED), None, PROFILES),
        ("artifacts-unreadable", ClusterState(compression=DONE), artifact_files.ArtifactError("no manifest"), PROFILES),
        ("profiling", ClusterState(compression=DONE), ARTIFACTS, PROFILES),
        ("deploying", ClusterState(compression=DONE, profiling=dict.fromkeys(PROFILES, DONE)), ARTIFACTS, PROFILES),
    ]:  # fmt: skip
        decision = decide(md, profiles, state, found, SETTINGS)
        yield Written("ModelDeployment", step, reconciler_status(gen, decision.assessment, decision.status))
    refused = decide(md, PROFILES, ClusterState(), None, Settings(storage_uri="file:///store"))
    yield Written(
        "ModelDeployment", "host-path-refused", reconciler_status(gen, refused.assessment, refused.status)
    )
    fast = copy.deepcopy(MD_BODY)
    fast["spec"]["serving"]["slo"]["latencyP95Ms"] = 1
    infeasible = decide(parse_model_deployment(fast), PROFILES, ClusterState(compression=DONE,
                        profiling=dict.fromkeys(PROFILES, DONE)), ARTIFACTS, SETTINGS)  # fmt: skip
    yield Written(
        "ModelDeployment",
        "no-feasible-option",
        reconciler_status(gen, infeasible.assessment, infeasible.status),
    )

    serving = ClusterState(
        compression=DONE, profiling=dict.fromkeys(PROFILES, DONE), shard_replicas={0: 1}, shard_ready={0: 1},
        live_generation=1,
    )  # fmt: skip
    decision = decide(md, PROFILES, serving, ARTIFACTS, SETTINGS)
    status = reconciler_status(gen, decision.assessment, decision.status)
    assert status["selected"]["hardwareProfile"] == "big"
    yield Written("ModelDeployment", "serving", status)

    # The autoscaler's ticks: a busy fresh one that scales up, a quiet one that re-plans, a stale one.
    profile = PROFILES["big"]
    capacity = scaling.capacity_from_status(status)
    assert capacity is not None
    targets = scaling.targets_for(md, profile, capacity)
    conditions = status["conditions"]
    rolled = None
    for step, seen in [
        ("autoscaled-busy", Observation((ShardObservation(request_rate=2000.0, latency_p95_ms=18.5, watts=21.0),))),
        ("autoscaled-quiet", Observation((ShardObservation(request_rate=5.0, latency_p95_ms=4.2),))),
        ("autoscaled-stale", Observation((ShardObservation(),), stale="query request_rate failed: refused")),
    ]:  # fmt: skip
        recommendation, _ = recommend(seen, (1,), targets, Memory(), 0.0)
        fields = scaling.observed_status(recommendation, seen, (1,), targets)
        if recommendation.replicas != (1,):
            fields["autoscaling"]["lastScaleTime"] = NOW  # the tick stamps a change of replicas
        rate = seen.request_rate if seen.stale is None else None
        plan = scaling.plan_at_load(md, status, PROFILES, rate)
        replan, _ = scaling.replan_at_load(
            md, plan, scaling.running_choice(status), (1,), scaling.replan_settings(md), ReplanMemory(), 100.0
        )
        fields["planAtLoad"] = scaling.plan_at_load_status(plan, status, replan)
        ticked = scaling.autoscaling_conditions(recommendation, seen, targets)
        yield Written("ModelDeployment", step, autoscaler_status(gen, fields, ticked, conditions))
        if replan is not None and replan.roll_over and plan is not None:
            rolled = scaling.replan_status(md, status, plan, replan, NOW)
            yield Written("ModelDeployment", "replanned", autoscaler_status(
                gen, {"replan": rolled}, [scaling.replanned_condition(replan)], conditions))  # fmt: skip

    # The reconciler acts on status.replan: the new revision serves the option rolled over to.
    assert rolled is not None, "a few requests a second make small cheaper: re-planning rolls over"
    rollover = rollover_from_status(md, {**status, "replan": rolled})
    assert rollover is not None
    rolled_state = ClusterState(
        compression=DONE, profiling=dict.fromkeys(PROFILES, DONE), shard_replicas={0: 1}, shard_ready={0: 1},
        live_generation=1, live_revision=1,
    )  # fmt: skip
    after = decide(md, PROFILES, rolled_state, ARTIFACTS, SETTINGS, rollover)
    assert after.status["selected"]["hardwareProfile"] == "small"
    yield Written(
        "ModelDeployment", "rolled-over", reconciler_status(gen, after.assessment, after.status, conditions)
    )


def full_batch() -> dict[str, Any]:
    return {
        "apiVersion": "frugal.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": "scores", "namespace": "ml", "generation": 1},
        "spec": {
            "model": {"artifacts": {"uri": "pvc://models/digits", "variant": "int8"}},
            "input": {"uri": "pvc://data/digits.npz"},
            "output": {"uri": "pvc://data/scores", "overwrite": True},
            "hardwareProfiles": ["small", "big"],
            "maxWorkers": 4,
            "deadlineSeconds": 600,
        },
    }


def batch_statuses() -> Iterator[Written]:
    """A BatchInference from nothing to Succeeded, and the ways it fails on the way."""
    job = parse_batch_inference(full_batch())
    gen = job.owner.generation
    locations = {
        batch_jobs.INPUT: batch_jobs.locate(job.input_uri, None),
        batch_jobs.OUTPUT: batch_jobs.locate(job.output_uri, None),
        batch_jobs.ARTIFACTS: batch_jobs.locate("pvc://models/digits", None),
    }
    model = ResolvedModel("int8", "pvc://models/digits", {"small": 1000.0, "big": 4000.0})
    summary = {"rows": 100000, "shards": 4, "rowsPerSecond": 900.0, "costUsd": 0.001, "energyJoules": 5.0}
    running = Progress(shards_done=1, shards_total=4, rows_done=25000, rows_total=100000, busy_seconds=20.0,
                       wall_seconds=25.0)  # fmt: skip
    previous: list[dict[str, Any]] = []
    selected = None
    for step, observed in [
        ("model-unresolved", BatchObserved()),
        ("profile-missing", BatchObserved(model, missing_profiles=("big",))),
        ("input-unreadable", BatchObserved(model, input_error="spec.input.uri: zoo:// is for frugal batch")),
        ("placed", BatchObserved(model, progress=Progress(shards_total=4, rows_total=100000))),
        ("scoring", BatchObserved(model, workers=Job(JobState.RUNNING, name="w"), progress=running)),
        ("worker-failed", BatchObserved(model, workers=FAILED, progress=running)),
        ("aggregating", BatchObserved(model, workers=DONE, progress=running)),
        ("aggregation-failed", BatchObserved(model, workers=DONE, aggregate=FAILED, progress=running)),
        ("succeeded", BatchObserved(model, workers=DONE, aggregate=DONE, progress=running, summary=summary)),
        ("no-feasible-option", BatchObserved(ResolvedModel("int8", "pvc://models/digits", {"small": 0.01}),
                                             progress=Progress(shards_total=4, rows_total=100000))),
    ]:  # fmt: skip
        if selected is not None and observed.workers.state is not JobState.ABSENT:
            observed = BatchObserved(**{**observed.__dict__, "selected": selected})
        decision = decide_batch(job, PROFILES, locations, observed, "img")
        patch = {"phase": decision.phase.value, "message": decision.message, **decision.status}
        written = batch_status(gen, patch, decision.conditions, previous)
        if "selected" in written:
            selected = models.BatchSelected.model_validate(written["selected"])
        previous = written["conditions"]
        yield Written("BatchInference", step, written)
    refused = copy.deepcopy(full_batch())
    refused["spec"]["output"]["uri"] = "file:///scores"
    decision = decide_batch(parse_batch_inference(refused), PROFILES, locations, BatchObserved(model), "img")
    patch = {"phase": decision.phase.value, "message": decision.message, **decision.status}
    yield Written("BatchInference", "host-path-refused", batch_status(gen, patch, decision.conditions, []))
    # An invalid spec: the batch reconciler writes the phase and the message alone.
    yield Written(
        "BatchInference", "spec-error", batch_status(gen, {"phase": "Failed", "message": "spec.x"}, (), [])
    )


def batch_status(
    generation: int,
    patch: Mapping[str, Any],
    conditions: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The batch reconciler's status write."""
    old = BatchInferenceStatus.from_status({"conditions": list(previous)})
    written = status_writes.batch_patch(old, patch, conditions, generation, NOW)
    assert written is not None
    return written


WRITTEN = [*model_deployment_statuses(), *batch_statuses()]


@pytest.mark.parametrize("write", WRITTEN, ids=[f"{w.kind}-{w.step}" for w in WRITTEN])
def test_what_the_operator_writes_is_a_valid_status(write: Written) -> None:
    model = STATUS_MODELS[write.kind]
    status = model.model_validate(write.patch)
    assert status.to_patch() == write.patch, "to_patch gives back the patch the writer built"
    assert model.from_status(write.patch) == status
    # What the API server stores (a merge patch: None removes the field) passes the CRD's schema.
    document = MD_BODY if write.kind == "ModelDeployment" else full_batch()
    checked = check({**copy.deepcopy(document), "status": without_none(write.patch)})
    assert checked.errors == (), checked.errors


def without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def written_paths(value: Any, path: str) -> Iterator[str]:
    """Every key path holding a value (None removes, it does not write), through objects and arrays."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if sub is not None:
                yield f"{path}.{key}"
                yield from written_paths(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from written_paths(item, path)


def paths_written() -> set[str]:
    return {path for w in WRITTEN for path in written_paths(w.patch, f"{w.kind}.status")}


def test_every_crd_status_field_is_written_by_the_operator() -> None:
    unwritten = sorted(set(crd_status_fields()) - paths_written() - NOT_OURS.keys())
    assert unwritten == [], "in the CRD but never written: write it, or take it out of the CRD"


def test_fields_listed_as_not_ours_are_indeed_not_written() -> None:
    assert NOT_OURS.keys() <= set(crd_status_fields()), "a listed field is not in the CRD any more"
    assert sorted(NOT_OURS.keys() & paths_written()) == [], "now written: take these out of NOT_OURS"


def test_every_phase_is_written() -> None:
    for kind, model in STATUS_MODELS.items():
        phases = {w.patch.get("phase") for w in WRITTEN if w.kind == kind}
        assert phases >= set(typing.get_args(strip(model.model_fields["phase"].annotation))), kind


# --- writing and reading -----------------------------------------------------------------------------


def test_to_patch_keeps_an_explicit_none_and_leaves_out_what_was_not_set() -> None:
    status = models.ModelDeploymentStatus(
        request_rate=None,
        energy=models.Energy(watts=12.5, joules_per_request=None),
        replan=models.Replan(from_=models.Option(variant="int8", hardware_profile="big", shards=1)),
        conditions=(
            models.Condition(type="Ready", status="True", last_transition_time=NOW, reason="R", message="m"),
        ),
    )
    assert status.to_patch() == {
        "requestRate": None,
        "energy": {"watts": 12.5, "joulesPerRequest": None},
        "replan": {"from": {"variant": "int8", "hardwareProfile": "big", "shards": 1}},
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": NOW, "reason": "R", "message": "m"}
        ],
    }
    assert models.ModelDeploymentStatus().to_patch() == {}


@pytest.mark.parametrize(
    "wrong",
    [
        {"replicas": "3"},
        {"replicas": 3.0},
        {"replicas": True},
        {"latencyP95Ms": "4.5"},
        {"cost": {"perHour": 0.04}},
        {"endpoint": 8080},
        {"phase": "Sleeping"},
        {"variants": [{"sizeBytes": 1}]},
        {"grpcEndpoint": "d:9000", "unknown": 1},
        {
            "conditions": [
                {"type": "Ready", "status": True, "lastTransitionTime": NOW, "reason": "R", "message": ""}
            ]
        },
    ],
)
def test_a_writer_cannot_build_what_the_api_server_refuses(wrong: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        models.ModelDeploymentStatus.model_validate(wrong)


def test_numbers_take_integers_as_the_api_server_returns_them() -> None:
    status = models.ModelDeploymentStatus.model_validate(
        {"latencyP95Ms": 4, "autoscaling": {"capacityRps": [100]}}
    )
    assert status.latency_p95_ms == 4.0 and status.autoscaling is not None
    assert status.autoscaling.capacity_rps == (100.0,)


def test_a_reader_gets_a_typed_status_from_any_body() -> None:
    serving = next(w.patch for w in WRITTEN if w.step == "serving")
    status = models.ModelDeploymentStatus.from_body({"metadata": {"name": "digits"}, "status": serving})
    assert status.phase == "Serving" and status.selected is not None
    assert status.selected.hardware_profile == "big" and status.grpc_endpoint
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert status.variants[0].profiles[0].hardware_profile in PROFILES
    for body in ({}, {"status": None}, None, {"status": "nonsense"}):
        assert models.ModelDeploymentStatus.from_body(body) == models.ModelDeploymentStatus()
    batch = next(w.patch for w in WRITTEN if w.step == "succeeded")
    done = models.BatchInferenceStatus.from_body({"status": batch})
    assert done.phase == "Succeeded" and done.progress is not None and done.progress.rows_done == 100000


def test_a_reader_ignores_unknown_fields_and_leaves_out_only_what_does_not_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {
        "status": {
            "phase": "Serving",
            "fromANewerOperator": {"x": 1},
            "replicas": "two",
            "selected": {"variant": "int8", "hardwareProfile": "big", "shards": "1", "newKey": True},
            "variants": [
                {"name": "fp32", "sizeBytes": 4000},
                {"sizeBytes": 1000},  # no name: the item goes
                {"name": "int8", "profiles": [{"hardwareProfile": "big", "meetsSlo": "yes"}]},
            ],
            "autoscaling": {"reason": "Steady", "desiredReplicas": [1, "x"], "capacityRps": [10, 20.5]},
            "kopf": {"progress": {"reconcile": {"retries": 1}}},
        }
    }
    before = copy.deepcopy(body)
    status = models.ModelDeploymentStatus.from_body(body)
    assert body == before, "the body read is left as it was"
    # positional arrays go whole, not item by item
    assert status.autoscaling == models.AutoscalingStatus(reason="Steady", capacity_rps=(10.0, 20.5))
    assert status.phase == "Serving" and status.replicas is None
    assert status.selected == models.Selected(variant="int8", hardware_profile="big")
    assert [v.name for v in status.variants] == ["fp32", "int8"]
    assert status.variants[1].profiles == (models.VariantProfile(hardware_profile="big"),)
    assert status.kopf == {"progress": {"reconcile": {"retries": 1}}}
    assert "status.replicas" in caplog.text and "status.variants.1" in caplog.text
    assert "status.autoscaling.desiredReplicas" in caplog.text
    assert "fromANewerOperator" not in caplog.text  # unknown keys are expected, not a problem


def test_a_resource_with_the_status_the_operator_wrote_loads() -> None:
    """`kubectl get -o yaml` output (spec and status) is a document `frugal up` and the API load."""
    last = {kind: [w for w in WRITTEN if w.kind == kind][-1] for kind in STATUS_MODELS}
    serving = next(w for w in WRITTEN if w.step == "rolled-over")
    for document, status in [
        ({**copy.deepcopy(MD_BODY), "status": without_none(serving.patch)}, serving.patch),
        (
            {**full_batch(), "status": without_none(last["BatchInference"].patch)},
            last["BatchInference"].patch,
        ),
    ]:
        resource = parse_resource(document)
        assert isinstance(resource, models.ModelDeployment | models.BatchInference)
        assert resource.status is not None and resource.status.to_patch() == without_none(status)


def test_the_printer_columns_show_status_fields_that_exist() -> None:
    paths = set(crd_status_fields())
    for kind in STATUS_MODELS:
        for column in crds.crd(kind)["spec"]["versions"][0].get("additionalPrinterColumns", []):
            if column["jsonPath"].startswith(".status."):
                assert kind + column["jsonPath"] in paths, column
