"""One autoscaler tick, as a pure function: what one ModelDeployment's observation means.

Every driver — the operator's autoscaler in a cluster, `frugal up`'s, the autoscaling benchmark's
replay — reads metrics its own way and acts its own way, but decides here: the policy memory starts
afresh on a new serving revision, :func:`~frugal.operator.decision.autoscaling.recommend` gives the
replica counts, the plan is priced again at the observed load and re-planning decides whether to
roll over (and to what, with how many replicas), and the status fields and conditions the tick owns
are built, with whether they changed enough to be written now.

A driver keeps :attr:`TickOutcome.memory` for the next tick when its writes succeed; when one fails
it keeps the matching part of the previous memory (:func:`rollover_not_written`,
:func:`status_not_written`) so the next tick decides again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from frugal.operator.api.models import ModelDeploymentStatus, StatusLike
from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import planner, replanning, scaling
from frugal.operator.decision.autoscaling import (
    Memory,
    Observation,
    Recommendation,
    ScaleReason,
    Targets,
    recommend,
)
from frugal.operator.decision.conditions import Condition
from frugal.operator.decision.revisions import Rollover, rollover_from_status

# Observed numbers (p95, rate, cost) alone rewrite the status at most this often.
STATUS_REFRESH_SECONDS = 60.0
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class TickMemory:
    """What one tick of a ModelDeployment hands to the next."""

    policy: Memory = field(default_factory=Memory)
    # The serving (generation, revision) `policy` learned about: a rollover starts it afresh.
    revision: tuple[int, int] = (0, 0)
    replan: replanning.ReplanMemory = field(default_factory=replanning.ReplanMemory)
    # What the tick's status write last carried, and when (monotonic), to write only on a change.
    written: Mapping[str, Any] = field(default_factory=dict)
    written_at: float = -math.inf


@dataclass(frozen=True)
class TickInput:
    md: ModelDeploymentSpec  # its generation and revision those of the status (with_revision)
    status: ModelDeploymentStatus  # the ModelDeployment's status as read
    targets: Targets
    replicas: tuple[int, ...]  # spec.replicas of each shard's Deployment now
    ready: tuple[int, ...]
    observation: Observation
    profiles: Mapping[str, HardwareProfileSpec]  # every profile re-planning may price
    now: float  # monotonic seconds: the policy's clock
    wall_now: float  # seconds since the epoch: re-planning's (its last rollover is kept in the status)
    replan_settings: replanning.ReplanSettings | None = None  # None: never re-plan


@dataclass(frozen=True)
class ShardScale:
    """One shard's replica count changes."""

    index: int
    before: int
    after: int
    reason: ScaleReason

    @property
    def direction(self) -> str:
        return "up" if self.after > self.before else "down"


@dataclass(frozen=True)
class RolloverOrder:
    """Re-planning rolls over: status.replan to write, the rollover the reconciler derives from it,
    and the Replanned condition."""

    rollover: Rollover
    replan_status: Mapping[str, Any]
    condition: Condition
    decision: replanning.ReplanDecision


@dataclass(frozen=True)
class TickOutcome:
    recommendation: Recommendation
    scale: tuple[ShardScale, ...]
    plan: planner.Plan | None  # priced at the observed load (None without one)
    replan: replanning.ReplanDecision | None
    rollover: RolloverOrder | None
    # The status fields the tick owns, and its conditions (MetricsAvailable, PowerCapped).
    observed: Mapping[str, Any]
    conditions: tuple[Condition, ...]
    # What to write to the status now (None: nothing changed enough to be worth a write).
    status_patch: Mapping[str, Any] | None
    memory: TickMemory


def run_tick(given: TickInput, memory: TickMemory) -> TickOutcome:
    md = given.md
    revision = (md.owner.generation, md.owner.revision)
    policy = memory.policy if memory.revision == revision else Memory()
    recommendation, policy = recommend(given.observation, given.replicas, given.targets, policy, given.now)
    scale = tuple(
        ShardScale(index, before, after, recommendation.reasons[index])
        for index, (before, after) in enumerate(zip(given.replicas, recommendation.replicas, strict=True))
        if before != after
    )
    fresh = given.observation.stale is None
    plan = scaling.plan_at_load(
        md, given.status, given.profiles, given.observation.request_rate if fresh else None
    )
    replan, replan_memory, rollover = _replan(given, plan, memory.replan)
    observed = scaling.observed_status(recommendation, given.observation, given.ready, given.targets)
    conditions = tuple(scaling.autoscaling_conditions(recommendation, given.observation, given.targets))
    decisive = {
        "reason": recommendation.reason.value,
        "replicas": recommendation.replicas,
        "ready": given.ready,
        "conditions": [(c.type, c.status, c.reason) for c in conditions],
    }
    changed_decision = decisive != memory.written.get("decisive")
    changed_numbers = observed != memory.written.get("status")
    written, written_at = memory.written, memory.written_at
    patch: dict[str, Any] | None = None
    if changed_decision or (changed_numbers and given.now - memory.written_at >= STATUS_REFRESH_SECONDS):
        patch = {**observed, "planAtLoad": scaling.plan_at_load_status(plan, given.status, replan)}
        if scale:
            patch["autoscaling"] = {**patch["autoscaling"], "lastScaleTime": timestamp(given.wall_now)}
        written, written_at = {"decisive": decisive, "status": observed}, given.now
    return TickOutcome(
        recommendation,
        scale,
        plan,
        replan,
        rollover,
        observed,
        conditions,
        patch,
        TickMemory(policy, revision, replan_memory, written, written_at),
    )


def rollover_not_written(outcome: TickOutcome, previous: TickMemory) -> TickMemory:
    """The memory to keep when status.replan could not be written: the next tick decides again."""
    return dataclasses.replace(outcome.memory, replan=previous.replan)


def status_not_written(outcome: TickOutcome, previous: TickMemory) -> TickMemory:
    """The memory to keep when the status patch could not be written: the next tick writes it."""
    return dataclasses.replace(outcome.memory, written=previous.written, written_at=previous.written_at)


def _replan(
    given: TickInput, plan: planner.Plan | None, memory: replanning.ReplanMemory
) -> tuple[replanning.ReplanDecision | None, replanning.ReplanMemory, RolloverOrder | None]:
    if given.replan_settings is None:
        return None, memory, None
    if memory.last_rollover_at is None:
        memory = dataclasses.replace(memory, last_rollover_at=last_rollover(given.status, given.md))
    decision, memory = scaling.replan_at_load(
        given.md,
        plan,
        scaling.running_choice(given.status),
        given.ready,
        given.replan_settings,
        memory,
        given.wall_now,
    )
    if decision is None or not decision.roll_over or plan is None:
        return decision, memory, None
    replan_status = scaling.replan_status(given.md, given.status, plan, decision, timestamp(given.wall_now))
    rollover = rollover_from_status(given.md, {"replan": replan_status})
    assert rollover is not None  # replan_status names the generation, a revision >= 1 and the option
    order = RolloverOrder(rollover, replan_status, scaling.replanned_condition(decision), decision)
    return decision, memory, order


def timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime(TIMESTAMP)


def last_rollover(status: StatusLike, md: ModelDeploymentSpec) -> float | None:
    """When the generation last rolled over (status.replan.lastRolloverTime), as wall time."""
    replan = ModelDeploymentStatus.from_status(status).replan
    if replan is None or replan.generation != md.owner.generation or not replan.last_rollover_time:
        return None
    try:
        return datetime.strptime(replan.last_rollover_time, TIMESTAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
