"""The profiling Job's entry point: measure every variant of a generation on this pod's hardware.

``python -m frugal.serving.profiling --artifacts DIR --hardware-profile NAME ...`` loads each variant
in ``DIR/manifest.json`` with ONNX Runtime on the requested execution provider, runs random inputs
of the manifest's signature at the serving batch size, and writes ``DIR/profiles/NAME.json``
(atomically; both files are :mod:`frugal.schema.artifact_format`'s). Only ONNX Runtime and numpy
are needed, so it runs in the serving image.

``--artifacts s3://bucket/prefix`` profiles a generation in an object store: its manifest and every
variant's files are fetched into a temporary directory (:mod:`frugal.serving.server.fetch`), each file
checked against the manifest's sha256, and the profile is PUT back as one object. A refusal (keys,
bucket, policy) is one line naming the URI and the error's class, exit 2 (exit 1 for a store that
failed otherwise: unreachable, a timeout).

A variant with no stage files is timed on its session alone: a request's p95 latency is the p95 of
one batch's run time plus the batching delay, and one replica's throughput is the batch size divided
by the median batch time plus the server's own per-request cost (``--request-overhead-ms``, HTTP and
JSON handling, 0.2 ms by default), so a tiny model is not credited with the raw runtime's millions of
rows per second. A variant compression cut into stages is measured at every shard count it may be
served in (``--shard-counts``), the whole model included, through a chain of real servers
(:mod:`frugal.serving.chain_profile`): p95, requests per second and each stage server's peak memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frugal.schema.artifact_format import (
    ArtifactError,
    Profile,
    ProfileRow,
    TensorSpec,
    Variant,
    read_manifest,
    write_profile,
)
from frugal.serving.datatypes import OIP_TO_NUMPY
from frugal.storage import object_store
from frugal.storage.object_store import Location, ObjectStoreError

# The numeric datatypes example_inputs fills (OIP name → numpy scalar type); BYTES gets b"0".
DTYPES: dict[str, type[np.generic]] = {
    name: dtype.type for name, dtype in OIP_TO_NUMPY.items() if name != "BYTES"
}


def example_inputs(inputs: Sequence[TensorSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors of the manifest's input signature, batch dimension (-1) set to `batch`."""
    rng = np.random.default_rng(seed)
    result: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = [batch if d == -1 else d for d in spec.shape]
        if spec.datatype == "BYTES":
            result[spec.name] = np.full(shape, b"0", dtype=object)
            continue
        dtype = DTYPES.get(spec.datatype, np.float32)
        if np.issubdtype(dtype, np.floating):
            result[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            result[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return result


def one_row(variant: Variant, batch: int) -> dict[str, np.ndarray]:
    """One request's row of the inputs the session path times (free dimensions at `batch`, e.g. tokens)."""
    return {name: array[:1] for name, array in example_inputs(variant.inputs, batch).items()}


def measure(model: Path, inputs: dict[str, np.ndarray], provider: str, repeats: int) -> list[float]:
    """Seconds per run of `model` on `inputs` (after one warm-up run)."""
    import onnxruntime as ort

    providers = [provider, "CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [provider]
    session = ort.InferenceSession(str(model), providers=providers)
    session.run(None, inputs)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, inputs)
        timings.append(time.perf_counter() - start)
    return timings


def profile(
    directory: Path,
    batch: int,
    max_delay_ms: float,
    provider: str,
    repeats: int,
    overhead_ms: float = 0.2,
    shard_counts: Sequence[int] | None = None,
    chain_seconds: float = 2.0,
) -> list[ProfileRow]:
    """One row per variant, or per (variant, shard count) for a variant compression cut into stages:
    those are measured through a chain of real servers at every count (whole included), so the counts
    compare on equal terms; a variant with no stages is timed on its session alone."""
    from frugal.serving.chain_profile import chain_counts, measure_chain

    manifest = read_manifest(directory)
    rows = []
    for variant in manifest.variants:
        if variant.stage_sets:
            row = one_row(variant, batch)
            for count in chain_counts(variant, shard_counts):
                measured = measure_chain(
                    directory,
                    manifest.model,
                    variant,
                    count,
                    row,
                    batch,
                    max_delay_ms,
                    provider,
                    chain_seconds,
                )
                print(
                    f"{variant.name} x{count}: p95 {measured.latency_p95_ms:.2f} ms, "
                    f"{measured.throughput_rps:.0f} req/s, peak resident {measured.memory_bytes / 2**20:.0f} MiB "
                    f"per stage server ({measured.requests} requests through servers)",
                    file=sys.stderr,
                )
                rows.append(
                    ProfileRow(
                        name=variant.name,
                        shards=count,
                        batch_size=batch,
                        latency_p95_ms=measured.latency_p95_ms,
                        throughput_rps=measured.throughput_rps,
                        method="servers",
                        memory_bytes=measured.memory_bytes,
                    )
                )
            continue
        timings = measure(directory / variant.file, example_inputs(variant.inputs, batch), provider, repeats)
        rows.append(
            ProfileRow(
                name=variant.name,
                shards=1,
                batch_size=batch,
                latency_p95_ms=float(np.percentile(timings, 95)) * 1000 + max_delay_ms,
                throughput_rps=batch / (float(np.median(timings)) + batch * overhead_ms / 1000),
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frugal-profile", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--artifacts", required=True, help="the generation's artifact directory, or its s3:// URI"
    )
    parser.add_argument("--hardware-profile", required=True, help="name of the HardwareProfile measured on")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=0.0)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--request-overhead-ms", type=float, default=0.2, help="server cost per request")
    parser.add_argument(
        "--shard-counts",
        type=int,
        nargs="+",
        default=None,
        help="the shard counts the model may be served in (default: every count compression cut)",
    )
    parser.add_argument(
        "--chain-seconds", type=float, default=2.0, help="seconds of load per count measured through servers"
    )
    args = parser.parse_args(argv)
    try:
        source = object_store.location(args.artifacts)
    except ValueError as exc:
        print(f"error: --artifacts: {exc}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="frugal-profile-") as scratch:
            directory = _local(source, Path(scratch))
            if directory is None:
                print(
                    f"error: {args.artifacts}/manifest.json not found: --artifacts must name a compression output",
                    file=sys.stderr,
                )
                return 2
            rows = profile(
                directory,
                args.batch_size,
                args.max_delay_ms,
                args.provider,
                args.repeats,
                args.request_overhead_ms,
                args.shard_counts,
                args.chain_seconds,
            )
        result = Profile(hardware_profile=args.hardware_profile, provider=args.provider, variants=tuple(rows))
        _write_profile(source, result)
    except ObjectStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.refused else 1
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a chain of servers that did not start or answer (its log's tail)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"profiled {len(rows)} variant(s) on {args.hardware_profile}")
    return 0


def _local(source: Location, scratch: Path) -> Path | None:
    """The artifact directory on this machine: `source` itself (None when it has no manifest.json), or
    its manifest and every variant's files fetched into `scratch` and checked against the manifest."""
    if not object_store.is_remote(source):
        assert isinstance(source, Path)
        return source if (source / "manifest.json").is_file() else None
    from frugal.serving.server.artifacts import check_variant
    from frugal.serving.server.fetch import describe_missing, fetch_artifacts

    try:
        fetched = fetch_artifacts(source, scratch)
    except FileNotFoundError as exc:  # no manifest, or no bucket: the cause says which
        raise describe_missing(str(source), exc) from None
    for variant in fetched.manifest.variants:
        check_variant(scratch, fetched.manifest, variant)
    print(fetched.summary(str(source)), file=sys.stderr)
    return scratch


def _write_profile(destination: Location, result: Profile) -> None:
    """``profiles/NAME.json`` beside the manifest: a local file atomically, an object by one PUT (whose
    refusal is an ObjectStoreError naming the object)."""
    try:
        write_profile(destination, result)
    except Exception as exc:  # s3fs's OSError subclasses and botocore's own
        if not object_store.is_remote(destination):
            raise
        where = destination / "profiles" / f"{result.hardware_profile}.json"
        raise object_store.failure(str(where), exc) from None


if __name__ == "__main__":
    sys.exit(main())
