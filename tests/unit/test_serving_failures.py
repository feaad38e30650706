"""Serving's failures carry their statuses, and each transport reads them in one place; each setting is
declared once, and the flags and variables the operator passes still parse."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import orjson
import pytest
from test_manifests import ARTIFACTS, DIGITS_INPUTS, GPU, IMAGE, SPEC

from frugal.operator.decision.planner import Option
from frugal.operator.manifests import serving_objects
from frugal.serving import front, serve_command
from frugal.serving.server import app, grpc_transport
from frugal.serving.server.codec import ProtocolError
from frugal.serving.server.failures import (
    BadGateway,
    ClientClosed,
    DeadlineExceeded,
    HoldFull,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NextStageError,
    NoReplica,
    PayloadTooLarge,
    QueueFull,
    ServingError,
    ShuttingDown,
    Unavailable,
    unexpected,
)
from frugal.serving.server.settings import SETTINGS, ServeConfig, Setting, add_arguments, declared

STATUSES = [  # class, HTTP, gRPC, Retry-After
    (InvalidInput, 400, grpc.StatusCode.INVALID_ARGUMENT, None),
    (ModelNotFound, 404, grpc.StatusCode.NOT_FOUND, None),
    (PayloadTooLarge, 413, grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (QueueFull, 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "1"),
    (ClientClosed, 499, grpc.StatusCode.CANCELLED, None),
    (InferenceFailed, 500, grpc.StatusCode.INTERNAL, None),
    (BadGateway, 502, grpc.StatusCode.UNAVAILABLE, None),
    (ShuttingDown, 503, grpc.StatusCode.UNAVAILABLE, "1"),
    (NextStageError, 503, grpc.StatusCode.UNAVAILABLE, "1"),
    (HoldFull, 503, grpc.StatusCode.UNAVAILABLE, "1"),
    (NoReplica, 503, grpc.StatusCode.UNAVAILABLE, "1"),
    (DeadlineExceeded, 504, grpc.StatusCode.DEADLINE_EXCEEDED, None),
]


@pytest.mark.parametrize(("kind", "http", "code", "retry_after"), STATUSES)
def test_each_failure_answers_rest_and_grpc_with_the_status_its_class_carries(
    kind: type[ServingError], http: int, code: grpc.StatusCode, retry_after: str | None
) -> None:
    failure = kind("what to change")
    response = app.error_response(failure)
    assert response.status == http and response.headers.get("Retry-After") == retry_after
    assert response.body == orjson.dumps({"error": "what to change"})
    assert grpc_transport.status_of(failure) == (code, "what to change")
    fronted = front.error_response(failure)
    assert fronted.status == http and fronted.headers.get("Retry-After") == retry_after


def test_a_retry_after_can_be_given_per_failure() -> None:
    assert app.error_response(NoReplica("no replica", retry_after_s=15)).headers["Retry-After"] == "15"
    assert issubclass(NoReplica, Unavailable) and issubclass(ShuttingDown, Unavailable)


def test_the_codecs_protocol_error_is_invalid_input_and_still_a_value_error() -> None:
    assert ProtocolError is InvalidInput and issubclass(InvalidInput, ValueError)


def test_anything_else_becomes_an_inference_failure_naming_its_type() -> None:
    failure = unexpected(RuntimeError("ORT rejected index 7"))
    assert isinstance(failure, InferenceFailed)
    assert failure.message == "inference failed: RuntimeError: ORT rejected index 7"
    deadline = DeadlineExceeded("late")
    assert unexpected(deadline) is deadline


def test_every_flag_and_variable_of_frugal_serve_is_declared_once_on_serve_config() -> None:
    assert [s.flag for s in SETTINGS] == [
        "--artifacts", "--variant", "--model-name", "--host", "--port", "--grpc-port", "--max-batch-size",
        "--max-delay-ms", "--max-queue-size", "--request-timeout-ms", "--max-body-bytes",
        "--latency-target-ms", "--execution-provider", "--intra-op-threads", "--shard-index",
        "--shard-count", "--next-stage", "--idle-watts", "--max-watts", "--labels", "--inline-below-ms",
        "--shutdown-grace-s", "--verify-cache-dir", "--fetch-dir", "--node-cache", "--log-level",
    ]  # fmt: skip
    assert all(s.env == "FRUGAL_" + s.flag[2:].replace("-", "_").upper() for s in SETTINGS)
    assert [s.name for s in SETTINGS if s.required] == ["artifacts", "variant"]
    defaults = ServeConfig(artifacts=Path("/a"), variant="v")
    assert all(getattr(defaults, s.name) == s.default for s in SETTINGS if not s.required)
    assert "[FRUGAL_MAX_QUEUE_SIZE]" in serve_command.build_parser({}).format_help()


def test_the_operators_serving_pod_parses_with_frugal_serve() -> None:
    for index in range(2):
        deployment = serving_objects.desired_shard_deployment(
            SPEC, GPU, IMAGE, ARTIFACTS, Option("int8-dynamic", "gpu-t4", 2), index, node_cache=index == 1
        )
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        command = [*container.get("command", []), *container.get("args", [])]
        assert command[:2] == ["frugal", "serve"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        config, _ = serve_command.parse_config(command[2:], env)
        assert config.shard_index == index and config.shard_count == 2 and config.labels["namespace"]
        assert config.verify_cache_dir is not None and config.idle_watts is not None
        assert (config.node_cache is not None) == (index == 1)  # the node cache's root, when it has one


def test_the_operators_front_parses_with_frugal_front() -> None:
    (container,) = serving_objects.desired_front(SPEC, IMAGE, inputs=DIGITS_INPUTS)["spec"]["template"]["spec"]["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["frugal", "front"]
    args = front.build_parser({}).parse_args(command[2:])
    config = front.FrontConfig(**vars(args))
    assert config.upstream and config.model_name and config.hold_max_requests == SPEC.max_queue_size


def test_a_setting_reads_its_variable_and_a_flag_wins() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, SETTINGS, {"FRUGAL_MAX_BATCH_SIZE": "4", "FRUGAL_LATENCY_TARGET_MS": "50"})
    args = parser.parse_args(["--latency-target-ms", "20"])
    assert args.max_batch_size == 4 and args.latency_target_ms == 20.0
    blank = front.build_parser({"FRUGAL_FRONT_PORT": ""}).parse_args([])
    assert blank.port == 8080  # the front reads an empty variable as unset


def test_a_setting_of_a_type_with_no_parser_must_name_one() -> None:
    @dataclass
    class Odd:
        pairs: Annotated[tuple[int, int], Setting("two numbers")] = (0, 0)

    with pytest.raises(TypeError, match="needs Setting"):
        declared(Odd)
