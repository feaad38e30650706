"""Cut whole units out of layers: the shared tool of MLP and encoder structured pruning."""

from __future__ import annotations

import torch
from torch import nn


def keep_indices(scores: torch.Tensor, fraction_removed: float, minimum: int = 1) -> torch.Tensor:
    """Indices (sorted) of the highest-scoring units after removing ``fraction_removed`` of them."""
    keep = max(minimum, round(len(scores) * (1.0 - fraction_removed)))
    return torch.sort(torch.topk(scores, keep).indices).values


def slice_linear(
    layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
) -> nn.Linear:
    """A new Linear keeping output units ``rows`` and input features ``cols``."""
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias)
    return new
