"""Pure status assessment: observed state → phase, conditions (constant reasons) and message."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from frugal.operator.decision.conditions import (
    COMPRESSED,
    DEGRADED,
    PROFILED,
    READY,
    Condition,
    Job,
    JobState,
    Observed,
    Phase,
    Reason,
    conditions,
    merge,
)
from frugal.operator.decision.pod_problems import PodProblem

DONE = Job(JobState.SUCCEEDED, name="m-g1-compress")
PROFILED_OK = {"cpu": Job(JobState.SUCCEEDED)}


@dataclass(frozen=True)
class Case:
    name: str
    observed: Observed
    phase: Phase
    reasons: dict[str, str]
    message_has: str = ""


CASES = [
    Case(
        "missing profile",
        Observed(1, missing_profiles=("gpu-x",)),
        Phase.PENDING,
        {COMPRESSED: Reason.HARDWARE_PROFILE_MISSING, DEGRADED: Reason.HARDWARE_PROFILE_MISSING},
        "HardwareProfile gpu-x not found",
    ),
    Case(
        "bad spec",
        Observed(1, spec_error="spec.x: bad"),
        Phase.FAILED,
        {COMPRESSED: Reason.INVALID_SPEC},
        "spec.x: bad",
    ),
    Case("job not created yet", Observed(1), Phase.PENDING, {COMPRESSED: Reason.COMPRESSION_PENDING}),
    Case(
        "compressing",
        Observed(1, compression=Job(JobState.RUNNING, name="j")),
        Phase.COMPRESSING,
        {
            COMPRESSED: Reason.COMPRESSION_RUNNING,
            PROFILED: Reason.WAITING_FOR_COMPRESSION,
            DEGRADED: Reason.AS_EXPECTED,
        },
    ),
    Case(
        "compression failed",
        Observed(1, compression=Job(JobState.FAILED, "BackoffLimitExceeded", "j")),
        Phase.FAILED,
        {COMPRESSED: Reason.COMPRESSION_FAILED, DEGRADED: Reason.COMPRESSION_FAILED},
        "compression Job j failed: BackoffLimitExceeded",
    ),
    Case(
        "model unreadable",
        Observed(1, model_error="cannot read zoo://nope: known models are digits-mlp"),
        Phase.FAILED,
        {COMPRESSED: Reason.MODEL_URI_UNREADABLE},
        "zoo://nope",
    ),
    Case(
        "artifacts unreadable",
        Observed(1, compression=DONE, artifacts_error="manifest.json is missing"),
        Phase.FAILED,
        {COMPRESSED: Reason.ARTIFACTS_UNREADABLE},
    ),
    Case(
        "profiling",
        Observed(1, compression=DONE, profiling={"cpu": Job(JobState.RUNNING)}),
        Phase.PROFILING,
        {COMPRESSED: Reason.ARTIFACTS_READY, PROFILED: Reason.PROFILING_RUNNING},
        "profiling on cpu",
    ),
    Case(
        "profiling failed on one profile",
        Observed(
            1,
            compression=DONE,
            profiling={"cpu": Job(JobState.SUCCEEDED), "gpu": Job(JobState.FAILED, "oom", "p")},
            planned="int8 on cpu",
            shards_desired=(1,),
            shards_ready=(0,),
        ),
        Phase.DEPLOYING,
        {PROFILED: Reason.PROFILING_FAILED, READY: Reason.DEPLOYING, DEGRADED: Reason.PROFILING_FAILED},
        "gpu: Job p failed: oom",
    ),
    Case(
        "fallback",
        Observed(
            1,
            compression=DONE,
            profiling={"cpu": Job(JobState.FAILED)},
            used_fallback=True,
            planned="fp32 on cpu",
            shards_desired=(1,),
            shards_ready=(1,),
        ),
        Phase.SERVING,
        {PROFILED: Reason.PROFILING_FALLBACK, READY: Reason.SERVING},
    ),
    Case(
        "no feasible option",
        Observed(1, compression=DONE, profiling=PROFILED_OK, plan_error="no option meets"),
        Phase.FAILED,
        {READY: Reason.NO_FEASIBLE_OPTION, DEGRADED: Reason.NO_FEASIBLE_OPTION},
    ),
    Case(
        "deploying",
        Observed(
            1,
            compression=DONE,
            profiling=PROFILED_OK,
            planned="int8 on cpu",
            shards_desired=(1, 1),
            shards_ready=(1,),
        ),
        Phase.DEPLOYING,
        {READY: Reason.DEPLOYING},
        "shard(s) 1",
    ),
    Case(
        "serving",
        Observed(
            1,
            compression=DONE,
            profiling=PROFILED_OK,
            planned="int8 on cpu",
            shards_desired=(2, 2),
            shards_ready=(2, 2),
        ),
        Phase.SERVING,
        {
            COMPRESSED: Reason.ARTIFACTS_READY,
            PROFILED: Reason.PROFILED,
            READY: Reason.SERVING,
            DEGRADED: Reason.AS_EXPECTED,
        },
        "serving int8 on cpu",
    ),
    Case(
        "serving short of replicas",
        Observed(
            1,
            compression=DONE,
            profiling=PROFILED_OK,
            planned="int8 on cpu",
            shards_desired=(3,),
            shards_ready=(1,),
        ),
        Phase.SERVING,
        {READY: Reason.SERVING, DEGRADED: Reason.REPLICAS_UNAVAILABLE},
    ),
    Case(
        "the API server refused an object",
        Observed(
            1,
            compression=DONE,
            profiling=PROFILED_OK,
            planned="int8 on cpu",
            shards_desired=(1,),
            shards_ready=(1,),
            apply_error="the API server refused Deployment d: bad quantity",
        ),
        Phase.SERVING,
        {DEGRADED: Reason.APPLY_REJECTED},
        "bad quantity",
    ),
    Case(
        "new generation compressing while the old one serves",
        Observed(2, compression=Job(JobState.RUNNING), previous_generation_live=1),
        Phase.COMPRESSING,
        {COMPRESSED: Reason.COMPRESSION_RUNNING, READY: Reason.PREVIOUS_GENERATION_SERVING},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_assessment(case: Case) -> None:
    result = conditions(case.observed)
    assert result.phase is case.phase
    assert [c.type for c in result.conditions] == [COMPRESSED, PROFILED, READY, DEGRADED]
    for kind, reason in case.reasons.items():
        assert result.condition(kind).reason == reason, kind
    assert case.message_has in result.message or any(case.message_has in c.message for c in result.conditions)
    if result.phase is Phase.SERVING:
        assert result.condition(READY).status is True
    if result.phase is Phase.FAILED:
        assert result.condition(DEGRADED).status is True


def test_merge_keeps_transition_time_while_status_is_unchanged() -> None:
    first = merge([], [Condition(READY, False, Reason.DEPLOYING, "waiting")], 1, "t1")
    same = merge(first, [Condition(READY, False, Reason.DEPLOYING, "still waiting")], 1, "t2")
    flipped = merge(same, [Condition(READY, True, Reason.SERVING, "serving")], 1, "t3")
    assert first[0].last_transition_time == "t1" and first[0].status == "False"
    assert same[0].last_transition_time == "t1" and same[0].message == "still waiting"
    assert flipped[0].last_transition_time == "t3" and flipped[0].status == "True"
    assert flipped[0].observed_generation == 1
    assert flipped[0].to_patch()["lastTransitionTime"] == "t3"
    unknown = merge([], [Condition(PROFILED, None, Reason.WAITING_FOR_COMPRESSION, "w")], 2, "t")
    assert unknown[0].status == "Unknown"


def test_a_pod_the_scheduler_cannot_place_degrades_without_failing() -> None:
    why = "compression pod x cannot be placed on HardwareProfile gpu-h100's pool: 0/3 nodes are available"
    running = Job(JobState.RUNNING, name="x")
    assessment = conditions(Observed(1, compression=running, pod_problem=PodProblem(Reason.UNSCHEDULABLE, why)))
    degraded = assessment.condition("Degraded")
    assert (degraded.status, degraded.reason, degraded.message) == (True, Reason.UNSCHEDULABLE, why)
    assert assessment.phase is Phase.COMPRESSING  # it may still be placed: a node may join the pool
    broken = Job(JobState.FAILED, "boom", "x")
    failed = conditions(Observed(1, compression=broken, pod_problem=PodProblem(Reason.UNSCHEDULABLE, why)))
    assert failed.condition("Degraded").reason == Reason.COMPRESSION_FAILED  # a failure says more
