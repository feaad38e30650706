"""The Prometheus HTTP API, for instant queries (``GET /api/v1/query?query=...``), and the autoscaler's
metrics source on it.

A dozen lines over urllib rather than a client library: the autoscaler sends a handful of instant
queries per tick and needs only the JSON result vector (prometheus-api-client would bring pandas and
matplotlib along). Errors come back as :class:`PrometheusError` naming the query that failed.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from frugal.operator.control.port import MetricsKey, MetricsReading
from frugal.operator.decision import observations

TIMEOUT_SECONDS = 10.0
NO_PROMETHEUS = (
    "no Prometheus to read: set spec.autoscaling.prometheus.url, or run the operator with --prometheus-url"
)


class PrometheusError(RuntimeError):
    """A query could not be answered; the message names the server, the query and why."""


class Prometheus:
    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = 0
        self._lock = threading.Lock()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now (``data.result``)."""
        with self._lock:
            self.queries += 1
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = _error_body(error)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise PrometheusError(f"{self.url} did not answer {promql!r}: {reason}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url} refused {promql!r}: {body.get('error', body)}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"{self.url} answered {promql!r} with a {data.get('resultType')}, not a vector"
            )
        result: list[dict[str, Any]] = data.get("result", [])
        return result


def _error_body(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        decoded: dict[str, Any] = json.loads(error.read())
        return decoded
    except (ValueError, OSError):
        return {"status": "error", "error": f"HTTP {error.code}"}


class PrometheusMetrics:
    """The autoscaler's metrics source in a cluster: per (Prometheus URL, power source), one instant
    query per metric for every model at once (:func:`observations.queries`), or why it failed."""

    def __init__(
        self, rate_window: str = observations.RATE_WINDOW, on_query: Callable[[], None] | None = None
    ) -> None:
        self.rate_window = rate_window
        self._on_query = on_query
        self._servers: dict[str, Prometheus] = {}

    def read(self, wanted: Sequence[MetricsKey]) -> MetricsReading:
        samples: dict[MetricsKey, dict[observations.Key, observations.ShardSample]] = {}
        failures: dict[MetricsKey, str] = {}
        held: dict[MetricsKey, dict[tuple[str, str], float]] = {}
        common: dict[str, dict[str, list[dict[str, Any]]] | str] = {}
        for url, source in sorted(set(wanted)):
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
            held[(url, source)] = observations.held_from_prometheus(answers.get("held_requests", []))
        return MetricsReading(samples, failures, held)

    def _query_all(self, url: str, promql: Mapping[str, str]) -> dict[str, list[dict[str, Any]]] | str:
        server = self._servers.setdefault(url, Prometheus(url))
        answers = {}
        for name, query in promql.items():
            if self._on_query is not None:
                self._on_query()
            try:
                answers[name] = server.query(query)
            except PrometheusError as error:
                return str(error)
        return answers
