"""The torch → ONNX export checks what the tracer wrote: a graph that follows one side of a Python
branch on tensor values is refused on data that takes the other side, and MiniLM exports pass the
check on padded rows of another size than the tracing sample.

Real parts: torch's TorchScript-based exporter and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frugal.compression.errors import CompressionError
from frugal.compression.export import check_export, export_onnx
from frugal.compression.source import HeldOut, TensorSpec
from frugal.compression.zoo import minilm

SPECS_IN = [TensorSpec("x", "FP32", (-1, 4))]
SPECS_OUT = [TensorSpec("y", "FP32", (-1, 4))]


class SignBranch(torch.nn.Module):
    """Answers x*2 when the batch sums positive, -x otherwise: a tracer records only one side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return -x


def test_a_graph_that_baked_in_one_branch_is_refused(tmp_path: Path) -> None:
    positive = HeldOut({"x": np.ones((2, 4), dtype=np.float32)})
    negative = HeldOut({"x": -np.ones((3, 4), dtype=np.float32)})
    path = export_onnx(SignBranch(), positive, SPECS_IN, SPECS_OUT, tmp_path / "branch.onnx")
    check_export(SignBranch(), path, positive, SPECS_IN)  # the side it traced answers alike
    with pytest.raises(
        CompressionError, match=r"answers differently from PyTorch on held-out rows \(output 'y'"
    ):
        check_export(SignBranch(), path, negative, SPECS_IN)
    mixed = HeldOut({"x": np.concatenate([positive.inputs["x"], negative.inputs["x"] * 3])})
    with pytest.raises(CompressionError, match="answers differently"):  # export_onnx checks by itself
        export_onnx(SignBranch(), mixed, SPECS_IN, SPECS_OUT, tmp_path / "mixed.onnx")


def test_a_minilm_export_traced_unpadded_answers_padded_rows_of_other_lengths(tmp_path: Path) -> None:
    """transformers' mask code branches on the mask in Python and indexes it with computed indices
    (the exporter warns negative ones would be misread; they are aranges here): traced on one
    unpadded row, the graph must still answer padded batches of other lengths."""
    unpadded = HeldOut(minilm.tokenize(["One sentence without any padding in it."]))
    padded = HeldOut(
        minilm.tokenize(["Short.", "A much longer sentence, with many more tokens than the first, and more."])
    )
    assert (unpadded.inputs["attention_mask"] == 1).all() and (padded.inputs["attention_mask"] == 0).any()
    assert padded.inputs["input_ids"].shape[1] != unpadded.inputs["input_ids"].shape[1]
    encoder = minilm.teacher()
    outputs = [TensorSpec("embedding", "FP32", (-1, 384))]
    path = export_onnx(encoder, unpadded, list(minilm.TOKEN_INPUTS), outputs, tmp_path / "minilm.onnx")
    check_export(encoder, path, padded, list(minilm.TOKEN_INPUTS))
