"""gRPC transport: the Open Inference Protocol v2 `inference.GRPCInferenceService` on grpc.aio.

It serves the same `ModelService` as the REST routes (one batcher, queue bound, deadlines, metrics,
power accounting). Status codes: a bad request is INVALID_ARGUMENT, an unknown model or version
NOT_FOUND, a full queue RESOURCE_EXHAUSTED, a passed deadline DEADLINE_EXCEEDED, a draining server or
a failing next stage UNAVAILABLE, and only a runtime failure on valid-looking input INTERNAL. Answers
are counted in `frugal_requests_total` under the HTTP status REST would have sent, so one query covers
both protocols. ModelInfer takes raw bytes and parses them itself, so bytes that are not a
ModelInferRequest are INVALID_ARGUMENT (grpc's own deserializer would make them INTERNAL).
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
from frugal.serving.server.batching import DeadlineExceeded, QueueFull, ShuttingDown
from frugal.serving.server.codec import ProtocolError
from frugal.serving.server.forward import NextStageError
from frugal.serving.server.service import ModelService

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
HTTP_EQUIVALENT = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class Failure(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


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
        await self._found_or_abort(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await self._found_or_abort(request.name, request.version, context)
        doc = self.service.model_metadata()
        response = pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"]
        )
        for key in ("inputs", "outputs"):
            for spec in doc[key]:
                getattr(response, key).add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    async def _found_or_abort(self, name: str, version: str, context: Any) -> None:
        problem = self.service.model_error(name, version)
        if problem is not None:
            await context.abort(grpc.StatusCode.NOT_FOUND, problem)

    async def model_infer(self, data: bytes, context: Any) -> bytes:
        """ModelInfer on the wire bytes: counted, timed and mapped to a status like a REST answer."""
        started = time.perf_counter()
        metrics = self.service.metrics
        metrics.inflight.inc()
        try:
            reply = await self._infer(data, context)
            code, message = grpc.StatusCode.OK, ""
        except Failure as failure:
            reply, code, message = b"", failure.code, str(failure)
        except asyncio.CancelledError:  # the client went away (or cancelled); nobody to answer
            metrics.client_disconnects.inc()
            log.debug("gRPC client cancelled its ModelInfer call")
            raise
        finally:
            metrics.inflight.dec()
        metrics.observe(HTTP_EQUIVALENT[code], time.perf_counter() - started)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)
        return reply

    async def _infer(self, data: bytes, context: Any) -> bytes:
        service = self.service
        try:
            message = grpc_codec.parse_request(data)
            problem = service.model_error(message.model_name, message.model_version)
            if problem is not None:
                raise Failure(grpc.StatusCode.NOT_FOUND, problem)
            decoded = grpc_codec.decode_request(message)
            outputs = await service.infer(decoded, context.time_remaining())
            response = grpc_codec.encode_response(service.name, service.version, decoded, outputs)
        except Failure:
            raise
        except ProtocolError as exc:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except QueueFull as exc:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; retry shortly") from None
        except DeadlineExceeded as exc:
            raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
        except (ShuttingDown, NextStageError) as exc:
            raise Failure(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        except Exception as exc:  # a runtime failure on valid-looking input (e.g. ORT rejects a value)
            log.exception("inference failed")
            raise Failure(
                grpc.StatusCode.INTERNAL, f"inference failed: {type(exc).__name__}: {exc}"
            ) from None
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
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound
