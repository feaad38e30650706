"""Sharding benchmark: each example model served whole and in 2-4 stages, every count measured the way
the profiling Job measures it — a chain of real ``frugal serve`` processes, one per stage, driven with
the serving batch size of concurrent one-row binary requests (``frugal.serving.chain_profile``).

For digits and MiniLM, compressed as the example's compression Job would with ``spec.serving.shards``
set to ``"1-<max>"`` (so compression cuts and verifies every count; cached under
``~/.cache/frugal/benchmarks/autoscaling/<model>-shards-1-<max>``), the FP32 variant (the largest:
what sharding is for) and the example's smallest variant are measured at every count:

  * p95 latency and requests per second of one replica (its stages share this machine's CPUs, so a
    chain's throughput here is a lower bound of pods that each have their own);
  * peak resident memory (``VmHWM``) of the largest stage server, and its ratio to the whole model's
    server: what one pod of that count needs;
  * the largest stage file, and cost per 1k requests from the operator's planner at one saturated
    replica on the example's hardware profile (a count uses one pod per stage).

Counts are measured in rounds, each round every count once (interleaved, so a disturbance of the
machine spreads over all of them); each figure is the median of ``--repeats`` rounds.

    python benchmarks/sharding.py                        # digits + MiniLM, 1-4 shards, 3 rounds
    python benchmarks/sharding.py --models minilm --max-shards 2 --seconds 5
    python benchmarks/sharding.py --smoke                # seconds: digits, 1-2 shards, one round
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autoscaling  # the examples, their cached compression and the machine description

from frugal.operator.decision import decide, planner
from frugal.schema.artifact_format import Manifest, Variant, read_manifest
from frugal.serving.chain_profile import measure_chain
from frugal.serving.profiling import one_row


def measure_model(model: str, max_shards: int, seconds: float, repeats: int) -> list[dict[str, Any]]:
    md, hp = autoscaling.load_example(model)
    md = autoscaling.with_shard_counts(md, range(1, max_shards + 1))
    directory = autoscaling.CACHE / f"{model}-shards-1-{max_shards}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    autoscaling.compress(md, directory)
    manifest = read_manifest(directory)
    chosen = _variants(manifest)
    batch, delay = md.max_batch_size, md.max_delay_ms
    counts = {v.name: [1, *(s.count for s in v.stage_sets)] for v in chosen}
    results: dict[tuple[str, int], list[Any]] = {}
    for round_ in range(repeats):
        for variant in chosen:
            row = one_row(variant, batch)
            for count in counts[variant.name]:
                measured = measure_chain(
                    directory,
                    manifest.model,
                    variant,
                    count,
                    row,
                    batch,
                    delay,
                    hp.execution_provider,
                    seconds,
                )
                results.setdefault((variant.name, count), []).append(measured)
                print(
                    f"  {model} {variant.name} x{count} #{round_ + 1}: p95 {measured.latency_p95_ms:.2f} ms, "
                    f"{measured.throughput_rps:.0f} req/s, {measured.memory_bytes / 2**20:.0f} MiB",
                    file=sys.stderr,
                )
    rows = []
    profile = decide.planner_profile(hp)
    objectives = decide.objectives(md)
    for variant in chosen:
        whole_memory = statistics.median(m.memory_bytes for m in results[(variant.name, 1)])
        for count in counts[variant.name]:
            runs = results[(variant.name, count)]
            p95 = statistics.median(m.latency_p95_ms for m in runs)
            rps = statistics.median(m.throughput_rps for m in runs)
            memory = statistics.median(m.memory_bytes for m in runs)
            priced = planner.price(
                planner.Variant(
                    variant.name,
                    variant.size_bytes,
                    0.0,
                    measurements=(planner.Measurement(hp.name, p95, rps, count),),
                ),
                profile,
                count,
                objectives,
            )
            rows.append(
                {
                    "model": model,
                    "variant": variant.name,
                    "shards": count,
                    "p95Ms": round(p95, 2),
                    "rps": round(rps, 1),
                    "peakMiB": round(memory / 2**20, 1),
                    "memoryRatio": round(memory / whole_memory, 2),
                    "largestFileMB": round(_largest_file(manifest, variant, count) / 1e6, 1),
                    "costPer1k": priced.cost_per_1k_requests,
                }
            )
    return rows


def _variants(manifest: Manifest) -> list[Variant]:
    """FP32 (the largest) and the smallest other variant."""
    fp32 = manifest.variant("fp32")
    others = sorted((v for v in manifest.variants if v.name != "fp32"), key=lambda v: v.size_bytes)
    return [fp32, *others[:1]]


def _largest_file(manifest: Manifest, variant: Variant, count: int) -> int:
    if count == 1:
        return manifest.files[variant.file].size_bytes
    return max(manifest.files[s.file].size_bytes for s in variant.stage_set(count).stages)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | variant | shards | p95 ms | req/s (1 replica) | peak MiB per stage server | vs whole | "
        "largest file MB | $ per 1k requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = "-" if r["costPer1k"] is None else f"{r['costPer1k']:.3g}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['shards']} | {r['p95Ms']:.2f} | {r['rps']:.0f} | "
            f"{r['peakMiB']:.0f} | {r['memoryRatio']:.2f}x | {r['largestFileMB']:.1f} | {cost} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["digits", "minilm"], choices=sorted(autoscaling.EXAMPLES)
    )
    parser.add_argument("--max-shards", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured load per count and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the median")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--smoke", action="store_true", help="seconds: digits, 1-2 shards, one short round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.max_shards, args.seconds, args.repeats = ["digits"], 2, 0.5, 1
    rows = [
        row
        for model in args.models
        for row in measure_model(model, args.max_shards, args.seconds, args.repeats)
    ]
    print(f"machine: {json.dumps(autoscaling.machine())}")
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
