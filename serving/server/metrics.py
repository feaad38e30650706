"""Prometheus collectors on an explicit registry (no globals), with the process's constant labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class MetricLabels:
    model: str
    variant: str
    shard: str = "0"
    namespace: str = ""
    hardware_profile: str = ""


class ServerMetrics:
    def __init__(
        self, registry: CollectorRegistry, labels: MetricLabels, latency_target_s: float | None = None
    ) -> None:
        self.registry = registry
        base = asdict(labels)
        names = list(base)
        self._base = base
        self.request_duration = Histogram(
            "frugal_request_duration_seconds",
            "Time from receiving an inference request to sending its response.",
            names,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ).labels(**base)
        self._requests = Counter(
            "frugal_requests",
            "Inference requests answered, by HTTP status code.",
            [*names, "code"],
            registry=registry,
        )
        self._by_code: dict[int, Counter] = {}
        # The SLO's error budget, counted exactly at the target (no histogram bucket sits on every target):
        # burn rate = rate(over target) / rate(requests) / (1 - 0.95) for a p95 target.
        self._over_target = (
            (
                latency_target_s,
                Counter(
                    "frugal_requests_over_latency_target",
                    "Inference requests answered slower than the latency target (--latency-target-ms).",
                    names,
                    registry=registry,
                ).labels(**base),
            )
            if latency_target_s is not None
            else None
        )
        self.batch_size = Histogram(
            "frugal_batch_size",
            "Requests merged into one runtime execution.",
            names,
            registry=registry,
            buckets=BATCH_BUCKETS,
        ).labels(**base)
        self.queue_depth = Gauge(
            "frugal_queue_depth", "Requests waiting in the batch queue.", names, registry=registry
        ).labels(**base)
        self.inflight = Gauge(
            "frugal_inflight_requests", "Inference requests being handled.", names, registry=registry
        ).labels(**base)
        self.client_disconnects = Counter(
            "frugal_client_disconnects",
            "Inference requests whose client closed the connection before the answer.",
            names,
            registry=registry,
        ).labels(**base)
        self.model_size = Gauge(
            "frugal_model_size_bytes", "Size of the served model file(s).", names, registry=registry
        ).labels(**base)
        self._power = Gauge(
            "frugal_power_watts",
            "Power drawn, measured (nvml) or estimated.",
            [*names, "source"],
            registry=registry,
        )
        self._energy = Counter(
            "frugal_energy_joules", "Energy used since start.", [*names, "source"], registry=registry
        )

    def observe(self, code: int, seconds: float) -> None:
        """One answered inference request: its code, its duration, and whether it missed the target."""
        self.count(code)
        self.request_duration.observe(seconds)
        if self._over_target is not None and seconds > self._over_target[0]:
            self._over_target[1].inc()

    def count(self, code: int) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._requests.labels(**self._base, code=str(code))
        child.inc()

    def answered(self) -> int:
        """Inference requests answered so far, every code and both transports (the shutdown log's count)."""
        return int(sum(s.value for m in self._requests.collect() for s in m.samples if s.name.endswith("_total")))

    def power(self, source: str, watts: float, joules: float) -> None:
        self._power.labels(**self._base, source=source).set(watts)
        self._energy.labels(**self._base, source=source).inc(joules)
