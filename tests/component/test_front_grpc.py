"""gRPC through `frugal front`: a call to a model at zero is held while its upstream refuses
connections and answered once a replica listens, byte for byte what the replica answers directly; a
client that gives up while held frees its place at once and its call is never forwarded; past the
deadline or the bound the answer is UNAVAILABLE with a message.

Real parts: `frugal front` and `frugal serve` subprocesses on 127.0.0.1 (ONNX Runtime on a small MLP),
real gRPC clients speaking the Open Inference Protocol's ModelInfer.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_support import http, metric_value, mlp, running_server, write_artifacts
from tritonclient.grpc import service_pb2 as pb

MODEL = "digits"
INFER = "/inference.GRPCInferenceService/ModelInfer"
_REST = re.compile(r"on (http://[\d.]+:\d+)")
_GRPC = re.compile(r"gRPC to \S+ on ([\d.]+:\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Fronted:
    url: str
    grpc_target: str


@contextmanager
def grpc_front(upstream_port: int, *extra: str) -> Iterator[Fronted]:
    """`frugal front` proxying gRPC to 127.0.0.1:`upstream_port` (where a test starts the model's server,
    or not), REST to a port nothing listens on; both of its own ports chosen free."""
    command = [sys.executable, "-m", "frugal.serving.front", "--upstream", f"http://127.0.0.1:{free_port()}",
               "--grpc-upstream", f"127.0.0.1:{upstream_port}", "--grpc-port", "0", "--model-name", MODEL,
               "--namespace", "ns1", "--port", "0", "--retry-interval-ms", "50", *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    first, second = process.stdout.readline(), process.stdout.readline()
    rest, grpc_line = _REST.search(first), _GRPC.search(second)
    assert rest and grpc_line, f"front did not start: {first}{second}"
    try:
        yield Fronted(rest.group(1), grpc_line.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("front-grpc") / "artifacts", MODEL, {"fp32": mlp()})


def request(rows: int = 2) -> bytes:
    x = np.random.default_rng(0).random((rows, 64), dtype=np.float32)
    message = pb.ModelInferRequest(model_name=MODEL, id="r1")
    message.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    message.raw_input_contents.append(x.tobytes())
    return message.SerializeToString()


def infer(channel: grpc.Channel) -> Callable[..., bytes]:
    return channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)  # type: ignore[no-any-return]


def front_metric(fronted: Fronted, name: str, **labels: str) -> float:
    return metric_value(http("GET", f"{fronted.url}/metrics").body.decode(), name, model=MODEL, **labels)


def held(fronted: Fronted) -> float:
    return front_metric(fronted, "frugal_front_held_requests")


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_grpc_call_at_zero_is_held_then_answered_as_the_replica_answers_it(artifacts: Path) -> None:
    port = free_port()
    with grpc_front(port) as fronted, grpc.insecure_channel(fronted.grpc_target) as channel:
        pending = infer(channel).future(request(), timeout=60, metadata=(("x-request-id", "held-1"),))
        assert wait_until(lambda: held(fronted) == 1, 10)  # held, the gauge the autoscaler reads
        assert not pending.done()
        with running_server(artifacts, "fp32", "--model-name", MODEL, "--grpc-port", str(port)) as server:
            assert server.grpc_target is not None
            through_front = pending.result(timeout=60)
            with grpc.insecure_channel(server.grpc_target) as direct_channel:
                direct = infer(direct_channel)(request(), timeout=30)
            again = infer(channel)(request(), timeout=30)  # once awake, straight through
        assert pb.ModelInferResponse.FromString(through_front).raw_output_contents == (
            pb.ModelInferResponse.FromString(direct).raw_output_contents
        )
        assert through_front == again
        assert held(fronted) == 0
        assert front_metric(fronted, "frugal_front_hold_duration_seconds_count") == 1
        assert front_metric(fronted, "frugal_front_requests_total", code="200") == 2


def test_a_grpc_client_that_gives_up_while_held_frees_its_place_and_is_never_forwarded(artifacts: Path) -> None:
    port = free_port()
    with (
        grpc_front(port, "--hold-max-requests", "1", "--hold-deadline-s", "30") as fronted,
        grpc.insecure_channel(fronted.grpc_target) as channel,
    ):
        ghost = infer(channel).future(request(), timeout=60)
        assert wait_until(lambda: held(fronted) == 1, 10)
        ghost.cancel()
        assert wait_until(lambda: held(fronted) == 0, 2), "the abandoned call still counts as held"
        real = infer(channel).future(request(3), timeout=60)
        assert wait_until(lambda: held(fronted) == 1, 10)  # held in the freed place, not refused
        with running_server(artifacts, "fp32", "--model-name", MODEL, "--grpc-port", str(port)) as server:
            answer = pb.ModelInferResponse.FromString(real.result(timeout=60))
            assert answer.outputs[0].shape == [3, 10]
            served = http("GET", f"{server.url}/metrics").body.decode()
        assert metric_value(served, "frugal_requests_total") == 1  # the ghost never reached the model


def test_past_the_bound_or_the_deadline_a_grpc_call_is_unavailable_with_a_message() -> None:
    with (
        grpc_front(free_port(), "--hold-max-requests", "1", "--hold-deadline-s", "1.5") as fronted,
        grpc.insecure_channel(fronted.grpc_target) as channel,
    ):
        first = infer(channel).future(request(), timeout=30)
        assert wait_until(lambda: held(fronted) == 1, 10)
        with pytest.raises(grpc.RpcError) as bound:
            infer(channel)(request(), timeout=30)
        assert bound.value.code() is grpc.StatusCode.UNAVAILABLE and "already wait" in bound.value.details()
        with pytest.raises(grpc.RpcError) as late:
            first.result(timeout=30)
        assert late.value.code() is grpc.StatusCode.UNAVAILABLE and "within 1.5s" in late.value.details()
        assert front_metric(fronted, "frugal_front_requests_total", code="503") == 2
