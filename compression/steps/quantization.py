"""ONNX-level quantization with ``onnxruntime.quantization`` (and the seed's uniform quantizer).

Every function reads an FP32 ONNX file and writes a new one; ``nodes_to_exclude`` keeps the named
nodes in FP32 (the sensitivity-aware fallback uses it).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime import quantization as q

from ..formulas import uniform_quantize
from ..source import Arrays, HeldOut

QUANTIZABLE_OPS = ("MatMul", "Gemm", "Gather")


class HeldOutReader(q.CalibrationDataReader):
    """Feeds calibration rows to ONNX Runtime's static calibrator in small batches."""

    def __init__(self, data: HeldOut, names: Sequence[str], batch: int = 16, limit: int = 256) -> None:
        count = min(len(data), limit)
        self._batches: Iterator[Arrays] = iter(
            [{n: data.inputs[n][s : s + batch] for n in names} for s in range(0, count, batch)]
        )

    def get_next(self) -> Arrays | None:
        return next(self._batches, None)


def weight_nodes(model_path: Path) -> list[str]:
    """Names of the nodes whose weights quantization would change (MatMul/Gemm/Gather on initializers)."""
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTIZABLE_OPS and any(i in initializers for i in n.input)
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger and warns; keep the CLI output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def dynamic_int8(src: Path, dst: Path, per_channel: bool = False, exclude: Sequence[str] = ()) -> Path:
    with _quiet():
        q.quantize_dynamic(
            src,
            dst,
            weight_type=q.QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=list(exclude),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def static_int8(
    src: Path, dst: Path, calibration: HeldOut, per_channel: bool = False, exclude: Sequence[str] = ()
) -> Path:
    """QDQ static INT8: activations calibrated (MinMax) on the calibration data."""
    names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
    with _quiet():
        q.quantize_static(
            src,
            dst,
            HeldOutReader(calibration, names),
            quant_format=q.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return dst


def fp16(src: Path, dst: Path) -> Path:
    """Weights and compute in FP16; inputs and outputs stay FP32 so clients need not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with _quiet():
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(converted, str(dst))
    return dst


def weight_only(src: Path, dst: Path, bits: int, block_size: int | None = None) -> Path | None:
    """Weight-only quantization: activations stay FP32, so the error is only the weights' rounding.

    MatMul weights become ``bits``-bit blocks (``MatMulNBits``, symmetric, one scale per block of
    ``block_size`` input rows); embedding tables (``Gather`` on an initializer) become INT8 through
    ONNX Runtime's dynamic quantizer, which for a ``Gather`` is weight-only too. None when the graph
    has no MatMul weights.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    block_size = block_size or (32 if bits == 4 else 128)
    model = onnx.load(str(src))
    algo = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=bits)
    quantizer = MatMulNBitsQuantizer(model, algo_config=algo)
    with _quiet():
        quantizer.process()
    result = quantizer.model.model
    if not any(n.op_type == "MatMulNBits" for n in result.graph.node):
        return None
    initializers = {i.name for i in result.graph.initializer}
    tables = [n.name for n in result.graph.node if n.op_type == "Gather" and n.input[0] in initializers]
    if not tables:
        onnx.save(result, str(dst))
        return dst
    with _quiet():
        q.quantize_dynamic(
            result,
            dst,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=["Gather"],
            nodes_to_quantize=tables,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def uniform_kbit(src: Path, dst: Path, bits: int, exclude: Sequence[str] = ()) -> Path:
    """The seed's uniform quantizer on every weight matrix: ``L = 2**bits`` levels over [min, max].

    Each weight is stored as UINT8 level indices and rebuilt in the graph as
    ``DequantizeLinear(index, delta, 0) + a`` — exactly ``a + index * delta``.
    """
    if bits > 8:
        raise ValueError("uniform quantization stores indices in 8 bits; use bits <= 8")
    model = onnx.load(str(src))
    graph = model.graph
    users = {
        i for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in exclude for i in n.input
    }
    new_nodes = []
    for init in list(graph.initializer):
        weights = numpy_helper.to_array(init)
        if init.name not in users or weights.ndim != 2 or weights.dtype != np.float32:
            continue
        a, b = float(weights.min()), float(weights.max())
        result = uniform_quantize(weights, a, b, 2**bits) if b > a else None
        if result is None:
            continue
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(result.indices.astype(np.uint8), f"{init.name}_levels"),
                numpy_helper.from_array(np.array(result.delta, np.float32), f"{init.name}_delta"),
                numpy_helper.from_array(np.array(a, np.float32), f"{init.name}_a"),
            ]
        )
        new_nodes += [
            helper.make_node(
                "DequantizeLinear", [f"{init.name}_levels", f"{init.name}_delta"], [f"{init.name}_scaled"]
            ),
            helper.make_node("Add", [f"{init.name}_scaled", f"{init.name}_a"], [init.name]),
        ]
    for node in reversed(new_nodes):
        graph.node.insert(0, node)
    onnx.save(model, str(dst))
    return dst
