"""HTTP transport: the Open Inference Protocol v2 REST routes on aiohttp, and the process lifecycle.

The gRPC service (`grpc_transport`) runs beside it on `--grpc-port`, on the same `ModelService`.

Every failure is an `failures.ServingError`, answered by `error_response` with the status its class
carries and `{"error": "..."}`: a failure a client can cause is a 4xx; overload is 429 with
Retry-After; a passed deadline is 504; a failing next stage or a draining server is 503. A client
that goes away before its answer is counted (`frugal_client_disconnects_total`) and logged at debug.

Shutdown (SIGTERM or SIGINT) loses no request that reached the server: readiness turns false and every
response from then on carries `Connection: close`, so keep-alive clients reconnect (to another
replica once endpoints stop routing here); the listener stays open for `shutdown_grace_s` (gRPC keeps
answering too, with ServerReady/ModelReady false); then the gRPC server stops with a grace (GOAWAY,
new calls refused, calls in flight finish) while the REST listener
closes (new connections are refused at connect time), and the server waits until every open
connection has either closed after its last answer or sat idle, with no request on it, for
`IDLE_CLOSE_S`, before closing what is left. In-flight requests finish; the process exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import struct
import sys
import time
from typing import Any

import orjson
from aiohttp import web
from grpc import aio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from frugal.serving.server import grpc_transport
from frugal.serving.server.client_faults import quiet_client_faults
from frugal.serving.server.codec import HEADER_LENGTH, decode_request, encode_response
from frugal.serving.server.failures import ClientClosed, PayloadTooLarge, ServingError, unexpected
from frugal.serving.server.service import ModelService, load_model
from frugal.serving.server.settings import ServeConfig, cannot_listen, flag

log = logging.getLogger("frugal.serving")
# aiohttp's own log of the server: a request it could not parse is one line at DEBUG (client_faults).
HTTP_LOG = quiet_client_faults(logging.getLogger("frugal.serving.http"))

SERVER_NAME = "frugal"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
SERVICE_KEY = web.AppKey("service", ModelService)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
DRAIN_KEY: web.AppKey[Drain] = web.AppKey("drain")
CLIENT_CLOSED = ClientClosed.http_status  # never sent, only never counted as served
QUEUE_DRAIN_S = 0.2  # time for the accept loop to empty the kernel's queue once new SYNs are dropped
SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>; Python's socket module does not name it
IDLE_CLOSE_S = 1.0  # an idle keep-alive connection this quiet after the grace has no request coming
# A connection opened but not used yet was opened to send a request; its client may be slow to send it
# (a starved client thread on a loaded node took over IDLE_CLOSE_S, and closing then reset its request).
UNUSED_CLOSE_S = 5.0


def error_response(exc: ServingError) -> web.Response:
    """The one place a failure becomes a REST answer: its class's status, Retry-After when it has one."""
    headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    return web.Response(
        status=exc.http_status,
        body=orjson.dumps({"error": exc.message}),
        content_type="application/json",
        headers=headers,
    )


def ok(doc: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def _service(request: web.Request) -> ModelService:
    return request.app[SERVICE_KEY]


def _model(request: web.Request) -> ModelService:
    """The service, when the URL names its model (and version); else `ModelNotFound`."""
    service = _service(request)
    service.check_model(request.match_info["name"], request.match_info.get("version"))
    return service


async def server_metadata(request: web.Request) -> web.Response:
    return ok({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def live(request: web.Request) -> web.Response:
    return ok({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = _service(request).ready
    return web.Response(
        status=200 if is_ready else 503,
        body=orjson.dumps({"ready": is_ready}),
        content_type="application/json",
    )


async def model_metadata(request: web.Request) -> web.Response:
    try:
        service = _model(request)
    except ServingError as exc:
        return error_response(exc)
    return ok(service.model_metadata())


async def model_ready(request: web.Request) -> web.Response:
    try:
        service = _model(request)
    except ServingError as exc:
        return error_response(exc)
    return web.Response(
        status=200 if service.ready else 503,
        body=orjson.dumps({"name": service.name, "ready": service.ready}),
        content_type="application/json",
    )


async def infer(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = _service(request)
    metrics = service.metrics
    metrics.inflight.inc()
    try:
        response = await _infer(request, service)
    except Exception as exc:
        response = error_response(unexpected(exc))
    finally:
        metrics.inflight.dec()
    if response.status == CLIENT_CLOSED:
        return response  # nobody to answer; counted in frugal_client_disconnects_total instead
    metrics.observe(response.status, time.perf_counter() - started)
    return response


async def _infer(request: web.Request, service: ModelService) -> web.Response:
    """One inference; every failure raises (a `ServingError`, or anything a runtime raises: a 500)."""
    _model(request)
    try:
        body = await request.read()
    except ConnectionResetError:  # aiohttp's "Connection lost" while the body was arriving
        service.metrics.client_disconnects.inc()
        log.debug("client %s went away before its request body arrived", request.remote)
        raise ClientClosed("client closed the connection before the request body arrived") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than {flag('max_body_bytes')} ({service.max_body_bytes})"
        ) from None
    decoded = decode_request(body, request.headers.get(HEADER_LENGTH))
    outputs = await service.infer(decoded)
    payload, headers = encode_response(service.name, service.version, decoded, outputs)
    return web.Response(body=payload, headers=headers)


async def metrics_endpoint(request: web.Request) -> web.Response:
    service = _service(request)
    service.metrics.queue_depth.set(service.batcher.queue_depth)
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class Drain:
    """Which connections are open and when each last started or finished a request, for the shutdown.

    Before the shutdown nothing here changes a response; once `begin()` is called every response
    carries `Connection: close`, and `wait_idle` tells when what is still open can be closed without
    losing a request.
    """

    def __init__(self) -> None:
        self.draining = False
        self._active: dict[object, int] = {}  # connection → requests in progress on it
        self._last_seen: dict[object, float] = {}  # connection → when a request on it last started or ended
        self._first_asked: dict[object, float] = {}  # unused connection → when can_close first saw it

    def begin(self) -> None:
        self.draining = True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        connection = request.protocol
        self._active[connection] = self._active.get(connection, 0) + 1
        self._last_seen[connection] = time.monotonic()
        try:
            response: web.StreamResponse = await handler(request)
            if self.draining:
                response.force_close()  # "Connection: close"; the server closes it after this answer
            return response
        finally:
            self._last_seen[connection] = time.monotonic()
            left = self._active[connection] - 1
            if left:
                self._active[connection] = left
            else:
                del self._active[connection]

    def can_close(self, connection: object, now: float) -> bool:
        """No request in progress, and none started or finished for IDLE_CLOSE_S; a connection that
        never carried one waits UNUSED_CLOSE_S from the first time it is asked about (its request may
        be on the way)."""
        if self._active.get(connection):
            return False
        last = self._last_seen.get(connection)
        if last is None:
            return now - self._first_asked.setdefault(connection, now) >= UNUSED_CLOSE_S
        return now - last >= IDLE_CLOSE_S

    async def close_when_idle(self, runner: web.AppRunner, timeout_s: float) -> int:
        """Wait until every open connection closed itself or can be closed; return how many were left."""
        server = runner.server
        if server is None:
            return 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            open_now = server.connections
            now = time.monotonic()
            if all(self.can_close(connection, now) for connection in open_now):
                break
            await asyncio.sleep(0.05)
        for connection in server.connections:
            self._last_seen.pop(connection, None)
            self._first_asked.pop(connection, None)
        return len(server.connections)


async def close_listener(site: web.TCPSite) -> None:
    """Stop listening without resetting a connection the kernel already accepted for us.

    Closing a listening socket resets every connection still in its accept queue, though each
    client saw its connect succeed and may have sent its request. So new connection attempts are
    dropped first (Linux: a socket filter on the listener; the client's SYN is retried and then
    refused once the socket is closed), the queue is accepted empty, and only then is it closed.
    """
    server = site._server  # aiohttp keeps the asyncio.Server here; it has no public accessor
    sockets = list(getattr(server, "sockets", None) or [])
    if sockets and refuse_new_connections(sockets):
        await asyncio.sleep(QUEUE_DRAIN_S)
    await site.stop()


def refuse_new_connections(sockets: list[Any]) -> bool:
    """Attach a classic BPF program that drops every packet to these listening sockets."""
    if not sys.platform.startswith("linux"):
        return False
    drop_all = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K, k=0: drop
    program = struct.pack("HP", 1, ctypes.addressof(drop_all))  # struct sock_fprog {len, filter *}
    try:
        for sock in sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except OSError as exc:
        log.debug("cannot filter the listener (%s); closing it directly", exc)
        return False
    return True


def build_app(service: ModelService, registry: CollectorRegistry) -> web.Application:
    drain = Drain()
    app = web.Application(client_max_size=service.max_body_bytes, middlewares=[drain.middleware])
    app[SERVICE_KEY] = service
    app[REGISTRY_KEY] = registry
    app[DRAIN_KEY] = drain
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in (model, versioned):
        app.router.add_get(prefix, model_metadata)
        app.router.add_get(f"{prefix}/ready", model_ready)
        app.router.add_post(f"{prefix}/infer", infer)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def serve(config: ServeConfig) -> int:
    """Load, warm up, listen; return 0 after a clean shutdown on SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loaded = await loop.run_in_executor(None, load_model, config)
    registry = CollectorRegistry(auto_describe=True)
    service = ModelService(config, loaded, registry)
    app = build_app(service, registry)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, logger=HTTP_LOG)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, shutdown_timeout=config.request_timeout_ms / 1000)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(config.host, config.port, "--port", exc) from None
    grpc_server: aio.Server | None = None
    grpc_port = config.grpc_port
    if grpc_port >= 0:
        try:
            grpc_server, grpc_port = await grpc_transport.start_server(
                service, config.host, config.grpc_port, SERVER_NAME, SERVER_VERSION, EXTENSIONS
            )
        except OSError as exc:
            await runner.cleanup()
            remedy = "pass another --grpc-port (or -1: no gRPC)"
            raise cannot_listen(config.host, config.grpc_port, "--grpc-port", exc, remedy) from None
    await service.start()
    port = _bound_port(runner, config.port)
    log.info(
        "serving model '%s' variant '%s' (shard %d/%d) on http://%s:%d",
        service.name,
        loaded.variant.name,
        config.shard_index,
        config.shard_count,
        config.host,
        port,
    )
    if grpc_server is not None:  # before the ready line: a reader that saw "ready" has both ports
        log.info("OIP gRPC service on %s:%d", config.host, grpc_port)
        print(f"frugal serve: grpc on {config.host}:{grpc_port}", flush=True)
    print(f"frugal serve: ready on http://{config.host}:{port}", flush=True)
    await stop.wait()
    log.info("shutting down: readiness off, draining for %.1f s", config.shutdown_grace_s)
    service.ready = False
    drain = app[DRAIN_KEY]
    drain.begin()
    await asyncio.sleep(config.shutdown_grace_s)
    # gRPC: GOAWAY, new calls refused, calls in flight finish — alongside the REST listener's drain
    grpc_stopped = (
        asyncio.ensure_future(grpc_server.stop(grace=config.request_timeout_ms / 1000))
        if grpc_server is not None
        else None
    )
    await close_listener(site)
    left = await drain.close_when_idle(runner, config.request_timeout_ms / 1000)
    log.info("listener closed; closing %d idle connection(s)", left)
    await runner.cleanup()  # closes what is left, waits for in-flight requests
    if grpc_stopped is not None:
        await grpc_stopped
    await service.close()
    log.info("stopped cleanly after answering %d inference request(s)", service.metrics.answered())
    return 0


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return fallback
