"""The fallback when plain INT8 breaks the budget: per-channel scales, then keep the nodes that
hurt most in FP32 (measured one node at a time, worst first) until the variant fits."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
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


def fits(score: Score, budget: AccuracyBudget, margin: float = 0.0) -> bool:
    """Whether ``score`` meets the budget with ``margin`` to spare on both the drop and the floor."""
    floor = None if budget.min_value is None else budget.min_value + margin
    return over_budget(score.drop + margin, budget.max_drop, score.value, floor) is None


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
    """Per-channel first; then exclude the fewest most-sensitive nodes that make it fit with
    ``quant.fallbackMargin`` to spare (doubling, then bisecting the count)."""
    from ..builders import quantize

    per_channel = quant.model_copy(update={"per_channel": True})
    quantize(per_channel, base, out, source)
    score = evaluator.score(out)
    if fits(score, budget, quant.fallback_margin):
        return Outcome(score, True, True, ())
    nodes = weight_nodes(base)
    with tempfile.TemporaryDirectory() as work:
        ranked = [n for n, _ in node_sensitivity(per_channel, base, nodes, source, evaluator, Path(work))]
    limit = max(1, int(len(nodes) * max_excluded_fraction))
    scores: dict[int, Score] = {}

    def fits_excluding(count: int) -> bool:
        scores.pop(count, None)  # keep insertion order = order tried
        quantize(per_channel, base, out, source, exclude=tuple(ranked[:count]))
        scores[count] = evaluator.score(out)
        return fits(scores[count], budget, quant.fallback_margin)

    count = smallest_fitting(limit, fits_excluding)
    if count is None:
        return Outcome(scores[max(scores)], False, True, tuple(ranked[: max(scores)]))
    if list(scores)[-1] != count:
        fits_excluding(count)  # the last count tried was a miss: rebuild the chosen one in ``out``
    return Outcome(scores[count], True, True, tuple(ranked[:count]))


def smallest_fitting(limit: int, fits_at: Callable[[int], bool]) -> int | None:
    """The smallest count in 1..limit for which ``fits_at`` holds, assuming more is never worse:
    double until it fits, then bisect between the last miss and the first hit. None if nothing fits."""
    miss, hit = 0, 1
    while not fits_at(hit):
        if hit >= limit:
            return None
        miss, hit = hit, min(hit * 2, limit)
    while hit - miss > 1:
        middle = (miss + hit) // 2
        if fits_at(middle):
            hit = middle
        else:
            miss = middle
    return hit
