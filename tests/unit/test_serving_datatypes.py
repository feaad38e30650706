"""The one OIP datatype table agrees with numpy, ONNX and ONNX Runtime, and its lookups invert it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from frugal.schema.artifact_format import TensorSpec
from frugal.serving import profiling
from frugal.serving.datatypes import OIP_TO_NUMPY, ONNX_TO_OIP, ORT_TO_OIP, TABLE, Datatype, oip_of_numpy
from frugal.serving.server.codec import DATATYPES, ProtocolError, datatype_of

OIP_NAMES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
OIP_NAMES += ["FP16", "FP32", "FP64", "BYTES"]


def test_the_table_has_one_row_per_oip_datatype_and_each_column_is_unique() -> None:
    assert [row.name for row in TABLE] == OIP_NAMES
    for column in ("name", "onnx", "ort"):
        values = [getattr(row, column) for row in TABLE]
        assert len(set(values)) == len(values), column
    assert len({row.numpy for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
def test_every_row_round_trips_through_the_derived_lookups(row: Datatype) -> None:
    assert OIP_TO_NUMPY[row.name] == row.numpy
    assert DATATYPES[row.name] == row.numpy  # the codec's name for the same mapping
    assert oip_of_numpy(row.numpy) == row.name
    assert oip_of_numpy(row.numpy.newbyteorder(">")) == row.name  # byte order does not matter
    assert datatype_of(np.empty(2, dtype=row.numpy)) == row.name
    assert ONNX_TO_OIP[row.onnx] == row.name
    assert ORT_TO_OIP[row.ort] == row.name
    assert row.numpy.kind == "O" or row.numpy == row.numpy.newbyteorder("<")  # little-endian on the wire


@pytest.mark.parametrize("row", [r for r in TABLE if r.name != "BYTES"], ids=lambda row: row.name)
def test_onnx_element_types_match_onnx(row: Datatype) -> None:
    assert onnx.TensorProto.DataType.Name(row.onnx) != ""
    assert helper.tensor_dtype_to_np_dtype(row.onnx) == row.numpy


def test_bytes_is_onnx_string() -> None:
    assert next(r for r in TABLE if r.name == "BYTES").onnx == onnx.TensorProto.STRING


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
def test_ort_type_strings_match_what_onnxruntime_reports(row: Datatype) -> None:
    x = helper.make_tensor_value_info("x", row.onnx, [2])
    y = helper.make_tensor_value_info("y", row.onnx, [2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == row.ort
    assert session.get_outputs()[0].type == row.ort


def test_unknown_types_keep_their_errors_and_fallbacks() -> None:
    assert oip_of_numpy(np.dtype("complex64")) is None
    with pytest.raises(ProtocolError, match="numpy dtype complex64 has no Open Inference Protocol datatype"):
        datatype_of(np.zeros(1, dtype=np.complex64))
    assert datatype_of(np.array(["a"])) == "BYTES" and datatype_of(np.array([b"a"])) == "BYTES"
    assert ONNX_TO_OIP.get(onnx.TensorProto.BFLOAT16, "FP32") == "FP32"  # what sharding.specs falls back to
    assert ORT_TO_OIP.get("tensor(bfloat16)", "tensor(bfloat16)") == "tensor(bfloat16)"


def test_profiling_fills_every_datatype_with_its_own_type() -> None:
    signature = [TensorSpec(name=name, datatype=name, shape=(-1, 2)) for name in OIP_TO_NUMPY]
    inputs = profiling.example_inputs(signature, batch=3)
    for name, dtype in OIP_TO_NUMPY.items():
        assert inputs[name].shape == (3, 2)
        assert inputs[name].dtype == (np.dtype(object) if name == "BYTES" else dtype.newbyteorder("="))
