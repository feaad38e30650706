"""The operator's Prometheus metrics, on an explicit registry served on its own port."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.manifests.serving_objects import Selection

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    """Reconcile duration and errors; per served model: replicas per shard, cost per hour, latency SLO."""

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
            "Requests the reconciler sent to the API server.",
            registry=self.registry,
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
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(
        self,
        md: ModelDeploymentSpec,
        selection: Selection,
        shards: Sequence[dict[str, Any]],
        cost_per_hour: str | None,
    ) -> None:
        """Set `md`'s series. `model` is the served model's name, the label its serving pods export;
        `model_deployment` tells apart ModelDeployments that serve a model of the same name."""
        self.forget(md.owner.namespace, md.owner.name)
        series = _Series((md.owner.namespace, md.model_name, md.owner.name))
        for shard in shards:
            labels = (*series.model, str(shard["index"]), selection.variant, selection.profile)
            self.replicas.labels(*labels).set(shard.get("replicas", 0))
            series.replicas.append(labels)
        if cost_per_hour is not None:
            self.cost.labels(*series.model).set(float(cost_per_hour))
        self.slo.labels(*series.model).set(md.latency_p95_ms / 1000)
        self._series[(md.owner.namespace, md.owner.name)] = series

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of the ModelDeployment `namespace/name`."""
        series = self._series.pop((namespace, name), None)
        if series is None:
            return
        for labels in series.replicas:
            self.replicas.remove(*labels)
        for gauge in (self.cost, self.slo):
            with contextlib.suppress(KeyError):
                gauge.remove(*series.model)


@dataclass
class _Series:
    model: tuple[str, str, str]  # (namespace, model, model_deployment): the per-model gauges' labels
    replicas: list[tuple[str, ...]] = field(default_factory=list)


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> Any:
    """Expose the registry on http://host:port/metrics; returns the server (call .shutdown())."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
