"""Between a ModelDeployment and the autoscaling policy: the targets from its spec, profile and plan;
the capacity its status records; the status fields and conditions a tick writes back (all pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from frugal.operator.api.models import ModelDeploymentStatus, StatusLike
from frugal.operator.api.models import Option as StatusOption
from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import decide, planner, replanning
from frugal.operator.decision.autoscaling import Observation, Recommendation, ScaleReason, Targets
from frugal.operator.decision.conditions import Condition
from frugal.operator.decision.planner import Option
from frugal.operator.decision.replanning import significant

# What spec.autoscaling.scaleToZeroAfterSeconds means when omitted (the CRD's description says so).
DEFAULT_SCALE_TO_ZERO_SECONDS = 300


def targets_for(
    md: ModelDeploymentSpec,
    profile: HardwareProfileSpec,
    capacity_rps: float,
    wakes: bool = False,
    metrics_window_s: float = 60.0,
) -> Targets:
    """`capacity_rps`: one replica's throughput within the SLO, as profiling measured it for the plan.
    `wakes`: the caller has a front that holds requests at zero replicas, so minReplicas 0 may scale
    to zero after spec.autoscaling.scaleToZeroAfterSeconds. `metrics_window_s`: the window the
    caller's rates are computed over (the Prometheus rate window; two scrapes apart locally)."""
    autoscaling = md.spec.autoscaling
    idle = autoscaling.scale_to_zero_after_seconds or DEFAULT_SCALE_TO_ZERO_SECONDS
    return Targets(
        slo_p95_ms=md.slo_p95_ms,
        capacity_rps=capacity_rps,
        min_replicas=md.min_replicas,
        max_replicas=autoscaling.max_replicas,
        stabilization_window_s=float(autoscaling.stabilization_window_seconds),
        cap_watts=autoscaling.power.cap_watts,
        cost_per_replica_hour=float(profile.cost_per_hour),
        price_per_kwh=float(md.price_per_kwh),
        idle_watts=profile.idle_watts,
        max_watts=profile.max_watts,
        scale_to_zero_after_s=float(idle) if wakes and autoscaling.min_replicas == 0 else None,
        metrics_window_s=metrics_window_s,
    )


def duration_seconds(text: str) -> float:
    """A Prometheus duration of one unit (30s, 1m, 2h) in seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{text!r} is not a duration such as 30s, 1m or 2h")
    return float(text[:-1]) * units[text[-1]]


def metrics_source(md: ModelDeploymentSpec, default_prometheus_url: str | None) -> tuple[str | None, str]:
    """(the Prometheus URL to read, the power source): spec.autoscaling's, else the operator's default."""
    autoscaling = md.spec.autoscaling
    url = autoscaling.prometheus.url if autoscaling.prometheus is not None else default_prometheus_url
    return url, autoscaling.power.source


# -- what the autoscaler reads from a ModelDeployment's status, and what it writes back -----------------

METRICS_AVAILABLE = "MetricsAvailable"
POWER_CAPPED = "PowerCapped"


def capacity_from_status(status: StatusLike) -> float | None:
    """One replica's profiled throughput for the selected (variant, profile, shards), from status."""
    typed = ModelDeploymentStatus.from_status(status)
    selected = typed.selected
    if selected is None:
        return None
    for variant in typed.variants:
        if variant.name != selected.variant:
            continue
        for row in variant.profiles:
            if row.hardware_profile == selected.hardware_profile and row.throughput_rps:
                return float(row.throughput_rps)
    return None


def plan_at_load(
    md: ModelDeploymentSpec,
    status: StatusLike,
    profiles: Mapping[str, HardwareProfileSpec],
    rate_rps: float | None,
) -> planner.Plan | None:
    """Hardware selection again at the observed request rate, from the variants and measurements that
    status.variants records (rows the plan took from the compression report count as measured).
    None without a rate, variants or candidate profiles to price.

    An idle model (0 req/s) that keeps replicas (minReplicas of 1 or more) is priced at
    :data:`replanning.IDLE_RPS`: every option then needs its one replica per shard at no
    utilisation, so costs per request compare as the options' hourly costs at idle do, and an idle
    model moves to the hardware cheapest to keep waiting. With minReplicas 0 idle costs nothing on
    any option (the model scales to zero): None."""
    if rate_rps is None or rate_rps < 0 or (rate_rps == 0 and md.min_replicas == 0):
        return None
    rate_rps = max(rate_rps, replanning.IDLE_RPS)
    variants = []
    for entry in ModelDeploymentStatus.from_status(status).variants:
        rows = tuple(
            planner.Measurement(row.hardware_profile, row.latency_p95_ms, row.throughput_rps, row.shards or 1)
            for row in entry.profiles
            if row.latency_p95_ms is not None and row.throughput_rps
        )
        metric = entry.metric
        variants.append(
            planner.Variant(
                entry.name,
                entry.size_bytes or 0,
                max(0.0, (metric.drop if metric else None) or 0.0),
                (metric.name if metric else None) or "accuracy",
                metric.value if metric else None,
                rows,
            )
        )
    candidates = [decide.planner_profile(profiles[name]) for name in md.serving_profiles if name in profiles]
    if not variants or not candidates:
        return None
    objectives = dataclasses.replace(decide.objectives(md), expected_rps=rate_rps)
    try:
        return planner.plan(variants, candidates, objectives)
    except planner.PlanningError:
        return None


def plan_at_load_status(
    plan: planner.Plan | None,
    status: StatusLike,
    decision: replanning.ReplanDecision | None = None,
) -> dict[str, Any] | None:
    """status.planAtLoad: every option priced at the observed rate, the running one marked, and what
    re-planning made of it (None removes the field when there is no load to price at)."""
    if plan is None or plan.objectives is None or plan.objectives.expected_rps is None:
        return None
    selected = ModelDeploymentStatus.from_status(status).selected
    running = Option(
        (selected.variant if selected else None) or "",
        (selected.hardware_profile if selected else None) or "",
        (selected.shards if selected else None) or 1,
    )
    cheapest = plan.chosen
    # None, not absent: the status is merge-patched, and a reason from before must not stay behind.
    replan = (
        {"reason": None, "message": None}
        if decision is None
        else {"reason": decision.reason.value, "message": decision.message[:4096]}
    )
    load = plan.objectives.expected_rps
    return {
        **replan,
        "loadRps": 0.0 if load <= replanning.IDLE_RPS else significant(load, 3),
        "cheapest": None
        if cheapest is None
        else {"variant": cheapest.variant, "hardwareProfile": cheapest.profile, "shards": cheapest.shards},
        "options": replanning.plan_table_rows(plan, running),
    }


# -- re-planning at the observed load ---------------------------------------------------------------

REPLANNED = "Replanned"


def running_choice(status: StatusLike) -> Option | None:
    """The (variant, profile, shards) status.selected says is served."""
    selected = ModelDeploymentStatus.from_status(status).selected
    if selected is None or not selected.variant or not selected.hardware_profile:
        return None
    return Option(selected.variant, selected.hardware_profile, selected.shards or 1)


def replan_settings(md: ModelDeploymentSpec, window_s: float | None = None) -> replanning.ReplanSettings:
    """spec.autoscaling.replanning as the decision's settings (`window_s` overrides the spec's)."""
    window = float(md.spec.autoscaling.replanning.window_seconds) if window_s is None else window_s
    return replanning.ReplanSettings(window_s=window, cost_tolerance=decide.COST_TOLERANCE)


def replan_at_load(
    md: ModelDeploymentSpec,
    plan: planner.Plan | None,
    running: Option | None,
    ready: Sequence[int],
    settings: replanning.ReplanSettings,
    memory: replanning.ReplanMemory,
    now: float,
) -> tuple[replanning.ReplanDecision | None, replanning.ReplanMemory]:
    """One tick's re-planning: None (and the memory unchanged) when it is off, when there is nothing
    to compare, or while a rollover is under way (a shard of the running option has no ready replica
    though the load asks for one: what serves is still the previous option)."""
    if not md.spec.autoscaling.replanning.enabled or running is None:
        return None, memory
    if plan is None:
        plan = planner.Plan(table=(), chosen=None, reason="no load to price at", objectives=None)
    if any(count < 1 for count in ready) and plan.objectives is not None:
        return None, memory
    return replanning.replan(plan, running, settings, memory, now)


def rollover_replicas(md: ModelDeploymentSpec, plan: planner.Plan, target: Option) -> int:
    """Replicas per shard the new option starts with: what the observed load needs of it, within
    spec.autoscaling's bounds."""
    row = plan.option(target.variant, target.profile, target.shards)
    wanted = row.replicas if row is not None and row.replicas else md.initial_replicas
    return max(md.initial_replicas, min(wanted, md.spec.autoscaling.max_replicas))


def replan_status(
    md: ModelDeploymentSpec,
    status: StatusLike,
    plan: planner.Plan,
    decision: replanning.ReplanDecision,
    timestamp: str,
) -> dict[str, Any]:
    """status.replan for a rollover `decision` made now (`timestamp`): the next serving revision."""
    assert decision.target is not None
    previous = ModelDeploymentStatus.from_status(status).replan
    same_generation = previous is not None and previous.generation == md.owner.generation
    revision = (previous.revision or 0) if previous is not None and same_generation else 0

    def option(choice: Option) -> dict[str, Any]:
        return StatusOption(variant=choice.variant, hardware_profile=choice.profile, shards=choice.shards).to_patch()

    def money(value: float | None) -> str | None:
        return None if value is None else f"{value:.3g}"

    return {
        "generation": md.owner.generation,
        "revision": revision + 1,
        "selected": option(decision.target),
        "from": option(decision.running),
        "replicas": rollover_replicas(md, plan, decision.target),
        "loadRps": None
        if decision.load_rps is None
        else (0.0 if decision.load_rps <= replanning.IDLE_RPS else significant(decision.load_rps, 3)),
        "costPer1kRequests": money(decision.target_cost_per_1k_requests),
        "fromCostPer1kRequests": money(decision.running_cost_per_1k_requests),
        "reason": decision.reason.value,
        "message": decision.message[:4096],
        "lastRolloverTime": timestamp,
    }


def replanned_condition(decision: replanning.ReplanDecision) -> Condition:
    """Replanned=True after a rollover, naming both options and their costs at the load."""
    return Condition(REPLANNED, True, decision.reason.value, decision.message[:32768])


def observed_status(
    recommendation: Recommendation,
    observation: Observation,
    ready: Sequence[int],
    targets: Targets,
) -> dict[str, Any]:
    """The status fields the autoscaler owns, from one tick (values rounded to what a person reads,
    so noise in the metrics does not rewrite the status)."""
    autoscaling: dict[str, Any] = {
        "reason": recommendation.reason.value,
        "message": recommendation.message[:4096],
        "desiredReplicas": list(recommendation.replicas),
        "capacityRps": [significant(c, 3) for c in recommendation.capacity_rps],
    }
    measured = [s.watts for s in observation.shards]
    fresh = observation.stale is None
    watts = (
        sum(w for w in measured if w is not None) if fresh and all(w is not None for w in measured) else None
    )
    if watts is None:
        watts = recommendation.watts if fresh else _idle_watts(targets, ready)
    per_hour = sum(ready) * targets.cost_per_replica_hour + watts / 1000.0 * targets.price_per_kwh
    # None removes a field (the status is written as a merge patch): no stale or undefined numbers.
    rate = observation.request_rate if fresh else None
    per_request = watts / rate if rate else None
    latency = observation.latency_p95_ms if fresh else None
    return {
        "autoscaling": autoscaling,
        "requestRate": None if rate is None else significant(rate, 2),
        "latencyP95Ms": None if latency is None else significant(latency, 2),
        "energy": {
            "watts": significant(watts, 2),
            "joulesPerRequest": None if per_request is None else significant(per_request, 2),
        },
        "cost": {
            "perHour": f"{per_hour:.4f}",
            "per1kRequests": None if not rate else f"{per_hour / 3600.0 / rate * 1000.0:.2g}",
            "energyPerRequestJoules": None if per_request is None else significant(per_request, 2),
        },
    }


def autoscaling_conditions(
    recommendation: Recommendation, observation: Observation, targets: Targets
) -> list[Condition]:
    """MetricsAvailable and PowerCapped, in the form the reconciler's conditions take."""
    if observation.stale is None:
        metrics = Condition(
            METRICS_AVAILABLE, True, "MetricsRead", "the autoscaler read every shard's metrics"
        )
    else:
        metrics = Condition(
            METRICS_AVAILABLE, False, "MetricsStale", f"replicas held: {observation.stale}"[:32768]
        )
    capped = ScaleReason.POWER_CAPPED in recommendation.reasons
    if targets.cap_watts is None:
        power = Condition(POWER_CAPPED, False, "NoPowerCap", "spec.autoscaling.power.capWatts is not set")
    elif capped:
        power = Condition(POWER_CAPPED, True, "PowerCapped", recommendation.message)
    else:
        power = Condition(
            POWER_CAPPED,
            False,
            "WithinPowerCap",
            f"{recommendation.watts:.0f} W within the cap of {targets.cap_watts:g} W",
        )
    return [metrics, power]


def _idle_watts(targets: Targets, ready: Sequence[int]) -> float:
    return sum(ready) * targets.idle_watts

