"""The operator's Prometheus metrics, on an explicit registry served on its own port."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from frugal.operator.controller.serving import Selection

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    """Reconcile duration and errors, replicas per shard, cost per hour per ModelDeployment."""

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
            ["namespace", "model", "shard", "variant", "hardware_profile"],
            registry=self.registry,
        )
        self.cost = Gauge(
            "frugal_cost_per_hour_usd",
            "Cost per hour of all serving replicas, energy included (USD).",
            ["namespace", "model"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], list[tuple[str, ...]]] = {}

    def observe(
        self,
        namespace: str,
        model: str,
        selection: Selection,
        shards: Sequence[dict[str, Any]],
        cost_per_hour: str | None,
    ) -> None:
        self.forget(namespace, model)
        series: list[tuple[str, ...]] = []
        for shard in shards:
            labels = (namespace, model, str(shard["index"]), selection.variant, selection.profile)
            self.replicas.labels(*labels).set(shard.get("replicas", 0))
            series.append(labels)
        self._series[(namespace, model)] = series
        if cost_per_hour is not None:
            self.cost.labels(namespace, model).set(float(cost_per_hour))

    def forget(self, namespace: str, model: str) -> None:
        for labels in self._series.pop((namespace, model), []):
            self.replicas.remove(*labels)
        with contextlib.suppress(KeyError):
            self.cost.remove(namespace, model)


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> Any:
    """Expose the registry on http://host:port/metrics; returns the server (call .shutdown())."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
