"""The pure gRPC codec: ModelInferRequest ⇄ InferRequest, raw and typed contents, and its errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from frugal.serving.server import grpc_codec
from frugal.serving.server.codec import ProtocolError


def request(
    datatype: str = "FP32", shape: tuple[int, ...] = (2, 3), raw: bytes | None = None
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="r1")
    message.inputs.add(name="x", datatype=datatype, shape=list(shape))
    if raw is not None:
        message.raw_input_contents.append(raw)
    return message


@pytest.mark.parametrize(
    "datatype", ["BOOL", "UINT8", "INT16", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64"]
)
def test_raw_contents_round_trip_every_numeric_datatype(datatype: str) -> None:
    from frugal.serving.server.codec import DATATYPES

    x = (np.arange(6) % 2 if datatype == "BOOL" else np.arange(6)).astype(DATATYPES[datatype]).reshape(2, 3)
    decoded = grpc_codec.decode_request(request(datatype, raw=x.tobytes()))
    assert decoded.datatypes == {"x": datatype} and decoded.id == "r1" and decoded.outputs is None
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    response = grpc_codec.encode_response("m", "1", decoded, {"y": x})
    assert response.model_name == "m" and response.model_version == "1" and response.id == "r1"
    assert response.outputs[0].datatype == datatype and list(response.outputs[0].shape) == [2, 3]
    np.testing.assert_array_equal(grpc_codec.decode_response(response)["y"], x)


def test_bytes_are_length_prefixed_like_the_rest_binary_extension() -> None:
    raw = b"".join(struct.pack("<I", len(item)) + item for item in (b"ab", b"", b"xyz"))
    decoded = grpc_codec.decode_request(request("BYTES", (3,), raw))
    assert decoded.inputs["x"].tolist() == [b"ab", b"", b"xyz"]
    response = grpc_codec.encode_response("m", "1", decoded, {"y": decoded.inputs["x"]})
    assert response.raw_output_contents[0] == raw
    with pytest.raises(ProtocolError, match="needs 3 BYTES elements, binary data has 2"):
        grpc_codec.decode_request(request("BYTES", (3,), raw[:-7]))
    with pytest.raises(ProtocolError, match="truncated BYTES element length"):
        grpc_codec.decode_request(request("BYTES", (1,), b"\x01\0"))


def test_typed_contents() -> None:
    message = request("INT8", (4,))
    message.inputs[0].contents.int_contents.extend([1, -2, 3, 127])
    assert grpc_codec.decode_request(message).inputs["x"].dtype == np.int8
    text = request("BYTES", (2,))
    text.inputs[0].contents.bytes_contents.extend([b"a", b"bc"])
    assert grpc_codec.decode_request(text).inputs["x"].tolist() == [b"a", b"bc"]
    floats = request("FP32", (1, 2))
    floats.inputs[0].contents.fp32_contents.extend([0.5, 1.5])
    np.testing.assert_array_equal(grpc_codec.decode_request(floats).inputs["x"], [[0.5, 1.5]])
    empty = request("FP16", (0, 3))
    assert grpc_codec.decode_request(empty).inputs["x"].shape == (0, 3)


def _with(message: pb.ModelInferRequest, **contents: list) -> pb.ModelInferRequest:
    for field, values in contents.items():
        getattr(message.inputs[0].contents, field).extend(values)
    return message


def _two_inputs() -> pb.ModelInferRequest:
    message = request(raw=b"\0" * 24)
    message.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    message.raw_input_contents.append(b"\0" * 24)
    return message


def _outputs(*names: str) -> pb.ModelInferRequest:
    message = request(raw=b"\0" * 24)
    for name in names:
        message.outputs.add(name=name)
    return message


def _classification() -> pb.ModelInferRequest:
    message = _outputs("y")
    message.outputs[0].parameters["classification"].int64_param = 3
    return message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (pb.ModelInferRequest(), "'inputs' must hold at least one tensor"),
        (request("FLOAT", raw=b""), "unknown datatype 'FLOAT'"),
        (request("FP32", (-1, 3), raw=b""), "'shape' must be non-negative integers, got [-1, 3]"),
        (request(raw=b"\0" * 8), "shape [2, 3] of FP32 needs 24 bytes, raw_input_contents has 8"),
        (
            _with(request(raw=b"\0" * 24), fp32_contents=[1.0] * 6),
            "has both raw_input_contents[0] and contents",
        ),
        (_with(request(), fp32_contents=[1.0] * 5), "needs 6 elements, contents.fp32_contents has 5"),
        (
            _with(request(), int64_contents=[1] * 6),
            "FP32 data goes in contents.fp32_contents, not contents.int64",
        ),
        (request(), "has neither raw_input_contents nor contents.fp32_contents"),
        (request("FP16"), "FP16 has no typed contents field; send raw_input_contents"),
        (_with(request("INT8", (1,)), int_contents=[300]), "out of range for INT8"),
        (_with(request("UINT8", (1,)), uint_contents=[256]), "out of range for UINT8"),
        (_two_inputs(), "input 'x' appears more than once"),
        (_outputs(""), "outputs[0].name must be a non-empty string"),
        (_classification(), "classification extension is not supported"),
    ],
)
def test_errors_name_the_field(message: pb.ModelInferRequest, expected: str) -> None:
    with pytest.raises(ProtocolError) as error:
        grpc_codec.decode_request(message)
    assert expected in str(error.value)


def test_raw_entries_must_match_the_inputs() -> None:
    message = request(raw=b"\0" * 24)
    message.raw_input_contents.append(b"")
    with pytest.raises(ProtocolError, match="raw_input_contents has 2 entries but there are 1 inputs"):
        grpc_codec.decode_request(message)


def test_parameters_and_outputs() -> None:
    message = _outputs("y")
    message.parameters["timeout"].int64_param = 5000
    message.parameters["tag"].string_param = "t"
    message.parameters["flag"].bool_param = True
    decoded = grpc_codec.decode_request(message)
    assert decoded.parameters == {"timeout": 5000, "tag": "t", "flag": True}
    assert [o.name for o in decoded.outputs or ()] == ["y"]
    empty = request(raw=b"\0" * 24)
    empty.parameters["nothing"].CopyFrom(pb.InferParameter())
    with pytest.raises(ProtocolError, match=r"parameters\['nothing'\] has no value"):
        grpc_codec.decode_request(empty)


def test_response_keeps_only_the_requested_outputs_in_order() -> None:
    decoded = grpc_codec.decode_request(_outputs("b", "a"))
    arrays = {"a": np.zeros((1,), np.float32), "b": np.ones((2,), np.int64)}
    response = grpc_codec.encode_response("m", "1", decoded, arrays)
    assert [o.name for o in response.outputs] == ["b", "a"]
    assert len(response.raw_output_contents) == 2


def test_garbage_bytes_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"not a valid inference\.ModelInferRequest"):
        grpc_codec.parse_request(b"\xff\xff\xff\xff garbage")
    assert grpc_codec.parse_request(request(raw=b"").SerializeToString()).model_name == "m"
