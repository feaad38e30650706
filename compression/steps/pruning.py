"""Pruning with ``torch.nn.utils.prune``: unstructured magnitude, the seed's threshold rule, and
structured neuron removal that really shrinks the tensors.

Unstructured pruning zeroes weights (same tensor shapes; smaller only after compression or sparse
kernels). Structured pruning removes whole hidden neurons of an MLP, or whole FFN neurons and
attention heads of a BERT encoder, so the exported ONNX has fewer parameters and runs faster.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils import prune

from ..config import PruningConfig
from ..errors import CompressionError
from ..formulas import apply_threshold_pruning
from ..source import SourceModel
from .slicing import keep_indices, slice_linear


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def unstructured(model: nn.Module, config: PruningConfig) -> nn.Module:
    """Zero weights of every Linear layer: global L1 magnitude to ``sparsity``, or the threshold rule
    (``|w| < thresholdScale * mean |w|`` of the layer)."""
    pruned = copy.deepcopy(model)
    layers = _linears(pruned)
    if config.method == "threshold":
        for layer in layers:
            apply_threshold_pruning(layer, "weight", scale=config.threshold_scale)
    else:
        prune.global_unstructured(
            [(layer, "weight") for layer in layers],
            pruning_method=prune.L1Unstructured,
            amount=config.sparsity,
        )
    for layer in layers:
        prune.remove(layer, "weight")
    return pruned


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all Linear layers."""
    layers = _linears(model)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    total = sum(layer.weight.numel() for layer in layers)
    return zeros / total if total else 0.0


def structured_mlp(model: nn.Sequential, fraction: float) -> nn.Sequential:
    """Remove ``fraction`` of the neurons of every hidden Linear layer (lowest L2 norm of their
    incoming weights), slicing the next layer's inputs to match."""
    layers = list(copy.deepcopy(model))
    linear_at = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    for current, following in itertools.pairwise(linear_at):
        layer = layers[current]
        assert isinstance(layer, nn.Linear)
        keep = keep_indices(layer.weight.detach().norm(dim=1), fraction)
        layers[current] = slice_linear(layer, rows=keep)
        nxt = layers[following]
        assert isinstance(nxt, nn.Linear)
        layers[following] = slice_linear(nxt, cols=keep)
    return nn.Sequential(*layers).eval()


def prune_model(source: SourceModel, config: PruningConfig) -> nn.Module:
    """The pruning a config asks for, on the source's teacher, with optional fine-tuning."""
    assert source.module is not None
    if config.method != "structured":
        return unstructured(source.module, config)
    if config.attention_heads and source.family != "bert":
        raise CompressionError(f"pruning.attentionHeads: {source.uri} has no attention heads; remove it")
    if source.family == "mlp":
        assert isinstance(source.module, nn.Sequential)
        pruned: nn.Module = structured_mlp(source.module, config.sparsity)
    elif source.family == "bert":
        from .transformer import structured_bert

        assert source.train is not None
        from .transformer import trim_padding

        ids, mask = (x[:256] for x in source.train.inputs)
        pruned = structured_bert(
            source.module, config.sparsity, trim_padding(ids, mask), config.attention_heads
        )
    else:
        raise CompressionError(f"structured pruning does not know the architecture of {source.uri}")
    if config.fine_tune_epochs:
        from .finetune import fine_tune

        lr = 1e-4 if source.family == "bert" else 1e-3  # pretrained encoders need a gentle step
        pruned = fine_tune(pruned, source, config.fine_tune_epochs, lr=lr)
    return pruned
