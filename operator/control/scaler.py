"""The autoscaler's driver: read the metrics source, run the pure tick, scale the Deployments, report.

The decision is :func:`frugal.operator.decision.tick.tick`; this class only reads and writes. Every
tick costs a constant number of requests whatever the number of models: three lists (the
ModelDeployments, the serving Deployments, the HardwareProfiles, each read a page at a time and
never held whole) and one read of each metrics source
(in a cluster, per Prometheus server, one query per metric for every model at once:
:class:`frugal.operator.cluster.prometheus.PrometheusMetrics`). Writes
happen only when something changed: a replica count (applied to ``spec.replicas`` alone, under the
``frugal-autoscaler`` field manager, so the operator's own applies never touch it), the reason, a
condition, or, at most every ``STATUS_REFRESH_SECONDS``, the observed numbers in the status.

Missing or stale metrics never scale anything down: the policy holds the counts, and the status
says why (``MetricsAvailable=False`` with the query that failed) with an Event.

Each tick also re-plans at the observed rate (the pure
:func:`frugal.operator.decision.replanning.replan`, inside the tick). A rollover is written as ``status.replan`` (the
next serving revision, its option and replicas), with the ``Replanned`` condition and an Event naming
both options and their costs, and the reconciler is asked to act on it at once: it applies the new
revision's Deployments beside the running ones, moves the endpoint once every new shard has a ready
replica, and only then deletes the old revision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.api.models import Condition as StatusCondition
from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    SpecError,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.control.port import (
    AUTOSCALER_FIELD_MANAGER,
    ApiError,
    ClusterPort,
    MetricsKey,
    MetricsReading,
    MetricsSource,
    unreachable,
)
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.decision import observations, scaling, status_writes
from frugal.operator.decision.autoscaling import Targets
from frugal.operator.decision.conditions import Condition
from frugal.operator.decision.revisions import as_served
from frugal.operator.decision.tick import (
    TickInput,
    TickMemory,
    TickOutcome,
    rollover_not_written,
    run_tick,
    status_not_written,
    timestamp,
)
from frugal.operator.manifests import names, serving_objects
from frugal.operator.telemetry import OperatorMetrics

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_SECONDS = 15.0
# A serving revision: (namespace, ModelDeployment, generation, revision), as its Deployments' labels say.
Revision = tuple[str, str, str, str]


@dataclass
class Scaled:
    """One ModelDeployment the autoscaler scales this tick."""

    body: Mapping[str, Any]
    status: ModelDeploymentStatus
    md: ModelDeploymentSpec
    targets: Targets
    replicas: tuple[int, ...]
    ready: tuple[int, ...]
    prometheus_url: str | None
    power_source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.md.owner.namespace, self.md.owner.name)

    @property
    def source(self) -> tuple[str, str]:
        return (self.prometheus_url or "", self.power_source)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


class Autoscaler:
    def __init__(
        self,
        cluster: ClusterPort,
        reconciler: Reconciler,
        metrics_source: MetricsSource,
        default_prometheus_url: str | None = None,
        metrics: OperatorMetrics | None = None,
        rate_window: str = observations.RATE_WINDOW,
        namespaces: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.namespaces = tuple(namespaces)
        self.rate_window = rate_window
        self.reconciler = reconciler
        self.metrics_source = metrics_source
        self.default_prometheus_url = default_prometheus_url
        self.metrics = metrics
        self._clock = clock
        # Re-planning's timers: wall time, since the last rollover's time is kept in the status.
        self._wall_clock = wall_clock
        self._memory: dict[tuple[str, str], TickMemory] = {}

    def run(self, interval: float, stop: threading.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; a failed tick is logged and retried."""
        while not stop.is_set():
            started = time.perf_counter()
            try:
                for _ in self._ticks():
                    pass  # nothing of a model is kept once it is decided
            except Exception as error:
                if unreachable(error):  # an API server restarting: one line per tick, not a traceback
                    log.warning("autoscaler tick failed, retried in %gs: %s", interval, _one_line(error))
                else:
                    log.exception("autoscaler tick failed")
            if self.metrics:
                self.metrics.tick_duration.observe(time.perf_counter() - started)
            stop.wait(max(0.0, interval - (time.perf_counter() - started)))

    def tick(self) -> list[tuple[Scaled, TickOutcome]]:
        """One pass over every served ModelDeployment; returns what it decided for each."""
        return list(self._ticks())

    def _ticks(self) -> Iterator[tuple[Scaled, TickOutcome]]:
        """One pass, a model at a time: only one page of ModelDeployments is held at once, and each
        metrics source is read once, when the first model that needs it comes up."""
        profiles, shards = self._profiles(), self._shards()
        readings: dict[MetricsKey, MetricsReading] = {}
        now = self._clock()
        decided: set[tuple[str, str]] = set()
        for body in self._each(API_VERSION, "ModelDeployment", {}):
            item = self._scaled(body, profiles, shards)
            if item is None:
                continue
            if item.source not in readings:
                readings[item.source] = self.metrics_source.read([item.source])
            decided.add(item.key)
            yield item, self._decide(item, readings[item.source], profiles, now)
        for key in set(self._memory) - decided:
            del self._memory[key]

    def _decide(
        self,
        item: Scaled,
        reading: MetricsReading,
        profiles: Mapping[str, HardwareProfileSpec],
        now: float,
    ) -> TickOutcome:
        seen = observations.observation(
            item.md.owner.namespace,
            item.md.model_name,
            item.replicas,
            item.ready,
            reading.samples.get(item.source, {}),
            reading.failures.get(item.source),
            reading.held.get(item.source, {}).get((item.md.owner.namespace, item.md.model_name), 0.0),
        )
        previous = self._memory.get(item.key, TickMemory())
        outcome = run_tick(
            TickInput(
                item.md,
                item.status,
                item.targets,
                item.replicas,
                item.ready,
                seen,
                profiles,
                now,
                self._wall_clock(),
                scaling.replan_settings(item.md),
            ),
            previous,
        )
        memory = outcome.memory
        self._actuate(item, outcome)
        if outcome.rollover is not None and not self._roll_over(item, outcome):
            memory = rollover_not_written(outcome, previous)
        if self.metrics:
            self.metrics.recommended(item.md, outcome.recommendation, dict(outcome.observed))
        if outcome.status_patch is not None and not self._write_status(
            item, dict(outcome.status_patch), outcome.conditions
        ):
            memory = status_not_written(outcome, memory)
        self._memory[item.key] = memory
        return outcome

    # -- what to scale ---------------------------------------------------------------------------------

    def scaled(self) -> list[Scaled]:
        """What the next tick would scale, and with which targets (read fresh)."""
        profiles, shards = self._profiles(), self._shards()
        found = (self._scaled(body, profiles, shards) for body in self._each(API_VERSION, "ModelDeployment", {}))
        return [item for item in found if item is not None]

    def _profiles(self) -> dict[str, HardwareProfileSpec]:
        profiles: dict[str, HardwareProfileSpec] = {}
        for body in self.cluster.find(API_VERSION, "HardwareProfile", None, {}):
            try:
                profiles[body["metadata"]["name"]] = parse_hardware_profile(body)
            except SpecError:
                continue
        return profiles

    def _shards(self) -> dict[Revision, dict[int, tuple[int, int]]]:
        """(replicas, ready replicas) of every serving Deployment, by revision and shard index; a
        Deployment is reduced to these two numbers as its page is read."""
        selector = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_ROLE: "serving"}
        by_revision: dict[Revision, dict[int, tuple[int, int]]] = {}
        for deployment in self._each("apps/v1", "Deployment", selector):
            labels = deployment["metadata"].get("labels") or {}
            where = (
                deployment["metadata"]["namespace"],
                labels.get(names.LABEL_MD, ""),
                labels.get(names.LABEL_GENERATION, ""),
                labels.get(names.LABEL_REVISION, "0"),
            )
            counts = (
                int(deployment["spec"].get("replicas", 1)),
                int((deployment.get("status") or {}).get("readyReplicas", 0)),
            )
            by_revision.setdefault(where, {})[int(labels.get(names.LABEL_SHARD, 0))] = counts
        return by_revision

    def _each(self, api_version: str, kind: str, selector: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every namespace the operator watches (one list cluster-wide, or one per namespace), a page
        at a time."""
        for namespace in self.namespaces or (None,):
            for page in self.cluster.pages(api_version, kind, namespace, selector):
                yield from page

    def _scaled(
        self,
        body: Mapping[str, Any],
        profiles: Mapping[str, HardwareProfileSpec],
        by_revision: Mapping[Revision, Mapping[int, tuple[int, int]]],
    ) -> Scaled | None:
        status = ModelDeploymentStatus.from_body(body)
        selected = status.selected
        if body["metadata"].get("deletionTimestamp") or selected is None:
            return None
        try:
            md, _ = as_served(parse_model_deployment(body), status)
        except SpecError:
            return None
        profile = profiles.get(selected.hardware_profile or "")
        capacity = scaling.capacity_from_status(status)
        owner = md.owner
        shards = by_revision.get((owner.namespace, owner.name, str(owner.generation), str(owner.revision)), {})
        count = selected.shards or 1
        if profile is None or capacity is None or sorted(shards) != list(range(count)):
            return None
        replicas = tuple(shards[i][0] for i in range(count))
        ready = tuple(shards[i][1] for i in range(count))
        url, power_source = scaling.metrics_source(md, self.default_prometheus_url)
        try:
            # A model with minReplicas 0 is called through its front, which holds requests at zero.
            targets = scaling.targets_for(
                md,
                profile,
                capacity,
                wakes=serving_objects.has_front(md),
                metrics_window_s=scaling.duration_seconds(self.rate_window),
            )
        except ValueError as error:
            log.warning("not autoscaling %s/%s: %s", md.owner.namespace, md.owner.name, error)
            return None
        return Scaled(body, status, md, targets, replicas, ready, url, power_source)

    # -- acting and reporting --------------------------------------------------------------------------

    def _actuate(self, item: Scaled, outcome: TickOutcome) -> None:
        emit = self.reconciler.poster(item.body)
        for change in outcome.scale:
            body = serving_objects.desired_replicas(item.md.owner, change.index, change.after)
            try:
                self.cluster.apply(body, AUTOSCALER_FIELD_MANAGER)
            except ApiError as error:
                log.warning("could not scale %s: %s", body["metadata"]["name"], error)
                continue
            emit(
                "Normal",
                f"Scaled{change.direction.capitalize()}",
                f"shard {change.index}: {change.before} -> {change.after} replicas: "
                f"{outcome.recommendation.message}"[:1024],
            )
            if self.metrics:
                self.metrics.scale_events.labels(
                    item.md.owner.namespace, item.md.owner.name, change.direction, change.reason.value
                ).inc()

    def _roll_over(self, item: Scaled, outcome: TickOutcome) -> bool:
        """Write status.replan with the Replanned condition, post the Event and have the reconciler
        bring up the new revision now; False when the status could not be written."""
        order = outcome.rollover
        assert order is not None
        if not self._write_status(item, {"replan": dict(order.replan_status)}, [order.condition]):
            return False
        owner = item.md.owner
        self.reconciler.poster(item.body)("Normal", scaling.REPLANNED, order.decision.message[:1024])
        log.info("%s/%s: %s", owner.namespace, owner.name, order.decision.message)
        if self.metrics:
            self.metrics.rollovers.labels(owner.namespace, owner.name, order.decision.reason.value).inc()
        self.reconciler.reconcile_named(owner.namespace, owner.name)
        return True

    def _write_status(self, item: Scaled, status: dict[str, Any], conditions: Sequence[Condition]) -> bool:
        owner = item.md.owner
        with self.reconciler.lock(owner.namespace, owner.name):
            body = self.cluster.get(API_VERSION, "ModelDeployment", owner.namespace, owner.name)
            if body is None:
                return False
            old = ModelDeploymentStatus.from_body(body)
            generation = int(body["metadata"].get("generation") or 1)
            now = timestamp(self._wall_clock())
            patch, ours = status_writes.autoscaler_patch(old, status, conditions, generation, now)
            try:
                self.cluster.patch_status(API_VERSION, "ModelDeployment", owner.namespace, owner.name, patch)
            except ApiError as error:
                log.warning(
                    "could not write the autoscaling status of %s/%s: %s", owner.namespace, owner.name, error
                )
                return False
            self._emit_condition_changes(body, old.conditions, ours)
        return True

    def _emit_condition_changes(
        self,
        body: Mapping[str, Any],
        previous: Sequence[StatusCondition],
        current: Sequence[StatusCondition],
    ) -> None:
        before = {c.type: c for c in previous}
        emit = self.reconciler.poster(body)
        for condition in current:
            old = before.get(condition.type)
            if old is not None and (old.status, old.reason) == (condition.status, condition.reason):
                continue
            if condition.reason in ("MetricsStale", "PowerCapped"):
                emit("Warning", condition.reason, condition.message[:1024])
            elif old is not None:
                emit("Normal", condition.reason, condition.message[:1024])
