"""gRPC transport: the Open Inference Protocol v2 `inference.GRPCInferenceService` on grpc.aio.

It serves the same `ModelService` as the REST routes (one batcher, queue bound, deadlines, metrics,
power accounting). Every failure is a `failures.ServingError`, whose class carries its gRPC status
(`status_of` is the one place that reads it): a bad request is INVALID_ARGUMENT, an unknown model or
version NOT_FOUND, a full queue RESOURCE_EXHAUSTED, a passed deadline DEADLINE_EXCEEDED, a draining
server or a failing next stage UNAVAILABLE, and only a runtime failure on valid-looking input INTERNAL.
Answers are counted in `frugal_requests_total` under the HTTP status the same class carries (what REST
would have sent), so one query covers both protocols. ModelInfer takes raw bytes and parses them
itself, so bytes that are not a ModelInferRequest are INVALID_ARGUMENT (grpc's own deserializer would
make them INTERNAL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import grpc
from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from frugal.serving.server import grpc_codec
from frugal.serving.server.failures import ServingError, unexpected
from frugal.serving.server.service import ModelService
from frugal.serving.server.settings import port_in_use

log = logging.getLogger("frugal.serving")

SERVICE = "inference.GRPCInferenceService"
# The client channel configuration we recommend (docs/serving.md, "gRPC clients and shutdown"). grpc's
# C core ends calls that reach a stopping server before any handler picked them up with CANCELLED;
# such a call never ran, so an idempotent ModelInfer may be retried. Pass as channel options:
# [("grpc.enable_retries", 1), ("grpc.service_config", CLIENT_SERVICE_CONFIG)].
CLIENT_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["CANCELLED"],
                },
            }
        ]
    }
)


def status_of(exc: ServingError) -> tuple[grpc.StatusCode, str]:
    """The one place a failure becomes a gRPC status: its class's code, and its message as details."""
    return grpc.StatusCode[exc.grpc_code], exc.message


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The six OIP methods; everything else in the service (Triton's extensions) stays UNIMPLEMENTED."""

    def __init__(self, service: ModelService, server_name: str, server_version: str, extensions: list[str]):
        self.service = service
        self._metadata = pb.ServerMetadataResponse(
            name=server_name, version=server_version, extensions=extensions
        )

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return self._metadata

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        doc = self.service.model_metadata()
        response = pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"]
        )
        for key in ("inputs", "outputs"):
            for spec in doc[key]:
                getattr(response, key).add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    async def _check_model(self, name: str, version: str, context: Any) -> None:
        """Return when this server serves the model (and version); else abort the call with NOT_FOUND."""
        try:
            self.service.check_model(name, version)
        except ServingError as exc:
            await context.abort(*status_of(exc))

    async def model_infer(self, data: bytes, context: Any) -> bytes:
        """ModelInfer on the wire bytes: counted, timed and mapped to a status like a REST answer."""
        started = time.perf_counter()
        metrics = self.service.metrics
        metrics.inflight.inc()
        failure: ServingError | None = None
        try:
            reply = await self._infer(data, context)
        except asyncio.CancelledError:  # the client went away (or cancelled); nobody to answer
            metrics.client_disconnects.inc()
            log.debug("gRPC client cancelled its ModelInfer call")
            raise
        except Exception as exc:
            reply, failure = b"", unexpected(exc)
        finally:
            metrics.inflight.dec()
        metrics.observe(200 if failure is None else failure.http_status, time.perf_counter() - started)
        if failure is not None:
            await context.abort(*status_of(failure))
        return reply

    async def _infer(self, data: bytes, context: Any) -> bytes:
        """One inference; every failure raises (a `ServingError`, or anything a runtime raises: INTERNAL)."""
        service = self.service
        message = grpc_codec.parse_request(data)
        service.check_model(message.model_name, message.model_version)
        decoded = grpc_codec.decode_request(message)
        outputs = await service.infer(decoded, context.time_remaining())
        response = grpc_codec.encode_response(service.name, service.version, decoded, outputs)
        serialized: bytes = response.SerializeToString()
        return serialized


def handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    def unary(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ServerLive": unary(servicer.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(servicer.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(servicer.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(
                servicer.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
            ),
            "ModelMetadata": unary(servicer.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            # raw bytes in and out: the handler parses the request itself (see the module docstring)
            "ModelInfer": grpc.unary_unary_rpc_method_handler(servicer.model_infer),
        },
    )


GRPC_LARGEST_MESSAGE = 2**31 - 1  # grpc's channel arguments are C ints


async def start_server(
    service: ModelService, host: str, port: int, server_name: str, server_version: str, extensions: list[str]
) -> tuple[aio.Server, int]:
    """Start the gRPC server on host:port (0: any free port); return it and the port it bound."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", min(service.max_body_bytes, GRPC_LARGEST_MESSAGE)),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
    )
    server.add_generic_rpc_handlers(
        (handlers(InferenceServicer(service, server_name, server_version, extensions)),)
    )
    in_use = port_in_use(host, port) if port else None  # before grpc's C core tries, fails and logs it
    if in_use is not None:
        raise in_use
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound
