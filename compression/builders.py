"""Turn a planned base or quantization into an ONNX file (the torch → ONNX seam of the pipeline)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import CompressionConfig, QuantizationConfig
from .errors import CompressionError
from .plan import Base
from .source import SourceModel


def build_base(base: Base, source: SourceModel, config: CompressionConfig, path: Path) -> Path:
    """Export the FP32, pruned or distilled model to ``path``."""
    if source.module is None:
        if base.name != "fp32" or source.onnx_path is None:
            raise CompressionError(f"{base.name} needs a PyTorch model")
        shutil.copyfile(source.onnx_path, path)
        return path
    from .export import export_onnx

    module = source.module
    if base.pruning is not None:
        from .steps.pruning import prune_model

        module = prune_model(source, base.pruning)
    elif base.distilled:
        from .steps.distillation import distill

        assert config.distillation is not None
        module = distill(source, config.distillation, seed=config.seed, full=config)
    return export_onnx(module, source.validation, source.inputs, source.outputs, path)


def quantize(
    quant: QuantizationConfig, src: Path, dst: Path, source: SourceModel, exclude: tuple[str, ...] = ()
) -> Path | None:
    """Apply one quantization method to the ONNX file ``src``; None when it does not apply."""
    from .steps import quantization as q

    if quant.method == "dynamic-int8":
        return q.dynamic_int8(src, dst, quant.per_channel, exclude)
    if quant.method == "static-int8":
        return q.static_int8(src, dst, source.calibration, quant.per_channel, exclude)
    if quant.method == "fp16":
        return q.fp16(src, dst)
    if quant.method in ("int4-weight", "int8-weight"):
        return q.weight_only(src, dst, bits=4 if quant.method == "int4-weight" else 8)
    return q.uniform_kbit(src, dst, quant.bits, exclude)
