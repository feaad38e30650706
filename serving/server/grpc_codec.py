"""Open Inference Protocol v2 gRPC codec: `ModelInferRequest` ⇄ the REST codec's `InferRequest`. Pure.

The messages are the ones `tritonclient` generates from the KServe/Triton `grpc_service.proto`
(package `inference`). Tensor data comes either as `raw_input_contents` (one entry per input, in
order; little-endian, BYTES elements each prefixed by a 4-byte little-endian length, exactly the REST
binary extension's layout) or as typed `contents`, never both. Checks against the model's declared
tensors (names, datatypes, shapes, outputs) stay in `signature.check_request`; this module only
turns a message into arrays, raising `ProtocolError` with a message naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from frugal.serving.server.codec import (
    DATATYPES,
    InferRequest,
    RequestedOutput,
    array_from_bytes,
    array_to_bytes,
)
from frugal.serving.server.failures import ProtocolError, echo

# OIP datatype → the InferTensorContents field that carries it (FP16 has none: raw only).
CONTENTS_FIELD: Mapping[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(pb.InferTensorContents.DESCRIPTOR.fields_by_name)
_WIDE: Mapping[str, type[np.generic]] = {"b": np.bool_, "i": np.int64, "u": np.uint64, "f": np.float64}


def parse_request(data: bytes) -> pb.ModelInferRequest:
    """Wire bytes → a ModelInferRequest; bytes that are not one raise `ProtocolError`."""
    from google.protobuf.message import DecodeError

    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        raise ProtocolError(
            f"the request is not a valid inference.ModelInferRequest message: {exc}"
        ) from None


def decode_request(message: pb.ModelInferRequest) -> InferRequest:
    """A ModelInferRequest → an `InferRequest` of numpy arrays (model name/version are the caller's)."""
    if not message.inputs:
        raise ProtocolError("'inputs' must hold at least one tensor")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} entries but there are {len(message.inputs)} inputs; "
            "send one per input, in the order of 'inputs' (or none, and typed contents)"
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for index, tensor in enumerate(message.inputs):
        if not tensor.name:
            raise ProtocolError(f"inputs[{index}].name must be a non-empty string")
        if tensor.name in inputs:
            raise ProtocolError(f"input '{echo(tensor.name)}' appears more than once in 'inputs'")
        chunk = raw[index] if raw else None
        inputs[tensor.name] = _decode_tensor(tensor, index, chunk)
        datatypes[tensor.name] = tensor.datatype
    parameters = parameters_of(message.parameters, "parameters")
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=message.id or None,
        outputs=_requested_outputs(message.outputs),
        binary_output=True,
        parameters=parameters,
    )


def _decode_tensor(tensor: Any, index: int, chunk: bytes | None) -> np.ndarray:
    where = f"input '{echo(tensor.name)}'"
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: unknown datatype {echo(repr(datatype))}; use one of {', '.join(DATATYPES)}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise ProtocolError(f"{where}: 'shape' must be non-negative integers, got {echo(list(shape))}")
    typed = [name for name in _ALL_FIELDS if len(getattr(tensor.contents, name))]
    if chunk is not None:
        if typed:
            raise ProtocolError(
                f"{where} has both raw_input_contents[{index}] and contents.{typed[0]}; send one of them"
            )
        return _from_raw(chunk, datatype, shape, f"{where} (raw_input_contents[{index}])")
    return _from_contents(tensor.contents, typed, datatype, shape, where)


def _from_raw(chunk: bytes, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype != "BYTES":
        needed = count * DATATYPES[datatype].itemsize
        if len(chunk) != needed:
            raise ProtocolError(
                f"{where}: shape {echo(list(shape))} of {datatype} needs {needed} bytes, raw_input_contents has "
                f"{len(chunk)}"
            )
    return array_from_bytes(chunk, datatype, shape, where)


def _from_contents(
    contents: Any, typed: Sequence[str], datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray:
    count = math.prod(shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        if count == 0:
            return np.zeros(shape, dtype=DATATYPES[datatype])
        raise ProtocolError(f"{where}: {datatype} has no typed contents field; send raw_input_contents")
    if not typed and count:
        raise ProtocolError(f"{where} has neither raw_input_contents nor contents.{field}")
    wrong = [name for name in typed if name != field]
    if wrong:
        raise ProtocolError(f"{where}: {datatype} data goes in contents.{field}, not contents.{wrong[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise ProtocolError(
            f"{where}: shape {echo(list(shape))} needs {count} elements, contents.{field} has {len(values)}"
        )
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.array(values, dtype=_WIDE[dtype.kind])
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise ProtocolError(f"{where}: contents.{field} is out of range for {datatype}")
    return wide.astype(dtype, copy=False).reshape(shape)


def parameters_of(parameters: Mapping[str, Any], where: str) -> dict[str, Any]:
    """map<string, InferParameter> → plain values (bool, int, str, float)."""
    found: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise ProtocolError(f"{where}['{echo(key)}'] has no value")
        found[key] = getattr(parameter, choice)
    return found


def _requested_outputs(outputs: Sequence[Any]) -> tuple[RequestedOutput, ...] | None:
    if not outputs:
        return None
    requested = []
    for index, output in enumerate(outputs):
        if not output.name:
            raise ProtocolError(f"outputs[{index}].name must be a non-empty string")
        if "classification" in output.parameters:
            raise ProtocolError(f"outputs[{index}]: the classification extension is not supported")
        requested.append(RequestedOutput(output.name))
    return tuple(requested)


def encode_response(
    model_name: str, model_version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The outputs a request asked for (all when it named none), as raw_output_contents."""
    names = [wanted.name for wanted in request.outputs] if request.outputs else list(outputs)
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for name in names:
        array = outputs[name]
        datatype, raw = array_to_bytes(array)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(raw)
    return response


def decode_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """A ModelInferResponse with raw_output_contents → arrays by output name (for clients and tests)."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise ProtocolError("response has no raw_output_contents entry per output")
    return {
        output.name: array_from_bytes(raw, output.datatype, tuple(output.shape), f"output '{output.name}'")
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
