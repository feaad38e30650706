"""The front wakes its model itself: when it holds a request, it scales each of the live revision's
shard Deployments that asks for 0 replicas to 1 (as Knative's activator pokes its autoscaler), so a
model at zero wakes even while the operator is down or Prometheus has not scraped the held gauge yet.

How: with the front's own ServiceAccount token (re-read at every wake: the kubelet rotates it), over
HTTPS to the API server with plain aiohttp (the serving image has no Kubernetes client), it reads the
Service ``--wake-service`` (``<name>-live``), whose annotation names the Deployments to wake
(`frugal.schema.wake_annotation`); for each it gets ``deployments/<name>/scale`` and, only when
``spec.replicas`` is 0, patches ``{"spec": {"replicas": 1}}`` with the scale's ``resourceVersion`` as
a precondition: a count anyone else changed in between is left alone (409), so the front never lowers
a count and never raises one above 1. Every other decision stays the operator's autoscaler's, which
counts a wake it did not make as demand (``autoscaling._woken_elsewhere``).

When: `Waker.poke` is called while a request is held; one wake runs at a time, and the next poke starts
another only `interval_s` after the last one ended (a wake that found every shard awake, or failed,
is tried again then). Each wake is counted by its result (`Result`) and logged on one line: INFO when
it scaled something, WARNING when it failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from frugal.schema.wake_annotation import FIELD_MANAGER, WAKE_ANNOTATION, deployments_to_wake

log = logging.getLogger("frugal.front.wake")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WAKE_INTERVAL_S = 2.0


class Result(StrEnum):
    WOKEN = "woken"  # at least one shard went from 0 to 1
    AWAKE = "awake"  # every shard already asked for replicas (or another writer changed one first)
    FAILED = "failed"  # the API server could not be reached, or refused


class WakeError(RuntimeError):
    """A wake that could not be made, with what the API server said."""


def in_cluster_url(environ: Mapping[str, str]) -> str | None:
    """The API server a pod reaches (KUBERNETES_SERVICE_HOST/PORT), or None outside a pod."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def needs_wake(scale: Mapping[str, Any]) -> bool:
    """Whether a ``deployments/scale`` object asks for no replica (the only count the front changes)."""
    return int((scale.get("spec") or {}).get("replicas") or 0) == 0


def wake_patch(scale: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch waking `scale`: 1 replica, only if its count is still the one read."""
    return {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]}, "spec": {"replicas": 1}}


@dataclass(frozen=True)
class KubeAccess:
    """Where the front reaches the API server and as whom: the in-cluster defaults in a pod."""

    api_url: str
    token_file: Path
    ca_file: Path | None  # None: the system's trust store
    namespace: str
    service: str  # the Service whose annotation names the Deployments to wake


class Waker:
    """Wakes one model, at most one wake at a time, at most once per `interval_s`."""

    def __init__(
        self,
        access: KubeAccess,
        on_result: Callable[[Result], None],
        interval_s: float = WAKE_INTERVAL_S,
        timeout_s: float = 10.0,
    ) -> None:
        self.access = access
        self.on_result = on_result
        self.interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[Result] | None = None
        self._ended_at: float | None = None

    async def open(self) -> None:
        context = ssl.create_default_context(
            cafile=None if self.access.ca_file is None else str(self.access.ca_file)
        )
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=context, limit=4)
        )

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._session is not None:
            await self._session.close()

    def poke(self, held: int) -> None:
        """A request is held: start a wake, unless one runs or the last ended under `interval_s` ago."""
        now = asyncio.get_running_loop().time()
        if self._task is not None and not self._task.done():
            return
        if self._ended_at is not None and now - self._ended_at < self.interval_s:
            return
        self._task = asyncio.get_running_loop().create_task(self._wake_counted(held))

    async def _wake_counted(self, held: int) -> Result:
        started = asyncio.get_running_loop().time()
        try:
            woken = await self.wake()
        except (WakeError, aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as error:
            log.warning("front: could not wake %s/%s: %s", self.access.namespace, self.access.service, error)
            result = Result.FAILED
        else:
            result = Result.WOKEN if woken else Result.AWAKE
            if woken:
                log.info(
                    "front: woke %s/%s (0 -> 1 replica) for %d held request(s) in %.0f ms",
                    self.access.namespace, ",".join(woken), held,
                    1000 * (asyncio.get_running_loop().time() - started),
                )  # fmt: skip
        finally:
            self._ended_at = asyncio.get_running_loop().time()
        self.on_result(result)
        return result

    async def wake(self) -> list[str]:
        """Scale every listed Deployment at 0 to 1; the names of those it scaled."""
        token = self.access.token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        ns = quote(self.access.namespace, safe="")
        service = await self._call(
            "GET", f"/api/v1/namespaces/{ns}/services/{quote(self.access.service)}", headers
        )
        annotations = (service.get("metadata") or {}).get("annotations") or {}
        deployments = deployments_to_wake(annotations.get(WAKE_ANNOTATION))
        if not deployments:
            raise WakeError(f"Service {self.access.service} names no Deployment to wake ({WAKE_ANNOTATION})")
        woken = []
        for name in deployments:
            path = f"/apis/apps/v1/namespaces/{ns}/deployments/{quote(name)}/scale"
            scale = await self._call("GET", path, headers)
            if not needs_wake(scale):
                continue
            patched = await self._call(
                "PATCH", path, {**headers, "Content-Type": "application/merge-patch+json"},
                body=wake_patch(scale), conflict_ok=True,
            )  # fmt: skip
            if patched:
                woken.append(name)
        return woken

    async def _call(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Any = None,
        conflict_ok: bool = False,
    ) -> dict[str, Any]:
        """The API server's JSON answer; {} for a 409 when `conflict_ok` (someone changed it first)."""
        assert self._session is not None
        params = {"fieldManager": FIELD_MANAGER} if method == "PATCH" else None
        url = self.access.api_url.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(method, url, headers=headers, data=data, params=params) as answer:
            if answer.status == 409 and conflict_ok:
                return {}
            payload = await answer.json(content_type=None) if answer.content_length != 0 else {}
            if answer.status >= 300:
                message = payload.get("message") if isinstance(payload, dict) else None
                raise WakeError(f"{method} {path}: {answer.status} {message or answer.reason}")
            return payload if isinstance(payload, dict) else {}
