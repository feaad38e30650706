"""Batch benchmark: `frugal.serving.batch` with 1 and 2 local workers against a plain ONNX Runtime loop.

For digits and MiniLM (each compressed as its example's compression Job would, cached under
``~/.cache/frugal/benchmarks/autoscaling/<model>`` and shared with ``benchmarks/autoscaling.py``),
over the same rows:

  * plain loop: one process, one session (the worker's thread count), the rows in memory, ``batch``
    rows per ``session.run`` — inference and nothing else, the ceiling;
  * the batch engine through `run_local`: ``--workers`` processes of ``frugal batch-worker`` reading
    the rows from an ``.npz``, writing every shard's outputs and marker, then the aggregation.
    "scoring" rows/s is the summary's (the first shard's start to the last shard's end);
    "end to end" includes starting the processes, verifying and loading the model, and aggregating.

Each figure is the best of ``--repeats`` rounds, every variant run once a round (the machine is
shared: interleaving spreads a disturbance over all of them, and the best run is the least disturbed). Cost per million rows prices the 1-worker scoring throughput (and the plain loop's)
on every profile of ``examples/hardwareprofiles.yaml`` as the engine's summary does: busy hours ×
costPerHour + maxWatts × busy seconds at ``--price-per-kwh``. This machine stands in for every
profile: only the prices differ, not the throughput (a GPU would score MiniLM far faster).

    python benchmarks/batch.py                       # both models, the defaults below
    python benchmarks/batch.py --models digits --repeats 1
    python benchmarks/batch.py --smoke                # seconds: digits, 4,096 rows, to see it runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = (
    Path(os.environ.get("FRUGAL_CACHE_DIR", Path.home() / ".cache" / "frugal")) / "benchmarks" / "autoscaling"
)
EXAMPLES = {"digits": "examples/digits.yaml", "minilm": "examples/minilm.yaml"}
PROFILES = ROOT / "examples" / "hardwareprofiles.yaml"


# ------------------------------------------------------------------------------------------ inputs


def artifacts(model: str) -> Path:
    """The example's compression Job, cached with the same stamp as benchmarks/autoscaling.py."""
    from frugal.operator.api.loading import parse_yaml
    from frugal.operator.api.spec import parse_model_deployment
    from frugal.operator.manifests import container_commands

    documents = parse_yaml((ROOT / EXAMPLES[model]).read_text(encoding="utf-8"), EXAMPLES[model])
    md = next(parse_model_deployment(d) for d in documents if d.get("kind") == "ModelDeployment")
    directory = CACHE / model
    directory.parent.mkdir(parents=True, exist_ok=True)
    stamp = directory.with_suffix(".config.json")
    wanted = json.dumps(container_commands.compression_config(md, str(directory)), sort_keys=True)
    if (directory / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return directory
    print(f"  compressing {md.model_uri} as the operator's Job would ...", file=sys.stderr)
    argv = container_commands.compress(md, str(directory))
    argv[0] = str(Path(sys.executable).with_name("frugal"))
    subprocess.run(argv, check=True, capture_output=True)
    stamp.write_text(wanted)
    return directory


def smallest_variant(directory: Path) -> str:
    """The compressed variant the benchmark scores: the smallest the compression kept."""
    from frugal.schema.artifact_format import read_manifest

    return min(read_manifest(directory).variants, key=lambda v: v.size_bytes).name


def rows_of(model: str, count: int) -> dict[str, np.ndarray]:
    """`count` rows: digits' images (scaled as the zoo model reads them), or MiniLM's held-out and
    calibration sentences tokenized (padded to the longest), repeated."""
    if model == "digits":
        from sklearn.datasets import load_digits

        base = {"input": (load_digits().data / 16.0).astype(np.float32)}
    else:
        from frugal.compression.zoo import minilm

        base = minilm.tokenize(minilm.sentences())
    copies = -(-count // len(next(iter(base.values()))))
    return {name: np.ascontiguousarray(np.tile(a, (copies, 1))[:count]) for name, a in base.items()}


def profiles() -> list[dict[str, Any]]:
    found = []
    for doc in yaml.safe_load_all(PROFILES.read_text()):
        if doc and doc.get("kind") == "HardwareProfile":
            spec = doc["spec"]
            found.append(
                {
                    "name": doc["metadata"]["name"],
                    "costPerHour": float(spec["costPerHour"]),
                    "maxWatts": float(spec["power"]["maxWatts"]),
                }
            )
    return found


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


# ------------------------------------------------------------------------------------------ runs


def plain_loop(model_file: Path, rows: dict[str, np.ndarray], batch: int, threads: int) -> float:
    """Rows per second of one session looping over the rows in memory, `batch` rows a run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    total = len(next(iter(rows.values())))
    session.run(None, {n: a[:batch] for n, a in rows.items()})
    started = time.perf_counter()
    outputs = [
        session.run(None, {n: a[s : s + batch] for n, a in rows.items()})[0] for s in range(0, total, batch)
    ]
    seconds = time.perf_counter() - started
    assert sum(len(o) for o in outputs) == total
    return total / seconds


@dataclass(frozen=True)
class EngineRun:
    scoring_rps: float  # the summary's: first shard start to last shard end
    end_to_end_rps: float  # run_local's call to its return
    busy_seconds: float
    rows: int


def engine(
    data: Path, directory: Path, variant: str, workers: int, batch: int, rows_per_shard: int
) -> EngineRun:
    from frugal.serving.batch.engine import BatchConfig
    from frugal.serving.batch.local_runner import run_local

    with tempfile.TemporaryDirectory(prefix="frugal-batch-bench-") as out:
        config = BatchConfig.model_validate(
            {"input": str(data), "output": out, "artifacts": str(directory), "variant": variant,
             "batchSize": batch, "rowsPerShard": rows_per_shard}
        )  # fmt: skip
        started = time.perf_counter()
        summary = run_local(config, workers, progress=False)
        seconds = time.perf_counter() - started
    return EngineRun(summary.rows_per_second, summary.rows / seconds, summary.busy_seconds, summary.rows)


def cost_per_million(rows_per_second: float, profile: dict[str, Any], price_per_kwh: float) -> float:
    """One worker of `profile` busy for a million rows: its share of the node plus its energy at max watts."""
    seconds = 1e6 / rows_per_second
    return seconds / 3600 * profile["costPerHour"] + profile["maxWatts"] * seconds / 3.6e6 * price_per_kwh


# ------------------------------------------------------------------------------------------ report


def measure(model: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from frugal.serving.server.runtime import read_cpu_limit

    directory = artifacts(model)
    variant = smallest_variant(directory)
    count = args.digits_rows if model == "digits" else args.minilm_rows
    rows = rows_of(model, count)
    data = folder / f"{model}.npz"
    np.savez(data, **rows)
    model_file = directory / "variants" / variant / "model.onnx"
    threads = read_cpu_limit()
    sizes = args.digits_rows_per_shard if model == "digits" else args.minilm_rows_per_shard
    plain: list[float] = []
    plain_1: list[float] = []
    attempts: dict[tuple[int, int], list[EngineRun]] = {(n, w): [] for n in sizes for w in (1, 2)}
    for repeat in range(args.repeats):  # interleaved, so a disturbance hits every variant alike
        print(
            f"  {model} ({variant}): {count} rows, round {repeat + 1} of {args.repeats} ...", file=sys.stderr
        )
        plain.append(plain_loop(model_file, rows, args.batch_size, threads))
        plain_1.append(plain_loop(model_file, rows, args.batch_size, 1))
        for rows_per_shard, workers in attempts:
            run = engine(data, directory, variant, workers, args.batch_size, rows_per_shard)
            attempts[rows_per_shard, workers].append(run)
    runs = {key: max(found, key=lambda r: r.scoring_rps) for key, found in attempts.items()}
    return {
        "model": model,
        "variant": variant,
        "rows": count,
        "plain_rps": max(plain),
        "plain_1_thread_rps": max(plain_1),
        "threads": threads,
        "runs": runs,
    }


def print_tables(results: list[dict[str, Any]], price_per_kwh: float) -> None:
    print("\n| model | variant | rows | rowsPerShard | workers | scoring rows/s | end-to-end rows/s "
          "| plain loop rows/s | scoring / plain | end-to-end / plain |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        plain = result["plain_rps"]
        for (rows_per_shard, workers), run in result["runs"].items():
            print(
                f"| {result['model']} | {result['variant']} | {result['rows']:,} | {rows_per_shard:,} | {workers} "
                f"| {run.scoring_rps:,.0f} | {run.end_to_end_rps:,.0f} | {plain:,.0f} "
                f"| {run.scoring_rps / plain:.2f} | {run.end_to_end_rps / plain:.2f} |"
            )
    print(f"\n(batchSize = the plain loop's batch; plain loop and 1 worker: {results[0]['threads']} intra-op "
          "threads; 2 workers: 1 each)")  # fmt: skip
    for result in results:
        print(
            f"{result['model']}: the plain loop on 1 intra-op thread: {result['plain_1_thread_rps']:,.0f} rows/s"
        )
    print(
        f"\nCost per million rows at 1 worker's scoring rows/s and at the plain loop's ({price_per_kwh} USD/kWh):\n"
    )
    print("| profile | costPerHour | maxWatts | model | rowsPerShard | engine USD / 1M rows "
          "| plain loop USD / 1M rows | engine / plain |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for profile in profiles():
        for result in results:
            plain = cost_per_million(result["plain_rps"], profile, price_per_kwh)
            for (rows_per_shard, workers), run in result["runs"].items():
                if workers == 1:
                    ours = cost_per_million(run.scoring_rps, profile, price_per_kwh)
                    print(
                        f"| {profile['name']} | {profile['costPerHour']:.2f} | {profile['maxWatts']:.0f} "
                        f"| {result['model']} | {rows_per_shard:,} | {ours:.6f} | {plain:.6f} | {ours / plain:.2f} |"
                    )


def shard_sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--digits-rows", type=int, default=200_000)
    parser.add_argument("--minilm-rows", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--digits-rows-per-shard",
        type=shard_sizes,
        default=[1024, 16384],
        help="shard sizes, comma-separated (default 1024,16384: the config's default, and one that "
        "amortises each shard's write and sync over more of a tiny model's rows)",
    )
    parser.add_argument(
        "--minilm-rows-per-shard",
        type=shard_sizes,
        default=[256, 1024],
        help="shard sizes, comma-separated (default 256,1024: more shards than workers either way)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--price-per-kwh", type=float, default=0.15)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, to see it runs: digits, 4,096 rows in shards of 1,024, 1 round (flags given as well "
        "still apply)",
    )
    if "--smoke" in sys.argv[1:]:
        parser.set_defaults(models="digits", digits_rows=4096, digits_rows_per_shard=[1024], repeats=1)
    args = parser.parse_args()
    print(json.dumps(machine()), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="frugal-batch-data-") as folder:
        results = [measure(m, args, Path(folder)) for m in args.models.split(",")]
    print_tables(results, args.price_per_kwh)
    print(f"\nmachine: {json.dumps(machine())}")


if __name__ == "__main__":
    main()
