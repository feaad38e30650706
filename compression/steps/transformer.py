"""Structure removal for BERT-style encoders: FFN neurons, attention heads and whole layers.

FFN neurons are ranked by how much they contribute on calibration text (mean |activation| times the
norm of their output weights); the lowest are cut from ``intermediate.dense`` (rows) and
``output.dense`` (columns), so the exported matrices are really smaller. Attention heads are ranked
the same way (mean |context| of the head times the norm of its slice of ``attention.output.dense``)
and removed from query/key/value (rows) and the output projection (columns); the attention forward
infers the head count from the shapes. Layers are chosen by measured cosine.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .slicing import keep_indices, slice_linear


def _encoder_layers(model: nn.Module) -> Any:
    return model.bert.encoder.layer  # type: ignore[union-attr]


def encoder_layer_count(model: nn.Module) -> int:
    """How many encoder layers a BERT model has."""
    return len(_encoder_layers(model))


def mean_abs_outputs(
    model: nn.Module, modules: list[nn.Module], sample: tuple[torch.Tensor, ...]
) -> list[torch.Tensor]:
    """For each of ``modules``, the mean |output| per feature over the real (unmasked) tokens of one
    forward pass of ``model`` on token inputs ``sample``."""
    stats: list[torch.Tensor] = [torch.zeros(0)] * len(modules)
    mask = sample[1].unsqueeze(-1).float()

    def hook(index: int) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            value = output[0] if isinstance(output, tuple) else output
            stats[index] = (value.abs() * mask).sum(dim=(0, 1)) / mask.sum()

        return record

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        with torch.no_grad():
            model.eval()(*sample)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def ffn_importance(model: nn.Module, sample: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Per layer, each FFN neuron's mean |activation| on ``sample`` times its output-weight norm."""
    layers = _encoder_layers(model)
    activations = mean_abs_outputs(model, [layer.intermediate for layer in layers], sample)
    return [
        a * layer.output.dense.weight.detach().norm(dim=0)
        for a, layer in zip(activations, layers, strict=True)
    ]


def _head_size(layer: Any) -> int:
    return int(layer.attention.self.attention_head_size)


def head_importance(model: nn.Module, sample: tuple[torch.Tensor, ...] | None = None) -> list[torch.Tensor]:
    """Per layer, each head's mean |context| on ``sample`` (1 without one) times the norm of its
    columns in the attention output projection."""
    layers = _encoder_layers(model)
    contexts: list[torch.Tensor | float] = [1.0] * len(layers)
    if sample is not None:
        contexts = list(mean_abs_outputs(model, [layer.attention.self for layer in layers], sample))
    scores = []
    for layer, context in zip(layers, contexts, strict=True):
        per_column = layer.attention.output.dense.weight.detach().norm(dim=0) * context
        scores.append(per_column.reshape(-1, _head_size(layer)).sum(dim=1))
    return scores


def remove_heads(layer: Any, keep_heads: torch.Tensor) -> None:
    """Keep only the heads ``keep_heads`` of ``layer``'s self-attention (sliced in place)."""
    size = _head_size(layer)
    rows = (keep_heads.unsqueeze(1) * size + torch.arange(size)).reshape(-1)
    attention = layer.attention.self
    for name in ("query", "key", "value"):
        setattr(attention, name, slice_linear(getattr(attention, name), rows=rows))
    layer.attention.output.dense = slice_linear(layer.attention.output.dense, cols=rows)
    attention.num_attention_heads = len(keep_heads)
    attention.all_head_size = len(keep_heads) * size


def structured_bert(
    model: nn.Module, fraction: float, sample: tuple[torch.Tensor, ...] | None = None, heads: float = 0.0
) -> nn.Module:
    """Remove ``fraction`` of every layer's FFN neurons and ``heads`` of its attention heads
    (weight-norm ranking when no sample is given)."""
    pruned = copy.deepcopy(model).eval()
    layers = _encoder_layers(pruned)
    if fraction > 0:
        if sample is not None:
            scores = ffn_importance(pruned, sample)
        else:
            scores = [layer.intermediate.dense.weight.detach().norm(dim=1) for layer in layers]
        for layer, score in zip(layers, scores, strict=True):
            keep = keep_indices(score, fraction)
            layer.intermediate.dense = slice_linear(layer.intermediate.dense, rows=keep)
            layer.output.dense = slice_linear(layer.output.dense, cols=keep)
    if heads > 0:
        for layer, score in zip(layers, head_importance(pruned, sample), strict=True):
            remove_heads(layer, keep_indices(score, heads))
    return pruned


def keep_layers(model: nn.Module, count: int, chosen: list[int] | None = None) -> nn.Module:
    """A copy keeping the encoder layers ``chosen`` (default: ``count`` evenly spaced ones)."""
    student = copy.deepcopy(model)
    layers = _encoder_layers(student)
    total = len(layers)
    count = max(1, min(count, total))
    if chosen is None:
        chosen = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
    student.bert.encoder.layer = nn.ModuleList([layers[i] for i in chosen])  # type: ignore[union-attr]
    student.bert.config.num_hidden_layers = len(chosen)  # type: ignore[union-attr]
    return student


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no row of the batch uses (right-padded token inputs)."""
    length = max(1, int(attention_mask.sum(dim=1).max()))
    return input_ids[:, :length], attention_mask[:, :length]


def encode(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], batch: int = 64, device: torch.device | None = None
) -> torch.Tensor:
    """``model``'s outputs on token inputs (on CPU), in batches with the padding trimmed (no gradients);
    the batches run on ``device`` (the model's own)."""
    ids, mask = inputs
    device = device or torch.device("cpu")
    with torch.no_grad():
        return torch.cat(
            [
                model.eval()(
                    *(x.to(device) for x in trim_padding(ids[s : s + batch], mask[s : s + batch]))
                ).cpu()
                for s in range(0, len(ids), batch)
            ]
        )


def worst_cosine(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(outputs, reference, dim=-1).min())


def choose_layers(model: nn.Module, count: int, sample: tuple[torch.Tensor, ...]) -> list[int]:
    """Greedily drop the layer whose removal keeps the minimum cosine to ``model`` highest on
    ``sample`` (training text), until ``count`` layers remain."""
    reference = encode(model, sample)
    chosen = list(range(len(_encoder_layers(model))))
    while len(chosen) > max(1, count):
        trials = []
        for drop in chosen:
            rest = [i for i in chosen if i != drop]
            trials.append(
                (worst_cosine(encode(keep_layers(model, len(rest), rest), sample), reference), rest)
            )
        chosen = max(trials, key=lambda trial: trial[0])[1]
    return chosen
