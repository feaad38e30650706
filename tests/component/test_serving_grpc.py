"""`frugal serve` speaks the Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`):
conformance with the unchanged `tritonclient.grpc`, the REST bad-input corpus replayed as
INVALID_ARGUMENT, garbage bytes, random requests, back-pressure, client deadlines and metrics.

Real parts: the server is the real CLI in a subprocess on 127.0.0.1 running ONNX Runtime on a small
MLP (and the deliberately slow model) built with onnx.helper; the clients are real gRPC clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import Server, http, metric_value, mlp, running_server, slow_model, write_artifacts
from tritonclient.grpc import service_pb2 as pb

MODEL = "digits"
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("artifacts"), MODEL, {"fp32": mlp()})


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    with running_server(artifacts, "fp32", "--labels", "namespace=ml,hardware_profile=cpu-small") as running:
        assert running.grpc_target is not None
        yield running


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    assert server.grpc_target is not None
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


def call(
    channel: grpc.Channel, request: pb.ModelInferRequest | bytes, timeout: float = 30
) -> pb.ModelInferResponse:
    """ModelInfer with raw bytes on the wire (so garbage can be sent too)."""
    method = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    data = request if isinstance(request, bytes) else request.SerializeToString()
    return pb.ModelInferResponse.FromString(method(data, timeout=timeout))


def reference(artifacts: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(artifacts / "variants/fp32/model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input": x})[0]


def assert_alive(server: Server) -> None:
    assert server.process.poll() is None
    assert http("GET", f"{server.url}/v2/health/live").status == 200


def test_tritonclient_grpc_health_and_metadata(server: Server) -> None:
    with triton.InferenceServerClient(server.grpc_target) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
        assert not_found(lambda: client.is_model_ready("nope"))
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "frugal" and meta["extensions"] == ["binary_tensor_data"]
        model = client.get_model_metadata(MODEL, as_json=True)
        assert (
            model["name"] == MODEL and model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
        )
        assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
        assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}]
        with pytest.raises(triton.InferenceServerException) as missing:
            client.get_model_metadata("nope")
        assert (
            missing.value.status() == "StatusCode.NOT_FOUND" and "serves 'digits'" in missing.value.message()
        )
        with pytest.raises(triton.InferenceServerException) as version:
            client.get_model_metadata(MODEL, "7")
        assert (
            version.value.status() == "StatusCode.NOT_FOUND" and "no version '7'" in version.value.message()
        )


def not_found(probe: Any) -> bool:
    try:
        probe()
    except triton.InferenceServerException as exc:
        return exc.status() == "StatusCode.NOT_FOUND"
    return False


def test_tritonclient_grpc_infer_matches_onnxruntime(server: Server, artifacts: Path) -> None:
    x = np.random.default_rng(3).random((4, 64), dtype=np.float32)
    with triton.InferenceServerClient(server.grpc_target) as client:
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(
            MODEL,
            [tensor],
            outputs=[triton.InferRequestedOutput("logits")],
            request_id="g1",
            client_timeout=30,
        )
        assert result.get_response().id == "g1" and result.get_response().model_name == MODEL
        np.testing.assert_allclose(result.as_numpy("logits"), reference(artifacts, x), rtol=1e-5, atol=1e-6)
        everything = client.infer(MODEL, [tensor])  # no outputs named: all of them
        assert [o.name for o in everything.get_response().outputs] == ["logits"]


def test_typed_contents_are_accepted(channel: grpc.Channel, artifacts: Path) -> None:
    x = np.random.default_rng(4).random((2, 64), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=MODEL, id="typed")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 64]).contents.fp32_contents.extend(x.ravel())
    request.outputs.add(name="logits")
    response = call(channel, request)
    assert response.id == "typed" and [o.name for o in response.outputs] == ["logits"]
    assert list(response.outputs[0].shape) == [2, 10]
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(out, reference(artifacts, x), rtol=1e-5, atol=1e-6)


def test_tritonclient_sees_invalid_argument_for_a_wrong_datatype(server: Server) -> None:
    with triton.InferenceServerClient(server.grpc_target) as client:
        tensor = triton.InferInput("input", [1, 64], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 64)))
        with pytest.raises(
            triton.InferenceServerException, match="datatype FP64 but the model expects FP32"
        ) as e:
            client.infer(MODEL, [tensor])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "StatusCode.INVALID_ARGUMENT" in str(e.value)


def request_of(
    name: str = "input",
    datatype: str = "FP32",
    shape: tuple[int, ...] = (1, 64),
    raw: bytes | None = b"\0" * 256,
    model: str = MODEL,
    outputs: tuple[str, ...] = (),
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.append(raw)
    for output in outputs:
        request.outputs.add(name=output)
    return request


def both_contents() -> pb.ModelInferRequest:
    request = request_of()
    request.inputs[0].contents.fp32_contents.extend([0.5] * 64)
    return request


def typed(values: list[float], shape: tuple[int, ...] = (1, 64)) -> pb.ModelInferRequest:
    request = request_of(shape=shape, raw=None)
    request.inputs[0].contents.fp32_contents.extend(values)
    return request


def two_raw_for_one_input() -> pb.ModelInferRequest:
    request = request_of()
    request.raw_input_contents.append(b"\0" * 256)
    return request


# The REST corpus (test_serving_protocol.BAD_BODIES) where it has a gRPC meaning, then gRPC-only cases.
BAD_REQUESTS: list[tuple[str, pb.ModelInferRequest | bytes, str]] = [
    ("no inputs", pb.ModelInferRequest(model_name=MODEL), "'inputs' must hold at least one tensor"),
    ("unknown tensor", request_of(name="pixels"), "unknown input 'pixels'"),
    (
        "wrong datatype",
        request_of(datatype="INT64", raw=b"\0" * 512),
        "datatype INT64 but the model expects FP32",
    ),
    ("unknown datatype", request_of(datatype="FLOAT"), "unknown datatype 'FLOAT'"),
    ("shape mismatch", request_of(shape=(2, 32)), "dim 1 must be 64"),
    ("rank mismatch", request_of(shape=(64,)), "expects rank 2"),
    ("data length", typed([0.5] * 63), "needs 64 elements, contents.fp32_contents has 63"),
    ("raw size mismatch", request_of(raw=b"\0" * 8), "needs 256 bytes, raw_input_contents has 8"),
    ("negative shape", request_of(shape=(-1, 64)), "must be non-negative"),
    ("unknown output", request_of(outputs=("probs",)), "unknown output 'probs'"),
    ("raw and typed contents", both_contents(), "has both raw_input_contents[0] and contents.fp32_contents"),
    (
        "more raw entries than inputs",
        two_raw_for_one_input(),
        "raw_input_contents has 2 entries but there are 1",
    ),
    ("no data at all", request_of(raw=None), "has neither raw_input_contents nor contents.fp32_contents"),
    (
        "BYTES truncated",
        request_of(datatype="BYTES", shape=(1,), raw=b"\x05\0\0\0ab"),
        "runs past the tensor",
    ),
    ("garbage bytes", b"\xff\xff\xff\xff not a protobuf", "not a valid inference.ModelInferRequest"),
    ("truncated message", request_of().SerializeToString()[:-10], "not a valid inference.ModelInferRequest"),
]


@pytest.mark.parametrize(("case", "request_", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_invalid_argument_naming_the_problem(
    server: Server, channel: grpc.Channel, case: str, request_: pb.ModelInferRequest | bytes, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        call(channel, request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, error.value)
    assert message in error.value.details(), error.value.details()
    assert_alive(server)


def test_unknown_model_and_version_get_not_found(channel: grpc.Channel) -> None:
    for request, message in [
        (request_of(model="nope"), "serves 'digits'"),
        (pb.ModelInferRequest(model_name=MODEL, model_version="9"), "no version '9'"),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            call(channel, request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND and message in error.value.details()


def test_timeout_parameter_is_checked_like_rest(channel: grpc.Channel) -> None:
    request = request_of()
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(grpc.RpcError) as error:
        call(channel, request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.timeout" in error.value.details()


DATATYPE_NAMES = ["FP32", "INT64", "BYTES", "BOOL", "FP16", "INT8", "UINT64", "nope", ""]


@st.composite
def random_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["input", "x", ""]) | st.text(max_size=4)),
            datatype=draw(st.sampled_from(DATATYPE_NAMES)),
            shape=draw(st.lists(st.integers(-2, 70), max_size=3)),
        )
        if use_raw:
            request.raw_input_contents.append(draw(st.binary(max_size=300)))
        if draw(st.booleans()):
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=70)))
        if draw(st.booleans()):
            tensor.contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5))
            )
    if draw(st.booleans()) and request.inputs:
        request.raw_input_contents.append(draw(st.binary(max_size=8)))
    for name in draw(st.lists(st.sampled_from(["logits", "probs", ""]), max_size=2)):
        request.outputs.add(name=name)
    if draw(st.booleans()):
        request.parameters["timeout"].int64_param = draw(st.integers(-5, 10**7))
    return request


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=random_requests())
def test_random_requests_only_get_ok_or_invalid_argument(
    server: Server, channel: grpc.Channel, request: pb.ModelInferRequest
) -> None:
    try:
        call(channel, request)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        assert error.details()
    assert server.process.poll() is None


def test_metrics_count_grpc_infers(server: Server, channel: grpc.Channel) -> None:
    labels = {"model": MODEL, "variant": "fp32", "namespace": "ml", "hardware_profile": "cpu-small"}
    before = http("GET", f"{server.url}/metrics").body.decode()
    for _ in range(5):
        call(channel, request_of())
    with pytest.raises(grpc.RpcError):
        call(channel, request_of(name="pixels"))
    after = http("GET", f"{server.url}/metrics").body.decode()

    def delta(name: str, **extra: str) -> float:
        return metric_value(after, name, **labels, **extra) - metric_value(before, name, **labels, **extra)

    assert delta("frugal_requests_total", code="200") == 5
    assert delta("frugal_requests_total", code="400") == 1
    assert delta("frugal_request_duration_seconds_count") == 6
    assert metric_value(after, "frugal_inflight_requests", **labels) == 0


# ------------------------------------------------------------------------- slow model: queue, deadlines


@pytest.fixture(scope="module")
def slow_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(
        tmp_path_factory.mktemp("slow"), "slow", {"fp32": slow_model(iterations=4000, width=512)}
    )


def slow_request(seed: int) -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).random((1, 4), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(x.tobytes())
    return request


def test_a_full_queue_answers_resource_exhausted(slow_artifacts: Path) -> None:
    with running_server(slow_artifacts, "fp32", "--max-batch-size", "1", "--max-queue-size", "2") as srv:
        assert srv.grpc_target is not None
        with grpc.insecure_channel(srv.grpc_target) as channel, ThreadPoolExecutor(10) as pool:

            def one(seed: int) -> grpc.StatusCode:
                try:
                    call(channel, slow_request(seed), timeout=60)
                except grpc.RpcError as error:
                    assert (
                        error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                        or "queue is full" in error.details()
                    )
                    return error.code()
                return grpc.StatusCode.OK

            codes = list(pool.map(one, range(10)))
        text = http("GET", f"{srv.url}/metrics").body.decode()
        assert_alive(srv)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert metric_value(text, "frugal_requests_total", code="429") == codes.count(
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert metric_value(text, "frugal_requests_total", code="200") == codes.count(grpc.StatusCode.OK)


def test_a_client_deadline_shorter_than_the_model_gets_deadline_exceeded(slow_artifacts: Path) -> None:
    with running_server(slow_artifacts, "fp32") as srv:
        assert srv.grpc_target is not None
        with grpc.insecure_channel(srv.grpc_target) as channel:
            started = time.monotonic()
            call(channel, slow_request(0), timeout=60)  # warm
            run_s = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as error:
                call(channel, slow_request(1), timeout=min(0.02, run_s / 3))
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 5
            parameter = slow_request(2)
            deadline_ms = max(1, int(run_s * 1000 / 10))  # a tenth of what the model takes here
            parameter.parameters["timeout"].int64_param = deadline_ms * 1000  # microseconds, like REST
            with pytest.raises(grpc.RpcError) as server_side:
                call(channel, parameter, timeout=60)
            assert server_side.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert f"deadline of {deadline_ms} ms" in server_side.value.details()
        text = http("GET", f"{srv.url}/metrics").body.decode()
        assert_alive(srv)
    # the server's own deadline (the client's, shortened) usually answers first; grpc may cancel first
    answered = metric_value(text, "frugal_requests_total", code="504")
    assert answered >= 1 and answered + metric_value(text, "frugal_client_disconnects_total") == 2


def test_grpc_port_minus_one_turns_it_off(artifacts: Path) -> None:
    with running_server(artifacts, "fp32", "--grpc-port", "-1") as srv:
        assert srv.grpc_target is None
        assert http("GET", f"{srv.url}/v2/health/ready").status == 200
