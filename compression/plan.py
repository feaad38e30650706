"""Which candidate variants a config asks for, and how survivors are ranked (pure functions).

Bases are the FP32 export, one pruned model per pruning entry and the distilled student; every
quantization entry is applied to every base. The FP32 baseline is always the variant ``fp32``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import CompressionConfig, PruningConfig, QuantizationConfig


@dataclass(frozen=True)
class Base:
    """A torch-level model the ONNX variants start from."""

    name: str
    steps: tuple[str, ...]
    pruning: PruningConfig | None = None
    distilled: bool = False


@dataclass(frozen=True)
class PlannedVariant:
    name: str
    base: Base
    quantization: QuantizationConfig | None
    steps: tuple[str, ...]


def pruning_name(config: PruningConfig) -> str:
    if config.method == "threshold":
        # The seed's rule (scale 1) keeps its plain name; other scales in percent of the mean |w|.
        scale = config.threshold_scale
        return "pruned-threshold" if scale == 1.0 else f"pruned-threshold-{round(scale * 100)}"
    heads = f"-heads-{round(config.attention_heads * 100)}" if config.attention_heads else ""
    return f"pruned-{config.method}-{round(config.sparsity * 100)}{heads}"


def pruning_step(config: PruningConfig) -> str:
    heads = f":heads={config.attention_heads:g}" if config.attention_heads else ""
    scale = f":scale={config.threshold_scale:g}" if config.threshold_scale != 1.0 else ""
    return f"pruning:{config.method}:{config.sparsity:g}{heads}{scale}"


def quantization_name(config: QuantizationConfig) -> str:
    names = {
        "dynamic-int8": "int8-dynamic",
        "static-int8": "int8-static",
        "fp16": "fp16",
        "int8-weight": "int8-weight",
        "int4-weight": "int4-weight",
        "uniform": f"uniform-{config.bits}bit",
    }
    suffix = "-pc" if config.per_channel and config.method in ("dynamic-int8", "static-int8") else ""
    return names[config.method] + suffix


def quantization_step(config: QuantizationConfig) -> str:
    detail = f"{config.bits}bit" if config.method == "uniform" else ""
    detail += "per-channel" if config.per_channel else ""
    return f"quantization:{config.method}" + (f"({detail})" if detail else "")


def bases(config: CompressionConfig) -> list[Base]:
    found = [Base("fp32", ())]
    for pruning in config.pruning:
        found.append(Base(pruning_name(pruning), (pruning_step(pruning),), pruning=pruning))
    if config.distillation is not None:
        found.append(Base("student", ("distillation",), distilled=True))
    return found


def candidates(config: CompressionConfig) -> list[PlannedVariant]:
    """Every base unquantized, then every (base, quantization) pair."""
    found: list[PlannedVariant] = []
    for base in bases(config):
        found.append(PlannedVariant(base.name, base, None, base.steps))
    for base in bases(config):
        for quant in config.quantization:
            prefix = "" if base.name == "fp32" else f"{base.name}-"
            found.append(
                PlannedVariant(
                    prefix + quantization_name(quant), base, quant, (*base.steps, quantization_step(quant))
                )
            )
    return found


def over_budget(drop: float, max_drop: float, value: float, min_value: float | None) -> str | None:
    """Why a variant breaks the budget, or None when it fits."""
    if drop > max_drop + 1e-12:
        return f"metric drop {drop:.4f} exceeds maxDrop {max_drop:.4f}"
    if min_value is not None and value < min_value:
        return f"metric {value:.4f} is below minValue {min_value:.4f}"
    return None


@dataclass(frozen=True)
class Ranked:
    name: str
    size_bytes: int
    throughput: float
    batch1_ms: float


def choose(rows: Sequence[Ranked]) -> dict[str, str]:
    """The chosen survivors: the smallest, the highest throughput and the lowest batch-1 latency."""
    if not rows:
        return {}
    return {
        "smallest": min(rows, key=lambda r: (r.size_bytes, -r.throughput)).name,
        "fastest": max(rows, key=lambda r: (r.throughput, -r.size_bytes)).name,
        "lowestLatency": min(rows, key=lambda r: (r.batch1_ms, r.size_bytes)).name,
    }


def rank(rows: Sequence[Ranked]) -> list[str]:
    """Survivors by throughput at the serving batch size, then size."""
    return [r.name for r in sorted(rows, key=lambda r: (-r.throughput, r.size_bytes))]
