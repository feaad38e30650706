"""The autoscaling policy (pure): what each shard's replica count should be, given what the metrics say.

:func:`recommend` is called once per autoscaler tick, by the operator in a cluster, by `frugal up`
on this machine and by ``benchmarks/autoscaling.py`` on recorded traces: the same function everywhere.
It takes one :class:`Observation` (per shard: request rate, p95 latency, queue depth, in-flight
requests, mean batch size, watts, replicas), the :class:`Targets` from the spec and the plan, and the
:class:`Memory` the previous tick returned; it gives a :class:`Recommendation` and the next Memory.

How it decides, per shard:

* **Capacity** is a replica's throughput within the SLO. It starts from the profiling Job's
  measurement and is refined online, but only from a *steady* shard — one whose ready count has not
  changed for ``metrics_window_s``, the window its rates are computed over: otherwise the rate per
  ready replica mixes counts and lags a spike, and the estimate would collapse. A steady shard that
  is the bottleneck while the SLO is breached (or whose queue grows) cannot serve more than it did
  per replica (the estimate drops to that); a steady shard comfortably inside the SLO serving more
  per replica than estimated raises it; and a steady shard at its utilisation target with a p95
  under ``probe_below`` of the SLO and no queue *probes*: the estimate rises by ``probe_step`` once per window, so
  a profiled number that is too low (profiling measures the runtime, not HTTP) does not cost
  replicas forever. A probe that overshoots ends in a breach or a growing queue, which lowers the
  estimate to what a replica served then and makes the estimate that led there a ceiling.
* **Load**: enough replicas for the request rate at ``target_utilisation`` of capacity.
* **Latency above the SLO** scales the bottleneck shard (the one with the longest queue per replica,
  then the highest utilisation) at once, in proportion to the breach — once: while the replicas it
  asked for are starting or have not yet served a whole window, the windowed p95 still shows the
  breach they answer, and stepping again would compound. A shard whose queue grows scales too, by
  the replicas that the queue's growth per second needs. Stages that are not the bottleneck keep
  their count: a sharded pipeline scales where it is slow, not everywhere.
* **Scale-down** follows the HPA's stabilisation: the count is the highest recommended within the
  last ``stabilization_window_s``, and it falls by at most ``max_scale_down_fraction`` per tick.
  Flapping input therefore never makes flapping replicas: a high tick holds the count for a window.
* **Power cap**: when the replicas would draw more than ``cap_watts``, replicas are handed out one at
  a time to the most loaded shard while they fit (the allocation that keeps the worst utilisation
  lowest inside the cap), and the reason says ``PowerCapped``.
* **Stale or missing metrics never scale down**: the counts hold, and the reason says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class ScaleReason(StrEnum):
    """Why a shard has the count it has; the order is the priority when shards disagree."""

    METRICS_STALE = "MetricsStale"
    WAKING = "Waking"
    POWER_CAPPED = "PowerCapped"
    AT_MAXIMUM = "AtMaximum"
    LATENCY_ABOVE_SLO = "LatencyAboveSLO"
    QUEUE_GROWING = "QueueGrowing"
    LOAD_ABOVE_CAPACITY = "LoadAboveCapacity"
    HEADROOM = "Headroom"
    STABILIZING = "Stabilizing"
    IDLE = "Idle"
    STEADY = "Steady"


REASON_PRIORITY = tuple(ScaleReason)
SCALE_UP_REASONS = frozenset(
    {ScaleReason.LATENCY_ABOVE_SLO, ScaleReason.QUEUE_GROWING, ScaleReason.LOAD_ABOVE_CAPACITY}
)


@dataclass(frozen=True)
class ShardObservation:
    """One shard, summed over its replicas, over the last metrics window."""

    request_rate: float = 0.0
    latency_p95_ms: float | None = None
    queue_depth: float = 0.0
    inflight: float = 0.0
    mean_batch_size: float | None = None
    watts: float | None = None
    replicas: int = 1
    ready: int = 1


@dataclass(frozen=True)
class Observation:
    """Every shard of one ModelDeployment, front first. ``stale`` says why the numbers cannot be used."""

    shards: tuple[ShardObservation, ...]
    stale: str | None = None
    # Requests a front holds because no replica runs: the demand that wakes a model from zero.
    held_requests: float = 0.0

    @property
    def demand(self) -> bool:
        """Whether anything asks for this model: held requests, or work at any shard."""
        return self.held_requests > 0 or any(
            s.request_rate > 0 or s.inflight > 0 or s.queue_depth > 0 for s in self.shards
        )

    @property
    def latency_p95_ms(self) -> float | None:
        """End to end: the front shard's request duration includes every later stage."""
        return self.shards[0].latency_p95_ms if self.shards else None

    @property
    def request_rate(self) -> float:
        return self.shards[0].request_rate if self.shards else 0.0


@dataclass(frozen=True)
class Targets:
    """What the spec and the plan say: the SLO, bounds, prices and the profiled capacity."""

    slo_p95_ms: float
    capacity_rps: float
    min_replicas: int = 1
    max_replicas: int = 4
    stabilization_window_s: float = 60.0
    cap_watts: float | None = None
    cost_per_replica_hour: float = 0.0
    price_per_kwh: float = 0.0
    idle_watts: float = 0.0
    max_watts: float = 0.0
    target_utilisation: float = 0.7
    max_scale_down_fraction: float = 0.5
    # A queue per ready replica above this many requests that is still growing scales the shard up.
    queue_per_replica: float = 4.0
    # Requests in flight per replica (rate x p95) from which a slow p95 counts as contention.
    busy_concurrency: float = 0.5
    # The window the observation's rates and p95 are computed over (the operator's rate window).
    metrics_window_s: float = 60.0
    # How much a steady shard comfortably inside the SLO raises its capacity estimate per window.
    probe_step: float = 0.2
    # ... only while its p95 is below this share of the SLO (latency rises well before the knee).
    probe_below: float = 0.25
    # With min_replicas 0: every shard goes to zero after this long without demand (None: never).
    # Only callers with a wake-up path (a front that holds requests) set it.
    scale_to_zero_after_s: float | None = None

    def __post_init__(self) -> None:
        if not self.slo_p95_ms > 0 or not self.capacity_rps > 0:
            raise ValueError("autoscaling needs a latency target and a capacity greater than 0")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError("max_replicas must be at least max(1, min_replicas)")

    @property
    def floor(self) -> int:
        """The fewest replicas a shard runs (scale to zero is not this policy's decision)."""
        return max(1, self.min_replicas)


@dataclass(frozen=True)
class Memory:
    """What one tick hands to the next: refined capacities, recent recommendations, last queues."""

    capacity_rps: tuple[float, ...] = ()
    recommendations: tuple[tuple[float, tuple[int, ...]], ...] = ()
    queue_depth: tuple[float, ...] = ()
    last_demand_at: float | None = None
    # Per shard: the ready count last seen, since when it has not changed, and when the tick was.
    ready: tuple[int, ...] = ()
    steady_since: tuple[float, ...] = ()
    probed_at: tuple[float, ...] = ()
    at: float | None = None
    # Per shard: what a replica served the last time it was overloaded; probes stop below it.
    ceiling_rps: tuple[float, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    replicas: tuple[int, ...]
    reasons: tuple[ScaleReason, ...]
    reason: ScaleReason
    message: str
    cost_per_hour: float
    watts: float
    capacity_rps: tuple[float, ...] = field(default=())

    @property
    def total_replicas(self) -> int:
        return sum(self.replicas)


def recommend(
    observation: Observation | None,
    current: Sequence[int],
    targets: Targets,
    memory: Memory,
    now: float,
) -> tuple[Recommendation, Memory]:
    """Desired replicas per shard for `current` counts, and the memory for the next tick."""
    shards = len(current)
    if observation is None or observation.stale is not None or len(observation.shards) != shards:
        why = _stale_reason(observation, shards)
        # Without numbers nothing moves on load, but the bounds are the spec's, not a metric: an edited
        # minReplicas or maxReplicas still applies.
        held = tuple(min(max(n, targets.min_replicas), targets.max_replicas) for n in current)
        watts = sum(_replica_watts(targets, n, 0.0, None) for n in held)
        return (
            Recommendation(
                held,
                (ScaleReason.METRICS_STALE,) * shards,
                ScaleReason.METRICS_STALE,
                f"holding {_counts(held)}: {why}",
                _cost_per_hour(targets, held, watts),
                watts,
                memory.capacity_rps or (targets.capacity_rps,) * shards,
            ),
            memory,
        )
    if targets.scale_to_zero_after_s is not None and targets.min_replicas == 0:
        memory = _woken_elsewhere(current, memory, now)
        asleep = _zero_or_wake(observation, current, targets, memory, now)
        if asleep is not None:
            return asleep
    since = steady_since(observation, memory, now, targets)
    steady = tuple(now - t >= targets.metrics_window_s for t in since)
    capacity, probed, ceiling = refine_capacity(observation, targets, memory, steady, now)
    wanted, reasons = _wanted(observation, current, targets, capacity, memory, steady, now)
    # With no history (a new deployment, a restarted operator) the running count stands for the past
    # window, so nothing scales down before a whole window of evidence.
    past = memory.recommendations or ((now, tuple(current)),)
    history = _remember(past, now, wanted, targets.stabilization_window_s)
    replicas, reasons = _stabilise(current, wanted, reasons, history, targets)
    replicas, reasons = _bound(current, replicas, wanted, reasons, targets)
    replicas, capped, watts = _within_cap(observation, replicas, targets, capacity)
    if capped:
        reasons = tuple(ScaleReason.POWER_CAPPED if c else r for r, c in zip(reasons, capped, strict=True))
    overall = min(reasons, key=REASON_PRIORITY.index)
    message = _message(observation, current, replicas, overall, targets, watts)
    next_memory = Memory(
        capacity,
        history,
        tuple(s.queue_depth for s in observation.shards),
        _last_demand(observation, memory, now),
        tuple(s.ready for s in observation.shards),
        since,
        probed,
        now,
        ceiling,
    )
    recommendation = Recommendation(
        replicas, reasons, overall, message, _cost_per_hour(targets, replicas, watts), watts, capacity
    )
    return recommendation, next_memory


def _last_demand(observation: Observation, memory: Memory, now: float) -> float:
    if observation.demand or memory.last_demand_at is None:
        return now
    return memory.last_demand_at


def _woken_elsewhere(current: Sequence[int], memory: Memory, now: float) -> Memory:
    """A model this policy put to sleep that runs again was woken by its front (which scales the live
    shards from 0 to 1 itself when it holds a request): that wake is demand, seen now, so the idle
    window starts again instead of the model going back to zero before the front's request is served
    or its held requests reach the metrics."""
    last = memory.recommendations[-1][1] if memory.recommendations else None
    if last is None or any(last) or not any(current):
        return memory
    return replace(memory, last_demand_at=now)


def _zero_or_wake(
    observation: Observation, current: Sequence[int], targets: Targets, memory: Memory, now: float
) -> tuple[Recommendation, Memory] | None:
    """Scale to zero after ``scale_to_zero_after_s`` without demand; from zero, wake every shard at
    once on the first demand (a pipeline needs all its stages). None: the usual rules apply."""
    shards = len(current)
    last = _last_demand(observation, memory, now)
    capacity = memory.capacity_rps if len(memory.capacity_rps) == shards else (targets.capacity_rps,) * shards
    asleep = all(n == 0 for n in current)
    if asleep and observation.demand:
        rate = max(observation.held_requests, observation.request_rate)
        replicas = tuple(
            max(1, min(targets.max_replicas, math.ceil(rate / (c * targets.target_utilisation) - 1e-9)))
            for c in capacity
        )
        reason, what = ScaleReason.WAKING, f"{observation.held_requests:.0f} request(s) held at zero replicas"
    elif asleep or (not observation.demand and now - last >= (targets.scale_to_zero_after_s or 0.0)):
        replicas = (0,) * shards
        reason, what = ScaleReason.IDLE, f"no requests for {now - last:.0f} s"
    else:
        return None
    change = _counts(replicas) if tuple(current) == replicas else f"{_counts(current)} -> {_counts(replicas)}"
    watts = sum(_replica_watts(targets, n, 0.0, None) for n in replicas)
    recommendation = Recommendation(
        replicas, (reason,) * shards, reason, f"{reason.value}: {change}; {what}",
        _cost_per_hour(targets, replicas, watts), watts, capacity,
    )  # fmt: skip
    # Waking clears the window: the count before sleeping says nothing about the load that wakes it.
    history = ((now, replicas),)
    queues = tuple(s.queue_depth for s in observation.shards)
    return recommendation, Memory(capacity, history, queues, last)


def steady_since(observation: Observation, memory: Memory, now: float, targets: Targets) -> tuple[float, ...]:
    """Per shard, since when its ready count has not changed. With no history (a new deployment, a
    restarted operator) the running count stands for the past window, as it does for scale-down."""
    shards = observation.shards
    if len(memory.ready) != len(shards) or len(memory.steady_since) != len(shards):
        return (now - targets.metrics_window_s,) * len(shards)
    return tuple(
        since if shard.ready == before else now
        for shard, before, since in zip(shards, memory.ready, memory.steady_since, strict=True)
    )


def refine_capacity(
    observation: Observation,
    targets: Targets,
    memory: Memory,
    steady: Sequence[bool] | None = None,
    now: float = 0.0,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Per-replica throughput within the SLO of each shard, corrected by what the metrics of steady
    shards show; when each shard last probed upwards; and the rate per replica probes stay below."""
    shards = observation.shards
    known = (
        memory.capacity_rps
        if len(memory.capacity_rps) == len(shards)
        else (targets.capacity_rps,) * len(shards)
    )
    steady = tuple(steady) if steady is not None else (True,) * len(shards)
    # A probe needs a whole observed window at the target, never an assumed history: none before it.
    probed = memory.probed_at if len(memory.probed_at) == len(shards) else (now,) * len(shards)
    ceilings = memory.ceiling_rps if len(memory.ceiling_rps) == len(shards) else (math.inf,) * len(shards)
    latency = observation.latency_p95_ms
    bottleneck = bottleneck_shard(observation, known)
    previous_queue = memory.queue_depth if len(memory.queue_depth) == len(shards) else None
    refined, probes, tops = [], [], []
    for index, (shard, capacity) in enumerate(zip(shards, known, strict=True)):
        last_probe, ceiling = probed[index], ceilings[index]
        if not steady[index] or shard.ready <= 0 or shard.request_rate <= 0 or latency is None:
            refined.append(capacity)
            probes.append(last_probe)
            tops.append(ceiling)
            continue
        served = shard.request_rate / shard.ready
        growing = _queue_growing(shard, None if previous_queue is None else previous_queue[index], targets)
        breaching = (
            latency > targets.slo_p95_ms and index == bottleneck and is_busy(shard, latency, targets)
        )
        overloaded = breaching or growing
        if overloaded and served < capacity:
            # The estimate that led here was too high: later probes stay below it.
            capacity, ceiling = served, min(ceiling, capacity)
        elif latency <= 0.8 * targets.slo_p95_ms and served > capacity:
            capacity = served
        elif (
            not overloaded
            and latency <= targets.probe_below * targets.slo_p95_ms
            and shard.queue_depth <= long_queue(shard, targets)
            # at its utilisation target (within rounding), not holding a surplus the window keeps
            and served >= 0.9 * targets.target_utilisation * capacity
            and now - last_probe >= targets.metrics_window_s
            and capacity < ceiling
        ):
            capacity = min(ceiling, capacity * (1.0 + targets.probe_step))
            last_probe = now
        low, high = targets.capacity_rps / 50.0, targets.capacity_rps * 50.0
        refined.append(min(high, max(low, capacity)))
        probes.append(last_probe)
        tops.append(ceiling)
    return tuple(refined), tuple(probes), tuple(tops)


def is_busy(shard: ShardObservation, latency_ms: float, targets: Targets) -> bool:
    """Whether a shard's replicas contend for work (a queue, or by Little's law more than
    ``busy_concurrency`` requests in flight per replica): only then does a slow p95 say that more
    replicas would help, rather than that a few requests were slow."""
    if shard.queue_depth > 0:
        return True
    own = shard.latency_p95_ms if shard.latency_p95_ms is not None else latency_ms
    return shard.request_rate / max(1, shard.ready) * own / 1000.0 >= targets.busy_concurrency


def long_queue(shard: ShardObservation, targets: Targets) -> float:
    """The queue beyond which a shard is behind: ``queue_per_replica`` per ready replica, or two
    batches each where the server batches (a batch forming and one waiting is how batching works)."""
    per_replica = max(targets.queue_per_replica, 2.0 * (shard.mean_batch_size or 0.0))
    return per_replica * max(1, shard.ready)


def _queue_growing(shard: ShardObservation, previous: float | None, targets: Targets) -> bool:
    return (
        previous is not None
        and shard.queue_depth > previous
        and shard.queue_depth > long_queue(shard, targets)
    )


def bottleneck_shard(observation: Observation, capacity: Sequence[float]) -> int:
    """The stage that limits the pipeline: the longest queue per replica, then the highest utilisation."""

    def load(index: int) -> tuple[float, float]:
        shard = observation.shards[index]
        ready = max(1, shard.ready)
        return shard.queue_depth / ready, shard.request_rate / (ready * max(capacity[index], 1e-9))

    return max(range(len(observation.shards)), key=load)


def _wanted(
    observation: Observation,
    current: Sequence[int],
    targets: Targets,
    capacity: Sequence[float],
    memory: Memory,
    steady: Sequence[bool] | None = None,
    now: float = 0.0,
) -> tuple[tuple[int, ...], tuple[ScaleReason, ...]]:
    """What each shard needs this tick, before stabilisation and bounds."""
    latency = observation.latency_p95_ms
    breach = latency is not None and latency > targets.slo_p95_ms
    bottleneck = bottleneck_shard(observation, capacity)
    previous_queue = memory.queue_depth if len(memory.queue_depth) == len(current) else None
    steady = tuple(steady) if steady is not None else (True,) * len(current)
    elapsed = now - memory.at if memory.at is not None and now > memory.at else None
    wanted, reasons = [], []
    for index, shard in enumerate(observation.shards):
        now_count = current[index]
        for_load = math.ceil(shard.request_rate / (capacity[index] * targets.target_utilisation) - 1e-9)
        need, reason = max(targets.floor, for_load), ScaleReason.LOAD_ABOVE_CAPACITY
        # A breach steps once: replicas asked for and not yet ready a whole window answer it already.
        settled = steady[index] and shard.ready >= now_count
        if (
            breach
            and settled
            and index == bottleneck
            and latency is not None
            and is_busy(shard, latency, targets)
        ):
            step = max(now_count + 1, math.ceil(now_count * latency / targets.slo_p95_ms))
            if step >= need:
                need, reason = step, ScaleReason.LATENCY_ABOVE_SLO
        before = None if previous_queue is None else previous_queue[index]
        if _queue_growing(shard, before, targets) and reason is not ScaleReason.LATENCY_ABOVE_SLO:
            # The queue's growth per second is demand the replicas do not serve: add what carries it.
            growth = (shard.queue_depth - (before or 0.0)) / elapsed if elapsed else 0.0
            extra = max(1, math.ceil(growth / (capacity[index] * targets.target_utilisation) - 1e-9))
            need, reason = max(need, now_count + extra), ScaleReason.QUEUE_GROWING
        if need < now_count:
            reason = ScaleReason.HEADROOM
        elif need == now_count and reason is ScaleReason.LOAD_ABOVE_CAPACITY:
            reason = ScaleReason.STEADY
        wanted.append(need)
        reasons.append(reason)
    return tuple(wanted), tuple(reasons)


def _remember(
    history: tuple[tuple[float, tuple[int, ...]], ...], now: float, wanted: tuple[int, ...], window: float
) -> tuple[tuple[float, tuple[int, ...]], ...]:
    kept = tuple((t, r) for t, r in history if now - t < window and len(r) == len(wanted))
    return (*kept, (now, wanted))


def _stabilise(
    current: Sequence[int],
    wanted: tuple[int, ...],
    reasons: tuple[ScaleReason, ...],
    history: tuple[tuple[float, tuple[int, ...]], ...],
    targets: Targets,
) -> tuple[tuple[int, ...], tuple[ScaleReason, ...]]:
    """Up at once; down only to the highest count recommended within the window, in bounded steps."""
    replicas, final = [], []
    for index, (now_count, need, reason) in enumerate(zip(current, wanted, reasons, strict=True)):
        if need >= now_count:
            replicas.append(need)
            final.append(reason)
            continue
        highest = max(r[index] for _, r in history)
        step = max(1, math.floor(now_count * targets.max_scale_down_fraction))
        target = max(need, highest, now_count - step)
        replicas.append(min(now_count, target))
        final.append(ScaleReason.STABILIZING if target >= now_count else ScaleReason.HEADROOM)
    return tuple(replicas), tuple(final)


def _bound(
    current: Sequence[int],
    replicas: tuple[int, ...],
    wanted: tuple[int, ...],
    reasons: tuple[ScaleReason, ...],
    targets: Targets,
) -> tuple[tuple[int, ...], tuple[ScaleReason, ...]]:
    """Clamp to [floor, max]. A scale-up stopped by the maximum keeps its cause until the count is
    already at the maximum; from then on the reason is AtMaximum."""
    bounded, final = [], []
    for now_count, count, need, reason in zip(current, replicas, wanted, reasons, strict=True):
        count = max(targets.floor, min(targets.max_replicas, count))
        if need > targets.max_replicas and reason in SCALE_UP_REASONS and now_count >= targets.max_replicas:
            reason = ScaleReason.AT_MAXIMUM
        bounded.append(count)
        final.append(reason)
    return tuple(bounded), tuple(final)


def _utilisation(rate: float, replicas: int, capacity: float) -> float:
    return 1.0 if replicas <= 0 else min(1.0, rate / (replicas * max(capacity, 1e-9)))


def _replica_watts(targets: Targets, replicas: int, rate: float, capacity: float | None) -> float:
    """Watts of `replicas` serving `rate`: each idles at idle_watts, the work adds up to max_watts."""
    if replicas <= 0:
        return 0.0
    busy = 0.0 if capacity is None else _utilisation(rate, replicas, capacity) * replicas
    return replicas * targets.idle_watts + busy * (targets.max_watts - targets.idle_watts)


def _within_cap(
    observation: Observation, replicas: tuple[int, ...], targets: Targets, capacity: Sequence[float]
) -> tuple[tuple[int, ...], tuple[bool, ...], float]:
    """The counts that fit `cap_watts` (replicas go to the most loaded shard first), which shards lost
    replicas to the cap, and the predicted watts."""
    rates = [s.request_rate for s in observation.shards]

    def watts(counts: Sequence[int]) -> float:
        return sum(_replica_watts(targets, n, r, c) for n, r, c in zip(counts, rates, capacity, strict=True))

    if targets.cap_watts is None or watts(replicas) <= targets.cap_watts:
        return replicas, (False,) * len(replicas), watts(replicas)
    counts = [min(targets.floor, n) for n in replicas]
    while True:
        open_shards = [i for i, n in enumerate(counts) if n < replicas[i]]
        if not open_shards:
            break
        busiest = max(open_shards, key=lambda i: rates[i] / (counts[i] * max(capacity[i], 1e-9)))
        trial = [*counts]
        trial[busiest] += 1
        if watts(trial) > targets.cap_watts:
            break
        counts = trial
    capped = tuple(c < n for c, n in zip(counts, replicas, strict=True))
    return tuple(counts), capped, watts(counts)


def _cost_per_hour(targets: Targets, replicas: Sequence[int], watts: float) -> float:
    return sum(replicas) * targets.cost_per_replica_hour + watts / 1000.0 * targets.price_per_kwh


def _stale_reason(observation: Observation | None, shards: int) -> str:
    if observation is None:
        return "no metrics were read"
    if observation.stale is not None:
        return observation.stale
    return f"metrics cover {len(observation.shards)} shard(s), the deployment has {shards}"


def _counts(replicas: Sequence[int]) -> str:
    return "/".join(str(n) for n in replicas) + " replicas"


def _message(
    observation: Observation,
    current: Sequence[int],
    replicas: Sequence[int],
    reason: ScaleReason,
    targets: Targets,
    watts: float,
) -> str:
    latency = observation.latency_p95_ms
    shown = "no requests" if latency is None else f"p95 {latency:.1f} ms"
    change = (
        _counts(replicas)
        if tuple(current) == tuple(replicas)
        else f"{_counts(current)} -> {_counts(replicas)}"
    )
    detail = (
        f"{observation.request_rate:.1f} req/s, {shown} (SLO {targets.slo_p95_ms:g} ms), {watts:.0f} W"
    )
    if reason is ScaleReason.POWER_CAPPED:
        detail += f" (cap {targets.cap_watts:g} W)"
    return f"{reason.value}: {change}; {detail}"
