"""The BatchInference decision (pure): observed state in, the Jobs that should exist and the status out.

The path: resolve the model (a ModelDeployment's served variant and artifacts, or an artifacts URI
and a variant) → place the batch (:mod:`frugal.operator.decision.batch_placement`) → the Indexed Job
of workers → once every index succeeded, the aggregation Job → Succeeded, with the summary the
aggregation wrote. Any failure ends in ``Failed`` with a condition saying why and what to change.
The placement is made once: while the worker Job exists, ``status.selected`` stands (the Job's pods
carry it), so a re-read of changed profiling numbers never splits one batch over two placements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from frugal.operator.api.models import BatchSelected, ObjectStore
from frugal.operator.api.spec import BatchInferenceSpec, HardwareProfileSpec
from frugal.operator.decision import batch_placement
from frugal.operator.decision.conditions import ABSENT_JOB, Condition, Job, JobState
from frugal.operator.decision.decide import file_uri_refusal, planner_profile
from frugal.operator.manifests import batch_jobs
from frugal.operator.manifests.batch_jobs import Location
from frugal.operator.manifests.storage import StoreAccess, store_access


class BatchPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    AGGREGATING = "Aggregating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


PLANNED, SCORED, COMPLETE = "Planned", "Scored", "Complete"


@dataclass(frozen=True)
class ResolvedModel:
    """The variant to score with, its artifacts, and one worker's rows/s per profile as measured."""

    variant: str
    artifacts_uri: str
    throughput: Mapping[str, float] = field(default_factory=dict)
    report_throughput: float | None = None
    price_per_kwh: float = 0.15
    object_store: ObjectStore | None = None  # the ModelDeployment's spec.objectStore, when one is named


@dataclass(frozen=True)
class Progress:
    shards_done: int = 0
    shards_total: int | None = None
    rows_done: int = 0
    rows_total: int | None = None
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class BatchObserved:
    model: ResolvedModel | None = None
    model_error: str | None = None
    input_error: str | None = None
    # Why the object store's keys cannot be read (a Secret missing or not readable by the operator)
    store_error: str | None = None
    missing_profiles: tuple[str, ...] = ()
    workers: Job = ABSENT_JOB
    aggregate: Job = ABSENT_JOB
    progress: Progress = Progress()
    summary: Mapping[str, Any] | None = None
    # status.selected while the worker Job exists: the placement stands.
    selected: BatchSelected | None = None


@dataclass(frozen=True)
class BatchDecision:
    apply: tuple[dict[str, Any], ...]
    phase: BatchPhase
    message: str
    conditions: tuple[Condition, ...]
    status: dict[str, Any]


def decide_batch(
    batch: BatchInferenceSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    locations: Mapping[str, Location],
    observed: BatchObserved,
    image: str | Callable[[HardwareProfileSpec], str],
    allow_host_path: bool = False,
    default_store: ObjectStore | None = None,
) -> BatchDecision:
    """`image`: the workers' image, or what gives it for their profile (the operator's
    Settings.serving_image_for). `allow_host_path`: file:// URIs are accepted (the operator's
    --allow-host-path), else refused. `default_store`: the operator's object store (--object-store),
    for s3:// locations when neither the batch nor its ModelDeployment names one."""
    if (refused := refusal(batch, allow_host_path)) is not None:
        return refused
    if observed.missing_profiles:
        return _stopped(
            BatchPhase.PENDING,
            PLANNED,
            "HardwareProfileMissing",
            f"HardwareProfile {', '.join(observed.missing_profiles)} does not exist: create it, or remove it "
            "from spec.hardwareProfiles",
        )
    if observed.model is None:
        reason = "ModelNotReady" if observed.model_error else "ModelUnresolved"
        return _stopped(
            BatchPhase.PENDING, PLANNED, reason, observed.model_error or "the model is not known yet"
        )
    if observed.store_error:
        return _stopped(BatchPhase.PENDING, PLANNED, "ObjectStoreUnreadable", observed.store_error)
    if observed.input_error:
        return _stopped(BatchPhase.FAILED, PLANNED, "InputUnreadable", observed.input_error)
    model = observed.model
    candidates = [planner_profile(profiles[name]) for name in candidate_names(batch, profiles)]
    request = batch_placement.Request(
        observed.progress.rows_total,
        batch.spec.workers,
        batch.spec.max_workers,
        None if batch.spec.deadline_seconds is None else float(batch.spec.deadline_seconds),
        model.price_per_kwh,
    )
    placement = batch_placement.place(candidates, model.throughput, request, model.report_throughput)
    status: dict[str, Any] = {"plan": [_plan_row(o) for o in placement.options]}
    selected = observed.selected if observed.workers.state is not JobState.ABSENT else None
    if selected is None:
        if placement.chosen is None:
            return _stopped(BatchPhase.FAILED, PLANNED, "NoFeasibleOption", placement.reason, status)
        chosen = placement.chosen
        selected = BatchSelected(
            variant=model.variant,
            hardware_profile=chosen.profile,
            workers=chosen.workers,
            reason=placement.reason[:4096],
        )
    status["selected"] = selected.to_patch()
    if selected.hardware_profile is None or selected.hardware_profile not in profiles or not selected.workers:
        why = f"status.selected names {selected.hardware_profile!r} with {selected.workers} worker(s), which this spec lacks"
        return _stopped(BatchPhase.FAILED, PLANNED, "SelectionLost", why, status)
    profile = profiles[selected.hardware_profile]
    worker_image = image if isinstance(image, str) else image(profile)
    workers = selected.workers
    config = batch_jobs.worker_config(batch, locations, model.variant, profile, model.price_per_kwh)
    access = batch_store_access(batch, model, locations, default_store)
    planned = Condition(PLANNED, True, "Placed", selected.reason or "")
    status.update(_progress_status(observed.progress, profile, model.price_per_kwh))
    to_apply: list[dict[str, Any]] = []
    if observed.workers.state is JobState.ABSENT:
        to_apply.append(
            batch_jobs.desired_worker_job(batch, profile, worker_image, locations, config, workers, access)
        )
    if observed.workers.state is JobState.FAILED:
        failed = Condition(SCORED, False, "WorkerFailed", _failure(observed.workers, "scoring"))
        return BatchDecision((), BatchPhase.FAILED, failed.message, (planned, failed), status)
    if observed.workers.state is not JobState.SUCCEEDED:
        running = Condition(SCORED, False, "Scoring", _progress_message(observed.progress, workers, profile))
        return BatchDecision(tuple(to_apply), BatchPhase.RUNNING, running.message, (planned, running), status)
    scored = Condition(
        SCORED, True, "AllShardsScored", _progress_message(observed.progress, workers, profile)
    )
    if observed.aggregate.state is JobState.ABSENT:
        to_apply.append(
            batch_jobs.desired_aggregate_job(batch, profile, worker_image, locations, config, access)
        )
    if observed.aggregate.state is JobState.FAILED:
        failed = Condition(COMPLETE, False, "AggregationFailed", _failure(observed.aggregate, "aggregation"))
        return BatchDecision((), BatchPhase.FAILED, failed.message, (planned, scored, failed), status)
    if observed.aggregate.state is not JobState.SUCCEEDED or observed.summary is None:
        joining = Condition(COMPLETE, False, "Aggregating", "joining the shards in input order")
        return BatchDecision(
            tuple(to_apply), BatchPhase.AGGREGATING, joining.message, (planned, scored, joining), status
        )
    status.update(_summary_status(observed.summary, locations))
    done = Condition(COMPLETE, True, "Succeeded", _summary_message(observed.summary, locations))
    return BatchDecision((), BatchPhase.SUCCEEDED, done.message, (planned, scored, done), status)


def candidate_names(
    batch: BatchInferenceSpec, profiles: Mapping[str, HardwareProfileSpec]
) -> tuple[str, ...]:
    """spec.hardwareProfiles, else every profile given (the ModelDeployment's serving profiles)."""
    return batch.hardware_profiles or tuple(profiles)


def batch_store_access(
    batch: BatchInferenceSpec,
    model: ResolvedModel | None,
    locations: Mapping[str, Location],
    default_store: ObjectStore | None,
) -> StoreAccess | None:
    """How the batch's pods (and the operator, reading progress) reach the object store of its s3://
    locations: the batch's spec.objectStore, else its ModelDeployment's, else the operator's; None
    when no location is in a bucket."""
    spec_store = batch.spec.object_store or (model.object_store if model is not None else None)
    return store_access(spec_store, default_store, [location.uri for location in locations.values()])


def refusal(batch: BatchInferenceSpec, allow_host_path: bool) -> BatchDecision | None:
    """The decision for a BatchInference that may not run at all (a file:// URI without hostPath):
    known before anything is read, so the reconciler asks first."""
    refused = None if allow_host_path else host_path_refusal(batch)
    return None if refused is None else _stopped(BatchPhase.FAILED, PLANNED, "HostPathNotAllowed", refused)


def host_path_refusal(batch: BatchInferenceSpec) -> str | None:
    """Why `batch` may not run in a cluster without hostPath: a file:// input, output or artifacts URI
    is a directory of the node (or of the image) its workers would mount or read."""
    artifacts = batch.artifacts
    uris = {"spec.input.uri": batch.input_uri, "spec.output.uri": batch.output_uri}
    if artifacts is not None:
        uris["spec.model.artifacts.uri"] = artifacts.uri
    return file_uri_refusal(uris, "frugal batch")


def _stopped(
    phase: BatchPhase, kind: str, reason: str, message: str, status: dict[str, Any] | None = None
) -> BatchDecision:
    condition = Condition(kind, False, reason, message)
    return BatchDecision((), phase, message, (condition,), status or {})


def _failure(job: Job, what: str) -> str:
    detail = job.message or "see the Job's pods"
    return f"{what} Job {job.name} failed: {detail}"


def _plan_row(option: batch_placement.Option) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hardwareProfile": option.profile,
        "workers": option.workers,
        "feasible": option.feasible,
        "reason": option.rejection[:1024],
    }
    if option.rows_per_second is not None:
        row["rowsPerSecond"] = round(option.rows_per_second, 3)
    if option.seconds is not None:
        row["seconds"] = round(option.seconds, 1)
    if option.cost_per_million_rows is not None:
        row["costPerMillionRows"] = f"{option.cost_per_million_rows:.4g}"
    return row


def _cost(busy_seconds: float, profile: HardwareProfileSpec, price_per_kwh: float) -> tuple[float, float]:
    """(USD, joules) of `busy_seconds` of worker time on `profile` at full load."""
    joules = busy_seconds * profile.max_watts
    usd = busy_seconds / 3600.0 * float(profile.cost_per_hour) + joules / 3.6e6 * price_per_kwh
    return usd, joules


def _progress_status(
    progress: Progress, profile: HardwareProfileSpec, price_per_kwh: float
) -> dict[str, Any]:
    usd, joules = _cost(progress.busy_seconds, profile, price_per_kwh)
    total = "?" if progress.shards_total is None else str(progress.shards_total)
    result: dict[str, Any] = {
        "progress": {
            "shardsDone": progress.shards_done,
            "rowsDone": progress.rows_done,
            "summary": f"{progress.shards_done}/{total}",
        },
        "energyJoules": round(joules, 1),
        "cost": {"usd": f"{usd:.4g}"},
    }
    if progress.shards_total is not None:
        result["progress"]["shardsTotal"] = progress.shards_total
    if progress.rows_total is not None:
        result["progress"]["rowsTotal"] = progress.rows_total
    if progress.wall_seconds > 0:
        result["rowsPerSecond"] = round(progress.rows_done / progress.wall_seconds, 1)
    if progress.rows_done:
        result["cost"]["perMillionRows"] = f"{usd / progress.rows_done * 1e6:.4g}"
    return result


def _progress_message(progress: Progress, workers: int, profile: HardwareProfileSpec) -> str:
    total = "?" if progress.shards_total is None else progress.shards_total
    return (
        f"{progress.shards_done}/{total} shards ({progress.rows_done} rows) scored by {workers} worker(s) "
        f"on {profile.name}"
    )


def _summary_status(summary: Mapping[str, Any], locations: Mapping[str, Location]) -> dict[str, Any]:
    rows = int(summary.get("rows") or 0)
    usd = float(summary.get("costUsd") or 0.0)
    result: dict[str, Any] = {
        "progress": {
            "shardsDone": int(summary.get("shards") or 0),
            "shardsTotal": int(summary.get("shards") or 0),
            "rowsDone": rows,
            "rowsTotal": rows,
            "summary": f"{int(summary.get('shards') or 0)}/{int(summary.get('shards') or 0)}",
        },
        "rowsPerSecond": round(float(summary.get("rowsPerSecond") or 0.0), 1),
        "energyJoules": round(float(summary.get("energyJoules") or 0.0), 1),
        "cost": {"usd": f"{usd:.4g}"},
        "outputUri": locations[batch_jobs.OUTPUT].uri,
    }
    if rows:
        result["cost"]["perMillionRows"] = f"{usd / rows * 1e6:.4g}"
    return result


def _summary_message(summary: Mapping[str, Any], locations: Mapping[str, Location]) -> str:
    return (
        f"{summary.get('rows')} rows scored at {float(summary.get('rowsPerSecond') or 0):.0f} rows/s for "
        f"${float(summary.get('costUsd') or 0):.4g}; predictions in {locations[batch_jobs.OUTPUT].uri}"
    )
