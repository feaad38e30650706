"""The fallback when plain INT8 breaks the budget: per-channel scales, then keep the nodes that
hurt most in FP32 (measured one node at a time, worst first) until the variant fits."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import AccuracyBudget, QuantizationConfig
from ..evaluate import Evaluator, Score
from ..plan import over_budget
from ..source import SourceModel
from .quantization import weight_nodes


@dataclass(frozen=True)
class Outcome:
    score: Score | None
    fits: bool
    per_channel: bool
    excluded: tuple[str, ...]

    def describe(self) -> str:
        parts = ["per-channel"] if self.per_channel else []
        if self.excluded:
            parts.append(f"excluded {len(self.excluded)} nodes")
        return "+".join(parts) or "none"


def _fits(score: Score, budget: AccuracyBudget) -> bool:
    return over_budget(score.drop, budget.max_drop, score.value, budget.min_value) is None


def node_sensitivity(
    quant: QuantizationConfig,
    base: Path,
    nodes: list[str],
    source: SourceModel,
    evaluator: Evaluator,
    work: Path,
) -> list[tuple[str, float]]:
    """Metric drop when only that node is quantized, for each node, worst first."""
    from ..builders import quantize

    drops = []
    for node in nodes:
        path = work / "single.onnx"
        quantize(quant, base, path, source, exclude=tuple(n for n in nodes if n != node))
        drops.append((node, evaluator.score(path).drop))
    return sorted(drops, key=lambda item: -item[1])


def sensitive_fallback(
    quant: QuantizationConfig,
    base: Path,
    out: Path,
    source: SourceModel,
    evaluator: Evaluator,
    budget: AccuracyBudget,
    max_excluded_fraction: float = 0.5,
) -> Outcome:
    """Per-channel first; then exclude the most sensitive nodes, doubling the count, until it fits."""
    from ..builders import quantize

    per_channel = quant.model_copy(update={"per_channel": True})
    quantize(per_channel, base, out, source)
    score = evaluator.score(out)
    if _fits(score, budget):
        return Outcome(score, True, True, ())
    nodes = weight_nodes(base)
    with tempfile.TemporaryDirectory() as work:
        ranked = [n for n, _ in node_sensitivity(per_channel, base, nodes, source, evaluator, Path(work))]
    count = 1
    while count <= max(1, int(len(nodes) * max_excluded_fraction)):
        excluded = tuple(ranked[:count])
        quantize(per_channel, base, out, source, exclude=excluded)
        score = evaluator.score(out)
        if _fits(score, budget):
            return Outcome(score, True, True, excluded)
        count *= 2
    return Outcome(score, False, True, tuple(ranked[: count // 2]))
