"""`frugal up`'s autoscaler: the operator's policy, fed by the replicas' own ``/metrics``.

Every ``interval`` seconds, on a thread of its own, it

1. scrapes each ready replica's ``/metrics`` and parses it (:func:`observations.parse_scrape`),
   keeping the previous scrape per replica (a replica that just joined its balancer starts from an
   empty scrape at that moment: its counters were zero then);
2. turns the (previous, current) pairs of each shard into one sample
   (:func:`observations.samples_from_scrapes`, Prometheus' ``rate`` and ``histogram_quantile`` over
   the interval) and the samples into the policy's :class:`Observation`;
3. calls :func:`autoscaling.recommend` — the very function the operator calls in a cluster — with
   the targets of :func:`scaling.targets_for` (the spec, the chosen HardwareProfile, and the chosen
   plan row's profiled throughput as one replica's capacity) and the Memory of the previous tick;
4. resizes each shard to the recommended count (:meth:`Shard.scale_to`), logging every change with
   the recommendation's reason and message.

Then it re-plans at the rate it observed, as the operator's autoscaler does in a cluster
(:func:`scaling.plan_at_load`, :func:`scaling.replan_at_load`): when another (variant, hardware
profile, shards) has been cheaper per request beyond the tolerance for the window, it rolls over
(`roll_over`, :meth:`frugal.operator.local.kubelet.LocalCluster.roll_over`: the new option's
replicas start beside the running ones and take the traffic before the old ones stop) and scales the
new option from then on, its policy memory started afresh.

Its account (:class:`frugal.operator.local.accounting.RunAccount`) keeps what the summary reports:
every scale event and rollover, the highest count each shard reached, replica-seconds per shard and
the servers' energy counters, read at each scrape, before a replica stops and at the end.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.decision import autoscaling, observations, replanning, scaling
from frugal.operator.decision.revisions import Rollover, rollover_from_status, with_revision
from frugal.operator.decision.tick import RolloverOrder, TickInput, TickMemory, rollover_not_written, run_tick
from frugal.operator.local.accounting import RolloverEvent, RunAccount, ScaleEvent
from frugal.operator.local.kubelet import Served
from frugal.operator.local.monitoring import observe_served
from frugal.operator.local.replicas import Replica
from frugal.operator.telemetry import OperatorMetrics

SCRAPE_TIMEOUT_SECONDS = 2.0

Report = Callable[[str], None]


@dataclass
class LocalAutoscaler:
    served: Served
    md: ModelDeploymentSpec
    profile: HardwareProfileSpec
    capacity_rps: float
    interval: float
    report: Report
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    # Every HardwareProfile of the run (re-planning prices them all) and how to roll over (None: never).
    profiles: Mapping[str, HardwareProfileSpec] = field(default_factory=dict)
    roll_over: Callable[[Rollover], float] | None = None
    replan_settings: replanning.ReplanSettings | None = None
    last_replan: replanning.ReplanDecision | None = None
    revision: int = 0
    # The operator's series of this run (frugal up --prometheus-targets), set from every tick.
    metrics: OperatorMetrics | None = None
    targets: autoscaling.Targets = field(init=False)
    _memory: TickMemory = field(default_factory=TickMemory, init=False, repr=False)
    # status.replan as the operator's autoscaler would have written it at the last rollover.
    _replan_status: Mapping[str, Any] | None = field(default=None, init=False, repr=False)
    last: autoscaling.Recommendation | None = None
    desired: list[int] = field(init=False)
    started: float = 0.0
    # What the run cost: replica-seconds, energy, scale events and rollovers, for the summary.
    account: RunAccount = field(init=False)
    _previous: dict[str, observations.Scrape] = field(default_factory=dict, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.account = RunAccount(self.md)
        self._adopt(self.profile, self.capacity_rps)

    @property
    def events(self) -> list[ScaleEvent]:
        return self.account.events

    @property
    def rollovers(self) -> list[RolloverEvent]:
        return self.account.rollovers

    def _adopt(
        self, profile: HardwareProfileSpec, capacity_rps: float, stabilization_window_s: float | None = None
    ) -> None:
        """Scale what `served` runs now, on `profile`, one replica carrying `capacity_rps`, with a fresh
        policy memory (what it learned was about the option served before)."""
        self.profile, self.capacity_rps = profile, capacity_rps
        # Rates come from two scrapes one interval apart: that interval is the metrics window.
        self.targets = scaling.targets_for(
            self.md, profile, capacity_rps, wakes=True, metrics_window_s=max(self.interval, 1.0)
        )
        if stabilization_window_s is not None:
            self.targets = dataclasses.replace(self.targets, stabilization_window_s=stabilization_window_s)
        self.desired = [len(shard.active()) for shard in self.served.shards]
        self.account.reached(self.desired)
        for shard in self.served.shards:
            shard.on_retire = self._last_read

    @property
    def enabled(self) -> bool:
        """Ticks at all: an interval above 0 and a capacity to scale by (the plan always has one)."""
        return self.interval > 0 and self.capacity_rps > 0

    def start(self) -> None:
        """Count from now (replica-seconds, energy, event times) and tick, unless the interval is 0."""
        self.started = self.clock()
        for shard in self.served.shards:
            for replica in shard.ready():
                scrape = self._scrape(replica)
                if scrape is not None:
                    self.account.count_from(replica.name, scrape.counters)
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="frugal-autoscaler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.served.demand.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        """Tick every interval, and at once when a balancer holds a request at zero replicas."""
        while True:
            self.served.demand.wait(self.interval)
            self.served.demand.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception as error:  # a bad tick must not end serving; the next one tries again
                self.report(f"autoscaler: tick failed: {type(error).__name__}: {error}")

    def tick(self) -> autoscaling.Recommendation:
        """One scrape, one recommendation, one actuation."""
        shards = self.served.shards
        for shard in shards:
            shard.reap()
        samples: dict[observations.Key, observations.ShardSample] = {}
        ready_counts = []
        for shard in shards:
            ready = shard.ready()
            ready_counts.append(len(ready))
            pairs = []
            for replica in ready:
                scrape = self._scrape(replica)
                if scrape is None:
                    continue
                assert replica.ready_at is not None
                before = self._previous.get(replica.name) or observations.Scrape(replica.ready_at, {}, {}, {})
                pairs.append((before, scrape))
                self._previous[replica.name] = scrape
            samples[self._key(shard.index)] = observations.samples_from_scrapes(pairs)
        running = {r.name for shard in shards for r in shard.ready()}
        self._previous = {name: scrape for name, scrape in self._previous.items() if name in running}
        current = tuple(self.desired)
        observed = observations.observation(
            self.md.owner.namespace,
            self.md.model_name,
            current,
            ready_counts,
            samples,
            held_requests=self.served.held_requests(),
        )
        now = self.clock()
        previous = self._memory
        status = ModelDeploymentStatus.from_status(self._status())
        outcome = run_tick(
            TickInput(
                with_revision(self.md, rollover_from_status(self.md, status)),
                status,
                self.targets,
                current,
                tuple(ready_counts),
                observed,
                self.profiles,
                now - self.started,
                self.wall_clock(),
                self.replan_settings if self.roll_over is not None else None,
            ),
            previous,
        )
        self._memory = outcome.memory
        recommendation = outcome.recommendation
        with self._lock:
            self.last = recommendation
            if outcome.scale:
                self.desired = list(recommendation.replicas)
                self.account.reached(self.desired)
                event = ScaleEvent(
                    now - self.started,
                    recommendation.replicas,
                    recommendation.reason.value,
                    tuple(r.value for r in recommendation.reasons),
                    recommendation.message,
                )
                self.events.append(event)
                self.report(f"autoscaler: t={event.t:.0f}s {recommendation.message}")
        for shard, count in zip(shards, self.desired, strict=True):
            shard.scale_to(count)
        if self.metrics is not None:
            self.metrics.recommended(self.md, recommendation, dict(outcome.observed))
            observe_served(self.metrics, self.md, self.served, self.desired)
        self.last_replan = outcome.replan
        if outcome.rollover is not None and not self._roll_over(outcome.rollover, now):
            self._memory = rollover_not_written(outcome, previous)
        return recommendation

    def _status(self) -> Mapping[str, Any]:
        """The status the operator would hold: the served decision's, and status.replan once rolled over."""
        status = self.served.decision.status
        return status if self._replan_status is None else {**status, "replan": self._replan_status}

    def _roll_over(self, order: RolloverOrder, now: float) -> bool:
        """Serve the option re-planning chose, as the reconciler would from status.replan; False when
        the new option failed to start (the running one keeps serving)."""
        assert self.roll_over is not None
        decision, target = order.decision, order.rollover.selection
        self.report(f"re-planning: t={now - self.started:.0f}s {decision.message}")
        before = (list(self.served.shards), self.profile)
        try:
            seconds = self.roll_over(order.rollover)
        except Exception as error:  # the running option keeps serving; the next window tries again
            self.report(f"re-planning: rollover to {decision.target} failed, keeping {decision.running}: {error}")
            return False
        self._replan_status = order.replan_status
        self.revision = order.rollover.revision
        self.account.served_before(*before)
        row = (
            None
            if self.served.decision.plan is None
            else self.served.decision.plan.option(target.variant, target.profile, target.shards)
        )
        with self._lock:
            self._adopt(
                self.profiles[target.profile],
                (row.throughput_rps if row else None) or self.capacity_rps,
                self.targets.stabilization_window_s,
            )
            self.rollovers.append(
                RolloverEvent(
                    now - self.started,
                    str(decision.running),
                    str(decision.target),
                    decision.reason.value,
                    decision.load_rps,
                    decision.running_cost_per_1k_requests,
                    decision.target_cost_per_1k_requests,
                    seconds,
                    decision.message,
                )
            )
        self.report(
            f"re-planning: now serving {decision.target} ({order.rollover.replicas} replica(s) per shard); "
            f"the switch took {seconds:.1f}s"
        )
        return True

    def _key(self, index: int) -> observations.Key:
        return (self.md.owner.namespace, self.md.model_name, index)

    def _scrape(self, replica: Replica) -> observations.Scrape | None:
        try:
            with urllib.request.urlopen(f"{replica.url}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None
        scrape = observations.parse_scrape(text, self.clock())
        self.account.read(replica.name, scrape.counters)
        return scrape

    def _last_read(self, replica: Replica) -> None:
        """Before a replica stops: read its energy counter one last time."""
        self._scrape(replica)

    # -- the summary --------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop ticking, read every replica's energy, and say what the run cost."""
        self.stop()
        end = self.clock()
        for shard in self.served.shards:
            for replica in shard.ready():
                self._scrape(replica)
        summary = self.account.summary(self.started, end, self.served.shards, self.profile)
        order = ("replicaSeconds", "peakReplicas")
        return {
            **{key: summary[key] for key in order},
            "finalReplicas": list(self.desired),
            **{key: value for key, value in summary.items() if key not in order},
            "wakeWaitsMs": [round(w * 1000.0, 1) for w in self.served.wake_waits()],
        }

    def status(self) -> tuple[tuple[int, ...], int, str | None]:
        """(active replicas per shard, replicas starting, the last scale event's reason)."""
        with self._lock:
            reason = self.events[-1].reason if self.events else None
        active = tuple(len(s.active()) for s in self.served.shards)
        starting = sum(len(s.starting()) for s in self.served.shards)
        return active, starting, reason


def for_served(
    served: Served,
    md: ModelDeploymentSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    interval: float,
    report: Report,
    stabilization_window: float | None = None,
    roll_over: Callable[[Rollover], float] | None = None,
    replan_window: float | None = None,
    metrics: OperatorMetrics | None = None,
) -> LocalAutoscaler:
    """The autoscaler of what `served` runs: the served plan row's throughput is one replica's
    capacity; `stabilization_window` overrides the spec's (a shorter one shows a scale-down in a short
    run). With `roll_over` it re-plans too (spec.autoscaling.replanning, `replan_window` overriding the
    window)."""
    plan, selection = served.decision.plan, served.decision.selection
    assert plan is not None and selection is not None
    chosen = plan.option(selection.variant, selection.profile, selection.shards)
    capacity = (chosen.throughput_rps if chosen is not None else None) or 0.0
    scaler = LocalAutoscaler(
        served,
        md,
        profiles[selection.profile],
        capacity,
        interval,
        report,
        profiles=profiles,
        roll_over=roll_over,
        replan_settings=scaling.replan_settings(md, replan_window) if roll_over is not None else None,
        metrics=metrics,
    )
    if stabilization_window is not None:
        scaler.targets = dataclasses.replace(scaler.targets, stabilization_window_s=stabilization_window)
    return scaler
