"""Structure removal for BERT-style encoders: FFN neurons and whole layers.

FFN neurons are ranked by how much they contribute on calibration text (mean |activation| times the
norm of their output weights); the lowest are cut from ``intermediate.dense`` (rows) and
``output.dense`` (columns), so the exported matrices are really smaller.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .pruning import keep_indices, slice_linear


def _encoder_layers(model: nn.Module) -> Any:
    return model.bert.encoder.layer  # type: ignore[union-attr]


def ffn_importance(model: nn.Module, sample: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Per layer, each FFN neuron's mean |activation| on ``sample`` times its output-weight norm."""
    layers = _encoder_layers(model)
    stats: list[torch.Tensor] = [torch.zeros(0)] * len(layers)
    mask = sample[1].unsqueeze(-1).float()

    def hook(index: int) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            stats[index] = (output.abs() * mask).sum(dim=(0, 1)) / mask.sum()

        return record

    handles = [layer.intermediate.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model.eval()(*sample)
    finally:
        for handle in handles:
            handle.remove()
    return [stats[i] * layer.output.dense.weight.detach().norm(dim=0) for i, layer in enumerate(layers)]


def structured_bert(
    model: nn.Module, fraction: float, sample: tuple[torch.Tensor, ...] | None = None
) -> nn.Module:
    """Remove ``fraction`` of every layer's FFN neurons (weight-norm ranking when no sample is given)."""
    pruned = copy.deepcopy(model).eval()
    layers = _encoder_layers(pruned)
    if sample is not None:
        scores = ffn_importance(pruned, sample)
    else:
        scores = [layer.intermediate.dense.weight.detach().norm(dim=1) for layer in layers]
    for layer, score in zip(layers, scores, strict=True):
        keep = keep_indices(score, fraction)
        layer.intermediate.dense = slice_linear(layer.intermediate.dense, rows=keep)
        layer.output.dense = slice_linear(layer.output.dense, cols=keep)
    return pruned


def keep_layers(model: nn.Module, count: int) -> nn.Module:
    """A copy keeping ``count`` evenly spaced encoder layers (the distillation student)."""
    student = copy.deepcopy(model)
    layers = _encoder_layers(student)
    total = len(layers)
    count = max(1, min(count, total))
    chosen = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
    student.bert.encoder.layer = nn.ModuleList([layers[i] for i in chosen])  # type: ignore[union-attr]
    student.bert.config.num_hidden_layers = len(chosen)  # type: ignore[union-attr]
    return student
