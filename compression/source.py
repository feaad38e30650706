"""What a compression run starts from: the model, its tensors' names and shapes, and its data.

A ``SourceModel`` is built by the zoo (``zoo://``) or from files (``file://`` ONNX/TorchScript with
``.npz`` data). Held-out data decides the metric: labels → accuracy (or macro F1 when asked), none →
cosine to the FP32 output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

Task = Literal["classification", "embedding"]
Family = Literal["mlp", "bert", "opaque"]
Arrays = dict[str, npt.NDArray[np.generic]]

_OIP_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}


def oip_datatype(dtype: npt.DTypeLike) -> str:
    """The Open Inference Protocol name of a numpy dtype."""
    return _OIP_DATATYPES[np.dtype(dtype)]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output; ``-1`` marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class HeldOut:
    """Evaluation data: inputs keyed by input name, and labels for classifiers."""

    inputs: Arrays
    labels: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, count: int | None) -> HeldOut:
        """The first ``count`` rows (all when ``count`` is None or larger)."""
        if count is None or count >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:count]
        return HeldOut({name: array[:count] for name, array in self.inputs.items()}, labels)

    def rows(self, count: int) -> Arrays:
        """The first ``count`` rows, repeating the data when it is shorter."""
        total = len(self)
        index = np.arange(count) % total
        return {name: array[index] for name, array in self.inputs.items()}


@dataclass(frozen=True)
class TrainSet:
    """Data for fine-tuning and distillation (torch tensors); ``labels`` is None for encoders."""

    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None


@dataclass
class SourceModel:
    """A loaded model with everything the steps and the evaluation need."""

    uri: str
    task: Task
    family: Family
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    validation: HeldOut
    calibration: HeldOut
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    train: TrainSet | None = None
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def default_metric(self) -> Literal["accuracy", "cosine"]:
        return "accuracy" if self.task == "classification" else "cosine"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The accuracy-budget metrics that fit this model (the default first)."""
        return ("accuracy", "f1") if self.task == "classification" else ("cosine",)


def cache_dir() -> Path:
    """``$FRUGAL_CACHE_DIR`` or ``~/.cache/frugal``."""
    return Path(os.environ.get("FRUGAL_CACHE_DIR") or Path.home() / ".cache" / "frugal")
