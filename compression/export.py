"""Export a torch module to ONNX with a dynamic batch axis (and dynamic sequence for token inputs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .source import HeldOut, TensorSpec

OPSET = 17


def _dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for spec in specs:
        names = {i: ("batch" if i == 0 else f"{spec.name}_dim{i}") for i, d in enumerate(spec.shape) if d < 0}
        if len(names) > 1:
            names = {i: ("batch" if i == 0 else f"dim{i}") for i in names}
        axes[spec.name] = names
    return axes


def export_onnx(
    module: torch.nn.Module,
    sample: HeldOut,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    path: Path,
) -> Path:
    """Write ``module`` as ONNX (opset 17) to ``path``; weights inline (models here are < 2 GB)."""
    rows = sample.rows(2)
    args = tuple(torch.from_numpy(rows[spec.name]) for spec in inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    # The TorchScript-based exporter: fast, and the graph it writes is the one ONNX Runtime's
    # quantization tools are tuned for. It warns that it is deprecated; that is expected here.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=[spec.name for spec in inputs],
            output_names=[spec.name for spec in outputs],
            dynamic_axes=_dynamic_axes(inputs + outputs),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
