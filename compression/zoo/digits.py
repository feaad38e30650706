"""``zoo://digits-mlp``: an MLP trained on scikit-learn's bundled 8x8 digits, cached after first use.

Split (stratified, fixed seed): 60% train, 15% validation (calibration data), 25% held-out test.
Inputs are the 64 pixel intensities scaled to [0, 1] (divided by 16).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..device import cpu_threads
from ..source import HeldOut, SourceModel, TensorSpec, TrainSet, cache_dir

NAME = "digits-mlp"
HIDDEN = (256, 128)
SEED = 0
_VERSION = 1


class DigitsMLP(nn.Sequential):
    """64 → hidden... → 10 with ReLU between Linear layers."""

    def __init__(self, hidden: Sequence[int] = HIDDEN, features: int = 64, classes: int = 10) -> None:
        layers: list[nn.Module] = []
        width = features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, classes))
        super().__init__(*layers)
        self.hidden = tuple(hidden)


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed stratified train/val/test split of the digits data, inputs in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=SEED
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def train_mlp(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 40, lr: float = 3e-3, seed: int = SEED
) -> nn.Module:
    """Plain cross-entropy training with Adam on one CPU thread (about a second for digits)."""
    with cpu_threads(1):
        return _train(model, x, y, epochs, lr, seed)


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def _atomic_save(model: nn.Module, meta: dict[str, object], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        torch.save(model.state_dict(), Path(tmp) / "model.pt")
        (Path(tmp) / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(Path(tmp) / "model.pt", folder / "model.pt")
        os.replace(Path(tmp) / "meta.json", folder / "meta.json")


def _cached(folder: Path) -> DigitsMLP | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != _VERSION or tuple(meta["hidden"]) != HIDDEN:
            return None
        model = DigitsMLP(HIDDEN)
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        return model.eval()
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def teacher(root: Path | None = None) -> DigitsMLP:
    """The trained MLP, from the cache or trained now (and cached)."""
    folder = (root or cache_dir()) / "zoo" / NAME
    model = _cached(folder)
    if model is not None:
        return model
    data = splits()
    torch.manual_seed(SEED)
    model = DigitsMLP(HIDDEN)
    train_mlp(model, *data["train"])
    meta = {"version": _VERSION, "hidden": list(HIDDEN), "testAccuracy": accuracy(model, *data["test"])}
    _atomic_save(model, meta, folder)
    return model


def load(root: Path | None = None) -> SourceModel:
    data = splits()
    x_train, y_train = data["train"]
    return SourceModel(
        uri=f"zoo://{NAME}",
        task="classification",
        family="mlp",
        inputs=[TensorSpec("input", "FP32", (-1, 64))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        validation=HeldOut({"input": data["test"][0]}, data["test"][1]),
        calibration=HeldOut({"input": data["val"][0]}, data["val"][1]),
        module=teacher(root),
        train=TrainSet((torch.from_numpy(x_train),), torch.from_numpy(y_train)),
    )
