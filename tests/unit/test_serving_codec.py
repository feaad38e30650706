"""The OIP codec round-trips tensors in JSON and binary form and names what is wrong in a bad body."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugal.serving.server.artifacts import TensorSpec
from frugal.serving.server.codec import (
    HEADER_LENGTH,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from frugal.serving.server.signature import check_request

ARRAYS: dict[str, np.ndarray] = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "i64": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
    "f16": np.array([0.5, 1.5], dtype=np.float16),
    "flag": np.array([True, False]),
    "text": np.array([b"hi", b"\xc3\xa9t\xc3\xa9"], dtype=object),
}


@pytest.mark.parametrize("binary", [True, False])
def test_request_round_trip(binary: bool) -> None:
    body, headers = encode_request(ARRAYS, binary=binary, request_id="r")
    decoded = decode_request(body, headers.get(HEADER_LENGTH))
    assert decoded.id == "r" and decoded.binary_output is binary
    for name, array in ARRAYS.items():
        assert decoded.inputs[name].shape == array.shape
        assert decoded.inputs[name].tolist() == array.tolist()


def test_response_honours_per_output_binary_choice() -> None:
    request = InferRequest(
        {}, {}, id="x", outputs=(RequestedOutput("i64", binary=True), RequestedOutput("f32"))
    )
    body, headers = encode_response("m", "1", request, ARRAYS)
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert [o["name"] for o in header["outputs"]] == ["i64", "f32"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 32} and "data" in header["outputs"][1]
    decoded = decode_response(body, headers[HEADER_LENGTH])
    np.testing.assert_array_equal(decoded["i64"], ARRAYS["i64"])
    np.testing.assert_allclose(decoded["f32"], ARRAYS["f32"], rtol=1e-6)


def test_json_only_response_has_no_binary_header() -> None:
    body, headers = encode_response("m", "1", InferRequest({}, {}), {"f32": ARRAYS["f32"]})
    assert HEADER_LENGTH not in headers and json.loads(body)["outputs"][0]["data"][1] == pytest.approx(1 / 7)


def tensor(**fields: object) -> bytes:
    base = {"name": "x", "datatype": "INT8", "shape": [2], "data": [1, 2]}
    return json.dumps({"inputs": [{**base, **fields}]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (tensor(data=[1, 300]), "out of range for INT8"),
        (tensor(data=[1.5, 2]), "must be integers"),
        (tensor(data=[True, False]), "must be integers"),
        (tensor(datatype="BOOL", data=[1, 0]), "must be true/false"),
        (tensor(datatype="BYTES", data=[1, 2]), "BYTES data must be strings"),
        (tensor(shape="2"), "'shape' must be a list"),
        (tensor(data=None, parameters=None), "must be integers"),
        (json.dumps({"inputs": [{"name": "x"}, {"name": "x"}]}).encode(), "unknown datatype"),
        (json.dumps({"inputs": [{"name": "", "datatype": "FP32"}]}).encode(), "name must be a non-empty"),
        (json.dumps({"inputs": [json.loads(tensor())["inputs"][0]] * 2}).encode(), "appears more than once"),
        (json.dumps({"inputs": json.loads(tensor())["inputs"], "id": 5}).encode(), "'id' must be a string"),
        (
            json.dumps(
                {
                    "inputs": json.loads(tensor())["inputs"],
                    "outputs": [{"name": "y", "parameters": {"classification": 3}}],
                }
            ).encode(),
            "classification",
        ),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_request(body)


def test_binary_bytes_elements_are_length_prefixed() -> None:
    header = json.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}}]}
    ).encode()
    body = header + b"\x02\x00\x00\x00hi\x03\x00\x00\x00abc"
    assert decode_request(body, str(len(header))).inputs["s"].tolist() == [b"hi", b"abc"]
    with pytest.raises(ProtocolError, match="runs past"):
        decode_request(header + b"\x09\x00\x00\x00hi\x00\x00\x00", str(len(header)))


def test_leftover_binary_bytes_are_refused() -> None:
    body, headers = encode_request({"f32": ARRAYS["f32"]})
    with pytest.raises(ProtocolError, match="add up to 24"):
        decode_request(body + b"\0", headers[HEADER_LENGTH])


SIGNATURE = (TensorSpec(name="x", datatype="FP32", shape=(-1, 3)),)


def test_check_request_returns_the_batch_size_and_rejects_mismatches() -> None:
    ok = InferRequest({"x": np.zeros((4, 3), np.float32)}, {"x": "FP32"})
    assert check_request(ok, SIGNATURE, SIGNATURE) == 4
    missing = InferRequest({}, {})
    with pytest.raises(ProtocolError, match=r"missing input 'x' \(FP32 \[-1, 3\]\)"):
        check_request(missing, SIGNATURE, SIGNATURE)
