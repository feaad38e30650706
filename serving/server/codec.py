"""Open Inference Protocol v2 REST codec: request/response bodies ⇄ numpy arrays. Pure functions.

Supports JSON tensors (flat or nested `data`) and the binary tensor data extension
(`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`, `binary_data_output`), which is
what Triton's and KServe's clients send. Every malformed body raises `ProtocolError` with a message that
names the offending field (`failures.InvalidInput`: 400 / INVALID_ARGUMENT); nothing here raises anything
else for user input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from frugal.serving.datatypes import OIP_TO_NUMPY, oip_of_numpy
from frugal.serving.server.failures import ProtocolError, echo  # ProtocolError: failures.InvalidInput

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: Mapping[str, np.dtype[Any]] = OIP_TO_NUMPY  # OIP name → numpy dtype (serving/datatypes.py)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: follow the request's binary_data_output


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None  # None: every output
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array (strings and bytes are BYTES)."""
    name = oip_of_numpy(array.dtype)
    if name is None:
        raise ProtocolError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")
    return name


# ---------------------------------------------------------------------------------------------- decode


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Separate the JSON header from the binary section (empty when the extension is not used)."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {echo(repr(header_length))}") from None
    if not 0 <= length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    return body[:length], body[length:]


def parse_json_object(text: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8 and nesting deeper than 1024
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def decode_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an OIP inference request body (JSON, optionally followed by binary tensor data)."""
    header, binary = split_body(body, header_length)
    doc = parse_json_object(header, "request body")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        name, datatype, array, used = _decode_tensor(raw, f"inputs[{index}]", binary, offset)
        if name in inputs:
            raise ProtocolError(f"input '{echo(name)}' appears more than once in 'inputs'")
        inputs[name], datatypes[name] = array, datatype
        offset += used
    if offset != len(binary):
        raise ProtocolError(
            f"the binary section has {len(binary)} bytes but the inputs' binary_data_size add up to {offset}"
        )
    parameters = _parameters(doc.get("parameters"), "parameters")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=request_id,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=_flag(parameters.get("binary_data_output", False), "parameters.binary_data_output"),
        parameters=parameters,
    )


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"'{where}' must be a JSON object")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"'{where}' must be true or false")
    return value


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
    outputs = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a string 'name'")
        parameters = _parameters(raw.get("parameters"), f"outputs[{index}].parameters")
        if "classification" in parameters:
            raise ProtocolError(f"outputs[{index}]: the classification extension is not supported")
        binary = parameters.get("binary_data")
        outputs.append(
            RequestedOutput(
                raw["name"], None if binary is None else _flag(binary, f"outputs[{index}].binary_data")
            )
        )
    return tuple(outputs)


def _decode_tensor(raw: Any, where: str, binary: bytes, offset: int) -> tuple[str, str, np.ndarray, int]:
    """One tensor → (name, datatype, array, binary bytes it used)."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where} must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name must be a non-empty string")
    where = f"input '{echo(name)}'"
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: unknown datatype {echo(repr(datatype))}; use one of {', '.join(DATATYPES)}"
        )
    shape = _shape(raw.get("shape"), where)
    count = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise ProtocolError(f"{where} has both 'data' and binary_data_size; send one")
        if offset + size > len(binary):
            raise ProtocolError(
                f"{where}: binary_data_size {size} runs past the end of the binary section "
                f"({len(binary) - offset} bytes left)"
            )
        chunk = binary[offset : offset + size]
        return name, datatype, from_binary(chunk, datatype, shape, count, where), size
    if "data" not in raw:
        raise ProtocolError(f"{where} has neither 'data' nor a binary_data_size parameter")
    return name, datatype, _from_json(raw["data"], datatype, shape, count, where), 0


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise ProtocolError(
            f"{where}: 'shape' must be a list of non-negative integers, got {echo(repr(value))}"
        )
    return tuple(value)


def array_from_bytes(chunk: bytes, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """One tensor's raw bytes (little-endian; BYTES as length-prefixed elements) → an array of `shape`.

    The caller has checked `datatype` and `shape`; a size that does not fit raises `ProtocolError`.
    """
    return from_binary(chunk, datatype, shape, math.prod(shape), where)


def array_to_bytes(array: np.ndarray) -> tuple[str, bytes]:
    """An array → (its OIP datatype, its raw bytes as `array_from_bytes` reads them)."""
    datatype = datatype_of(array)
    return datatype, to_binary(array, datatype)


def from_binary(chunk: bytes, datatype: str, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(chunk, where, count).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: shape {echo(list(shape))} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _bytes_elements(chunk: bytes, where: str, count: int) -> np.ndarray:
    """BYTES in binary form: each element is a 4-byte little-endian length, then that many bytes."""
    items: list[bytes] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise ProtocolError(f"{where}: truncated BYTES element length at byte {position}")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise ProtocolError(f"{where}: BYTES element at byte {position - 4} runs past the tensor's data")
        items.append(chunk[position : position + length])
        position += length
    if len(items) != count:
        raise ProtocolError(f"{where}: shape needs {count} BYTES elements, binary data has {len(items)}")
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(item, str) for item in flat):
            raise ProtocolError(f"{where}: BYTES data must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = [item.encode() for item in flat]
    else:
        array = _numeric(data, datatype, where)
    if array.size != count:
        raise ProtocolError(
            f"{where}: shape {echo(list(shape))} needs {count} elements, data has {array.size}"
        )
    return array.reshape(shape)


def _numeric(data: Any, datatype: str, where: str) -> np.ndarray:
    """JSON numbers → an array of `datatype`, refusing what numpy would coerce silently."""
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise ProtocolError(f"{where}: data must be a flat or regularly nested list of numbers") from None
    dtype = DATATYPES[datatype]
    allowed = "b" if dtype.kind == "b" else "iu" if dtype.kind in "iu" else "iuf"
    if raw.size and raw.dtype.kind not in allowed:
        wanted = {"b": "true/false", "iu": "integers"}.get(allowed, "numbers")
        raise ProtocolError(f"{where}: data for {datatype} must be {wanted}")
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise ProtocolError(f"{where}: data is out of range for {datatype}")
    return raw.astype(dtype, copy=False)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# ---------------------------------------------------------------------------------------------- encode


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, dict[str, str]]:
    """Encode the outputs a request asked for; returns (body, extra headers)."""
    selected: Sequence[RequestedOutput] = request.outputs or [RequestedOutput(name) for name in outputs]
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    tensors, chunks = [], []
    for wanted in selected:
        binary = request.binary_output if wanted.binary is None else wanted.binary
        tensor, chunk = encode_tensor(wanted.name, outputs[wanted.name], binary)
        tensors.append(tensor)
        if chunk is not None:
            chunks.append(chunk)
    doc["outputs"] = tensors
    return _assemble(doc, chunks)


def encode_request(
    inputs: Mapping[str, np.ndarray], binary: bool = True, request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Encode an inference request (used by a stage to call the next stage)."""
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    tensors, chunks = [], []
    for name, array in inputs.items():
        tensor, chunk = encode_tensor(name, array, binary)
        tensors.append(tensor)
        if chunk is not None:
            chunks.append(chunk)
    doc["inputs"] = tensors
    doc["parameters"] = {"binary_data_output": binary}
    return _assemble(doc, chunks)


def encode_tensor(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    datatype = datatype_of(array)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        chunk = to_binary(array, datatype)
        tensor["parameters"] = {"binary_data_size": len(chunk)}
        return tensor, chunk
    if datatype == "BYTES":
        tensor["data"] = [_text(item) for item in array.ravel()]
    elif array.dtype.kind == "f" and array.dtype.itemsize == 2:
        tensor["data"] = array.ravel().astype(np.float32)  # orjson has no float16
    else:
        tensor["data"] = np.ascontiguousarray(array.ravel())  # serialized by orjson directly
    return tensor, None


def _text(item: Any) -> str:
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def _assemble(doc: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *chunks]), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """Decode an inference response (the next stage's answer) into arrays by output name."""
    header, binary = split_body(body, header_length)
    doc = parse_json_object(header, "response body")
    raw_outputs = doc.get("outputs")
    if not isinstance(raw_outputs, list):
        raise ProtocolError("response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, raw in enumerate(raw_outputs):
        name, _, array, used = _decode_tensor(raw, f"outputs[{index}]", binary, offset)
        outputs[name] = array
        offset += used
    return outputs
