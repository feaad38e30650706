"""The operator's Prometheus metrics, on an explicit registry served on its own port.

The operator in a cluster and `frugal up` on one machine export the same series, so the chart's
dashboard and alert rules read either."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.decision.autoscaling import Recommendation, ScaleReason
from frugal.operator.decision.conditions import Phase
from frugal.operator.decision.planner import Option

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_STAGES = ("compression", "profiling")


class OperatorMetrics:
    """Reconcile duration, errors and API requests; per ModelDeployment: its phase and failed Jobs
    (kube-state-metrics style, for alerts); per served model: replicas per shard, the latency
    SLO and the autoscaler's decision (desired replicas, reason, cost per hour, watts, power cap)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.duration = Histogram(
            "frugal_operator_reconcile_duration_seconds",
            "Time one reconcile pass takes.",
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.errors = Counter(
            "frugal_operator_reconcile_errors_total",
            "Reconcile passes that raised.",
            ["namespace"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "frugal_operator_api_requests_total",
            "Requests the operator sent to the API server.",
            registry=self.registry,
        )
        self.api_writes = Counter(
            "frugal_operator_api_writes_total",
            "Requests the operator sent to the API server that write (apply, patch, create, delete).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "frugal_operator_leader",
            "1 while this operator process leads (holds the leader Lease, or runs without election) and "
            "reconciles; 0 while it stands by.",
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "frugal_autoscaler_desired_replicas",
            "Replicas per shard the autoscaler asked for on its last tick.",
            ["namespace", "model", "model_deployment", "shard"],
            registry=self.registry,
        )
        self.scale_reason = Gauge(
            "frugal_autoscaler_reason",
            "1 for the reason behind the autoscaler's last decision (an info-style gauge).",
            ["namespace", "model", "model_deployment", "reason"],
            registry=self.registry,
        )
        self.watts = Gauge(
            "frugal_autoscaler_power_watts",
            "Watts the serving replicas draw, measured or predicted by the autoscaler.",
            ["namespace", "model", "model_deployment"],
            registry=self.registry,
        )
        self.scale_events = Counter(
            "frugal_autoscaler_scale_events",
            "Replica count changes the autoscaler made, by direction and reason.",
            ["namespace", "model_deployment", "direction", "reason"],
            registry=self.registry,
        )
        self.rollovers = Counter(
            "frugal_autoscaler_rollovers",
            "Re-planning rollovers to another (variant, hardware profile, shards) at the observed load.",
            ["namespace", "model_deployment", "reason"],
            registry=self.registry,
        )
        self.power_capped = Gauge(
            "frugal_autoscaler_power_capped",
            "1 while spec.autoscaling.power.capWatts holds the replicas below what the load asks for.",
            ["namespace", "model", "model_deployment"],
            registry=self.registry,
        )
        self.prometheus_queries = Counter(
            "frugal_autoscaler_prometheus_queries",
            "Queries the autoscaler sent to Prometheus.",
            registry=self.registry,
        )
        self.tick_duration = Histogram(
            "frugal_autoscaler_tick_duration_seconds",
            "Time one autoscaler tick over every ModelDeployment takes.",
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.replicas = Gauge(
            "frugal_replicas",
            "Desired serving replicas per shard.",
            ["namespace", "model", "model_deployment", "shard", "variant", "hardware_profile"],
            registry=self.registry,
        )
        self.cost = Gauge(
            "frugal_cost_per_hour_usd",
            "Cost per hour of all serving replicas, energy included (USD).",
            ["namespace", "model", "model_deployment"],
            registry=self.registry,
        )
        self.slo = Gauge(
            "frugal_slo_latency_p95_seconds",
            "Latency target of the 95th percentile (spec.serving.slo.latencyP95Ms).",
            ["namespace", "model", "model_deployment"],
            registry=self.registry,
        )
        variant_labels = ["namespace", "model", "model_deployment", "variant"]
        self.variant_size = Gauge(
            "frugal_variant_size_bytes",
            "Size of each compressed variant's model files (the compression report).",
            variant_labels,
            registry=self.registry,
        )
        self.variant_metric = Gauge(
            "frugal_variant_metric",
            "Each variant's score on spec.accuracyBudget.metric (accuracy or f1, 0 to 1).",
            [*variant_labels, "metric"],
            registry=self.registry,
        )
        self.variant_metric_drop = Gauge(
            "frugal_variant_metric_drop",
            "How far each variant's metric falls below the original model's (0 for the original).",
            [*variant_labels, "metric"],
            registry=self.registry,
        )
        self.variant_accepted = Gauge(
            "frugal_variant_accepted",
            "1 for a variant within the accuracy budget that some HardwareProfile serves within the SLO.",
            variant_labels,
            registry=self.registry,
        )
        self.phase = Gauge(
            "frugal_model_deployment_phase",
            "1 for the ModelDeployment's status.phase, 0 for each other phase.",
            ["namespace", "model_deployment", "phase"],
            registry=self.registry,
        )
        self.failed_jobs = Gauge(
            "frugal_model_deployment_failed_jobs",
            "Jobs of the ModelDeployment's current generation that failed, by stage (compression, profiling).",
            ["namespace", "model_deployment", "stage"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._assessed: set[tuple[str, str]] = set()

    def count_request(self, method: str) -> None:
        self.api_requests.inc()
        if method != "GET":
            self.api_writes.inc()

    def assessed(self, namespace: str, name: str, phase: Phase, failed_jobs: dict[str, int]) -> None:
        """The phase the reconciler last wrote for `namespace/name`, and its failed Jobs by stage."""
        self._assessed.add((namespace, name))
        for each in Phase:
            self.phase.labels(namespace, name, each.value).set(1 if each is phase else 0)
        for stage in JOB_STAGES:
            self.failed_jobs.labels(namespace, name, stage).set(failed_jobs.get(stage, 0))

    def observe(
        self,
        md: ModelDeploymentSpec,
        selection: Option,
        status: ModelDeploymentStatus | Mapping[str, Any],
    ) -> None:
        """Set `md`'s series. `model` is the served model's name, the label its serving pods export;
        `model_deployment` tells apart ModelDeployments that serve a model of the same name.
        `status` gives the shards' replicas and status.variants, the compression report."""
        typed = ModelDeploymentStatus.from_status(status)
        series = self._of(md.owner.namespace, md.model_name, md.owner.name)
        for labels in series.replicas:
            self.replicas.remove(*labels)
        series.replicas = []
        for shard in typed.shards:
            labels = (*series.model, str(shard.index), selection.variant, selection.profile)
            self.replicas.labels(*labels).set(shard.replicas or 0)
            series.replicas.append(labels)
        self.slo.labels(*series.model).set(md.slo_p95_ms / 1000)
        _remove_all(series.variants)
        series.variants = []
        for variant in typed.variants:
            labels = (*series.model, variant.name)
            series.variants.append((self.variant_size, labels))
            self.variant_size.labels(*labels).set(variant.size_bytes or 0)
            series.variants.append((self.variant_accepted, labels))
            self.variant_accepted.labels(*labels).set(1 if variant.accepted else 0)
            score = variant.metric
            if score is None or score.value is None:
                continue
            scored = (*labels, score.name or "accuracy")
            series.variants += [(self.variant_metric, scored), (self.variant_metric_drop, scored)]
            self.variant_metric.labels(*scored).set(score.value)
            self.variant_metric_drop.labels(*scored).set(max(0.0, score.drop or 0.0))

    def autoscaled(
        self,
        model: tuple[str, str, str],
        desired: Sequence[int],
        reason: str,
        cost_per_hour: float,
        watts: float,
        power_capped: bool,
    ) -> None:
        """The autoscaler's last decision for `model` = (namespace, model, model_deployment)."""
        series = self._of(*model)
        _remove_all(series.autoscaled)
        series.autoscaled = [(self.desired_replicas, (*model, str(i))) for i in range(len(desired))]
        series.autoscaled.append((self.scale_reason, (*model, reason)))
        for (gauge, labels), count in zip(series.autoscaled, desired, strict=False):
            gauge.labels(*labels).set(count)
        self.scale_reason.labels(*model, reason).set(1)
        self.cost.labels(*model).set(cost_per_hour)
        self.watts.labels(*model).set(watts)
        self.power_capped.labels(*model).set(1 if power_capped else 0)

    def recommended(self, md: ModelDeploymentSpec, recommendation: Recommendation, status: Mapping[str, Any]) -> None:
        """An autoscaler tick for `md`: `recommendation`, and `status` as `scaling.observed_status` gives
        it (the cost per hour and the watts it counted)."""
        observed = ModelDeploymentStatus.from_status(status)
        watts = observed.energy.watts if observed.energy and observed.energy.watts is not None else None
        per_hour = observed.cost.per_hour if observed.cost else None
        self.autoscaled(
            (md.owner.namespace, md.model_name, md.owner.name),
            recommendation.replicas,
            recommendation.reason.value,
            float(per_hour or 0.0),
            recommendation.watts if watts is None else watts,
            ScaleReason.POWER_CAPPED in recommendation.reasons,
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of the ModelDeployment `namespace/name`."""
        if (namespace, name) in self._assessed:
            self._assessed.discard((namespace, name))
            for each in Phase:
                self.phase.remove(namespace, name, each.value)
            for stage in JOB_STAGES:
                self.failed_jobs.remove(namespace, name, stage)
        series = self._series.pop((namespace, name), None)
        if series is None:
            return
        for labels in series.replicas:
            self.replicas.remove(*labels)
        _remove_all(series.autoscaled)
        _remove_all(series.variants)
        for gauge in (self.cost, self.slo, self.watts, self.power_capped):
            with contextlib.suppress(KeyError):
                gauge.remove(*series.model)

    def _of(self, namespace: str, model: str, name: str) -> _Series:
        series = self._series.get((namespace, name))
        if series is None or series.model != (namespace, model, name):
            if series is not None:
                self.forget(namespace, name)
            series = self._series[(namespace, name)] = _Series((namespace, model, name))
        return series


@dataclass
class _Series:
    model: tuple[str, str, str]  # (namespace, model, model_deployment): the per-model gauges' labels
    replicas: list[tuple[str, ...]] = field(default_factory=list)
    autoscaled: list[tuple[Any, tuple[str, ...]]] = field(default_factory=list)
    variants: list[tuple[Any, tuple[str, ...]]] = field(default_factory=list)


def _remove_all(labelled: Sequence[tuple[Any, tuple[str, ...]]]) -> None:
    for gauge, labels in labelled:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> Any:
    """Expose the registry on http://host:port/metrics; returns the server (call .shutdown())."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
