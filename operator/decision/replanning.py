"""Re-planning at the observed load (pure): whether to move a running model to other hardware.

The plan made at deploy time prices each option at one load; the load a model then sees decides
which option is cheapest per request (one small CPU replica at a few requests per second, a GPU
whose replica carries hundreds when it is busy). :func:`replan` is called once per tick with the plan
made at the load observed now (:func:`frugal.operator.decision.planner.plan` with
``Objectives.expected_rps`` set to the observed request rate), the :class:`Option` being served, the
:class:`ReplanSettings` and the :class:`ReplanMemory` the previous tick returned; it gives a
:class:`ReplanDecision` and the next memory. It only decides: rolling over (a new generation beside
the old, traffic moved once it is ready) is the caller's. The rules, in the order they apply:

* **No load, no re-planning.** With no observed rate (None: nothing was read; 0: scaled to zero) a
  cost per request is undefined: hold (``NoLoad``). An idle model that keeps replicas is planned at
  :data:`IDLE_RPS` by its caller, so it does re-plan: to the hardware cheapest to keep idle, after the
  window like any other saving (its next load moves it again if that is cheaper then).
* **Nothing feasible, nothing to move to** (``NothingFeasible``): hold.
* **The running option infeasible** (rejected in the plan: over the latency SLO, over the accuracy
  budget, too big for the profile's memory, unmeasured; or absent from the plan's table) rolls over
  to the planner's choice at once (``RunningInfeasible``), without the window or the cooldown. The
  planner rejects by latency, accuracy and memory, never by load, so this means the inputs changed
  under a running option (new profiling numbers, say), and waiting would only prolong the breach.
  The target is the planner's choice, feasible by construction.
* **Cheaper beyond the tolerance, for a window.** The *candidate* is the planner's choice at the
  observed load: what a fresh deployment at this load would get, its tie-breaks included. It *wins*
  a tick when it is not the running option and the running option costs more than
  ``(1 + cost_tolerance)`` × the candidate's cost per request, both priced by the same plan at the
  same load. It must win every tick for ``window_s``, as the same option throughout; any tick where it
  does not (the running option is the choice, or within the tolerance; no load; another candidate)
  starts the timer again. Then: roll over (``Cheaper``); until then ``Waiting``.
* **Cooldown.** After a rollover, no other for ``cooldown_s`` (2 × ``window_s`` by default;
  ``CoolingDown``), except for an infeasible running option. The timer runs through the cooldown,
  so a candidate that has already won for a window rolls over as soon as the cooldown ends.

Why. The tolerance is the planner's (10%: about the run-to-run spread of measured throughput), so a
smaller saving is not known to be one, while a rollover costs a second set of pods until the new
generation is ready, cold starts and cold caches. It is also a dead band: B replaces A only while A
costs more than 1.1 × B, and A comes back only while B costs more than 1.1 × A; both cannot hold at
one load, so two options whose costs cross back and forth within the tolerance never change places,
and a load that drifts back over the crossover must go far enough past it for the saving to exceed
the tolerance again. The window (minutes) makes a rollover answer a load that lasted rather than a
burst: bursts are the autoscaler's, on the running hardware, and a rollover takes minutes itself.
The cooldown bounds the rate when the load does swing beyond the tolerance both ways (a daily
cycle): at most one rollover per cooldown, and the new generation comes up and serves before its
choice is questioned.

Failure modes, known and accepted:

* A load hovering where two candidates, both well below the running option, take turns as the
  planner's choice restarts the timer each turn, and nothing rolls over although either would save.
  The planner's tie-breaks among options within its tolerance make this rare, not impossible.
* The rate observed is what the running option served: a saturated option (requests queued or
  refused) under-reports its load, and the plan at that rate undervalues faster hardware until the
  autoscaler has scaled up and the served rate shows the demand.
* The plan does not know ``spec.autoscaling.maxReplicas``: at a load that needs more replicas of an
  option than allowed, that option is priced as if they could run.
* Costs use the profiled throughput, not the autoscaler's online correction of it.
* The memory lives with the caller. After a restart the timer starts again (a restart delays a
  rollover, never hastens one), but the cooldown is lost unless the caller keeps the time of the last
  rollover and passes it back in :class:`ReplanMemory`.
* The condition is sampled at ticks: what the load did between two ticks is not seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from frugal.operator.decision import planner
from frugal.operator.decision.planner import Option

DEFAULT_WINDOW_S = 300.0
# The load an idle model that keeps its replicas is priced at (scaling.plan_at_load): any positive
# rate far below one request per hour prices every option at its idle hourly cost, so their costs per
# request compare as those do.
IDLE_RPS = 1e-6
# The planner's own tolerance (frugal.operator.decision.decide.COST_TOLERANCE; a unit test checks).
DEFAULT_COST_TOLERANCE = 0.10


class ReplanReason(StrEnum):
    """Why a tick rolls over or holds."""

    CHEAPER = "Cheaper"
    RUNNING_INFEASIBLE = "RunningInfeasible"
    COOLING_DOWN = "CoolingDown"
    WAITING = "Waiting"
    WITHIN_TOLERANCE = "WithinTolerance"
    ALREADY_CHEAPEST = "AlreadyCheapest"
    NOTHING_FEASIBLE = "NothingFeasible"
    NO_LOAD = "NoLoad"


ROLLOVER_REASONS = frozenset({ReplanReason.CHEAPER, ReplanReason.RUNNING_INFEASIBLE})


@dataclass(frozen=True)
class ReplanSettings:
    """How long a saving must last, how large it must be, and how long a rollover stands."""

    window_s: float = DEFAULT_WINDOW_S
    # The running option must cost more than (1 + cost_tolerance) x the candidate per request, the
    # planner's measure of "not within the tolerance of the cheapest".
    cost_tolerance: float = DEFAULT_COST_TOLERANCE
    # None: 2 x window_s.
    cooldown_s: float | None = None

    def __post_init__(self) -> None:
        cooldown = 0.0 if self.cooldown_s is None else self.cooldown_s
        if self.window_s < 0 or self.cost_tolerance < 0 or cooldown < 0:
            raise ValueError("re-planning needs a window, a cost tolerance and a cooldown of 0 or more")

    @property
    def cooldown(self) -> float:
        return 2.0 * self.window_s if self.cooldown_s is None else self.cooldown_s


@dataclass(frozen=True)
class ReplanMemory:
    """What one tick hands to the next: the candidate winning so far, since when, the last rollover."""

    candidate: Option | None = None
    since: float | None = None
    last_rollover_at: float | None = None


@dataclass(frozen=True)
class ReplanDecision:
    """``target`` is the planner's choice at the load (where a rollover goes), None without one."""

    roll_over: bool
    running: Option
    target: Option | None
    reason: ReplanReason
    message: str
    load_rps: float | None = None
    running_cost_per_1k_requests: float | None = None
    target_cost_per_1k_requests: float | None = None
    # While Waiting or CoolingDown: when the rollover comes if the candidate keeps winning.
    roll_over_at: float | None = None

    @property
    def saving(self) -> float | None:
        """The fraction of the running option's cost per request the target would save."""
        running, target = self.running_cost_per_1k_requests, self.target_cost_per_1k_requests
        if running is None or target is None or running <= 0:
            return None
        return 1.0 - target / running


def replan(
    plan_at_load: planner.Plan,
    running: Option,
    settings: ReplanSettings,
    memory: ReplanMemory,
    now: float,
) -> tuple[ReplanDecision, ReplanMemory]:
    """Whether to roll over from `running` to the plan's choice at the load it was planned for, and
    the memory for the next tick."""
    objectives = plan_at_load.objectives
    load = objectives.expected_rps if objectives is not None else None
    last = memory.last_rollover_at
    reset = ReplanMemory(last_rollover_at=last)
    at = _at(load)
    if not load or load <= 0:
        what = "no request rate observed" if load is None else "no requests (0 req/s)"
        message = f"holding {running}: {what}, nothing to re-plan for"
        return _decision(False, running, None, ReplanReason.NO_LOAD, message, load), reset
    chosen = plan_at_load.chosen
    row = plan_at_load.option(running.variant, running.profile, running.shards)
    running_cost = None if row is None else row.cost_per_1k_requests
    if chosen is None:
        message = f"holding {running}: no option is feasible {at}: {plan_at_load.reason}"
        return (
            _decision(False, running, None, ReplanReason.NOTHING_FEASIBLE, message, load, running_cost),
            reset,
        )
    target, target_cost = Option.of(chosen), chosen.cost_per_1k_requests

    def decision(
        roll: bool, reason: ReplanReason, message: str, ready: float | None = None
    ) -> ReplanDecision:
        return _decision(roll, running, target, reason, message, load, running_cost, target_cost, ready)

    costs = f"{target} ${_money(target_cost)} vs {running} ${_money(running_cost)} per 1k requests {at}"
    if row is None or not row.feasible:
        why = (
            "is not among the options planned"
            if row is None
            else f"is rejected ({'; '.join(row.rejections)})"
        )
        message = f"{running} -> {target} at once: {running} {why}; {costs}"
        return decision(True, ReplanReason.RUNNING_INFEASIBLE, message), ReplanMemory(last_rollover_at=now)
    if target == running:
        message = f"keeping {running}, the planner's choice {at}: ${_money(running_cost)} per 1k requests"
        return decision(False, ReplanReason.ALREADY_CHEAPEST, message), reset
    ours, theirs = row.cost_per_request or 0.0, chosen.cost_per_request or 0.0
    if ours <= theirs * (1.0 + settings.cost_tolerance):
        message = (
            f"keeping {running}: {costs}; {running} costs {_excess(ours, theirs)}, "
            f"within the {settings.cost_tolerance:.0%} tolerance"
        )
        return decision(False, ReplanReason.WITHIN_TOLERANCE, message), reset
    since = memory.since if memory.candidate == target and memory.since is not None else now
    winning = ReplanMemory(target, since, last)
    saving = f"{costs}; {running} costs {_excess(ours, theirs)}, for {now - since:.0f} s"
    window_ends = since + settings.window_s
    cooldown_ends = -math.inf if last is None else last + settings.cooldown
    ready = max(window_ends, cooldown_ends)
    if last is not None and now < cooldown_ends:
        message = (
            f"keeping {running}: {saving}; the last rollover was {now - last:.0f} s ago "
            f"(cooldown {settings.cooldown:.0f} s)"
        )
        return decision(False, ReplanReason.COOLING_DOWN, message, ready), winning
    if now - since < settings.window_s:
        message = f"keeping {running}: {saving} of the {settings.window_s:.0f} s window"
        return decision(False, ReplanReason.WAITING, message, ready), winning
    message = f"{running} -> {target}: {saving}"
    return decision(True, ReplanReason.CHEAPER, message), ReplanMemory(last_rollover_at=now)


def plan_table_rows(plan_at_load: planner.Plan, running: Option | None = None) -> list[dict[str, Any]]:
    """The status table of the plan at the observed load: one row per option, in the plan's order,
    with the keys of ``status.variants[].profiles[]`` (decide's) plus what the load sets (replicas,
    watts, joules per request) and why a row is rejected. Numbers the load moves are rounded to three
    significant figures, so noise in the rate does not rewrite the status."""
    objectives = plan_at_load.objectives
    chosen = None if plan_at_load.chosen is None else Option.of(plan_at_load.chosen)
    rows = []
    for row in plan_at_load.table:
        option = Option.of(row)
        result: dict[str, Any] = {
            "variant": row.variant,
            "hardwareProfile": row.profile,
            "shards": row.shards,
        }
        if row.latency_p95_ms is not None:
            result["latencyP95Ms"] = round(row.latency_p95_ms, 4)
            if objectives is not None:
                result["meetsSlo"] = row.latency_p95_ms <= objectives.slo_p95_ms
        if row.throughput_rps is not None:
            result["throughputRps"] = round(row.throughput_rps, 3)
        if row.cost_per_1k_requests is not None:
            result["replicas"] = row.replicas
            result["watts"] = significant(row.watts)
            result["costPer1kRequests"] = f"{row.cost_per_1k_requests:.3g}"
        if row.energy_per_request_joules is not None:
            result["joulesPerRequest"] = significant(row.energy_per_request_joules)
        result["feasible"] = row.feasible
        result["rejections"] = [reason[:512] for reason in row.rejections[:8]]
        result["chosen"] = option == chosen
        result["running"] = option == running
        rows.append(result)
    return rows


def _decision(
    roll: bool,
    running: Option,
    target: Option | None,
    reason: ReplanReason,
    message: str,
    load: float | None,
    running_cost: float | None = None,
    target_cost: float | None = None,
    ready: float | None = None,
) -> ReplanDecision:
    return ReplanDecision(
        roll, running, target, reason, f"{reason.value}: {message}", load, running_cost, target_cost, ready
    )


def _excess(running: float, target: float) -> str:
    """How much more the running option costs per request than the target, relative to the target
    (the planner's measure: within the tolerance means at most (1 + tolerance) x the cheaper)."""
    if target <= 0:
        return "more" if running > 0 else "the same"
    change = running / target - 1.0
    return f"{change:.0%} more" if change >= 0 else f"{-change:.0%} less"


def _at(load: float | None) -> str:
    if load is None:
        return ""
    return "while idle (0 req/s)" if load <= IDLE_RPS else f"at {load:.3g} req/s"


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def significant(value: float, digits: int = 3) -> float:
    """`value` to `digits` significant figures, what a status shows, so noise does not rewrite it."""
    return 0.0 if value == 0 else float(f"{value:.{digits}g}")
