"""``frugal compress``: the entry point the operator's Job and ``frugal up`` run.

Settings come from ``--config FILE`` (JSON or YAML) or ``--config-json STRING`` (the shape of
``CompressionConfig``, camelCase), then flags override them. User mistakes print one line to stderr
and exit 2, leaving no artifact directory behind. A full artifacts volume (ENOSPC, EDQUOT) prints one
line naming the directory and exits 1 (a run that failed and may pass once space is freed: the Job
retries it); nothing half-written is left either.

An output that is an object store's URI (``--out s3://bucket/prefix``) is compressed into a staging
directory under the process's temporary directory (a writable ``emptyDir`` in a pod) and then
published there with :func:`frugal.storage.object_store.publish`, ``manifest.json`` last; the
destination's old ``manifest.json`` is deleted before compressing, which also checks the keys, the
bucket and the write permission before any work. A refusal (keys, bucket, policy) is bad input: one
line naming the URI and the error's class, exit 2, and no ``manifest.json`` at the destination; any
other failure of the store (unreachable, a timeout) is a run that failed: the same line, exit 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from frugal.schema.artifact_format import MANIFEST, Report
from frugal.storage import object_store
from frugal.storage.object_store import ObjectStoreError

from .config import CompressionConfig
from .errors import CompressionError

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
# A full artifacts volume (or quota): a run that may pass once space is freed, not a bad input.
VOLUME_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frugal compress", description="Compress a model into ONNX variants.")
    p.add_argument("--config", type=Path, help="JSON/YAML file with a CompressionConfig")
    p.add_argument("--config-json", help="CompressionConfig as a JSON string")
    p.add_argument("--model", help="zoo://digits-mlp, zoo://all-minilm-l6-v2, file:///path/model.onnx")
    p.add_argument("--format", choices=["zoo", "onnx", "torchscript", "pytorch"])
    p.add_argument(
        "--architecture",
        choices=["digits-mlp", "all-minilm-l6-v2"],
        help="zoo architecture of a PyTorch state dict (--format pytorch)",
    )
    p.add_argument("--validation", help=".npz or .parquet with held-out inputs (and labels)")
    p.add_argument("--calibration", help=".npz or .parquet with calibration inputs")
    p.add_argument(
        "--quantization",
        action="append",
        metavar="METHOD",
        help="dynamic-int8|static-int8|fp16|int8-weight|int4-weight|uniform[:BITS] (repeatable)",
    )
    p.add_argument("--per-channel", action="store_true", help="per-channel INT8 scales")
    p.add_argument(
        "--pruning",
        action="append",
        metavar="METHOD[:SPARSITY]",
        help="magnitude|threshold|structured (repeatable)",
    )
    p.add_argument(
        "--attention-heads", type=float, help="structured pruning of encoders: fraction of heads removed"
    )
    p.add_argument(
        "--threshold-scale",
        type=float,
        help="threshold pruning: zero |w| below this times the layer's mean |w| (default 1)",
    )
    p.add_argument("--fine-tune-epochs", type=int, help="fine-tuning epochs after pruning")
    p.add_argument("--distill", action="store_true", help="add a distilled student")
    p.add_argument("--epochs", type=int, help="distillation epochs")
    p.add_argument("--student-width", type=float, help="student hidden width relative to the teacher")
    p.add_argument("--student-layers", type=int, help="encoder layers the student keeps")
    p.add_argument(
        "--student-depth",
        type=float,
        help="fraction of the teacher's hidden/encoder layers the student keeps",
    )
    p.add_argument("--workers", type=int, help="data-parallel distillation workers started locally")
    p.add_argument("--metric", choices=["accuracy", "f1", "cosine"])
    p.add_argument("--max-drop", type=float, help="largest allowed metric drop (e.g. 0.01)")
    p.add_argument("--min-value", type=float, help="absolute floor on the metric")
    p.add_argument("--out", help="artifact directory to write, or an s3:// URI to publish it to")
    p.add_argument("--name", help="model name used in URLs")
    p.add_argument("--generation", type=int)
    p.add_argument("--batch-size", type=int, help="serving batch size to time")
    p.add_argument("--repeats", type=int, help="latency measurement rounds")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CompressionError(f"--config: cannot read {path}: {exc.strerror}") from exc
    try:
        loaded = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as exc:
        raise CompressionError(f"--config: {path} is not valid JSON/YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise CompressionError(f"--config: {path} must hold an object")
    return loaded


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc


def _quantization(spec: str, per_channel: bool) -> dict[str, Any]:
    method, _, bits = spec.partition(":")
    entry: dict[str, Any] = {"method": method, "perChannel": per_channel}
    if bits:
        entry["bits"] = _number(bits, int, "--quantization")
    return entry


def _number(text: str, kind: type[Any], flag: str) -> Any:
    try:
        return kind(text)
    except ValueError as exc:
        raise CompressionError(f"{flag}: {text!r} is not a number") from exc


def _pruning(
    spec: str, epochs: int | None, heads: float | None = None, scale: float | None = None
) -> dict[str, Any]:
    method, _, sparsity = spec.partition(":")
    entry: dict[str, Any] = {"method": method}
    if sparsity:
        entry["sparsity"] = _number(sparsity, float, "--pruning")
    if epochs is not None:
        entry["fineTuneEpochs"] = epochs
    if heads is not None and method == "structured":
        entry["attentionHeads"] = heads
    if scale is not None and method == "threshold":
        entry["thresholdScale"] = scale
    return entry


def merged_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config file/JSON with the flags laid over it (camelCase keys)."""
    raw: dict[str, Any] = _load_file(args.config) if args.config else {}
    if args.config_json:
        try:
            raw.update(json.loads(args.config_json))
        except ValueError as exc:
            raise CompressionError(f"--config-json is not valid JSON: {exc}") from exc
    if args.model:
        raw["model"] = {**raw.get("model", {}), "uri": args.model}
    if args.format:
        raw.setdefault("model", {})["format"] = args.format
    if args.architecture:
        raw.setdefault("model", {})["architecture"] = args.architecture
    for key in ("validation", "calibration"):
        if getattr(args, key):
            raw.setdefault("data", {})[key] = getattr(args, key)
    if args.quantization:
        raw["quantization"] = [_quantization(s, args.per_channel) for s in args.quantization]
    if args.pruning:
        raw["pruning"] = [
            _pruning(s, args.fine_tune_epochs, args.attention_heads, args.threshold_scale)
            for s in args.pruning
        ]
    _distillation_flags(args, raw)
    budget = raw.setdefault("accuracyBudget", {})
    for flag, key in (("metric", "metric"), ("max_drop", "maxDrop"), ("min_value", "minValue")):
        if getattr(args, flag) is not None:
            budget[key] = getattr(args, flag)
    simple = {"out": "output", "name": "name", "generation": "generation", "batch_size": "servingBatchSize"}
    for flag, key in {**simple, "repeats": "latencyRepeats"}.items():
        if getattr(args, flag) is not None:
            raw[key] = str(getattr(args, flag)) if flag == "out" else getattr(args, flag)
    return raw


def _distillation_flags(args: argparse.Namespace, raw: dict[str, Any]) -> None:
    student_flags = (args.student_width, args.student_layers, args.student_depth)
    wanted = args.distill or args.epochs or any(f is not None for f in student_flags) or args.workers
    if not wanted or (not args.distill and "distillation" not in raw and not args.epochs):
        if args.workers and "distillation" in raw:
            raw["distillation"]["workers"] = args.workers
        return
    distillation = raw.setdefault("distillation", {}) or {}
    raw["distillation"] = distillation
    for flag, key in (("epochs", "epochs"), ("workers", "workers")):
        if getattr(args, flag) is not None:
            distillation[key] = getattr(args, flag)
    student = distillation.setdefault("student", {})
    if args.student_width is not None:
        student["width"] = args.student_width
    # --student-layers and --student-depth both set the depth: a flag replaces the file's other one.
    if args.student_layers is not None:
        for key in ("depthFactor", "depth_factor"):
            student.pop(key, None)
        student["layers"] = args.student_layers
    if args.student_depth is not None:
        if args.student_layers is None:
            student.pop("layers", None)
        student["depthFactor"] = args.student_depth


def config_from_args(args: argparse.Namespace) -> CompressionConfig:
    return validated(merged_settings(args))


def object_store_output(raw: dict[str, Any]) -> str | None:
    """The settings' output when it is an object store's URI (compressed locally, then published)."""
    output = raw.get("output")
    return output if isinstance(output, str) and object_store.is_object_store(output) else None


def validated(raw: dict[str, Any]) -> CompressionConfig:
    """The merged settings as a `CompressionConfig` (raises CompressionError naming the field)."""
    if "model" not in raw:
        raise CompressionError("no model given: pass --model URI or model.uri in --config")
    if "output" not in raw:
        raise CompressionError("no output directory given: pass --out DIR or output in --config")
    try:
        return CompressionConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "config"
        raise CompressionError(f"{where}: {error['msg']}") from exc


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    staging: Path | None = None
    try:
        raw = merged_settings(args)
        destination = object_store_output(raw)
        if destination is not None:
            staging = Path(tempfile.mkdtemp(prefix="frugal-compress-"))
            raw["output"] = str(staging / "artifact")
        config = validated(raw)
        from .distributed import worker_rank

        if worker_rank() > 0:
            from .steps.distillation import run_worker

            return run_worker(config)
        if destination is not None:
            target = _destination(destination)
            object_store.remove(target / MANIFEST)
        result = _run(config, quiet=args.quiet)
        if destination is not None:
            object_store.publish(config.output, target)
    except ObjectStoreError as exc:
        print(f"frugal compress: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR if exc.refused else EXIT_RUN_FAILED
    except CompressionError as exc:
        print(f"frugal compress: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.errno not in VOLUME_FULL:
            raise
        print(f"frugal compress: error: {volume_full(config.output, exc)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        _print_table(result.report)
    return 0


def volume_full(output: Path, error: OSError) -> str:
    """One line for a write the artifacts volume had no room for (nothing was left behind: the
    artifact is staged beside `output` and renamed into place only when complete)."""
    return (
        f"no space left on the artifacts volume: writing {output} failed ({error.strerror}); "
        f"free space on the volume that holds {output.parent} or give it more room, then run the compression again"
    )


def _destination(uri: str) -> object_store.Location:
    try:
        return object_store.location(uri)
    except (ValueError, ImportError) as exc:
        raise CompressionError(f"output: {exc}") from None


def _run(config: CompressionConfig, quiet: bool) -> Any:
    from .pipeline import compress

    if quiet:
        return compress(config)
    from .progress import RichBars

    with RichBars() as bars:
        return compress(config, bars)


def _print_table(document: dict[str, Any]) -> None:
    report = Report.model_validate(document)
    print(
        f"{'variant':<34} {'status':<8} {'size':>10} {'ratio':>6} {report.metric:>9} {'b1 ms':>8} "
        f"{'b' + str(report.serving_batch_size) + ' ms':>8} {'speedup':>7}"
    )
    nan = float("nan")
    for row in report.variants:
        metric = row.metric.value if row.metric else nan
        latency = row.latency
        print(
            f"{row.name:<34} {row.status:<8} {row.size_bytes:>10} {row.size_ratio or 0:>6.3f} "
            f"{metric:>9.4f} {latency.batch1_ms if latency else nan:>8.3f} "
            f"{latency.batch_ms if latency else nan:>8.3f} {nan if row.speedup_batch is None else row.speedup_batch:>7.2f}"
            + (f"  ({row.reason})" if row.reason else "")
            + ("  *" + ",".join(row.chosen_as) if row.chosen_as else "")
        )


if __name__ == "__main__":
    sys.exit(main())
