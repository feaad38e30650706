"""gRPC through the front: every unary method of any service, proxied as bytes to the upstream's gRPC
port (``--grpc-upstream``, the live revision's first shard), held while no replica listens.

A `grpc.aio` generic handler with no (de)serialisation: the request's bytes and its metadata (less what
a channel sets itself: ``grpc-*``, pseudo-headers, ``user-agent``, ``content-type``, ``te``, ``host``)
go to the same method upstream; the answer's bytes, initial and trailing metadata, or its status code
and details, come back as they came. The call upstream carries the client's own deadline (or the
front's upstream timeout when it has none). Streaming methods (``ModelStreamInfer``) are not proxied:
UNIMPLEMENTED, as the model's server answers them.

Holding is REST's (`frugal.serving.front.Front`): the same bound on what the front keeps (a held or
forwarded call counts as a REST request does), the same held gauge and hold histogram, the same
deadline, the same self-wake. A call is held while the upstream channel is not connected (a Service
without ready endpoints refuses the connection): the front waits for the channel to connect, trying
again every ``--retry-interval-ms`` (the channel's reconnect back-off is set to it), and only then sends
the call, with ``wait_for_ready`` so that nothing is sent on a channel that is not connected. Past the
bound or the deadline: UNAVAILABLE with the same message as REST's 503. A client that goes away
cancels its handler, which frees its place at once. Answers are counted in ``frugal_front_requests``
under the HTTP status a server of ours maps the code to (`HTTP_STATUS`), as ``frugal serve`` counts its
gRPC answers.

Caveat: one channel is one HTTP/2 connection, so through a ClusterIP Service every proxied call of one
front goes to the same replica until the connection closes (a replica that drains closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
from grpc import aio

from frugal.serving.server.failures import ServingError

log = logging.getLogger("frugal.front.grpc")

STREAMING = frozenset({"/inference.GRPCInferenceService/ModelStreamInfer"})
_SET_BY_THE_CHANNEL = frozenset({"user-agent", "content-type", "te", "host"})
# The HTTP status frugal serve's gRPC answers are counted under (failures.py), by code.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
Metadata = Sequence[tuple[str, str | bytes]]


class Holder(Protocol):
    """What REST and gRPC share in a front (`frugal.serving.front.Front`): the bound on what it keeps,
    the held gauge, the deadline, the wake and the count of answers."""

    @property
    def hold_deadline_s(self) -> float: ...

    @property
    def upstream_timeout_s(self) -> float: ...

    def take(self, what: str) -> None: ...

    def release(self) -> None: ...

    def start_holding(self) -> None: ...

    def stop_holding(self, waited_s: float) -> None: ...

    def poke(self) -> None: ...

    def no_replica(self, why: object) -> ServingError: ...

    def answered(self, status: int) -> None: ...


def forwarded(metadata: Metadata | None) -> tuple[tuple[str, str | bytes], ...]:
    """The metadata a proxy passes on: everything but what the channel or the transport sets itself."""
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key.lower() not in _SET_BY_THE_CHANNEL
    )


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class GrpcProxy(grpc.GenericRpcHandler):
    """Every unary method, to one upstream channel, held by `front` while that channel is not connected."""

    def __init__(self, front: Holder, target: str, retry_interval_s: float) -> None:
        self.front = front
        self.target = target
        self.retry_interval_s = retry_interval_s
        backoff_ms = max(1, round(retry_interval_s * 1000))
        self.channel = aio.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", backoff_ms),
                ("grpc.min_reconnect_backoff_ms", backoff_ms),
                ("grpc.max_reconnect_backoff_ms", backoff_ms),
            ],
        )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method in STREAMING:
            return None
        return grpc.unary_unary_rpc_method_handler(self._handler(method))

    def _handler(self, method: str) -> Callable[[bytes, aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
        async def proxy(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
            return await self.call(method, request, context)

        return proxy

    async def call(self, method: str, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        try:
            self.front.take("calls")
        except ServingError as exc:
            await self._fail(context, exc)
        try:
            await self._hold()
            answer = await self._forward(method, request, context)
        except ServingError as exc:
            await self._fail(context, exc)
        except aio.AioRpcError as exc:  # the upstream's own answer: passed on as it came
            self.front.answered(http_status(exc.code()))
            context.set_trailing_metadata(forwarded(exc.trailing_metadata()))
            await context.abort(exc.code(), exc.details() or "")
        finally:
            self.front.release()
        self.front.answered(200)
        return answer

    async def _fail(self, context: aio.ServicerContext[Any, Any], exc: ServingError) -> None:
        self.front.answered(exc.http_status)
        await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)

    async def _hold(self) -> None:
        """Return once the upstream channel is connected; hold (counted, waking the model) until then."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        holding = False
        try:
            while (
                state := self.channel.get_state(try_to_connect=True)
            ) is not grpc.ChannelConnectivity.READY:
                waited = loop.time() - started
                if not holding:
                    holding = True
                    self.front.start_holding()
                if waited >= self.front.hold_deadline_s:
                    raise self.front.no_replica(f"{self.target}: {state.name.lower()}")
                self.front.poke()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.channel.wait_for_state_change(state),
                        min(self.retry_interval_s, self.front.hold_deadline_s - waited),
                    )
        except asyncio.CancelledError:  # the client went away, or the front stops
            if holding:
                log.debug("front: a held gRPC call's client went away after %.1fs", loop.time() - started)
            raise
        finally:
            if holding:
                self.front.stop_holding(loop.time() - started)

    async def _forward(self, method: str, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        remaining = context.time_remaining()
        timeout = self.front.upstream_timeout_s if remaining is None else remaining
        call = self.channel.unary_unary(method)(
            request,
            metadata=forwarded(context.invocation_metadata()),
            timeout=timeout,
            wait_for_ready=True,  # sent only on a connected channel: never twice, never half
        )
        initial = await call.initial_metadata()
        if initial:
            await context.send_initial_metadata(forwarded(initial))
        answer: bytes = await call
        context.set_trailing_metadata(forwarded(await call.trailing_metadata()))
        return answer

    async def close(self) -> None:
        await self.channel.close()


async def start(
    front: Holder, target: str, host: str, port: int, retry_interval_s: float
) -> tuple[aio.Server, GrpcProxy, int]:
    """The front's gRPC server listening on `host:port` (0: any free port) and its bound port."""
    proxy = GrpcProxy(front, target, retry_interval_s)
    server = aio.server()
    server.add_generic_rpc_handlers((proxy,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        await proxy.close()
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, proxy, bound
