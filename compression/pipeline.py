"""``compress(config)``: build the candidate variants, evaluate, drop over-budget ones, time the
survivors, rank them and write the artifact directory atomically."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal.schema import artifact_format as schema

from . import artifact, plan, report
from .config import CompressionConfig, ModelSource, QuantizationConfig
from .errors import CompressionError
from .evaluate import Evaluator, Score
from .latency import Latency, measure
from .progress import Progress, Silent
from .source import SourceModel, TensorSpec

log = logging.getLogger("frugal.compression")


@dataclass
class VariantResult:
    """One candidate's outcome; ``reason`` says why a dropped variant was dropped."""

    name: str
    steps: tuple[str, ...]
    file: str
    size_bytes: int = 0
    score: Score | None = None
    latency: Latency | None = None
    status: str = "kept"
    reason: str | None = None
    chosen_as: list[str] = field(default_factory=list)
    stage_sets: list[schema.StageSet] = field(default_factory=list)

    def to_json(self, fp32: VariantResult | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "steps": list(self.steps),
            "status": self.status,
            "reason": self.reason,
            "sizeBytes": self.size_bytes,
            "metric": self.score.to_json() if self.score else None,
            "latency": self.latency.to_json() if self.latency else None,
            "chosen": bool(self.chosen_as),
            "chosenAs": self.chosen_as,
        }
        if fp32 is not None and fp32.size_bytes:
            row["sizeRatio"] = round(self.size_bytes / fp32.size_bytes, 4)
        if fp32 is not None and fp32.latency and self.latency:
            row["speedupBatch"] = round(fp32.latency.batch_ms / self.latency.batch_ms, 3)
            row["speedupBatch1"] = round(fp32.latency.batch1_ms / self.latency.batch1_ms, 3)
        return row


@dataclass
class CompressionResult:
    output: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    variants: list[VariantResult]

    @property
    def kept(self) -> list[VariantResult]:
        return [v for v in self.variants if v.status == "kept"]

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)


def compress(config: CompressionConfig, progress: Progress | None = None) -> CompressionResult:
    """Run the whole compression described by ``config``; raises CompressionError for user mistakes."""
    from .loaders import load_source

    bar = progress or Silent()
    source = load_source(config)
    check_signature(source, config.model)
    metric = config.accuracy_budget.metric or source.default_metric
    if metric not in source.metrics:
        fitting = " or ".join(repr(m) for m in source.metrics)
        raise CompressionError(
            f"accuracyBudget.metric {metric!r} does not fit a {source.task} model; use {fitting}"
        )
    with artifact.staging(config.output) as root:
        variants = _build_and_score(config, source, metric, root, bar)
        _time_survivors(config, source, variants, root, bar)
        _cut_stages(config, source, variants, root, bar)
        manifest, report_json = _write(config, source, metric, variants, root)
    return CompressionResult(config.output, manifest, report_json, variants)


def check_signature(source: SourceModel, declared: ModelSource) -> None:
    """Raise unless the model has every declared input and output, with the declared datatype and a
    shape that agrees (same rank; a dimension agrees when either side is -1 or both are equal)."""
    for role, wanted, found in (
        ("inputs", declared.inputs, source.inputs),
        ("outputs", declared.outputs, source.outputs),
    ):
        by_name = {tensor.name: tensor for tensor in found}
        for index, tensor in enumerate(wanted or ()):
            field = f"model.{role}[{index}]"
            actual = by_name.get(tensor.name)
            if actual is None:
                names = ", ".join(sorted(by_name)) or "none"
                raise CompressionError(
                    f"{field}.name: the model has no {role[:-1]} {tensor.name!r} (its {role}: {names})"
                )
            if tensor.datatype != actual.datatype:
                raise CompressionError(
                    f"{field}.datatype: {tensor.name!r} is {actual.datatype} in the model, not {tensor.datatype}"
                )
            if tensor.shape is not None and not _shapes_agree(tensor.shape, actual.shape):
                raise CompressionError(
                    f"{field}.shape: {tensor.name!r} has shape {list(actual.shape)} in the model, "
                    f"not {list(tensor.shape)} (-1 matches any size)"
                )


def _shapes_agree(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(
        d == a or -1 in (d, a) for d, a in zip(declared, actual, strict=True)
    )


def _variant_path(root: Path, name: str) -> Path:
    path = root / "variants" / name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _build_and_score(
    config: CompressionConfig, source: SourceModel, metric: str, root: Path, bar: Progress
) -> list[VariantResult]:
    from .builders import build_base, quantize

    candidates = plan.candidates(config)
    bar.begin("build and evaluate", len(candidates))
    results: list[VariantResult] = []
    evaluator: Evaluator | None = None
    base_files: dict[str, Path] = {}
    dropped_bases: set[str] = set()
    work = root / ".work"
    work.mkdir()
    for candidate in candidates:
        if candidate.base.name in dropped_bases:
            reason = f"its base {candidate.base.name} is already over the budget"
            results.append(_dropped(candidate, reason, root))
            bar.advance("build and evaluate")
            continue
        path = _variant_path(root, candidate.name)
        if candidate.quantization is None:
            base_files[candidate.name] = build_base(
                candidate.base, source, config, work / f"{candidate.name}.onnx"
            )
            shutil.copyfile(base_files[candidate.name], path)
        else:
            made = quantize(candidate.quantization, base_files[candidate.base.name], path, source)
            if made is None:
                results.append(
                    _dropped(candidate, "this quantization has nothing to quantize in the graph", root)
                )
                bar.advance("build and evaluate")
                continue
        if evaluator is None:
            evaluator = Evaluator.from_baseline(metric, source.validation, path)
            _check_reachable(config, evaluator)
        base = base_files[candidate.base.name]
        results += _judge(candidate, path, base, evaluator, config, source, root)
        if candidate.quantization is None and results[-1].status == "dropped":
            dropped_bases.add(candidate.name)
        bar.advance("build and evaluate")
    bar.end("build and evaluate")
    shutil.rmtree(work)
    return results


def _check_reachable(config: CompressionConfig, evaluator: Evaluator) -> None:
    floor = config.accuracy_budget.min_value
    if floor is not None and evaluator.baseline < floor:
        raise CompressionError(
            f"accuracyBudget.minValue {floor} is impossible: the FP32 model itself scores "
            f"{evaluator.baseline:.4f}; lower minValue or improve the model"
        )


def _dropped(candidate: plan.PlannedVariant, reason: str, root: Path) -> VariantResult:
    shutil.rmtree(root / "variants" / candidate.name, ignore_errors=True)
    return VariantResult(candidate.name, candidate.steps, "", status="dropped", reason=reason)


def _judge(
    candidate: plan.PlannedVariant,
    path: Path,
    base_path: Path,
    evaluator: Evaluator,
    config: CompressionConfig,
    source: SourceModel,
    root: Path,
) -> list[VariantResult]:
    """Score a built variant; when it breaks the budget, drop it and try the sensitivity fallback."""
    score = evaluator.score(path)
    result = VariantResult(
        candidate.name,
        candidate.steps,
        path.relative_to(root).as_posix(),
        path.stat().st_size,
        score,
    )
    budget = config.accuracy_budget
    reason = plan.over_budget(score.drop, budget.max_drop, score.value, budget.min_value)
    if reason is None or candidate.name == "fp32":
        return [result]
    result.status, result.reason, result.file = "dropped", reason, ""
    shutil.rmtree(path.parent, ignore_errors=True)
    quant = candidate.quantization
    if quant is None or not quant.fallback or quant.method not in ("dynamic-int8", "static-int8"):
        return [result]
    return [result, *_fallback(candidate, quant, base_path, evaluator, config, source, root)]


def _fallback(
    candidate: plan.PlannedVariant,
    quant: QuantizationConfig,
    base_path: Path,
    evaluator: Evaluator,
    config: CompressionConfig,
    source: SourceModel,
    root: Path,
) -> list[VariantResult]:
    from .steps.sensitivity import sensitive_fallback

    path = _variant_path(root, f"{candidate.name}-sensitive")
    outcome = sensitive_fallback(quant, base_path, path, source, evaluator, config.accuracy_budget)
    name = f"{candidate.name}-sensitive"
    steps = (*candidate.steps, f"fallback:{outcome.describe()}")
    if outcome.score is None or not outcome.fits:
        shutil.rmtree(path.parent, ignore_errors=True)
        reason = "no per-channel or node-excluding fallback met the budget"
        return [VariantResult(name, steps, "", score=outcome.score, status="dropped", reason=reason)]
    return [VariantResult(name, steps, path.relative_to(root).as_posix(), path.stat().st_size, outcome.score)]


def _time_survivors(
    config: CompressionConfig, source: SourceModel, variants: list[VariantResult], root: Path, bar: Progress
) -> None:
    kept = [v for v in variants if v.status == "kept"]
    bar.begin("measure latency", 1)
    timings = measure(
        {v.name: root / v.file for v in kept},
        source.validation,
        config.serving_batch_size,
        repeats=config.latency_repeats,
        threads=config.latency_threads,
    )
    for v in kept:
        v.latency = timings[v.name]
    bar.end("measure latency")
    rows = [
        plan.Ranked(v.name, v.size_bytes, v.latency.throughput, v.latency.batch1_ms)
        for v in kept
        if v.latency is not None
    ]
    for role, name in plan.choose(rows).items():
        next(v for v in kept if v.name == name).chosen_as.append(role)


def _cut_stages(
    config: CompressionConfig, source: SourceModel, variants: list[VariantResult], root: Path, bar: Progress
) -> None:
    """Every kept variant cut into each shard count above 1 that serving may use, one verified ONNX file
    per stage under ``variants/<name>/stages-<count>/``. A count a graph cannot be cut into is left
    out with a warning (the planner then rejects that count for the variant, saying so)."""
    from .stages import stage_set_entry, write_stage_set

    counts = [c for c in config.shard_counts if c > 1]
    kept = [v for v in variants if v.status == "kept"]
    if not counts or not kept:
        return
    bar.begin("cut into stages", len(counts) * len(kept))
    batches = (1, config.serving_batch_size)
    rows = source.validation.rows(max(batches))
    for variant in kept:
        for count in counts:
            directory = root / "variants" / variant.name / f"stages-{count}"
            try:
                files = write_stage_set(root / variant.file, count, directory, rows, batches)
            except (ValueError, CompressionError) as exc:
                log.warning("%s is not served in %d shards: %s", variant.name, count, exc)
                shutil.rmtree(directory, ignore_errors=True)
            else:
                variant.stage_sets.append(stage_set_entry(count, files, root))
            bar.advance("cut into stages")
    bar.end("cut into stages")


def _write(
    config: CompressionConfig, source: SourceModel, metric: str, variants: list[VariantResult], root: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """report.json, report.png and (last: it lists every other file) manifest.json; their documents."""
    fp32 = next(v for v in variants if v.name == "fp32")
    kept = [v for v in variants if v.status == "kept"]
    order = plan.rank(
        [
            plan.Ranked(v.name, v.size_bytes, v.latency.throughput, v.latency.batch1_ms)
            for v in kept
            if v.latency
        ]
    )
    rows = [v.to_json(fp32) for v in variants]
    report_file = schema.Report(
        model=config.name,
        source=source.uri,
        metric=metric,
        budget=schema.Budget.model_validate(config.accuracy_budget.model_dump(by_alias=True)),
        serving_batch_size=config.serving_batch_size,
        ranking=tuple(order),
        chosen={role: v.name for v in kept for role in v.chosen_as},
        variants=tuple(schema.ReportRow.model_validate(row) for row in rows),
    )
    schema.write_report(root, report_file)
    report.plot(report_file.variants, metric, root / "report.png")
    manifest = schema.Manifest(
        model=config.name,
        generation=config.generation,
        source=source.uri,
        created_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=artifact.file_table(root),
        variants=tuple(_manifest_entry(v, source) for v in sorted(kept, key=lambda v: order.index(v.name))),
    )
    schema.write_manifest(root, manifest)
    return schema.document(manifest), schema.document(report_file)


def _manifest_entry(variant: VariantResult, source: SourceModel) -> schema.Variant:
    return schema.Variant(
        name=variant.name,
        file=variant.file,
        steps=variant.steps,
        inputs=tuple(_tensor(s) for s in source.inputs),
        outputs=tuple(_tensor(s) for s in source.outputs),
        size_bytes=variant.size_bytes,
        metric=schema.Score.model_validate(variant.score.to_json()) if variant.score else None,
        latency=schema.Latency.model_validate(variant.latency.to_json()) if variant.latency else None,
        stage_sets=tuple(variant.stage_sets),
    )


def _tensor(spec: TensorSpec) -> schema.TensorSpec:
    return schema.TensorSpec(name=spec.name, datatype=spec.datatype, shape=tuple(spec.shape))
