"""`frugal up`'s stand-in for a shard's Service: a small reverse proxy over the shard's ready replicas.

Each shard listens on one stable loopback port (shard k's ``--next-stage`` points at shard k+1's
balancer; users call shard 0's). A request goes to the ready replica with the fewest requests
outstanding through this balancer (ties in turn), with its method, path, query, body and end-to-end
headers; the replica's answer, 4xx and 5xx included, comes back as it is. With no ready replica the
answer is a 503 with a JSON ``{"error": ...}`` and ``Retry-After``; a replica that refuses the
connection (the request never reached it) is left for another one; nothing a client sends makes the
balancer fail.

The replica set changes while requests flow: :meth:`Balancer.add` puts a replica in the pool once it
is ready, :meth:`Balancer.remove` takes one out and waits for the requests it is still answering, so
a scale-down stops a replica only when nothing routed to it is in flight.

Hand-written, on aiohttp (already a dependency), because no well-kept library does this in-process:
the asyncio proxies on PyPI are standalone servers configured by file, or abandoned, and none takes
a backend set changed at run time by the code that embeds it. The balancers run on one event loop in
a thread of their own (:class:`BalancerHost`), so the rest of ``frugal up`` stays synchronous.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from frugal.serving.front import HOP_BY_HOP, Hold, forward

log = logging.getLogger("frugal.up")

T = TypeVar("T")

MAX_BODY_BYTES = 256 * 1024 * 1024
BACKEND_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=5)


def json_error(status: int, message: str, retry: bool = False) -> web.Response:
    headers = {"Retry-After": "1"} if retry else None
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass
class Backend:
    url: str
    outstanding: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def acquire(self) -> None:
        self.outstanding += 1
        self.idle.clear()

    def release(self) -> None:
        self.outstanding -= 1
        if self.outstanding <= 0:
            self.idle.set()


class Balancer:
    """One shard's front: least outstanding requests over a mutable set of replica URLs; with a
    :class:`Hold`, requests wait for the first replica instead of being refused."""

    def __init__(
        self, name: str, hold: Hold | None = None, on_demand: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self.hold = hold
        self.on_demand = on_demand
        self.held = 0
        self.waits: list[float] = []  # seconds each held request waited for a replica
        self._changed: asyncio.Condition | None = None
        self._pool: dict[str, Backend] = {}
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A client that goes away cancels its handler: a held request frees its place at once.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = next(a for a in self._runner.addresses if isinstance(a, tuple))
        self.url = f"http://{host}:{bound[1]}"
        # auto_decompress off: bodies pass through byte for byte, with their Content-Encoding.
        self._session = aiohttp.ClientSession(
            timeout=BACKEND_TIMEOUT,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
        )
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def add(self, url: str) -> None:
        self._pool.setdefault(url, Backend(url))
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def remove(self, url: str, timeout: float) -> bool:
        """Route nothing more to `url`; True once its requests through here have finished."""
        backend = self._pool.pop(url, None)
        if backend is None:
            return True
        try:
            await asyncio.wait_for(backend.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _pick(self, exclude: set[str]) -> Backend | None:
        candidates = [b for url, b in self._pool.items() if url not in exclude]
        if not candidates:
            return None
        least = min(b.outstanding for b in candidates)
        tied = [b for b in candidates if b.outstanding == least]
        return tied[next(self._turn) % len(tied)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._proxy(request)
        except web.HTTPException as exc:  # e.g. a body over the limit
            return json_error(exc.status, exc.reason or "bad request")
        except Exception as exc:  # never let one request take the balancer down
            log.exception("balancer %s: request failed", self.name)
            return json_error(502, f"balancer {self.name}: {type(exc).__name__}: {exc}")

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        tried: set[str] = set()
        while True:
            backend = self._pick(tried)
            if backend is None and not tried and self.hold is not None:
                held = await self._wait_for_replica(self.hold)
                if isinstance(held, web.Response):
                    return held
                backend = held
            if backend is None:
                why = "its replicas refused the connection" if tried else "no replica is ready"
                return json_error(503, f"{self.name}: {why}; retry shortly", retry=True)
            tried.add(backend.url)
            backend.acquire()
            try:
                return await self._forward(request, backend.url, headers, body)
            except aiohttp.ClientConnectorError:
                continue  # the request never reached this replica: another one may take it
            except TimeoutError:
                return json_error(504, f"{self.name}: replica {backend.url} did not answer in time")
            except aiohttp.ClientError as exc:
                return json_error(502, f"{self.name}: replica {backend.url} failed: {exc}")
            finally:
                backend.release()

    async def _wait_for_replica(self, hold: Hold) -> Backend | web.Response:
        """Hold the request until a replica joins, signalling demand; a 503 past the bound or deadline."""
        if self.held >= hold.max_requests:
            return json_error(
                503,
                f"{self.name}: {self.held} requests already wait for a replica; retry shortly",
                retry=True,
            )
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.held += 1
        try:
            if self.on_demand is not None:
                self.on_demand()
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._pick(set()) is not None), hold.deadline_s
                )
        except TimeoutError:
            return json_error(
                503,
                f"{self.name}: no replica became ready within {hold.deadline_s:g}s; retry shortly",
                retry=True,
            )
        finally:
            self.held -= 1
        self.waits.append(loop.time() - started)
        backend = self._pick(set())
        return (
            backend
            if backend is not None
            else json_error(503, f"{self.name}: no replica is ready", retry=True)
        )

    async def _forward(
        self, request: web.Request, base: str, headers: dict[str, str], body: bytes
    ) -> web.Response:
        assert self._session is not None
        return await forward(self._session, request, base, headers, body)


class BalancerHost:
    """The event loop, on a daemon thread, that every shard's balancer runs on."""

    def __init__(self) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="frugal-balancers", daemon=True)
        self._thread.start()
        self.balancers: list[Balancer] = []

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(
        self, name: str, port: int = 0, hold: Hold | None = None, on_demand: Callable[[], None] | None = None
    ) -> Balancer:
        balancer = Balancer(name, hold, on_demand)
        self.call(balancer.start("127.0.0.1", port), timeout=10)
        self.balancers.append(balancer)
        return balancer

    def add(self, balancer: Balancer, url: str) -> None:
        self.call(balancer.add(url), timeout=10)

    def remove(self, balancer: Balancer, url: str, timeout: float) -> bool:
        return self.call(balancer.remove(url, timeout), timeout=timeout + 10)

    def close(self) -> None:
        for balancer in self.balancers:
            try:
                self.call(balancer.close(), timeout=10)
            except Exception as exc:
                log.warning("balancer %s did not close cleanly: %s", balancer.name, exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (frugal[serving] brings it), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
