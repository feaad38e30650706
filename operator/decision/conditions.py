"""Pure status assessment: from what was observed to phase, conditions and a message.

Reasons are constants; every False/degraded condition's message says what to fix. Condition
``lastTransitionTime`` only moves when a condition's status changes (:func:`merge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from frugal.operator.api.models import Condition as StatusCondition
from frugal.operator.decision import pod_problems
from frugal.operator.decision.pod_problems import PodProblem

COMPRESSED, PROFILED, READY, DEGRADED = "Compressed", "Profiled", "Ready", "Degraded"
CONDITION_TYPES = (COMPRESSED, PROFILED, READY, DEGRADED)


class Reason:
    """Every reason a condition can carry."""

    INVALID_SPEC = "InvalidSpec"
    HARDWARE_PROFILE_MISSING = "HardwareProfileMissing"
    HOST_PATH_NOT_ALLOWED = "HostPathNotAllowed"
    MODEL_URI_UNREADABLE = "ModelURIUnreadable"
    COMPRESSION_PENDING = "CompressionPending"
    COMPRESSION_RUNNING = "CompressionRunning"
    COMPRESSION_FAILED = "CompressionFailed"
    ARTIFACTS_UNREADABLE = "ArtifactsUnreadable"
    ARTIFACTS_READY = "ArtifactsReady"
    WAITING_FOR_COMPRESSION = "WaitingForCompression"
    PROFILING_RUNNING = "ProfilingRunning"
    PROFILING_FAILED = "ProfilingFailed"
    PROFILED = "ProfilesMeasured"
    PROFILING_FALLBACK = "CompressionReportUsed"
    NO_FEASIBLE_OPTION = "NoFeasibleOption"
    WAITING_FOR_PLAN = "WaitingForPlan"
    DEPLOYING = "Deploying"
    SERVING = "ServingReady"
    PREVIOUS_GENERATION_SERVING = "PreviousGenerationServing"
    ROLLING_OVER = "RollingOver"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    UNSCHEDULABLE = pod_problems.UNSCHEDULABLE
    IMAGE_PULL_FAILED = pod_problems.IMAGE_PULL_FAILED
    OOM_KILLED = pod_problems.OOM_KILLED
    APPLY_REJECTED = "ApplyRejected"
    NOT_OWNED = "ObjectNotOwned"
    AS_EXPECTED = "AsExpected"


class Phase(StrEnum):
    PENDING = "Pending"
    COMPRESSING = "Compressing"
    PROFILING = "Profiling"
    DEPLOYING = "Deploying"
    SERVING = "Serving"
    FAILED = "Failed"


class JobState(StrEnum):
    ABSENT = "Absent"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Job:
    state: JobState
    message: str = ""
    name: str = ""


ABSENT_JOB = Job(JobState.ABSENT)


@dataclass(frozen=True)
class Observed:
    """Everything the assessment depends on, gathered by the reconciler."""

    generation: int
    spec_error: str | None = None
    host_path_error: str | None = None  # a file:// URI in a cluster whose operator does not allow hostPath
    missing_profiles: tuple[str, ...] = ()
    model_error: str | None = None
    compression: Job = ABSENT_JOB
    artifacts_error: str | None = None
    profiling: Mapping[str, Job] = field(default_factory=dict)
    used_fallback: bool = False
    plan_error: str | None = None
    planned: str | None = None
    shards_desired: tuple[int, ...] = ()
    shards_ready: tuple[int, ...] = ()
    previous_generation_live: int | None = None
    # A re-planning rollover within the generation: what still serves while the new revision starts.
    rolling_over_from: str | None = None
    apply_error: str | None = None
    # Objects the decision wants that exist already and belong to someone else (left alone).
    not_owned: str | None = None
    # A pod of this generation that cannot run (unschedulable, no image, OOMKilled): which, and what to change.
    pod_problem: PodProblem | None = None


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class Assessment:
    phase: Phase
    conditions: tuple[Condition, ...]
    message: str

    def condition(self, kind: str) -> Condition:
        return next(c for c in self.conditions if c.type == kind)


def conditions(observed: Observed) -> Assessment:
    """Phase, the four conditions and a one-line message for `observed`."""
    compressed = _compressed(observed)
    profiled = _profiled(observed, compressed)
    ready = _ready(observed, profiled)
    degraded = _degraded((compressed, profiled, ready), observed)
    phase = _phase(observed, compressed, profiled, ready)
    blocking = next((c for c in (compressed, profiled, ready) if c.status is not True), ready)
    message = ready.message if ready.status else blocking.message
    return Assessment(phase, (compressed, profiled, ready, degraded), message)


def _compressed(o: Observed) -> Condition:
    if o.spec_error:
        return Condition(COMPRESSED, False, Reason.INVALID_SPEC, o.spec_error)
    if o.host_path_error:
        return Condition(COMPRESSED, False, Reason.HOST_PATH_NOT_ALLOWED, o.host_path_error)
    if o.missing_profiles:
        missing = ", ".join(o.missing_profiles)
        return Condition(
            COMPRESSED,
            False,
            Reason.HARDWARE_PROFILE_MISSING,
            f"HardwareProfile {missing} not found: create it (kubectl apply -f <profile>.yaml) "
            "or fix spec.serving.hardwareProfiles / spec.compression.hardwareProfile",
        )
    if o.model_error:
        return Condition(COMPRESSED, False, Reason.MODEL_URI_UNREADABLE, o.model_error)
    job = o.compression
    if job.state is JobState.FAILED:
        return Condition(
            COMPRESSED,
            False,
            Reason.COMPRESSION_FAILED,
            f"compression Job {job.name} failed: {job.message or 'see its pod logs'}; fix the spec "
            f"(a change starts a new generation), or what the message names outside it and delete Job {job.name} "
            "to run it again",
        )
    if job.state is JobState.ABSENT:
        return Condition(COMPRESSED, False, Reason.COMPRESSION_PENDING, "compression Job not created yet")
    if job.state is JobState.RUNNING:
        return Condition(
            COMPRESSED, False, Reason.COMPRESSION_RUNNING, f"compression Job {job.name} is running"
        )
    if o.artifacts_error:
        return Condition(COMPRESSED, False, Reason.ARTIFACTS_UNREADABLE, o.artifacts_error)
    return Condition(
        COMPRESSED, True, Reason.ARTIFACTS_READY, f"compression Job {job.name} wrote the variants"
    )


def _profiled(o: Observed, compressed: Condition) -> Condition:
    if compressed.status is not True:
        return Condition(PROFILED, None, Reason.WAITING_FOR_COMPRESSION, "waiting for compression")
    running = sorted(p for p, j in o.profiling.items() if j.state in (JobState.ABSENT, JobState.RUNNING))
    if running:
        return Condition(PROFILED, False, Reason.PROFILING_RUNNING, f"profiling on {', '.join(running)}")
    failed = {p: j for p, j in sorted(o.profiling.items()) if j.state is JobState.FAILED}
    if o.used_fallback:
        return Condition(
            PROFILED,
            True,
            Reason.PROFILING_FALLBACK,
            "no profiling data on the single hardware profile: the compression report's "
            "latency and throughput were used",
        )
    if failed:
        detail = "; ".join(
            f"{p}: Job {j.name} failed: {j.message or 'see its pod logs'}" for p, j in failed.items()
        )
        return Condition(
            PROFILED,
            False,
            Reason.PROFILING_FAILED,
            f"{detail}; those profiles are left out of hardware selection",
        )
    return Condition(
        PROFILED,
        True,
        Reason.PROFILED,
        f"variants measured on {', '.join(sorted(o.profiling)) or 'no profile'}",
    )


def _ready(o: Observed, profiled: Condition) -> Condition:
    if o.plan_error:
        return Condition(READY, False, Reason.NO_FEASIBLE_OPTION, o.plan_error)
    if o.planned is None or not o.shards_desired:
        if o.previous_generation_live is not None or o.rolling_over_from is not None:
            return _previous_serving(o)
        return Condition(READY, False, Reason.WAITING_FOR_PLAN, "hardware selection waits for profiling")
    missing = [
        i
        for i, (want, have) in enumerate(zip(o.shards_desired, _ready_padded(o), strict=True))
        if have < min(want, 1)
    ]
    if missing:
        if o.previous_generation_live is not None or o.rolling_over_from is not None:
            return _previous_serving(o)
        return Condition(
            READY,
            False,
            Reason.DEPLOYING,
            f"waiting for shard(s) {', '.join(map(str, missing))} of {o.planned} to become ready",
        )
    if all(want == 0 for want in o.shards_desired):
        return Condition(
            READY, True, Reason.SERVING, f"serving {o.planned}, scaled to zero: the next request wakes it"
        )
    return Condition(READY, True, Reason.SERVING, f"serving {o.planned}")


def _previous_serving(o: Observed) -> Condition:
    if o.previous_generation_live is None and o.rolling_over_from is not None:
        return Condition(
            READY,
            True,
            Reason.ROLLING_OVER,
            f"{o.rolling_over_from} serves while {o.planned} starts (re-planned at the observed load)",
        )
    return Condition(
        READY,
        True,
        Reason.PREVIOUS_GENERATION_SERVING,
        f"generation {o.previous_generation_live} serves while generation {o.generation} rolls out",
    )


def _degraded(done: Sequence[Condition], o: Observed) -> Condition:
    broken = [c for c in done if c.status is False and c.reason in FAILURE_REASONS]
    if o.apply_error:
        return Condition(DEGRADED, True, Reason.APPLY_REJECTED, o.apply_error)
    if o.not_owned:
        return Condition(DEGRADED, True, Reason.NOT_OWNED, o.not_owned)
    if broken:
        return Condition(DEGRADED, True, broken[0].reason, broken[0].message)
    if o.pod_problem:
        return Condition(DEGRADED, True, o.pod_problem.reason, o.pod_problem.message)
    short = [
        i
        for i, (want, have) in enumerate(zip(o.shards_desired, _ready_padded(o), strict=True))
        if 0 < have < want
    ]
    if short:
        return Condition(
            DEGRADED,
            True,
            Reason.REPLICAS_UNAVAILABLE,
            f"shard(s) {', '.join(map(str, short))} run fewer ready replicas than desired",
        )
    return Condition(DEGRADED, False, Reason.AS_EXPECTED, "nothing is failing")


FAILURE_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.HOST_PATH_NOT_ALLOWED,
        Reason.HARDWARE_PROFILE_MISSING,
        Reason.MODEL_URI_UNREADABLE,
        Reason.COMPRESSION_FAILED,
        Reason.ARTIFACTS_UNREADABLE,
        Reason.PROFILING_FAILED,
        Reason.NO_FEASIBLE_OPTION,
    }
)
_TERMINAL = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.HOST_PATH_NOT_ALLOWED,
        Reason.MODEL_URI_UNREADABLE,
        Reason.COMPRESSION_FAILED,
        Reason.ARTIFACTS_UNREADABLE,
        Reason.NO_FEASIBLE_OPTION,
    }
)


def _phase(o: Observed, compressed: Condition, profiled: Condition, ready: Condition) -> Phase:
    if any(c.reason in _TERMINAL for c in (compressed, profiled, ready)):
        return Phase.FAILED
    if compressed.reason in (Reason.HARDWARE_PROFILE_MISSING, Reason.COMPRESSION_PENDING):
        return Phase.PENDING
    if compressed.status is not True:
        return Phase.COMPRESSING
    if profiled.reason == Reason.PROFILING_RUNNING:
        return Phase.PROFILING
    if ready.reason in (Reason.SERVING, Reason.ROLLING_OVER):
        return Phase.SERVING  # a re-planning rollover serves throughout (the old revision answers)
    return Phase.DEPLOYING


def _ready_padded(o: Observed) -> tuple[int, ...]:
    return tuple(o.shards_ready) + (0,) * (len(o.shards_desired) - len(o.shards_ready))


def merge(
    previous: Sequence[StatusCondition], current: Sequence[Condition], generation: int, now: str
) -> list[StatusCondition]:
    """The status's conditions for `current`; lastTransitionTime is kept while a condition's status is
    unchanged."""
    before = {c.type: c for c in previous}
    merged = []
    for condition in current:
        status = as_status(condition)
        old = before.get(condition.type)
        merged.append(
            StatusCondition(
                type=condition.type,
                status=status,
                reason=condition.reason,
                message=condition.message,
                observed_generation=generation,
                last_transition_time=old.last_transition_time if old is not None and old.status == status else now,
            )
        )
    return merged


def as_status(condition: Condition) -> Literal["True", "False", "Unknown"]:
    """A condition's status as the API writes it."""
    return "True" if condition.status is True else "False" if condition.status is False else "Unknown"
