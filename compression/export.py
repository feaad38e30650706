"""Export a torch module to ONNX with a dynamic batch axis (and dynamic sequence for token inputs).

The TorchScript-based exporter is used on purpose: the graph it writes computes shapes inside each
layer, so a sharded model's stages pass each other only batch-major tensors, and it is the graph
ONNX Runtime's quantization tools are tuned for. The ``torch.export``-based exporter (torch's default
since 2.9) computes the batch and sequence sizes once at the top and feeds them to every layer, so
those small shape tensors would cross every cut and break batching across stages.

A tracer records one path through Python control flow. transformers' attention-mask code branches on
the mask's values (an all-ones mask skips masking), so the sample must be padded; ``export_onnx``
therefore checks the written graph against the module on held-out rows and refuses a graph that
answers differently, instead of trusting the tracer's warnings either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import CompressionError
from .source import HeldOut, TensorSpec

OPSET = 17
SAMPLE_ROWS = 2
CHECK_ROWS = 8
# FP32 graph against FP32 module: only kernel-order rounding separates them.
CHECK_RTOL, CHECK_ATOL = 1e-3, 1e-4


def _dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for spec in specs:
        names = {i: ("batch" if i == 0 else f"{spec.name}_dim{i}") for i, d in enumerate(spec.shape) if d < 0}
        if len(names) > 1:
            names = {i: ("batch" if i == 0 else f"dim{i}") for i in names}
        axes[spec.name] = names
    return axes


def _ignore_expected_tracer_warnings() -> None:
    """Ignore exactly the warnings tracing raises that ``check_export`` answers: the legacy
    exporter's deprecation notice, Python branches on traced tensors, advanced indexing that would
    misread negative indices, and a TorchScript forward without a signature. Call inside
    ``warnings.catch_warnings()``."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings(
        "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
    # A TorchScript archive's forward has no Python signature to match inputs by name; they are
    # passed by position, in the order of the declared inputs.
    warnings.filterwarnings("ignore", message=r"no signature found for <torch.ScriptMethod", category=UserWarning)


def export_onnx(
    module: torch.nn.Module,
    sample: HeldOut,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    path: Path,
) -> Path:
    """Write ``module`` as ONNX (opset 17) to ``path``, weights inline (models here are < 2 GB),
    traced on the first rows of ``sample`` and checked against the module on more of them."""
    rows = sample.rows(SAMPLE_ROWS)
    args = tuple(torch.from_numpy(rows[spec.name]) for spec in inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        _ignore_expected_tracer_warnings()
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
    check_export(module, path, sample.head(CHECK_ROWS), inputs)
    return path


def check_export(module: torch.nn.Module, path: Path, data: HeldOut, inputs: list[TensorSpec]) -> None:
    """Raise unless the ONNX file at ``path`` answers ``data`` like ``module`` (every output)."""
    import onnxruntime as ort

    feeds = {spec.name: data.inputs[spec.name] for spec in inputs}
    with torch.no_grad():
        expected = module(*(torch.from_numpy(feeds[spec.name]) for spec in inputs))
    expected_list = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for want, got, name in zip(
        expected_list, session.run(None, feeds), [o.name for o in session.get_outputs()], strict=True
    ):
        want_array = want.detach().cpu().numpy()
        if not np.allclose(got, want_array, rtol=CHECK_RTOL, atol=CHECK_ATOL):
            worst = float(np.max(np.abs(got - want_array)))
            raise CompressionError(
                f"the ONNX export of the model answers differently from PyTorch on held-out rows "
                f"(output '{name}', largest difference {worst:.3g}); the tracer likely fixed a "
                "data-dependent branch — report this with the torch and transformers versions"
            )
