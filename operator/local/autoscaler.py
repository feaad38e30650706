"""`frugal up`'s autoscaler: the operator's own (:class:`frugal.operator.control.scaler.Autoscaler`),
fed by the replicas' ``/metrics`` (:class:`~frugal.operator.local.replica_metrics.ReplicaMetrics`),
ticking every ``interval`` seconds and at once when the endpoint holds a request at zero replicas.

Nothing here decides: the operator's class reads the store and the metrics, runs the pure tick
(:func:`frugal.operator.decision.tick.run_tick`), writes ``spec.replicas`` under its own field
manager and, when re-planning rolls over, ``status.replan`` — which the reconciler carries out, and the
process runner with it. This module only keeps the run's account
(:class:`frugal.operator.local.accounting.RunAccount`): every scale event and rollover (a rollover
counts as done when the old option's Deployments are gone), the highest count each shard reached,
replica-seconds per shard and the servers' energy counters, read at each scrape, before a replica
stops and at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.control.scaler import Autoscaler, Scaled
from frugal.operator.decision import autoscaling, replanning, scaling
from frugal.operator.decision.tick import RolloverOrder
from frugal.operator.local.accounting import RolloverEvent, RunAccount, ScaleEvent
from frugal.operator.local.local_cluster import Served
from frugal.operator.local.replica_metrics import ReplicaMetrics
from frugal.operator.local.replicas import Replica, Shard
from frugal.operator.telemetry import OperatorMetrics

Report = Callable[[str], None]


@dataclass
class LocalAutoscaler:
    served: Served
    interval: float
    report: Report
    # The operator's series of this run (frugal up --prometheus-targets), set from every tick.
    metrics: OperatorMetrics | None = None
    clock: Callable[[], float] = time.monotonic
    autoscaler: Autoscaler = field(init=False)
    source: ReplicaMetrics = field(init=False)
    account: RunAccount = field(init=False)
    # The targets the operator's autoscaler scales this model by (None: it does not scale it).
    scaled: Scaled | None = field(init=False)
    profile: HardwareProfileSpec = field(init=False)
    desired: list[int] = field(init=False)
    last: autoscaling.Recommendation | None = None
    started: float = 0.0
    _pending: tuple[RolloverOrder, float] | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        cluster = self.served.cluster
        md = cluster.md
        self.account = RunAccount(md)
        self.source = ReplicaMetrics(
            self.served.runner,
            md.owner.namespace,
            md.model_name,
            self.clock,
            on_scrape=lambda name, scrape: self.account.read(name, scrape.counters),
        )
        # Rates come from two reads one interval apart: that interval is the metrics window.
        self.autoscaler = Autoscaler(
            cluster.store,
            cluster.reconciler,
            self.source,
            metrics=self.metrics,
            rate_window=f"{max(1, round(self.interval))}s",
            namespaces=(md.owner.namespace,),
        )
        self.served.runner.on_retire = self._last_read
        self.served.runner.on_retired = self._retired
        self.scaled = self._mine(self.autoscaler.scaled())
        selection = self.served.decision.selection
        assert selection is not None  # serving: the plan chose
        self.profile = cluster.profiles[selection.profile]
        self.desired = [len(shard.active()) for shard in self.served.shards]
        self.account.reached(self.desired)

    @property
    def md(self) -> ModelDeploymentSpec:
        return self.served.cluster.md

    @property
    def targets(self) -> autoscaling.Targets:
        assert self.scaled is not None  # only read when enabled
        return self.scaled.targets

    @property
    def replan_settings(self) -> replanning.ReplanSettings | None:
        """spec.autoscaling.replanning as the operator's autoscaler applies it (None: off)."""
        return scaling.replan_settings(self.md) if self.md.spec.autoscaling.replanning.enabled else None

    @property
    def events(self) -> list[ScaleEvent]:
        return self.account.events

    @property
    def rollovers(self) -> list[RolloverEvent]:
        return self.account.rollovers

    @property
    def enabled(self) -> bool:
        """Ticks at all: an interval above 0 and a capacity to scale by (the plan always has one)."""
        return self.interval > 0 and self.scaled is not None and self.scaled.targets.capacity_rps > 0

    def start(self) -> None:
        """Count from now (replica-seconds, energy, event times) and tick, unless the interval is 0."""
        self.started = self.clock()
        for shard in self.served.shards:
            for replica in shard.ready():
                scrape = self.source.scrape(replica)
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
        """Tick every interval, and at once when the endpoint holds a request at zero replicas."""
        while True:
            self.served.demand.wait(self.interval)
            self.served.demand.clear()
            if self._stop.is_set():
                return
            started = time.perf_counter()
            try:
                self.tick()
            except Exception as error:  # a bad tick must not end serving; the next one tries again
                self.report(f"autoscaler: tick failed: {type(error).__name__}: {error}")
            if self.metrics is not None:
                self.metrics.tick_duration.observe(time.perf_counter() - started)

    def tick(self) -> autoscaling.Recommendation | None:
        """One tick of the operator's autoscaler; what it decided for this model is logged and counted."""
        now = self.clock()
        for item, outcome in self.autoscaler.tick():
            if item.key != (self.md.owner.namespace, self.md.owner.name):
                continue
            recommendation = outcome.recommendation
            with self._lock:
                self.scaled, self.last = item, recommendation
                self.desired = list(recommendation.replicas if outcome.scale else item.replicas)
                if outcome.scale:
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
                if outcome.rollover is not None:
                    self._pending = (outcome.rollover, now)
                    self.report(
                        f"re-planning: t={now - self.started:.0f}s {outcome.rollover.decision.message}"
                    )
            return recommendation
        return None

    def _retired(self, shards: list[Shard]) -> None:
        """A revision's Deployments are gone: the option it served is counted until its replicas
        stopped, and a rollover in progress is done."""
        with self._lock:
            self.account.served_before(shards, self.profile)
            selection = self.served.decision.selection
            if selection is not None:
                self.profile = self.served.cluster.profiles[selection.profile]
            pending, self._pending = self._pending, None
        if pending is None:
            return
        order, ordered_at = pending
        decision, seconds = order.decision, self.clock() - ordered_at
        self.rollovers.append(
            RolloverEvent(
                ordered_at - self.started,
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

    def _mine(self, scaled: list[Scaled]) -> Scaled | None:
        key = (self.md.owner.namespace, self.md.owner.name)
        return next((item for item in scaled if item.key == key), None)

    def _last_read(self, replica: Replica) -> None:
        """Before a replica stops: read its energy counter one last time."""
        self.source.scrape(replica)

    # -- the summary --------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop ticking, read every replica's energy, and say what the run cost."""
        self.stop()
        end = self.clock()
        shards = self.served.shards
        for shard in shards:
            for replica in shard.ready():
                self.source.scrape(replica)
        summary = self.account.summary(self.started, end, shards, self.profile)
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
        shards = self.served.shards
        active = tuple(len(s.active()) for s in shards)
        starting = sum(len(s.starting()) for s in shards)
        return active, starting, reason


def for_served(
    served: Served, interval: float, report: Report, metrics: OperatorMetrics | None = None
) -> LocalAutoscaler:
    """The operator's autoscaler over what `served` runs, ticking every `interval` seconds (0: never)."""
    return LocalAutoscaler(served, interval, report, metrics=metrics)
