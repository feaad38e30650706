"""Short fine-tuning after pruning: cross-entropy for classifiers, cosine to the teacher for encoders.

Runs where distillation runs: CUDA when present, else CPU; the returned model is on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ..device import cpu_threads, pick_device
from ..source import SourceModel
from .transformer import encode, trim_padding


def fine_tune(
    model: nn.Module, source: SourceModel, epochs: int, lr: float = 1e-3, batch: int = 32
) -> nn.Module:
    assert source.train is not None and source.module is not None
    inputs, labels = source.train.inputs, source.train.labels
    tokens = source.family == "bert"
    if tokens:
        targets = encode(source.module, inputs)
    else:
        with torch.no_grad():
            targets = source.module.eval()(*inputs)
    device = pick_device()
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    # Encoders recover towards the teacher's exact embeddings: dropout stays off for them.
    if tokens:
        model.eval()
    else:
        model.train()
    with cpu_threads(1 if source.family == "mlp" else torch.get_num_threads()):
        for _ in range(epochs):
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(order), batch):
                rows = order[start : start + batch]
                batch_inputs = tuple(x[rows] for x in inputs)
                batch_inputs = trim_padding(*batch_inputs) if tokens else batch_inputs
                out = model(*(x.to(device) for x in batch_inputs))
                if labels is not None:
                    loss = nn.functional.cross_entropy(out, labels[rows].to(device))
                else:
                    expected = targets[rows].to(device)
                    loss = (1.0 - nn.functional.cosine_similarity(out, expected, dim=-1)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval().cpu()
