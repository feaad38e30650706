"""`frugal front`: the always-on front of a model that may scale to zero (the cluster's activator).

A ModelDeployment with ``minReplicas: 0`` is called through its endpoint Service, which selects this
front; the front forwards every request, as it came (its request-target byte for byte: no ``..``
resolved, nothing re-quoted), to the live generation's first shard (the ``--upstream`` Service) and
returns the answer as it is. When the upstream refuses the connection —
a Service with no ready endpoint does exactly that — the request is *held*: it waits, and the front
retries the connection every ``--retry-interval-ms`` until a replica answers. While it holds, it wakes
the model itself (``--wake-service``: `frugal.serving.front_wake`, through its own ServiceAccount
token; ``--self-wake off`` leaves it to the operator), and the gauge ``frugal_front_held_requests``
counts what waits, which the operator's autoscaler reads through Prometheus to size the wake. Clients
see a slow first answer, never a refusal. gRPC (``--grpc-port``) is proxied the same way, method by
method, as bytes (`frugal.serving.front_grpc`), held under the same bound and deadline.

Bounds, so nothing hangs and memory stays bounded: the front keeps at most ``--hold-max-requests``
requests at once (held, or on their way to a replica), counted before their body is read, each body
at most ``--max-body-bytes`` (the operator passes the model's own limit and sizes the pair to the
pod's memory; see docs/serving.md); a held request waits at most ``--hold-deadline-s``. Past the
bound or the deadline the answer is 503 with ``Retry-After`` and a JSON ``error``. A client that goes
away frees its place at once: its handler is cancelled (`Front.runner`), so an abandoned request is
neither counted as held nor forwarded at the wake. A request aiohttp cannot parse (the client's
fault) is logged on one line at DEBUG, not as an ERROR with a traceback.
A request whose connection fails after it reached a replica is not retried (it may have run): 502.
Each of these failures is a `frugal.serving.server.failures.ServingError` carrying its status, answered
in one place (`error_response`). The front's settings are declared once, as the fields of `FrontConfig`.
The front never runs a model and never imports ONNX Runtime; ``/v2/health/live`` and
``/v2/health/ready`` are its own (ready: it accepts requests, holding them if it must).

One front serves one model; it is small enough to run one replica per ModelDeployment (one shared
activator for every model would save those pods, at the price of a single point of failure for
every model and a routing table the operator must keep in step; see docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from yarl import URL

from frugal.schema.request_limits import SMALLEST_LIMIT
from frugal.serving.front_wake import SERVICE_ACCOUNT_DIR, KubeAccess, Result, Waker, in_cluster_url
from frugal.serving.server.client_faults import one_line, quiet_client_faults
from frugal.serving.server.failures import (
    BadGateway,
    ClientClosed,
    DeadlineExceeded,
    HoldFull,
    InvalidInput,
    NoReplica,
    PayloadTooLarge,
    ServingError,
    echo,
)
from frugal.serving.server.settings import (
    LOG_LEVELS,
    Setting,
    StartupError,
    add_arguments,
    cannot_listen,
    declared,
    port_in_use,
)

log = logging.getLogger("frugal.front")
# What aiohttp's server logs for the front (`Front.runner`): a request it could not parse is the client's
# fault, logged on one line at DEBUG instead of an ERROR with a traceback.
http_log = quiet_client_faults(logging.getLogger("frugal.front.http"))

# Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus those aiohttp sets.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip
HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class Hold:
    """How a front keeps requests that arrive while no replica runs (a model waking from zero): at
    most `max_requests` wait, each at most `deadline_s`; past either, 503 with Retry-After. (`frugal
    front` counts every request it keeps against `max_requests`, held or forwarded: each holds a body.)"""

    max_requests: int = 256
    deadline_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_requests < 1 or not self.deadline_s > 0:
            raise ValueError("a hold needs max_requests >= 1 and deadline_s > 0")


def json_error(status: int, message: str, retry_after_s: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


def error_response(exc: ServingError) -> web.Response:
    """The one place the front's failures become answers: the status and Retry-After their class carries."""
    return json_error(exc.http_status, exc.message, exc.retry_after_s)




class FrontMetrics:
    """The front's series, on a registry of its own; labelled like the serving series it fronts."""

    def __init__(self, registry: CollectorRegistry, model: str, labels: dict[str, str]) -> None:
        names = ("namespace", "model")
        values = (labels.get("namespace", ""), model)
        self.held = Gauge(
            "frugal_front_held_requests", "Requests waiting for a replica of a model at zero",
            names, registry=registry,
        ).labels(*values)  # fmt: skip
        self.hold_duration = Histogram(
            "frugal_front_hold_duration_seconds", "How long held requests waited for a replica",
            names, buckets=HOLD_BUCKETS, registry=registry,
        ).labels(*values)  # fmt: skip
        self._requests = Counter(
            "frugal_front_requests", "Requests through the front, by the HTTP status answered",
            [*names, "code"], registry=registry,
        )  # fmt: skip
        self._wakes = Counter(
            "frugal_front_wakes", "Wakes the front made of its model at zero, by result (woken, awake, failed)",
            [*names, "result"], registry=registry,
        )  # fmt: skip
        self._values = values

    def answered(self, status: int) -> None:
        self._requests.labels(*self._values, str(status)).inc()

    def woke(self, result: Result) -> None:
        self._wakes.labels(*self._values, result.value).inc()


class Front:
    """Forward to one upstream URL; hold while it refuses connections."""

    def __init__(
        self,
        upstream: str,
        hold: Hold,
        metrics: FrontMetrics,
        registry: CollectorRegistry,
        retry_interval_s: float,
        max_body_bytes: int,
        upstream_timeout_s: float = 300.0,
        waker: Waker | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.waker = waker
        self.upstream_timeout_s = upstream_timeout_s
        self.hold = hold
        self.metrics = metrics
        self.registry = registry
        self.retry_interval_s = retry_interval_s
        self.max_body_bytes = max_body_bytes
        self.timeout = aiohttp.ClientTimeout(total=upstream_timeout_s, sock_connect=2)
        self.kept = 0  # requests in the front now (body being read, held or forwarded): each may hold a body
        self.held = 0
        self._session: aiohttp.ClientSession | None = None
        # The front's own routes, matched on the request-target exactly as sent (anything else is forwarded).
        self._own: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
            "/v2/health/live": self._healthy,
            "/v2/health/ready": self._healthy,
            "/metrics": self._metrics,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    def runner(self) -> web.AppRunner:
        """The front's server. A client that goes away cancels its request's handler, so a held request
        frees its place (and the held gauge) at once and is never forwarded; aiohttp's own log of a
        request it could not parse goes to `http_log`, one line at DEBUG."""
        return web.AppRunner(
            self.app(), access_log=None, handle_signals=False, handler_cancellation=True, logger=http_log
        )

    async def _open(self, _: web.Application) -> None:
        # auto_decompress off: bodies pass through byte for byte, with their Content-Encoding.
        self._session = aiohttp.ClientSession(
            timeout=self.timeout, auto_decompress=False, connector=aiohttp.TCPConnector(limit=0)
        )
        if self.waker is not None:
            await self.waker.open()

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
        if self.waker is not None:
            await self.waker.close()

    # -- what REST and gRPC share: the bound, the held gauge, the wake ----------------------------------

    def take(self, what: str = "requests") -> None:
        """Count one more request kept here, or raise HoldFull past the bound (before any body is read)."""
        if self.kept >= self.hold.max_requests:
            raise HoldFull(
                f"front: {self.kept} {what} already wait here (for a replica or its answer); retry shortly"
            )
        self.kept += 1

    def release(self) -> None:
        self.kept -= 1

    @property
    def hold_deadline_s(self) -> float:
        return self.hold.deadline_s

    def answered(self, status: int) -> None:
        self.metrics.answered(status)

    def start_holding(self) -> None:
        self.held += 1
        self.metrics.held.inc()

    def stop_holding(self, waited_s: float) -> None:
        self.held -= 1
        self.metrics.held.dec()
        self.metrics.hold_duration.observe(waited_s)

    def poke(self) -> None:
        """A request is held: wake the model, unless a wake runs or just ran (`Waker.poke`)."""
        if self.waker is not None:
            self.waker.poke(self.held)

    def no_replica(self, why: object) -> NoReplica:
        return NoReplica(
            f"front: no replica answered within {self.hold.deadline_s:g}s ({why}); retry shortly",
            retry_after_s=max(1, round(self.hold.deadline_s / 4)),
        )

    async def _healthy(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True, "ready": True})

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        own = self._own.get(request.raw_path.partition("?")[0])
        if own is not None and request.method in ("GET", "HEAD"):
            return await own(request)
        try:
            response = await self._proxy(request)
        except ClientClosed:
            return web.Response(status=ClientClosed.http_status)  # nobody to answer, not counted
        except ServingError as exc:
            response = error_response(exc)
        except Exception as exc:  # never let one request take the front down
            log.exception("front: request failed")
            response = error_response(BadGateway(f"front: {type(exc).__name__}: {one_line(exc)}"))
        self.metrics.answered(response.status)
        return response

    async def _proxy(self, request: web.Request) -> web.Response:
        """The upstream's answer, or a `ServingError`: the front is full or the hold past its deadline
        (503), the body is too large (413) or malformed (400), the upstream did not answer in time (504)
        or failed after the request reached it (502)."""
        self.take()  # before the body is read: what bounds the front's memory
        try:
            body = await self._read(request)
            return await self._hold_and_forward(request, body)
        finally:
            self.release()

    async def _read(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"request body is larger than --max-body-bytes ({self.max_body_bytes})"
            ) from None
        except ConnectionResetError:  # aiohttp's "Connection lost" while the body was arriving
            log.debug("front: client %s went away before its request body arrived", request.remote)
            raise ClientClosed("client closed the connection before the request body arrived") from None
        except HttpProcessingError as exc:  # a body aiohttp could not parse, e.g. a broken chunk
            log.debug("front: malformed request body from %s: %s", request.remote, one_line(exc.message))
            raise InvalidInput(f"malformed request body: {one_line(exc.message)}") from None

    async def _hold_and_forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        loop = asyncio.get_running_loop()
        started = loop.time()
        holding = False
        try:
            while True:
                try:
                    return await self._forward(request, headers, body)
                # The request never reached a replica: refused, or no connection within sock_connect (a
                # Service whose endpoint is not yet programmed on the node drops the SYN). Either way no
                # byte was sent, so holding and trying again is safe.
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    waited = loop.time() - started
                    if not holding:
                        holding = True
                        self.start_holding()
                    if waited >= self.hold.deadline_s:
                        raise self.no_replica(_why(exc)) from exc
                    self.poke()
                    await asyncio.sleep(min(self.retry_interval_s, self.hold.deadline_s - waited))
        except asyncio.CancelledError:  # the client went away (Front.runner), or the front stops
            if holding:
                log.debug("front: a held request's client went away after %.1fs", loop.time() - started)
            raise
        except TimeoutError:
            raise DeadlineExceeded(f"front: {self.upstream} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise BadGateway(f"front: {self.upstream} failed: {one_line(exc)}") from None  # may quote the URL
        finally:
            if holding:
                self.stop_holding(loop.time() - started)

    async def _forward(self, request: web.Request, headers: dict[str, str], body: bytes) -> web.Response:
        assert self._session is not None
        return await forward(self._session, request, self.upstream, headers, body)


def _why(exc: aiohttp.ClientError) -> object:
    return exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else "connect timed out"


def request_target(request: web.Request) -> str:
    """The request-target as the client sent it: path and query byte for byte (``..`` not resolved,
    nothing decoded or re-quoted); for the absolute form a proxy would send, its path and query."""
    raw = request.raw_path
    return raw if raw.startswith("/") else URL(raw, encoded=True).raw_path_qs


async def forward(
    session: aiohttp.ClientSession, request: web.Request, base: str, headers: dict[str, str], body: bytes
) -> web.Response:
    """`request` sent on to `base` with the same method, request-target (`request_target`), end-to-end
    headers and body; the answer as it came, less the hop-by-hop headers."""
    url = URL(base + request_target(request), encoded=True)
    async with session.request(
        request.method, url, headers=headers, data=body, allow_redirects=False
    ) as answer:
        payload = await answer.read()
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return web.Response(status=answer.status, body=payload, headers=kept)


# -- the command ---------------------------------------------------------------------------------------

ENV_PREFIX = "FRUGAL_FRONT_"


def on_off(text: str) -> bool:
    """`on`/`off` (also true/false, yes/no, 1/0) as a switch."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"{text!r}: use on or off")


@dataclass(frozen=True)
class FrontConfig:
    """`frugal front`'s settings: each field is a flag and a FRUGAL_FRONT_* variable (settings.Setting)."""

    upstream: Annotated[
        str, Setting("base URL of the model's first shard, e.g. http://md-live.ns.svc:8080 (required)")
    ]
    model_name: Annotated[str, Setting("the served model's name, for the metrics' model label (required)")]
    namespace: Annotated[str, Setting("the metrics' namespace label")] = ""
    host: Annotated[str, Setting("address to listen on (0.0.0.0 in a pod)")] = "127.0.0.1"
    port: Annotated[int, Setting("port to listen on (0: any free port, printed when ready)")] = 8080
    grpc_upstream: Annotated[
        str,
        Setting(
            "host:port of the model's first shard's OIP gRPC service, e.g. md-live.ns.svc:8081 (blank: "
            "the front does not proxy gRPC)"
        ),
    ] = ""
    grpc_port: Annotated[
        int, Setting("port the front takes gRPC on, with --grpc-upstream (0: any free port, printed when ready)")
    ] = 8081
    hold_max_requests: Annotated[
        int,
        Setting(
            "requests the front keeps at once, held or on their way to a replica (503 beyond); with "
            "--max-body-bytes, what bounds its memory"
        ),
    ] = Hold.max_requests
    hold_deadline_s: Annotated[float, Setting("longest a request waits for a replica (503 past it)")] = (
        Hold.deadline_s
    )
    retry_interval_ms: Annotated[float, Setting("pause between connection attempts while holding")] = 100.0
    max_body_bytes: Annotated[
        int,
        Setting(
            "largest request body accepted, 413 beyond (the operator passes the model's own limit, derived "
            "as frugal serve derives it)"
        ),
    ] = SMALLEST_LIMIT
    log_level: Annotated[str, Setting("DEBUG, INFO, WARNING or ERROR")] = "INFO"
    self_wake: Annotated[
        bool,
        Setting(
            "on: while it holds a request, the front scales the model's live shards from 0 to 1 replica "
            "itself (needs --wake-service); off: only the operator's autoscaler wakes the model",
            parse=on_off,
        ),
    ] = True
    wake_service: Annotated[
        str,
        Setting(
            "the Service (in --namespace) whose frugal.dev/wake-deployments annotation names the "
            "Deployments to wake, e.g. md-live (blank: the front does not wake the model)"
        ),
    ] = ""
    kube_api_url: Annotated[
        str, Setting("the API server to wake the model through (blank: in a pod, KUBERNETES_SERVICE_HOST/PORT)")
    ] = ""
    kube_token_file: Annotated[
        Path, Setting("bearer token of the front's ServiceAccount (re-read at every wake)")
    ] = SERVICE_ACCOUNT_DIR / "token"
    kube_ca_file: Annotated[
        str, Setting("CA bundle the API server's certificate is checked against (blank: the system's)")
    ] = str(SERVICE_ACCOUNT_DIR / "ca.crt")


SETTINGS = declared(FrontConfig, ENV_PREFIX)


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal front",
        description="Hold requests for a model scaled to zero until a replica answers, then forward them.",
        epilog=f"Every flag may be set by its environment variable, e.g. {ENV_PREFIX}UPSTREAM.",
    )
    add_arguments(parser, SETTINGS, environ, blank_is_unset=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(dict(os.environ))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    for required in (s for s in SETTINGS if s.required):
        if not getattr(args, required.name):
            parser.error(f"{required.flag} is required")
    config = FrontConfig(**vars(args))
    try:
        hold = Hold(config.hold_max_requests, config.hold_deadline_s)
    except ValueError as error:
        parser.error(f"--hold-max-requests/--hold-deadline-s: {error}")
    if config.retry_interval_ms <= 0:
        parser.error("--retry-interval-ms must be above 0")
    if config.max_body_bytes <= 0:
        parser.error("--max-body-bytes must be above 0")
    if not _is_base_url(config.upstream):
        parser.error(f"--upstream {echo(config.upstream)}: use a base URL such as http://md-live.ns.svc:8080")
    if config.log_level.upper() not in LOG_LEVELS:
        parser.error(f"--log-level {echo(config.log_level)} must be one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.grpc_upstream and not _is_host_port(config.grpc_upstream):
        parser.error(f"--grpc-upstream {echo(config.grpc_upstream)}: use host:port, e.g. md-live.ns.svc:8081")
    access = _kube_access(parser, config, dict(os.environ))
    registry = CollectorRegistry()
    metrics = FrontMetrics(registry, config.model_name, {"namespace": config.namespace})
    waker = None if access is None else Waker(access, metrics.woke)
    front = Front(
        config.upstream, hold, metrics, registry, config.retry_interval_ms / 1000.0, config.max_body_bytes,
        waker=waker,
    )  # fmt: skip
    try:
        asyncio.run(_serve(front, config))
    except StartupError as error:
        print(f"frugal front: {error}", file=sys.stderr)
        return 2
    return 0


def _kube_access(
    parser: argparse.ArgumentParser, config: FrontConfig, environ: dict[str, str]
) -> KubeAccess | None:
    """How the front wakes its model, or None when it does not (--self-wake off, or no --wake-service)."""
    if not (config.self_wake and config.wake_service):
        return None
    api_url = config.kube_api_url or in_cluster_url(environ)
    if not api_url or not _is_base_url(api_url):
        parser.error(
            f"--kube-api-url {echo(api_url or '')}: --wake-service needs the API server's URL "
            "(in a pod, KUBERNETES_SERVICE_HOST gives it), or pass --self-wake off"
        )
    if not config.namespace:
        parser.error("--namespace is required to wake the model (--wake-service)")
    if not config.kube_token_file.is_file():
        parser.error(f"--kube-token-file {echo(str(config.kube_token_file))}: no such file (--self-wake off?)")
    ca_file = Path(config.kube_ca_file) if config.kube_ca_file.strip() else None
    if ca_file is not None and not ca_file.is_file():
        parser.error(f"--kube-ca-file {echo(config.kube_ca_file)}: no such file")
    return KubeAccess(api_url, config.kube_token_file, ca_file, config.namespace, config.wake_service)


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _is_base_url(text: str) -> bool:
    try:
        url = URL(text)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


async def _serve(front: Front, config: FrontConfig) -> None:
    host, port = config.host, config.port
    runner = front.runner()
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()  # closes the upstream session the app opened
        raise cannot_listen(host, port, "--port", exc) from None
    bound = next(a for a in runner.addresses if isinstance(a, tuple))
    print(f"frugal front: forwarding to {front.upstream} on http://{host}:{bound[1]}", flush=True)
    grpc_server = None
    if config.grpc_upstream:
        from frugal.serving import front_grpc  # the gRPC stack only where gRPC is proxied

        if config.grpc_port and (in_use := port_in_use(host, config.grpc_port)) is not None:
            await runner.cleanup()
            raise cannot_listen(host, config.grpc_port, "--grpc-port", in_use)
        grpc_server, proxy, grpc_bound = await front_grpc.start(
            front, config.grpc_upstream, host, config.grpc_port, config.retry_interval_ms / 1000.0
        )
        print(f"frugal front: gRPC to {config.grpc_upstream} on {host}:{grpc_bound}", flush=True)
    if front.waker is None:
        log.info("front: self-wake off: the operator's autoscaler alone wakes the model")
    else:
        access = front.waker.access
        log.info("front: wakes the Deployments %s/%s names, through %s", access.namespace, access.service,
                 access.api_url)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Both finish the requests in flight, held ones included (REST up to aiohttp's grace).
    if grpc_server is not None:
        await asyncio.gather(runner.cleanup(), grpc_server.stop(front.hold_deadline_s))
        await proxy.close()
    else:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
