"""The real Prometheus harness: it scrapes a real metrics endpoint named at run time, answers PromQL with
the served namespace/model/shard labels kept, drops a removed target, and is unreachable once stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlplane_harness import free_port
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_harness import JOB_NAME, Prometheus

LABELS = {"namespace": "ns-a", "model": "digits", "shard": "1"}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path / "prometheus", interval_s=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[str, Counter, Gauge]]:
    """A real /metrics endpoint in this process: (address, requests counter, queue-depth gauge)."""
    registry = CollectorRegistry()
    names = list(LABELS)
    requests = Counter("frugal_harness_requests", "Requests (harness test).", names, registry=registry)
    queue = Gauge("frugal_harness_queue_depth", "Queue depth (harness test).", names, registry=registry)
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", requests, queue
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_a_real_endpoint_and_answers_promql(
    prometheus: Prometheus, metrics_endpoint: tuple[str, Counter, Gauge]
) -> None:
    address, requests, queue = metrics_endpoint
    requests.labels(**LABELS).inc(0)
    queue.labels(**LABELS).set(3)
    # The target's own "namespace" label loses to the scraped one (honor_labels); "pod" is added.
    prometheus.set_targets([(address, {"pod": "digits-1-abc", "namespace": "from-target"})])

    stop = threading.Event()

    def serve_requests() -> None:
        while not stop.is_set():
            requests.labels(**LABELS).inc(5)
            time.sleep(0.1)

    load = threading.Thread(target=serve_requests, daemon=True)
    load.start()
    try:
        rate = prometheus.wait_for_series(
            "sum by (namespace, model, shard) (rate(frugal_harness_requests_total[10s]))",
            predicate=lambda result: float(result[0]["value"][1]) > 0,
        )
    finally:
        stop.set()
        load.join(timeout=5)
    assert len(rate) == 1
    assert rate[0]["metric"] == LABELS
    assert 5.0 < float(rate[0]["value"][1]) < 200.0  # ~50/s; loose for a busy machine

    gauge = prometheus.query("frugal_harness_queue_depth")
    assert len(gauge) == 1
    assert gauge[0]["metric"] == {
        "__name__": "frugal_harness_queue_depth",
        **LABELS,
        "pod": "digits-1-abc",
        "job": JOB_NAME,
        "instance": address,
    }
    assert float(gauge[0]["value"][1]) == 3.0

    # Removing the target at run time stops its scrapes and marks its series stale (after Prometheus'
    # 5 s target-update tick, see prometheus_harness).
    prometheus.set_targets([])
    prometheus.wait_for_no_series("frugal_harness_queue_depth")

    # What a stopped Prometheus looks like to a client: nothing listens, a ConnectionError.
    prometheus.stop()
    with pytest.raises(ConnectionError):
        prometheus.query("up")
