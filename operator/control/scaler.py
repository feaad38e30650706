"""The autoscaler's tick in a cluster: read Prometheus, ask the policy, scale the Deployments, report.

Every tick costs a constant number of requests whatever the number of models: three lists (the
ModelDeployments, the serving Deployments, the HardwareProfiles) and, per Prometheus server, one query
per metric for every model at once (:func:`frugal.operator.decision.observations.queries`). Writes
happen only when something changed: a replica count (applied to ``spec.replicas`` alone, under the
``frugal-autoscaler`` field manager, so the operator's own applies never touch it), the reason, a
condition, or, at most every ``STATUS_REFRESH_SECONDS``, the observed numbers in the status.

Missing or stale metrics never scale anything down: the policy holds the counts, and the status
says why (``MetricsAvailable=False`` with the query that failed) with an Event.

Each tick also re-plans at the observed rate (:func:`scaling.replan_at_load`, the pure
:func:`frugal.operator.decision.replanning.replan`). A rollover is written as ``status.replan`` (the
next serving revision, its option and replicas), with the ``Replanned`` condition and an Event naming
both options and their costs, and the reconciler is asked to act on it at once: it applies the new
revision's Deployments beside the running ones, moves the endpoint once every new shard has a ready
replica, and only then deletes the old revision.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    SpecError,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.cluster.apply import AUTOSCALER_FIELD_MANAGER, ApiError, Cluster
from frugal.operator.cluster.prometheus import Prometheus, PrometheusError
from frugal.operator.cluster.reconciler import Reconciler
from frugal.operator.decision import observations, replanning, scaling
from frugal.operator.decision.autoscaling import (
    Memory,
    Observation,
    Recommendation,
    Targets,
    recommend,
)
from frugal.operator.decision.conditions import merge
from frugal.operator.decision.decide import rollover_from_status, with_effective_generation, with_revision
from frugal.operator.manifests import names, serving_objects
from frugal.operator.telemetry import OperatorMetrics

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_SECONDS = 15.0
# Observed numbers (p95, rate, cost) alone rewrite the status at most this often.
STATUS_REFRESH_SECONDS = 60.0
NO_PROMETHEUS = (
    "no Prometheus to read: set spec.autoscaling.prometheus.url, or run the operator with --prometheus-url"
)


@dataclass
class Scaled:
    """One ModelDeployment the autoscaler scales this tick."""

    body: Mapping[str, Any]
    md: ModelDeploymentSpec
    targets: Targets
    replicas: tuple[int, ...]
    ready: tuple[int, ...]
    prometheus_url: str | None
    power_source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.md.owner.namespace, self.md.owner.name)


@dataclass
class _Remembered:
    memory: Memory = field(default_factory=Memory)
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = float("-inf")
    # The serving revision `memory` learned about: a rollover starts the policy's memory afresh.
    revision: tuple[int, int] = (0, 0)
    replan: replanning.ReplanMemory = field(default_factory=replanning.ReplanMemory)


class Autoscaler:
    def __init__(
        self,
        cluster: Cluster,
        reconciler: Reconciler,
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
        self.default_prometheus_url = default_prometheus_url
        self.metrics = metrics
        self._clock = clock
        # Re-planning's timers: wall time, since the last rollover's time is kept in the status.
        self._wall_clock = wall_clock
        self._servers: dict[str, Prometheus] = {}
        self._state: dict[tuple[str, str], _Remembered] = {}
        self._profiles: dict[str, HardwareProfileSpec] = {}
        # Requests the fronts hold, per (Prometheus URL, power source), from the last read.
        self._held: dict[tuple[str, str], dict[tuple[str, str], float]] = {}

    def run(self, interval: float, stop: threading.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; a failed tick is logged and retried."""
        while not stop.is_set():
            started = time.perf_counter()
            try:
                self.tick()
            except Exception:
                log.exception("autoscaler tick failed")
            if self.metrics:
                self.metrics.tick_duration.observe(time.perf_counter() - started)
            stop.wait(max(0.0, interval - (time.perf_counter() - started)))

    def tick(self) -> list[tuple[Scaled, Recommendation]]:
        """One pass over every served ModelDeployment; returns what it decided for each."""
        scaled = self._served()
        samples, failures = self._read_metrics(scaled)
        now = self._clock()
        decided = []
        for item in scaled:
            key = (item.prometheus_url or "", item.power_source)
            failed = failures.get(key)
            seen = observations.observation(
                item.md.owner.namespace,
                item.md.model_name,
                item.replicas,
                item.ready,
                samples.get(key, {}),
                failed,
                self._held.get(key, {}).get((item.md.owner.namespace, item.md.model_name), 0.0),
            )
            state = self._state.setdefault(item.key, _Remembered())
            revision = (item.md.owner.generation, item.md.owner.revision)
            if state.revision != revision:
                state.memory, state.revision = Memory(), revision
            recommendation, state.memory = recommend(seen, item.replicas, item.targets, state.memory, now)
            self._actuate(item, recommendation)
            rate = seen.request_rate if seen.stale is None else None
            plan = scaling.plan_at_load(item.md, item.body.get("status") or {}, self._profiles, rate)
            replan = self._replan(item, plan, state)
            self._report(item, seen, recommendation, now, plan, replan)
            decided.append((item, recommendation))
        gone = set(self._state) - {item.key for item in scaled}
        for key in gone:
            del self._state[key]
        return decided

    # -- what to scale ---------------------------------------------------------------------------------

    def _served(self) -> list[Scaled]:
        bodies = self._list(API_VERSION, "ModelDeployment", {})
        selector = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_ROLE: "serving"}
        deployments = self._list("apps/v1", "Deployment", selector)
        profiles: dict[str, HardwareProfileSpec] = {}
        for body in self.cluster.find(API_VERSION, "HardwareProfile", None, {}):
            try:
                profiles[body["metadata"]["name"]] = parse_hardware_profile(body)
            except SpecError:
                continue
        self._profiles = profiles
        by_revision: dict[tuple[str, str, str, str], dict[int, Mapping[str, Any]]] = {}
        for deployment in deployments:
            labels = deployment["metadata"].get("labels") or {}
            where = (
                deployment["metadata"]["namespace"],
                labels.get(names.LABEL_MD, ""),
                labels.get(names.LABEL_GENERATION, ""),
                labels.get(names.LABEL_REVISION, "0"),
            )
            by_revision.setdefault(where, {})[int(labels.get(names.LABEL_SHARD, 0))] = deployment
        result = []
        for body in bodies:
            item = self._scaled(body, profiles, by_revision)
            if item is not None:
                result.append(item)
        return result

    def _list(self, api_version: str, kind: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every namespace the operator watches: one list call cluster-wide, or one per namespace."""
        if not self.namespaces:
            return self.cluster.find(api_version, kind, None, selector)
        return [obj for ns in self.namespaces for obj in self.cluster.find(api_version, kind, ns, selector)]

    def _scaled(
        self,
        body: Mapping[str, Any],
        profiles: Mapping[str, HardwareProfileSpec],
        by_revision: Mapping[tuple[str, str, str, str], Mapping[int, Mapping[str, Any]]],
    ) -> Scaled | None:
        status = body.get("status") or {}
        selected = status.get("selected") or {}
        if body["metadata"].get("deletionTimestamp") or not selected:
            return None
        try:
            md = with_effective_generation(parse_model_deployment(body), status)
        except SpecError:
            return None
        md = with_revision(md, rollover_from_status(md, status))
        profile = profiles.get(str(selected.get("hardwareProfile")))
        capacity = scaling.capacity_from_status(status)
        owner = md.owner
        shards = by_revision.get((owner.namespace, owner.name, str(owner.generation), str(owner.revision)), {})
        count = int(selected.get("shards") or 1)
        if profile is None or capacity is None or sorted(shards) != list(range(count)):
            return None
        replicas = tuple(int(shards[i]["spec"].get("replicas", 1)) for i in range(count))
        ready = tuple(int((shards[i].get("status") or {}).get("readyReplicas", 0)) for i in range(count))
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
        return Scaled(body, md, targets, replicas, ready, url, power_source)

    # -- metrics ---------------------------------------------------------------------------------------

    def _read_metrics(
        self, scaled: Sequence[Scaled]
    ) -> tuple[
        dict[tuple[str, str], dict[observations.Key, observations.ShardSample]], dict[tuple[str, str], str]
    ]:
        """Per (Prometheus URL, power source): samples of every model, or why they could not be read."""
        samples: dict[tuple[str, str], dict[observations.Key, observations.ShardSample]] = {}
        failures: dict[tuple[str, str], str] = {}
        wanted = sorted({(item.prometheus_url or "", item.power_source) for item in scaled})
        common: dict[str, dict[str, list[dict[str, Any]]] | str] = {}
        self._held = {}
        for url, source in wanted:
            if not url:
                failures[(url, source)] = NO_PROMETHEUS
                continue
            promql = observations.queries(source, self.rate_window)
            if url not in common:
                shared = {k: v for k, v in promql.items() if k != "watts"}
                common[url] = self._query_all(url, {**shared, **observations.front_queries(self.rate_window)})
            answers = common[url]
            if isinstance(answers, str):
                failures[(url, source)] = answers
                continue
            watts = self._query_all(url, {"watts": promql["watts"]})
            if isinstance(watts, str):
                failures[(url, source)] = watts
                continue
            served = {k: v for k, v in answers.items() if k != "held_requests"}
            samples[(url, source)] = observations.samples_from_prometheus({**served, **watts})
            held = observations.held_from_prometheus(answers.get("held_requests", []))
            self._held[(url, source)] = held
        return samples, failures

    def _query_all(self, url: str, promql: Mapping[str, str]) -> dict[str, list[dict[str, Any]]] | str:
        server = self._servers.setdefault(url, Prometheus(url))
        answers = {}
        for name, query in promql.items():
            if self.metrics:
                self.metrics.prometheus_queries.inc()
            try:
                answers[name] = server.query(query)
            except PrometheusError as error:
                return str(error)
        return answers

    # -- acting and reporting --------------------------------------------------------------------------

    def _actuate(self, item: Scaled, recommendation: Recommendation) -> None:
        emit = self.reconciler.poster(item.body)
        for index, (now, wanted) in enumerate(zip(item.replicas, recommendation.replicas, strict=True)):
            if now == wanted:
                continue
            body = serving_objects.desired_replicas(item.md.owner, index, wanted)
            try:
                self.cluster.apply(body, AUTOSCALER_FIELD_MANAGER)
            except ApiError as error:
                log.warning("could not scale %s: %s", body["metadata"]["name"], error)
                continue
            direction = "up" if wanted > now else "down"
            reason = recommendation.reasons[index].value
            emit(
                "Normal",
                f"Scaled{direction.capitalize()}",
                f"shard {index}: {now} -> {wanted} replicas: {recommendation.message}"[:1024],
            )
            if self.metrics:
                self.metrics.scale_events.labels(
                    item.md.owner.namespace, item.md.owner.name, direction, reason
                ).inc()

    def _replan(
        self, item: Scaled, plan: Any, state: _Remembered
    ) -> replanning.ReplanDecision | None:
        """Re-plan at the observed load; on a rollover write status.replan, post the Event and have
        the reconciler bring up the new revision now."""
        status = item.body.get("status") or {}
        memory = state.replan
        if memory.last_rollover_at is None:
            memory = dataclasses.replace(memory, last_rollover_at=_last_rollover(status, item.md))
        now = self._wall_clock()
        decision, state.replan = scaling.replan_at_load(
            item.md,
            plan,
            scaling.running_choice(status),
            item.ready,
            scaling.replan_settings(item.md),
            memory,
            now,
        )
        if decision is None or not decision.roll_over or plan is None:
            return decision
        owner = item.md.owner
        replan = scaling.replan_status(item.md, status, plan, decision, _timestamp(now))
        if not self._write_status(item, {"replan": replan}, [scaling.replanned_condition(decision)]):
            state.replan = memory  # not written: the next tick decides again
            return decision
        self.reconciler.poster(item.body)("Normal", scaling.REPLANNED, decision.message[:1024])
        log.info("%s/%s: %s", owner.namespace, owner.name, decision.message)
        if self.metrics:
            self.metrics.rollovers.labels(owner.namespace, owner.name, decision.reason.value).inc()
        self.reconciler.reconcile_named(owner.namespace, owner.name)
        return decision

    def _report(
        self,
        item: Scaled,
        seen: Observation,
        recommendation: Recommendation,
        now: float,
        plan: Any,
        replan: replanning.ReplanDecision | None,
    ) -> None:
        status = scaling.observed_status(recommendation, seen, item.ready, item.targets)
        conditions = scaling.autoscaling_conditions(recommendation, seen, item.targets)
        if self.metrics:
            self.metrics.recommended(item.md, recommendation, status)
        state = self._state[item.key]
        decisive = {
            "reason": recommendation.reason.value,
            "replicas": recommendation.replicas,
            "ready": item.ready,
            "conditions": [(c.type, c.status, c.reason) for c in conditions],
        }
        changed_decision = decisive != state.written.get("decisive")
        changed_numbers = status != state.written.get("status")
        if not changed_decision and not (
            changed_numbers and now - state.written_at >= STATUS_REFRESH_SECONDS
        ):
            return
        if recommendation.replicas != item.replicas:
            status["autoscaling"]["lastScaleTime"] = _timestamp()
        current = item.body.get("status") or {}
        if self._write_status(
            item, {**status, "planAtLoad": scaling.plan_at_load_status(plan, current, replan)}, conditions
        ):
            state.written = {"decisive": decisive, "status": status}
            state.written_at = now

    def _write_status(self, item: Scaled, status: dict[str, Any], conditions: Sequence[Any]) -> bool:
        owner = item.md.owner
        with self.reconciler.lock(owner.namespace, owner.name):
            body = self.cluster.get(API_VERSION, "ModelDeployment", owner.namespace, owner.name)
            if body is None:
                return False
            old = body.get("status") or {}
            previous = old.get("conditions") or []
            generation = int(body["metadata"].get("generation") or 1)
            ours = merge(previous, conditions, generation, _timestamp())
            kept = [c for c in previous if c.get("type") not in {c.type for c in conditions}]
            patch = {**status, "conditions": kept + ours}
            try:
                self.cluster.patch_status(API_VERSION, "ModelDeployment", owner.namespace, owner.name, patch)
            except ApiError as error:
                log.warning(
                    "could not write the autoscaling status of %s/%s: %s", owner.namespace, owner.name, error
                )
                return False
            self._emit_condition_changes(body, previous, ours)
        return True

    def _emit_condition_changes(
        self,
        body: Mapping[str, Any],
        previous: Sequence[Mapping[str, Any]],
        current: Sequence[Mapping[str, Any]],
    ) -> None:
        before = {c.get("type"): c for c in previous}
        emit = self.reconciler.poster(body)
        for condition in current:
            old = before.get(condition["type"]) or {}
            if (old.get("status"), old.get("reason")) == (condition["status"], condition["reason"]):
                continue
            if condition["reason"] in ("MetricsStale", "PowerCapped"):
                emit("Warning", condition["reason"], condition["message"][:1024])
            elif old:
                emit("Normal", condition["reason"], condition["message"][:1024])


TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


def _timestamp(at: float | None = None) -> str:
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime(TIMESTAMP)


def _last_rollover(status: Mapping[str, Any], md: ModelDeploymentSpec) -> float | None:
    """When the generation last rolled over (status.replan.lastRolloverTime), as wall time."""
    replan = status.get("replan") or {}
    if replan.get("generation") != md.owner.generation or not replan.get("lastRolloverTime"):
        return None
    try:
        return datetime.strptime(str(replan["lastRolloverTime"]), TIMESTAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
