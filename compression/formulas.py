"""The seed document's formulas, implemented correctly, as pure functions.

- Threshold pruning: ``threshold = scale * mean(|w|)`` (the seed's rule is ``scale = 1``); every
  weight with ``|w| < threshold`` becomes 0.
- Uniform quantization over ``[a, b]`` with ``L`` levels: ``delta = (b - a) / (L - 1)``, index
  ``round((w - a) / delta)`` (clipped to ``[0, L-1]``), value ``a + index * delta``.
- Gradient averaging: ``g = mean(grad_i)``; SGD step ``theta - alpha * g``.

The numpy versions are the reference; ``ThresholdPruning`` applies the same rule to a torch module
through ``torch.nn.utils.prune`` (imported lazily so this module stays cheap to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PruneResult:
    """The pruned weights, the threshold used and how many weights were zeroed."""

    weights: FloatArray
    threshold: float
    pruned: int


@dataclass(frozen=True)
class QuantizeResult:
    """Level indices, their dequantized values and the step between levels."""

    indices: npt.NDArray[np.int64]
    values: FloatArray
    delta: float


def mean_abs_threshold(weights: npt.ArrayLike, scale: float = 1.0) -> float:
    """The pruning threshold: ``scale`` times the mean absolute weight (the seed's is ``scale = 1``)."""
    if not scale > 0:
        raise ValueError(f"the threshold scale must be positive, got {scale}")
    array = np.asarray(weights, dtype=np.float64)
    if array.size == 0:
        raise ValueError("threshold pruning needs at least one weight")
    return float(scale * np.mean(np.abs(array)))


def threshold_prune(weights: npt.ArrayLike, scale: float = 1.0) -> PruneResult:
    """Zero every weight whose magnitude is below ``scale`` times the mean magnitude."""
    array = np.asarray(weights, dtype=np.float64)
    threshold = mean_abs_threshold(array, scale)
    keep = np.abs(array) >= threshold
    return PruneResult(weights=np.where(keep, array, 0.0), threshold=threshold, pruned=int((~keep).sum()))


def uniform_quantize(values: npt.ArrayLike, a: float, b: float, levels: int) -> QuantizeResult:
    """Map values onto ``levels`` evenly spaced levels over ``[a, b]`` (values outside are clipped)."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if not b > a:
        raise ValueError(f"the range must have b > a, got a={a}, b={b}")
    delta = (b - a) / (levels - 1)
    array = np.asarray(values, dtype=np.float64)
    indices = np.clip(np.rint((array - a) / delta), 0, levels - 1).astype(np.int64)
    return QuantizeResult(indices=indices, values=(a + indices * delta).astype(np.float64), delta=delta)


def bits_for_levels(levels: int) -> int:
    """How many bits an index into ``levels`` levels needs (8 levels need 3 bits)."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    return int(np.ceil(np.log2(levels)))


def average_gradients(grads: Sequence[npt.ArrayLike]) -> FloatArray:
    """The seed's synchronisation rule: the mean of the workers' gradients."""
    if len(grads) == 0:
        raise ValueError("averaging needs at least one gradient")
    return np.mean(np.stack([np.asarray(g, dtype=np.float64) for g in grads]), axis=0)


def sgd_step(theta: npt.ArrayLike, grads: Sequence[npt.ArrayLike], alpha: float) -> FloatArray:
    """One step ``theta - alpha * mean(grads)``."""
    return np.asarray(theta, dtype=np.float64) - alpha * average_gradients(grads)


def threshold_mask(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The torch form of the threshold rule: 1 where ``|w| >= scale * mean(|w|)``, else 0."""
    magnitude = tensor.abs()
    return (magnitude >= scale * magnitude.mean()).to(tensor.dtype)


def _threshold_method_class() -> type[Any]:
    from torch.nn.utils import prune

    class ThresholdPruning(prune.BasePruningMethod):
        """``torch.nn.utils.prune`` method applying the ``scale * mean(|w|)`` rule."""

        PRUNING_TYPE = "unstructured"

        def __init__(self, scale: float = 1.0) -> None:
            if not scale > 0:
                raise ValueError(f"the threshold scale must be positive, got {scale}")
            self.scale = scale

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            return default_mask * threshold_mask(t, self.scale)

    return ThresholdPruning


def apply_threshold_pruning(
    module: torch.nn.Module, name: str = "weight", scale: float = 1.0
) -> torch.nn.Module:
    """Prune ``module.<name>`` with the ``scale * mean(|w|)`` rule through ``torch.nn.utils.prune``."""
    method = _threshold_method_class()
    method.apply(module, name, scale=scale)
    return module
