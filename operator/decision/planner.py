"""Hardware selection: choose the cheapest (variant, hardware profile, shard count) that meets the SLO.

Pure and light: no Kubernetes, no I/O, no heavy imports; the operator and the local runtime both call
:func:`plan`.

Every combination of surviving variant × candidate hardware profile × allowed shard count is one
:class:`Candidate` row. A row is rejected when its accuracy drop exceeds the budget, its p95 latency
exceeds the SLO, it has no latency numbers, or a shard does not fit the profile's memory. Among the
rows left the planner picks the lowest cost per request. Costs within ``Objectives.cost_tolerance`` of
the cheapest (the operator uses 10%, about the run-to-run spread of measured throughput) count as
equal: among them the lower power draw wins, then the smaller model. An exact tie (equal to 9
significant digits) with no tolerance goes to
the lower power draw, then the lower latency, then names (so the choice is deterministic).

Cost per request
----------------
One serving *replica* of a candidate is ``S`` pods, one per shard (a request passes through every
stage), each pod taking one node-share of the profile. With ``T`` the measured throughput of one
replica (requests/s), ``C`` the profile's ``costPerHour`` (USD), ``Pidle``/``Pmax`` its power (W),
``E`` the electricity price (USD/kWh) and ``L`` the expected load (requests/s)::

    replicas    R = ceil(L / T)                  (R = 1 and L = T when no load is given, or
    utilisation u = L / (R · T)                   a load of 0: one replica running flat out)
    power       W = R · S · (Pidle + (Pmax − Pidle) · u)                 watts
    cost/hour   H = R · S · C + (W / 1000) · E                           USD per hour
    cost/req      = H / (3600 · L)                                       USD per request
    energy/req    = W / L                                                joules per request

At a given load every option is priced with the replicas *it* needs, so a slow cheap profile and a
fast dear one compare as they would serve that load: at a few requests per second one small replica
wins, at hundreds the profile whose replica carries more per dollar does. :func:`price` prices one
given option the same way (the one running, say, to compare it with the cheapest at the observed
load: :mod:`frugal.operator.decision.replanning`). Whether an option is feasible does not depend on
the load: rows are rejected by accuracy, latency and memory, and a load that would need more replicas
than ``spec.autoscaling.maxReplicas`` is priced like any other.

Latency and throughput come from the profiling Jobs (measured per profile, at the serving batch size,
optionally per shard count). When a shard count has no measurement of its own it is estimated from
the 1-shard numbers: latency grows by ``hop_latency_ms`` per extra stage and replica throughput is
kept as measured (no pipelining gain is assumed without a measurement). With a single candidate
profile and no profiling data at all, the compression report's own numbers are used, and the plan
says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Source = Literal["profiling", "estimated", "compression-report", "none"]

SECONDS_PER_HOUR = 3600.0
WATTS_PER_KILOWATT = 1000.0


@dataclass(frozen=True)
class Option:
    """One way to serve a model: a variant on a hardware profile over a number of shards. What the
    planner prices, what it chose for a generation, what re-planning compares and rolls over to."""

    variant: str
    profile: str
    shards: int = 1

    @classmethod
    def of(cls, row: Candidate) -> Option:
        return cls(row.variant, row.profile, row.shards)

    def __str__(self) -> str:
        return f"{self.variant} on {self.profile} x{self.shards}"


@dataclass(frozen=True)
class Measurement:
    """Latency and throughput of one replica of a variant on one hardware profile."""

    profile: str
    latency_p95_ms: float
    throughput_rps: float
    shards: int = 1
    memory_bytes: int | None = None  # the largest stage server's peak resident memory, when measured
    method: Literal["session", "servers"] = "session"  # timed on the runtime alone, or through servers


@dataclass(frozen=True)
class Variant:
    """One row of the compression report, with whatever profiling measured for it."""

    name: str
    size_bytes: int
    accuracy_drop: float
    metric: str = "accuracy"
    metric_value: float | None = None
    measurements: tuple[Measurement, ...] = ()
    report_latency_p95_ms: float | None = None
    report_throughput_rps: float | None = None
    # (shard count, bytes of its largest stage file) for every count compression cut the variant into;
    # None when not known (then a stage is assumed to hold size / shards, and any count is allowed)
    stage_bytes: tuple[tuple[int, int], ...] | None = None

    def bytes_per_pod(self, shards: int) -> float:
        """What one pod of a `shards`-way cut loads: the largest stage's file, or size / shards."""
        if shards <= 1:
            return float(self.size_bytes)
        return float(dict(self.stage_bytes or ()).get(shards, self.size_bytes / shards))


@dataclass(frozen=True)
class Profile:
    """What the planner needs of a HardwareProfile."""

    name: str
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Objectives:
    """The ModelDeployment's targets and prices."""

    slo_p95_ms: float
    max_accuracy_drop: float
    price_per_kwh: float = 0.0
    shard_counts: tuple[int, ...] = (1,)
    expected_rps: float | None = None
    hop_latency_ms: float = 1.0
    # Options whose cost per request is within this fraction of the cheapest are treated as equal:
    # measured throughput varies by about this much run to run, so the cheaper one may be noise.
    cost_tolerance: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One row of the plan's table: a (variant, profile, shards) option, priced or rejected."""

    variant: str
    profile: str
    shards: int
    source: Source
    latency_p95_ms: float | None = None
    throughput_rps: float | None = None
    accuracy_drop: float = 0.0
    size_bytes: int = 0
    replicas: int = 0
    watts: float = 0.0
    cost_per_hour: float | None = None
    cost_per_request: float | None = None
    energy_per_request_joules: float | None = None
    rejections: tuple[str, ...] = ()
    reason: str = ""
    # how the numbers were had: "servers" or "session" (profiling), else the source ("estimated", ...)
    measured_by: str = ""
    memory_bytes: int | None = None  # the largest stage server's peak resident memory, when measured

    @property
    def feasible(self) -> bool:
        return not self.rejections

    @property
    def cost_per_1k_requests(self) -> float | None:
        return None if self.cost_per_request is None else self.cost_per_request * 1000.0


@dataclass(frozen=True)
class Plan:
    """The planner's answer: the choice (None when nothing qualifies), the full table and why."""

    chosen: Candidate | None
    table: tuple[Candidate, ...]
    reason: str
    used_fallback: bool = False
    objectives: Objectives | None = field(default=None, compare=False)

    def option(self, variant: str, profile: str, shards: int) -> Candidate | None:
        """The table's row for one (variant, profile, shards), None when the plan did not price it."""
        return next(
            (r for r in self.table if (r.variant, r.profile, r.shards) == (variant, profile, shards)), None
        )


class PlanningError(ValueError):
    """The planner's inputs are unusable (the message says which field to fix)."""


def plan(variants: Sequence[Variant], profiles: Sequence[Profile], objectives: Objectives) -> Plan:
    """Price every (variant, profile, shards) option and choose the cheapest that meets the targets."""
    _check_inputs(variants, profiles, objectives)
    fallback = len(profiles) == 1 and not any(v.measurements for v in variants)
    table = tuple(
        _evaluate(variant, profile, shards, objectives, fallback)
        for variant in variants
        for profile in profiles
        for shards in sorted(set(objectives.shard_counts))
    )
    feasible = _within_tolerance_first(
        sorted((row for row in table if row.feasible), key=_preference), objectives
    )
    if not feasible:
        return Plan(None, table, _no_choice_reason(table, objectives), fallback, objectives)
    chosen = replace(feasible[0], reason="chosen: " + feasible[0].reason)
    table = tuple(chosen if _same_option(row, chosen) else row for row in table)
    reason = _choice_reason(chosen, feasible, objectives, fallback)
    return Plan(chosen, table, reason, fallback, objectives)


def why_not(row: Candidate, plan: Plan) -> str:
    """One line for the plan table: "chosen", why the option is infeasible, or why it lost to the choice."""
    chosen = plan.chosen
    if chosen is not None and _same_option(row, chosen):
        return "chosen"
    if row.rejections:
        return "; ".join(row.rejections)
    if chosen is None:  # feasible rows always leave a choice; kept total for any Plan a caller builds
        return "not chosen"
    ours, theirs = row.cost_per_request or 0.0, chosen.cost_per_request or 0.0
    tolerance = plan.objectives.cost_tolerance if plan.objectives else 0.0
    if theirs > 0 and ours > theirs * (1.0 + tolerance):
        return f"costs {ours / theirs - 1.0:.0%} more per request than the choice"
    if _preference(row)[0] == _preference(chosen)[0]:
        return f"same cost; the choice draws less power ({chosen.watts:.3g} W vs {row.watts:.3g} W)"
    same_power_and_size = _near_tie_preference(row)[:2] == _near_tie_preference(chosen)[:2]
    won_on = "a lower cost" if same_power_and_size else _tie_breaker(chosen, row)
    return f"within {tolerance:.0%} of the choice's cost (measurement noise); the choice has {won_on}"


def price(
    variant: Variant,
    profile: Profile,
    shards: int,
    objectives: Objectives,
    fallback: bool = False,
) -> Candidate:
    """One (variant, profile, shards) option priced at ``objectives.expected_rps``, with its rejections:
    the row :func:`plan` puts in its table for it (without the "chosen" mark), whether or not
    ``shards`` is among ``objectives.shard_counts``. ``fallback``: use the compression report's numbers
    when the variant has no measurements (what :func:`plan` does with one profile and no profiling)."""
    _check_inputs([variant], [profile], replace(objectives, shard_counts=(shards,)))
    return _evaluate(variant, profile, shards, objectives, fallback)


def _check_inputs(variants: Sequence[Variant], profiles: Sequence[Profile], objectives: Objectives) -> None:
    if not variants:
        raise PlanningError("no variants to plan with: the compression report lists none")
    if not profiles:
        raise PlanningError("spec.serving.hardwareProfiles: name at least one candidate HardwareProfile")
    if objectives.slo_p95_ms <= 0:
        raise PlanningError("spec.serving.slo.latencyP95Ms must be greater than 0")
    if not objectives.shard_counts or min(objectives.shard_counts) < 1:
        raise PlanningError("spec.serving.shards: shard counts must be 1 or more")
    if objectives.expected_rps is not None and objectives.expected_rps < 0:
        raise PlanningError("expected load (requests per second) must not be negative")
    for profile in profiles:
        if profile.cost_per_hour < 0 or profile.idle_watts < 0 or profile.max_watts < profile.idle_watts:
            raise PlanningError(
                f"HardwareProfile {profile.name}: costPerHour and power must be >= 0 and "
                "power.maxWatts >= power.idleWatts"
            )


def _evaluate(
    variant: Variant, profile: Profile, shards: int, objectives: Objectives, fallback: bool
) -> Candidate:
    source, latency, throughput = _performance(variant, profile.name, shards, objectives, fallback)
    exact = next((m for m in variant.measurements if (m.profile, m.shards) == (profile.name, shards)), None)
    row = Candidate(
        variant=variant.name,
        profile=profile.name,
        shards=shards,
        source=source,
        measured_by=exact.method if source == "profiling" and exact is not None else source,
        memory_bytes=exact.memory_bytes if exact is not None else None,
        latency_p95_ms=latency,
        throughput_rps=throughput,
        accuracy_drop=variant.accuracy_drop,
        size_bytes=variant.size_bytes,
    )
    if latency is not None and throughput is not None and throughput > 0:
        row = _priced(row, profile, objectives)
    rejections = tuple(_rejections(row, variant, profile, objectives))
    return replace(row, rejections=rejections, reason="; ".join(rejections) or _cost_summary(row))


def _performance(
    variant: Variant, profile: str, shards: int, objectives: Objectives, fallback: bool
) -> tuple[Source, float | None, float | None]:
    exact = [m for m in variant.measurements if m.profile == profile and m.shards == shards]
    if exact:
        return "profiling", exact[0].latency_p95_ms, exact[0].throughput_rps
    single = [m for m in variant.measurements if m.profile == profile and m.shards == 1]
    source: Source
    throughput: float | None
    if single:
        source, latency, throughput = "estimated", single[0].latency_p95_ms, single[0].throughput_rps
    elif fallback and variant.report_latency_p95_ms is not None:
        source, latency = "compression-report", variant.report_latency_p95_ms
        throughput = variant.report_throughput_rps
    else:
        return "none", None, None
    return source, latency + (shards - 1) * objectives.hop_latency_ms, throughput


def _priced(row: Candidate, profile: Profile, objectives: Objectives) -> Candidate:
    throughput = row.throughput_rps or 0.0
    load = objectives.expected_rps if objectives.expected_rps else throughput
    replicas = max(1, math.ceil(load / throughput - 1e-9))
    utilisation = min(1.0, load / (replicas * throughput))
    pods = replicas * row.shards
    watts = pods * (profile.idle_watts + (profile.max_watts - profile.idle_watts) * utilisation)
    cost_per_hour = pods * profile.cost_per_hour + watts / WATTS_PER_KILOWATT * objectives.price_per_kwh
    return replace(
        row,
        replicas=replicas,
        watts=watts,
        cost_per_hour=cost_per_hour,
        cost_per_request=cost_per_hour / (SECONDS_PER_HOUR * load),
        energy_per_request_joules=watts / load,
    )


def _rejections(row: Candidate, variant: Variant, profile: Profile, objectives: Objectives) -> Iterable[str]:
    if variant.accuracy_drop > objectives.max_accuracy_drop:
        yield (
            f"{variant.metric} drop {variant.accuracy_drop:.4g} exceeds the budget "
            f"{objectives.max_accuracy_drop:.4g}"
        )
    if row.latency_p95_ms is None:
        yield f"no latency measured on {profile.name} (its profiling Job reported nothing for this variant)"
    elif row.latency_p95_ms > objectives.slo_p95_ms:
        yield f"p95 {row.latency_p95_ms:.3g} ms exceeds the SLO of {objectives.slo_p95_ms:.3g} ms"
    elif row.throughput_rps is None or row.throughput_rps <= 0:
        yield f"no throughput measured on {profile.name}"
    if row.shards > 1 and variant.stage_bytes is not None and row.shards not in dict(variant.stage_bytes):
        yield (
            f"compression made no {row.shards}-shard stage files (the graph has no such cut where only a "
            "batch's rows cross; see the compression Job's log)"
        )
    elif profile.memory_bytes is not None:
        measured = _measured_memory(variant, profile.name, row.shards)
        need = measured if measured is not None else variant.bytes_per_pod(row.shards)
        if measured is not None:
            which = (
                "measured peak resident memory of a server"
                if row.shards == 1
                else ("measured peak resident memory of its largest stage server")
            )
        else:
            which = "per shard (its largest stage file)" if row.shards > 1 else "per pod"
        if need > profile.memory_bytes:
            yield (
                f"does not fit: {need / 1e6:.3g} MB {which} > {profile.memory_bytes / 1e6:.3g} MB on "
                f"{profile.name}"
            )


def _measured_memory(variant: Variant, profile: str, shards: int) -> int | None:
    return next(
        (m.memory_bytes for m in variant.measurements if (m.profile, m.shards) == (profile, shards)), None
    )


def _preference(row: Candidate) -> tuple[float, float, float, str, str, int]:
    cost = float(f"{row.cost_per_request or 0.0:.9g}")
    return (cost, row.watts, row.latency_p95_ms or 0.0, row.variant, row.profile, row.shards)


def _within_tolerance_first(feasible: list[Candidate], objectives: Objectives) -> list[Candidate]:
    """Options priced within the tolerance of the cheapest count as equal: lower power, then the
    smaller model (less memory, faster start) goes first among them."""
    if not feasible or objectives.cost_tolerance <= 0:
        return feasible
    limit = (feasible[0].cost_per_request or 0.0) * (1.0 + objectives.cost_tolerance)
    near = [row for row in feasible if (row.cost_per_request or 0.0) <= limit]
    rest = feasible[len(near) :]
    return sorted(near, key=_near_tie_preference) + rest


def _near_tie_preference(row: Candidate) -> tuple[float, int, float, float, str, str, int]:
    watts = float(f"{row.watts:.3g}")
    return (
        watts,
        row.size_bytes,
        *_preference(row)[:1],
        row.latency_p95_ms or 0.0,
        row.variant,
        row.profile,
        row.shards,
    )


def _same_option(a: Candidate, b: Candidate) -> bool:
    return (a.variant, a.profile, a.shards) == (b.variant, b.profile, b.shards)


def _cost_summary(row: Candidate) -> str:
    return (
        f"${_money(row.cost_per_1k_requests)} per 1k requests, p95 {row.latency_p95_ms:.3g} ms, "
        f"{row.replicas} replica(s) x {row.shards} shard(s), {row.watts:.3g} W"
    )


def _choice_reason(
    chosen: Candidate, feasible: list[Candidate], objectives: Objectives, fallback: bool
) -> str:
    shards = "shard" if chosen.shards == 1 else "shards"
    cheapest = min(row.cost_per_request or 0.0 for row in feasible)
    rank = (
        "lowest cost per request"
        if (chosen.cost_per_request or 0.0) <= cheapest
        else f"cost per request within {objectives.cost_tolerance:.0%} of the lowest"
    )
    text = (
        f"{chosen.variant} on {chosen.profile} with {chosen.shards} {shards}: {rank} "
        f"(${_money(chosen.cost_per_1k_requests)} per 1k requests) of {len(feasible)} option(s) meeting "
        f"p95 ≤ {objectives.slo_p95_ms:.3g} ms and accuracy drop ≤ {objectives.max_accuracy_drop:.4g}"
    )
    if len(feasible) > 1:
        runner_up = feasible[1]
        text += (
            f"; next: {runner_up.variant} on {runner_up.profile} x{runner_up.shards} at "
            f"${_money(runner_up.cost_per_1k_requests)}"
        )
        if _preference(runner_up)[0] == _preference(chosen)[0]:
            text += f" (same cost; chosen for lower power, {chosen.watts:.3g} W vs {runner_up.watts:.3g} W)"
        elif (chosen.cost_per_request or 0.0) > (runner_up.cost_per_request or 0.0):
            text += (
                f" (within {objectives.cost_tolerance:.0%} of each other, below what measurements can tell "
                f"apart; chosen for {_tie_breaker(chosen, runner_up)})"
            )
    if fallback:
        text += (
            "; latency and throughput from the compression report (one hardware profile and no "
            "profiling data)"
        )
    return text


def _tie_breaker(chosen: Candidate, other: Candidate) -> str:
    if float(f"{chosen.watts:.3g}") < float(f"{other.watts:.3g}"):
        return f"lower power, {chosen.watts:.3g} W vs {other.watts:.3g} W"
    return f"the smaller model, {chosen.size_bytes} vs {other.size_bytes} bytes"


def _no_choice_reason(table: Sequence[Candidate], objectives: Objectives) -> str:
    within_budget = [r for r in table if r.accuracy_drop <= objectives.max_accuracy_drop]
    if not within_budget:
        best = min(r.accuracy_drop for r in table)
        return (
            f"no variant is within the accuracy budget {objectives.max_accuracy_drop:.4g} (smallest "
            f"drop {best:.4g}): raise spec.compression.accuracyBudget.maxDrop or compress less"
        )
    timed = [r for r in within_budget if r.latency_p95_ms is not None]
    if not timed:
        return "no latency measurements for any candidate: check the profiling Jobs' output"
    fastest = min(timed, key=lambda r: r.latency_p95_ms or 0.0)
    if (fastest.latency_p95_ms or 0.0) > objectives.slo_p95_ms:
        return (
            f"no option meets the SLO of {objectives.slo_p95_ms:.3g} ms: the fastest is "
            f"{fastest.variant} on {fastest.profile} at {fastest.latency_p95_ms:.3g} ms; raise "
            "spec.serving.slo.latencyP95Ms or add a faster HardwareProfile"
        )
    return "no option is feasible: " + "; ".join(sorted({r.reason for r in within_budget}))


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"
