"""HTTP transport: the Open Inference Protocol v2 REST routes on aiohttp, and the process lifecycle.

Every failure a client can cause maps to a 4xx with `{"error": "..."}`; overload is 429 with
Retry-After; a passed deadline is 504; a failing next stage or a draining server is 503. On SIGTERM
(or SIGINT) readiness turns false, the listener stays open for `shutdown_grace_s` (so endpoints can
stop routing here), then it closes, in-flight requests finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from frugal.serving.server.batching import DeadlineExceeded, QueueFull, ShuttingDown
from frugal.serving.server.codec import HEADER_LENGTH, ProtocolError, decode_request, encode_response
from frugal.serving.server.forward import NextStageError
from frugal.serving.server.service import ModelService, load_model
from frugal.serving.server.settings import ServeConfig

log = logging.getLogger("frugal.serving")

SERVER_NAME = "frugal"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
SERVICE_KEY = web.AppKey("service", ModelService)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


def ok(doc: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def _service(request: web.Request) -> ModelService:
    return request.app[SERVICE_KEY]


def _model_or_404(request: web.Request) -> ModelService | web.Response:
    service = _service(request)
    name = request.match_info["name"]
    if name != service.name:
        return error(404, f"model '{name}' is not served here; this server serves '{service.name}'")
    version = request.match_info.get("version")
    if version is not None and version != service.version:
        return error(404, f"model '{name}' has no version '{version}'; it has '{service.version}'")
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
    service = _model_or_404(request)
    if isinstance(service, web.Response):
        return service
    return ok(service.model_metadata())


async def model_ready(request: web.Request) -> web.Response:
    service = _model_or_404(request)
    if isinstance(service, web.Response):
        return service
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
    finally:
        metrics.inflight.dec()
    metrics.count(response.status)
    metrics.request_duration.observe(time.perf_counter() - started)
    return response


async def _infer(request: web.Request, service: ModelService) -> web.Response:
    found = _model_or_404(request)
    if isinstance(found, web.Response):
        return found
    try:
        body = await request.read()
        decoded = decode_request(body, request.headers.get(HEADER_LENGTH))
        outputs = await service.infer(decoded)
        payload, headers = encode_response(service.name, service.version, decoded, outputs)
    except ProtocolError as exc:
        return error(400, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body is larger than --max-body-bytes ({service.config.max_body_bytes})")
    except QueueFull as exc:
        return error(429, f"{exc}; retry shortly", {"Retry-After": "1"})
    except DeadlineExceeded as exc:
        return error(504, str(exc))
    except ShuttingDown as exc:
        return error(503, str(exc), {"Retry-After": "1"})
    except NextStageError as exc:
        return error(503, str(exc), {"Retry-After": "1"})
    except Exception as exc:  # a runtime failure on valid-looking input (e.g. ORT rejects a value)
        log.exception("inference failed")
        return error(500, f"inference failed: {type(exc).__name__}: {exc}")
    return web.Response(body=payload, headers=headers)


async def metrics_endpoint(request: web.Request) -> web.Response:
    service = _service(request)
    service.metrics.queue_depth.set(service.batcher.queue_depth)
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(service: ModelService, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=service.config.max_body_bytes)
    app[SERVICE_KEY] = service
    app[REGISTRY_KEY] = registry
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
    runner = web.AppRunner(build_app(service, registry), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, shutdown_timeout=config.request_timeout_ms / 1000)
    await site.start()
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
    print(f"frugal serve: ready on http://{config.host}:{port}", flush=True)
    await stop.wait()
    log.info("shutting down: readiness off, draining for %.1f s", config.shutdown_grace_s)
    service.ready = False
    await asyncio.sleep(config.shutdown_grace_s)
    await runner.cleanup()  # stops listening, waits for in-flight requests
    await service.close()
    log.info("stopped cleanly")
    return 0


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return fallback
