"""The Prometheus HTTP API, for instant queries: ``GET /api/v1/query?query=...``.

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
from typing import Any

TIMEOUT_SECONDS = 10.0


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
