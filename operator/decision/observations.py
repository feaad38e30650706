"""What the autoscaler reads, as data: the PromQL it sends, and how answers become an Observation.

Pure: the cluster side sends :func:`queries` to the Prometheus HTTP API (one query per metric for every
ModelDeployment at once, grouped ``by (namespace, model, shard)``) and hands the answers to
:func:`samples_from_prometheus`; ``frugal up`` scrapes each server's ``/metrics`` itself and hands two
scrapes to :func:`samples_from_scrapes` (parsed by prometheus-client's own text parser). Both end in
the same :class:`ShardSample` per (namespace, model, shard), and :func:`observation` turns the samples
of one ModelDeployment into the policy's :class:`~frugal.operator.decision.autoscaling.Observation`.

The series are the serving metrics of ``frugal serve`` (``frugal_request_duration_seconds``,
``frugal_queue_depth``, ``frugal_inflight_requests``, ``frugal_batch_size``, ``frugal_power_watts``),
scraped with their own ``namespace``/``model``/``shard`` labels kept (``honor_labels``). Power follows
``spec.autoscaling.power.source``: frugal's own gauge (NVML or the profile's estimate), the NVIDIA
DCGM exporter's ``DCGM_FI_DEV_POWER_USAGE`` or Kepler's ``kepler_container_joules_total``, the last
two joined to a shard through the serving series' ``pod`` label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from frugal.operator.decision.autoscaling import Observation, ShardObservation

GROUP = ("namespace", "model", "shard")
BY = "by (namespace, model, shard)"
# A window of four scrapes at Prometheus' usual 15 s interval.
RATE_WINDOW = "1m"
POWER_SOURCES = ("estimate", "dcgm", "kepler")

Key = tuple[str, str, int]  # (namespace, model, shard)


def queries(power_source: str = "estimate", window: str = RATE_WINDOW) -> dict[str, str]:
    """The PromQL of every metric the policy reads, for all ModelDeployments at once."""
    shard_of_pod = "max by (namespace, pod, model, shard) (frugal_inflight_requests)"
    power = {
        "estimate": f"sum {BY} (frugal_power_watts)",
        "dcgm": f"sum {BY} (DCGM_FI_DEV_POWER_USAGE * on (namespace, pod) group_left (model, shard) {shard_of_pod})",
        "kepler": (
            f"sum {BY} (label_replace(label_replace(rate(kepler_container_joules_total[{window}]), "
            '"namespace", "$1", "container_namespace", "(.+)"), "pod", "$1", "pod_name", "(.+)") '
            f"* on (namespace, pod) group_left (model, shard) {shard_of_pod})"
        ),
    }
    if power_source not in power:
        raise ValueError(f"power source {power_source!r}: expected one of {', '.join(POWER_SOURCES)}")
    return {
        "request_rate": f"sum {BY} (rate(frugal_request_duration_seconds_count[{window}]))",
        "latency_p95_seconds": (
            "histogram_quantile(0.95, sum by (namespace, model, shard, le) "
            f"(rate(frugal_request_duration_seconds_bucket[{window}])))"
        ),
        "queue_depth": f"sum {BY} (frugal_queue_depth)",
        "inflight": f"sum {BY} (frugal_inflight_requests)",
        "mean_batch_size": (
            f"sum {BY} (rate(frugal_batch_size_sum[{window}])) / sum {BY} (rate(frugal_batch_size_count[{window}]))"
        ),
        "watts": power[power_source],
    }


def front_queries(window: str = RATE_WINDOW) -> dict[str, str]:
    """What the fronts of models at zero hold, by (namespace, model): the most held within the window,
    so a request held and answered between two scrapes still counts as demand."""
    return {
        "held_requests": f"sum by (namespace, model) (max_over_time(frugal_front_held_requests[{window}]))"
    }


def held_from_prometheus(result: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """The held-requests answer as {(namespace, model): requests}."""
    held: dict[tuple[str, str], float] = {}
    for series in result:
        labels = series.get("metric") or {}
        if "namespace" in labels and "model" in labels:
            value = float(series["value"][1])
            held[(str(labels["namespace"]), str(labels["model"]))] = 0.0 if math.isnan(value) else value
    return held


@dataclass
class ShardSample:
    """The metrics of one (namespace, model, shard), summed over its replicas; None where absent."""

    values: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        value = self.values.get(name)
        return None if value is None or math.isnan(value) else value


def samples_from_prometheus(answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[Key, ShardSample]:
    """Instant-vector answers (``data.result`` of /api/v1/query), by query name, as samples per shard."""
    samples: dict[Key, ShardSample] = {}
    for name, result in answers.items():
        for series in result:
            labels = series.get("metric") or {}
            key = _key(labels)
            if key is None:
                continue
            value = float(series["value"][1])
            samples.setdefault(key, ShardSample()).values[name] = value
    return samples


def _key(labels: Mapping[str, str]) -> Key | None:
    try:
        return str(labels["namespace"]), str(labels["model"]), int(labels["shard"])
    except (KeyError, ValueError):
        return None


def observation(
    namespace: str,
    model: str,
    replicas: Sequence[int],
    ready: Sequence[int],
    samples: Mapping[Key, ShardSample],
    failed: str | None = None,
    held_requests: float = 0.0,
) -> Observation:
    """The policy's view of one ModelDeployment; stale when a query failed or a running shard is unseen."""
    shards = []
    missing = []
    for index, (count, up) in enumerate(zip(replicas, ready, strict=True)):
        sample = samples.get((namespace, model, index))
        if sample is None or sample.get("request_rate") is None:
            if up > 0:
                missing.append(index)
            sample = ShardSample()
        latency = sample.get("latency_p95_seconds")
        shards.append(
            ShardObservation(
                request_rate=sample.get("request_rate") or 0.0,
                latency_p95_ms=None if latency is None else latency * 1000.0,
                queue_depth=sample.get("queue_depth") or 0.0,
                inflight=sample.get("inflight") or 0.0,
                mean_batch_size=sample.get("mean_batch_size"),
                watts=sample.get("watts"),
                replicas=count,
                ready=up,
            )
        )
    stale = failed
    if stale is None and missing:
        where = ", ".join(str(i) for i in missing)
        stale = f"no request metrics for {namespace}/{model} shard {where} although replicas are ready"
    return Observation(tuple(shards), stale, held_requests)


# -- frugal up: the servers' own /metrics, two scrapes apart ------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One parse of a server's exposition: counters, gauges and histogram buckets by series name."""

    at: float
    counters: Mapping[str, float]
    gauges: Mapping[str, float]
    buckets: Mapping[str, tuple[tuple[float, float], ...]]  # histogram -> ((le, cumulative count), ...)


HISTOGRAMS = ("frugal_request_duration_seconds",)
COUNTERS = (
    "frugal_request_duration_seconds_count",
    "frugal_batch_size_sum",
    "frugal_batch_size_count",
    "frugal_energy_joules_total",
)
GAUGES = ("frugal_queue_depth", "frugal_inflight_requests", "frugal_power_watts")


def parse_scrape(text: str, at: float) -> Scrape:
    """A server's exposition text, summed over its label sets, through prometheus-client's parser."""
    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                counters[sample.name] = counters.get(sample.name, 0.0) + sample.value
            elif sample.name in GAUGES:
                gauges[sample.name] = gauges.get(sample.name, 0.0) + sample.value
            elif sample.name.endswith("_bucket") and sample.name[: -len("_bucket")] in HISTOGRAMS:
                le = float(sample.labels["le"])
                series = buckets.setdefault(sample.name[: -len("_bucket")], {})
                series[le] = series.get(le, 0.0) + sample.value
    ordered = {name: tuple(sorted(series.items())) for name, series in buckets.items()}
    return Scrape(at, counters, gauges, ordered)


def samples_from_scrapes(pairs: Iterable[tuple[Scrape, Scrape]]) -> ShardSample:
    """One shard's sample from (previous, current) scrapes of each of its replicas, as Prometheus'
    ``rate`` and ``histogram_quantile`` would compute it over the interval between them."""
    rate = batch_sum = batch_count = watts = queue = inflight = 0.0
    merged: dict[float, float] = {}
    seen = False
    for before, after in pairs:
        seconds = after.at - before.at
        if seconds <= 0:
            continue
        seen = True
        rate += _increase(before, after, "frugal_request_duration_seconds_count") / seconds
        batch_sum += _increase(before, after, "frugal_batch_size_sum")
        batch_count += _increase(before, after, "frugal_batch_size_count")
        watts += after.gauges.get("frugal_power_watts", 0.0)
        queue += after.gauges.get("frugal_queue_depth", 0.0)
        inflight += after.gauges.get("frugal_inflight_requests", 0.0)
        old = dict(before.buckets.get("frugal_request_duration_seconds", ()))
        new = after.buckets.get("frugal_request_duration_seconds", ())
        if new and new[-1][1] < old.get(new[-1][0], 0.0):
            old = {}  # the process restarted: its buckets count from zero again
        for le, count in new:
            merged[le] = merged.get(le, 0.0) + max(0.0, count - old.get(le, 0.0))
    if not seen:
        return ShardSample()
    values = {"request_rate": rate, "queue_depth": queue, "inflight": inflight, "watts": watts}
    quantile = histogram_quantile(0.95, sorted(merged.items()))
    if quantile is not None:
        values["latency_p95_seconds"] = quantile
    if batch_count > 0:
        values["mean_batch_size"] = batch_sum / batch_count
    return ShardSample(values)


def _increase(before: Scrape, after: Scrape, name: str) -> float:
    old, new = before.counters.get(name, 0.0), after.counters.get(name, 0.0)
    return new if new < old else new - old  # a restarted process starts its counters again


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets: linear interpolation
    inside the bucket holding the rank; the highest finite bound when it falls in +Inf; None when empty.

    Written here because prometheus-client has no query engine; it follows promql/quantile.go."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if upper_bound == math.inf:
                return lower_bound
            if upper_bound <= 0:
                return upper_bound
            within = (rank - lower_count) / max(count - lower_count, 1e-12)
            return lower_bound + (upper_bound - lower_bound) * within
        lower_bound, lower_count = upper_bound, count
    return lower_bound
