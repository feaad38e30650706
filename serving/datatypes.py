"""The Open Inference Protocol (KServe v2) datatypes and what each is called elsewhere. Pure: numpy only.

One row per OIP datatype: its numpy dtype (little-endian; BYTES is `object`), its ONNX
`TensorProto` element type and the type string ONNX Runtime reports for a tensor of it. Every
lookup the serving component needs is derived from `TABLE`, so the four type systems cannot drift
apart. The ONNX element types are written as the `onnx.TensorProto.DataType` integers (a stable
part of the ONNX format) so the server does not need the `onnx` package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Datatype:
    name: str  # the OIP datatype name, e.g. "FP32"
    numpy: np.dtype[Any]  # little-endian; BYTES is object (its elements are `bytes`)
    onnx: int  # onnx.TensorProto element type, e.g. TensorProto.FLOAT == 1
    ort: str  # what onnxruntime's NodeArg.type says, e.g. "tensor(float)"


TABLE: tuple[Datatype, ...] = (
    Datatype("BOOL", np.dtype("bool"), 9, "tensor(bool)"),
    Datatype("UINT8", np.dtype("<u1"), 2, "tensor(uint8)"),
    Datatype("UINT16", np.dtype("<u2"), 4, "tensor(uint16)"),
    Datatype("UINT32", np.dtype("<u4"), 12, "tensor(uint32)"),
    Datatype("UINT64", np.dtype("<u8"), 13, "tensor(uint64)"),
    Datatype("INT8", np.dtype("<i1"), 3, "tensor(int8)"),
    Datatype("INT16", np.dtype("<i2"), 5, "tensor(int16)"),
    Datatype("INT32", np.dtype("<i4"), 6, "tensor(int32)"),
    Datatype("INT64", np.dtype("<i8"), 7, "tensor(int64)"),
    Datatype("FP16", np.dtype("<f2"), 10, "tensor(float16)"),
    Datatype("FP32", np.dtype("<f4"), 1, "tensor(float)"),
    Datatype("FP64", np.dtype("<f8"), 11, "tensor(double)"),
    Datatype("BYTES", np.dtype("object"), 8, "tensor(string)"),
)

# OIP name → numpy dtype, in TABLE order (error messages list the names in this order).
OIP_TO_NUMPY: Mapping[str, np.dtype[Any]] = MappingProxyType({row.name: row.numpy for row in TABLE})
# onnx.TensorProto element type → OIP name.
ONNX_TO_OIP: Mapping[int, str] = MappingProxyType({row.onnx: row.name for row in TABLE})
# ONNX Runtime type string → OIP name.
ORT_TO_OIP: Mapping[str, str] = MappingProxyType({row.ort: row.name for row in TABLE})

# Native-byte-order dtype → OIP name, so a big-endian array still finds its datatype.
_NUMPY_TO_OIP: Mapping[np.dtype[Any], str] = MappingProxyType(
    {row.numpy if row.numpy.kind == "O" else row.numpy.newbyteorder("="): row.name for row in TABLE}
)


def oip_of_numpy(dtype: np.dtype[Any]) -> str | None:
    """The OIP datatype of a numpy dtype (objects, bytes and str are BYTES), or None when it has none."""
    if dtype.kind in "OSU":
        return "BYTES"
    return _NUMPY_TO_OIP.get(dtype.newbyteorder("="))
