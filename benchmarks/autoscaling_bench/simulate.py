"""The trace-driven simulation: a fleet of simulated replicas under one autoscaler, tick by tick.

Every 15 s (the policy's tick) the autoscaler sees the metrics of the last interval and sets a
replica count; replicas asked for become ready after the measured pod start time. Per 1 s step:
below saturation the replica's measured latency distribution; at or above it a fluid FIFO queue
(capped at maxQueueSize per replica: beyond it requests are refused) whose wait adds to the
saturated latency. Also: the scenarios of a (model, trace), every policy's run and the re-planning
runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.decision import observations, scaling
from frugal.operator.decision.autoscaling import Targets
from frugal.operator.decision.planner import Option
from frugal.operator.decision.replanning import ReplanSettings
from frugal.operator.decision.scaling import duration_seconds, targets_for
from frugal.operator.decision.tick import RolloverOrder
from frugal.operator.manifests import serving_objects

from .measure import load_example
from .options import ReplanSetup, ServedOption, option_label, option_targets
from .peers import Hpa, Keda, ReactiveLimit, Static, View
from .policy import Frugal, Replanner
from .replica import Replica
from .traces import read_trace

PRICE_PER_KWH = 0.15
TICK_S = 15.0  # the policy's tick and the HPA's sync period
STEP_S = 1.0  # simulation step
# The operator's Prometheus queries: rate(...[1m]) and histogram_quantile over the same window.
METRICS_WINDOW_S = duration_seconds(observations.RATE_WINDOW)
CPU_WINDOW_S = 15.0  # metrics-server's resolution: what the HPA's CPU utilisation averages over
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SLO_TARGET = 0.99  # share of requests within the p95 target
HOLD_DEADLINE_S = float(serving_objects.HOLD_DEADLINE_SECONDS)  # how long the front holds a request
# What the tuned peers try: HPA CPU utilisation targets, KEDA thresholds (share of SLO capacity).
TUNED_CPU_TARGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TUNED_KEDA_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Scenario:
    model: str
    trace: str
    rates: np.ndarray  # arrivals per second, one per simulation step
    replica: Replica
    md: ModelDeploymentSpec
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    max_replicas: int
    static_replicas: int
    profile: str = ""  # the hardware profile the replicas run on


@dataclass
class Result:
    model: str
    trace: str
    policy: str
    replica_hours: float
    energy_kwh: float
    cost_usd: float
    slo_attainment: float
    scale_events: int
    peak_replicas: int
    requests: float
    refused: float
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Fleet:
    """The replicas of one option in a run: the ones serving, or during a rollover the ones starting
    beside them; the pod-seconds they have cost so far."""

    label: str  # the hardware profile (what the tables name)
    replica: Replica
    cost_per_hour: float
    idle_watts: float
    max_watts: float
    pods: list[float]  # ready_at per pod: its length is the replicas asked for
    choice: Option | None = None
    replica_seconds: float = 0.0
    serving_seconds: float = 0.0


def starting_fleet(setup: ReplanSetup, option: ServedOption, count: int, now: float) -> Fleet:
    """A rollover's target: its replicas, asked for now, ready after its pod start."""
    return Fleet(
        option_label(setup, option.choice),
        option.replica,
        option.cost_per_hour,
        option.idle_watts,
        option.max_watts,
        [now + option.replica.start_s] * count,
        option.choice,
    )


def simulate(scenario: Scenario, scaler: Any, initial: int) -> Result:
    """One run of `scaler` on the scenario's replicas from `initial` of them. When `scaler` is frugal
    with a Replanner the operator's tick re-plans at every tick (after the policy) and the run rolls
    over when it says so: the target's replicas start beside the serving ones and cost from that
    moment, the serving option keeps serving and being autoscaled, and once every new pod is ready
    the traffic (and any queue) moves to them and the old ones stop."""
    replanner = scaler.replanner if isinstance(scaler, Frugal) else None
    fleet = Fleet(
        scenario.profile,
        scenario.replica,
        scenario.cost_per_hour,
        scenario.idle_watts,
        scenario.max_watts,
        [0.0] * initial,
        None if replanner is None else replanner.start,
    )
    fleets = [fleet]
    starting: Fleet | None = None  # the new option's replicas during a rollover
    ordered: tuple[ServedOption, RolloverOrder] | None = None  # what they are, and the tick's order
    replica = fleet.replica
    steps = len(scenario.rates)
    bounds_ms = np.array(LATENCY_BUCKETS_S) * 1000.0
    bounds_slo = np.append(bounds_ms, replica.slo_ms)  # the buckets, then the SLO
    max_queue = scenario.md.max_queue_size
    completions = np.zeros(steps)
    buckets = np.zeros((steps, len(bounds_ms) + 1))  # cumulative counts per bucket, +Inf last
    cpu_util = np.zeros(steps)
    pods = fleet.pods
    backlog = within = refused = joules = 0.0
    events = 0
    peak = initial
    tick_every = round(TICK_S / STEP_S)
    metrics_steps = round(METRICS_WINDOW_S / STEP_S)
    cpu_steps = round(CPU_WINDOW_S / STEP_S)
    top = len(replica.grid) - 1
    queue_gauge = inflight_gauge = 0.0
    mean_latency = replica.mean_ms()
    holds = isinstance(scaler, Frugal) and scaler.targets.scale_to_zero_after_s is not None
    held: list[tuple[float, float]] = []  # (arrived at, requests) held by the front at zero replicas
    waits: list[tuple[float, float]] = []  # (seconds waited, requests) of each wake-up
    for s in range(steps):
        t = s * STEP_S
        rate = scenario.rates[s]
        if starting is not None and all(at <= t for at in starting.pods):
            # The new option is ready: the traffic, and the queue, move to it; the old one stops.
            fleet.pods.clear()
            fleet, starting = starting, None
            if ordered is not None and isinstance(scaler, Frugal):
                scaler.serve(*ordered)
                ordered = None
            replica, pods, mean_latency = fleet.replica, fleet.pods, fleet.replica.mean_ms()
        ready = sum(1 for at in pods if at <= t)
        arrivals = rate * STEP_S
        fleet.replica_seconds += len(pods) * STEP_S
        fleet.serving_seconds += STEP_S
        if ready == 0:
            if holds:  # the front holds what arrives at zero, up to its bound and deadline
                room = max(0.0, max_queue - sum(n for _, n in held))
                held.append((t, min(arrivals, room)))
                refused += max(0.0, arrivals - room)
                expired = [n for at, n in held if t - at >= HOLD_DEADLINE_S]
                refused += sum(expired)
                held = [(at, n) for at, n in held if t - at < HOLD_DEADLINE_S]
            else:
                refused += arrivals
            queue_gauge = inflight_gauge = 0.0
        elif held:  # the first replica is ready: the held requests are answered, all late
            # (the wait was at the front: the replica's own histogram sees ordinary requests)
            late = sum(n for _, n in held)
            cdf = replica.cdf(replica.index(late / STEP_S / ready), bounds_ms)
            completions[s] += late
            buckets[s, :-1] += late * cdf
            buckets[s, -1] += late
            waits += [(t - at, n) for at, n in held]
            held = []
        mu = ready * replica.saturation_rps
        if ready == 0:
            pass
        elif backlog <= 0.0 and rate < mu:
            k = replica.index(rate / ready)
            cdf = replica.cdf(k, bounds_slo)
            within += arrivals * cdf[-1]
            buckets[s, :-1] += arrivals * cdf[:-1]
            buckets[s, -1] += arrivals
            completions[s] += arrivals
            cpu_util[s] = replica.cpu[k] / replica.cpu_saturation
            queue_gauge = rate * max(0.0, mean_latency[k] - mean_latency[0]) / 1000.0
            inflight_gauge = rate * mean_latency[k] / 1000.0
        else:
            cap = ready * max_queue
            end = backlog + (rate - mu) * STEP_S
            lost = max(0.0, end - cap)
            accepted = arrivals - lost
            middle = min(cap, max(0.0, backlog + (rate - mu) * STEP_S / 2.0))
            wait_ms = middle / mu * 1000.0
            cdf = replica.cdf(top, bounds_slo, wait_ms)
            within += accepted * cdf[-1]
            refused += lost
            buckets[s, :-1] += accepted * cdf[:-1]
            buckets[s, -1] += accepted
            completions[s] += min(backlog + accepted, mu * STEP_S)
            backlog = min(cap, max(0.0, end))
            cpu_util[s] = 1.0
            queue_gauge = backlog + rate * max(0.0, mean_latency[top] - mean_latency[0]) / 1000.0
            inflight_gauge = backlog + ready * replica.batch[top]
        busy = min(ready, completions[s] / STEP_S / replica.saturation_rps) if ready else 0.0
        joules += (len(pods) * fleet.idle_watts + busy * (fleet.max_watts - fleet.idle_watts)) * STEP_S
        if starting is not None:  # started, not serving yet: idle power
            starting.replica_seconds += len(starting.pods) * STEP_S
            joules += len(starting.pods) * starting.idle_watts * STEP_S
        if (s + 1) % tick_every:
            continue
        now = t + STEP_S
        first = max(0, s + 1 - metrics_steps)
        window = (s + 1 - first) * STEP_S
        served = float(completions[first : s + 1].sum()) / window
        counts = buckets[first : s + 1].sum(axis=0)
        p95 = observations.histogram_quantile(
            0.95, [*zip(LATENCY_BUCKETS_S, counts[:-1], strict=True), (math.inf, counts[-1])]
        )
        k = replica.index(served / ready) if ready else 0
        requested = len(pods)
        values = {
            "request_rate": served,
            "queue_depth": queue_gauge,
            "inflight": inflight_gauge,
            "mean_batch_size": float(replica.batch[k]),
            "watts": ready * fleet.idle_watts
            + min(ready, served / replica.saturation_rps) * (fleet.max_watts - fleet.idle_watts),
        }
        if p95 is not None:
            values["latency_p95_seconds"] = p95
        observation = observations.observation(
            "default",
            scenario.md.model_name,
            [requested],
            [ready],
            {("default", scenario.md.model_name, 0): observations.ShardSample(values)} if ready else {},
            held_requests=sum(n for _, n in held),
        )
        cpu = float(cpu_util[max(0, s + 1 - cpu_steps) : s + 1].mean())
        view = View(now, requested, ready, observation, served, cpu, float(rate), starting is not None)
        wanted = int(scaler.decide(view))
        if wanted != requested:
            events += 1
            if wanted > requested:
                pods += [now + replica.start_s] * (wanted - requested)
            else:
                pods[:] = sorted(pods)[:wanted]  # the newest (starting) pods go first
        if replanner is not None and starting is None and scaler.rollover is not None:
            # the tick re-planned after the policy, at the rate the policy saw, and rolled over
            option, count = replanner.ordered(scaler.rollover, now)
            ordered = option, scaler.rollover
            starting = starting_fleet(replanner.setup, option, count, now)
            fleets.append(starting)
        starting_pods = 0 if starting is None else len(starting.pods)
        peak = max(peak, len(pods) + starting_pods)
    total = float(scenario.rates.sum() * STEP_S)
    energy_kwh = joules / 3.6e6
    replica_hours = sum(f.replica_seconds for f in fleets) / 3600.0
    cost_usd = sum(f.replica_seconds / 3600.0 * f.cost_per_hour for f in fleets)
    notes: dict[str, Any] = {}
    if isinstance(scaler, Frugal):
        notes = {"reasons": dict(scaler.reasons), "capacity_rps_end": scaler.policy_memory.capacity_rps}
    if waits:
        held_total = sum(n for _, n in waits)
        notes["held_requests"] = held_total
        notes["mean_wake_wait_s"] = sum(w * n for w, n in waits) / held_total if held_total else 0.0
    if replanner is not None:
        serving: dict[str, float] = {}
        for f in fleets:
            serving[f.label] = serving.get(f.label, 0.0) + f.serving_seconds / 3600.0
        notes |= {
            "rollovers": replanner.rollovers,
            "serving_hours": dict(serving),
            "ended_on": str(fleet.choice),
            "replan_reasons": dict(replanner.reasons),
            "replan_log": replanner.messages[:40],
        }
    return Result(
        scenario.model,
        scenario.trace,
        scaler.name,
        replica_hours,
        energy_kwh,
        cost_usd + energy_kwh * PRICE_PER_KWH,
        within / total if total else 1.0,
        events,
        peak,
        total,
        refused,
        notes,
    )


def on_option(scenario: Scenario, setup: ReplanSetup, option: ServedOption) -> Scenario:
    """The scenario with `option`'s replicas, price and power."""
    return dataclasses.replace(
        scenario,
        replica=option.replica,
        cost_per_hour=option.cost_per_hour,
        idle_watts=option.idle_watts,
        max_watts=option.max_watts,
        profile=option_label(setup, option.choice),
    )


def scenario_for(
    model: str, data: dict[str, Any], trace: Path, unit: str
) -> tuple[Scenario, Targets, dict[str, Any]]:
    md, hp = load_example(model)
    replica = Replica.from_measurements(data, md.slo_p95_ms)
    t, values = read_trace(trace)
    scale = replica.slo_capacity_rps if unit == "capacity" else 1.0
    steps = np.arange(0.0, t[-1], STEP_S) + STEP_S / 2
    rates = np.interp(steps, t, values) * scale
    peak = float(rates.max())
    static = max(1, math.ceil(peak / replica.slo_capacity_rps - 1e-9))
    max_replicas = max(8, 3 * static)
    scenario = Scenario(
        model,
        trace.stem,
        rates,
        replica,
        md,
        float(hp.cost_per_hour),
        hp.idle_watts,
        hp.max_watts,
        max_replicas,
        static,
        hp.name,
    )
    targets = dataclasses.replace(
        targets_for(md, hp, replica.capacity_rps, metrics_window_s=METRICS_WINDOW_S),
        min_replicas=1,
        max_replicas=max_replicas,
        stabilization_window_s=60.0,
        cap_watts=None,
        price_per_kwh=PRICE_PER_KWH,
    )
    info = {"peak_rps": peak, "static_replicas": static, "max_replicas": max_replicas, "scale": scale}
    return scenario, targets, info


def run_all(
    model: str,
    data: dict[str, Any],
    trace: Path,
    args: argparse.Namespace,
    setups: tuple[ReplanSetup, ReplanSetup] | None = None,
) -> tuple[list[Result], dict[str, Any], list[Result]]:
    """Every policy on one (model, trace); with `setups` (priced with the profiled and with the
    measured throughput), the re-planning rows too (the third list)."""
    scenario, targets, info = scenario_for(model, data, trace, args.trace_unit)
    replica = scenario.replica
    initial = max(1, math.ceil(scenario.rates[0] / (0.7 * replica.slo_capacity_rps)))
    keda_threshold = args.keda_fraction * replica.slo_capacity_rps
    info |= {"keda_threshold_rps": keda_threshold, "hpa_cpu_target": args.hpa_cpu_target, "initial": initial}
    high = scenario.max_replicas
    md = scenario.md
    scalers: list[Any] = [
        Static(scenario.static_replicas),
        Hpa(args.hpa_cpu_target, 1, high),
        Keda(keda_threshold, 1, high),
        Frugal(md, targets),
        # The same policy told the replica's measured saturation throughput instead of the profiling
        # Job's number: separates the policy from its capacity prior.
        Frugal(
            md, dataclasses.replace(targets, capacity_rps=replica.saturation_rps), "frugal, measured capacity"
        ),
        ReactiveLimit(replica.slo_capacity_rps, targets.target_utilisation, 1, high),
        # minReplicas 0 behind the front: to zero after 300 s without requests (the CRD's default).
        Frugal(
            md,
            dataclasses.replace(
                targets, min_replicas=0, scale_to_zero_after_s=float(scaling.DEFAULT_SCALE_TO_ZERO_SECONDS)
            ),
            "frugal, scale to zero",
        ),
    ]
    results = []
    for scaler in scalers:
        start = scenario.static_replicas if isinstance(scaler, Static) else initial
        results.append(simulate(scenario, scaler, start))
        if isinstance(scaler, Frugal):
            info[f"{scaler.name} scale log"] = scaler.messages[:60]
    # The peers with the setting a user would pick after trying: the cheapest that keeps >= 99% of
    # requests within the SLO, else the one with the best attainment.
    for label, make, settings in (
        ("HPA-style", lambda v: Hpa(v, 1, high), TUNED_CPU_TARGETS),
        ("KEDA-style", lambda v: Keda(v * replica.slo_capacity_rps, 1, high), TUNED_KEDA_FRACTIONS),
    ):
        tried = [(v, simulate(scenario, make(v), initial)) for v in settings]
        meeting = [(v, r) for v, r in tried if r.slo_attainment >= SLO_TARGET]
        value, best = (
            min(meeting, key=lambda x: x[1].cost_usd)
            if meeting
            else max(tried, key=lambda x: x[1].slo_attainment)
        )
        best.policy = f"{label}, tuned"
        best.notes = {"setting": value, "meets_slo": bool(meeting)}
        info[f"{label} tuned setting"] = value
        results.append(best)
    if setups is None:
        return results, info, []
    window = scaling.replan_settings(scenario.md, window_s=args.replan_window)
    return results, info, run_replanning(scenario, targets, setups[0], results, window, setups[1])


def run_replanning(
    scenario: Scenario,
    targets: Targets,
    setup: ReplanSetup,
    results: list[Result],
    settings: ReplanSettings,
    measured_setup: ReplanSetup | None = None,
) -> list[Result]:
    """The re-planning rows of one (model, trace): frugal fixed on each hardware profile (the measured
    one is the main table's "frugal" row), then with re-planning, from the deploy-time plan's choice;
    and with minReplicas 0 where the trace has idle time; with `measured_setup`, re-planning priced
    with the replicas' measured throughput too."""
    group = {r.policy: r for r in results}
    measured = setup.options[setup.measured]
    other = setup.options[Option(setup.measured.variant, setup.other.profile, setup.measured.shards)]
    asleep = dataclasses.replace(
        targets, min_replicas=0, scale_to_zero_after_s=float(scaling.DEFAULT_SCALE_TO_ZERO_SECONDS)
    )

    def initial(option: ServedOption) -> int:
        return max(1, math.ceil(scenario.rates[0] / (0.7 * option.replica.slo_capacity_rps)))

    fixed = dataclasses.replace(group["frugal"], policy=f"frugal, fixed {measured.choice.profile}")
    rows = [fixed]
    scaler = Frugal(scenario.md, option_targets(targets, other), f"frugal, fixed {other.choice.profile}")
    rows.append(simulate(on_option(scenario, setup, other), scaler, initial(other)))
    runs = [("frugal + re-planning", targets)]
    if float(scenario.rates.min()) <= 0.0:  # idle time: scale to zero means something
        zero = group["frugal, scale to zero"]
        rows.append(
            dataclasses.replace(zero, policy=f"frugal, fixed {measured.choice.profile}, scale to zero")
        )
        runs.append(("frugal + re-planning, scale to zero", asleep))
    plans = [(name, run_targets, setup) for name, run_targets in runs]
    if measured_setup is not None:
        plans.append(("frugal + re-planning, measured capacity", targets, measured_setup))
    for name, run_targets, priced in plans:
        start = priced.options[priced.deployed]
        replanner = Replanner(priced, run_targets, settings, start.choice)
        scaler = Frugal(scenario.md, option_targets(run_targets, start), name, replanner)
        rows.append(simulate(on_option(scenario, priced, start), scaler, initial(start)))
    return rows
