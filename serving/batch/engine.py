"""Batch inference: score a dataset with one variant, split into shards that workers take in turn.

Why shards and markers: a batch runs for minutes to hours on workers that may die (a pod evicted, a
node drained). The input is cut into numbered shards (`frugal.serving.batch.inputs`: every file in
ranges of ``rowsPerShard`` rows, in input order); worker ``i`` of ``n`` scores shards ``i, i+n,
i+2n, ...`` (a Kubernetes Indexed Job's completion index is ``i``) and, for each, writes the outputs
and then a completion marker, both atomically. A worker started again skips every shard whose marker
is there, so a death costs at most the shards in progress, and no two workers ever write the same
file. The aggregator joins the shards in input order once every marker exists. Batch boundaries are
fixed by the shards (each shard's rows from its first, ``batchSize`` at a time), so the result does
not depend on the number of workers or on restarts — which matters beyond float summation order: a
dynamically quantized (int8) variant computes its activation scale over the whole batch, so a row's
output depends on the rows batched with it.

The output directory (nothing else is written there)::

    <output>/shards/part-00000.npz    the shard's model outputs, one array per output name
    <output>/shards/part-00000.done   its marker (JSON, see Marker): rows, seconds, worker, pid, host, ...
    <output>/predictions.npz          every output, the shards concatenated in input order
    <output>/summary.json             rows, shards, workers, seconds, rows/s, busy seconds, cost, energy
    <output>/.batch.lock              taken (fcntl) while a process settles or aggregates (not in a bucket)

``predictions.npz`` marks a finished run: without ``overwrite`` a worker or aggregator refuses to
touch it. With ``overwrite`` the first process to find it (under the lock, so concurrent workers do
not remove each other's fresh shards) removes what a batch writes — ``shards/``, ``summary.json``,
``predictions.npz`` — and nothing else. An unfinished run (markers, no predictions) is resumed;
markers that record another input or model (another file, rows, file size or mtime, or model
sha256) are an error, or with ``overwrite`` are removed with their outputs. A worker killed while
writing leaves a ``shards/.part-*.tmp`` file behind (harmless; overwrite removes it with ``shards/``).

Nothing is written through a link planted inside the output: a symbolic link where the batch expects
``shards/``, a part file, a marker, ``predictions.npz``, ``summary.json`` or the lock is refused with
a BatchError naming it (with or without overwrite), and every file is created and renamed relative to
its directory opened with ``O_NOFOLLOW`` (``shards/``; the output directory itself is the user's to
choose, link or not), so a link swapped in after the check is not followed either
(:mod:`frugal.serving.batch.output_dir`).

In an object store (``input``/``output`` as ``s3://bucket/prefix``, the connection from the environment
as for artifacts) the layout is the same, less the lock, and there are no links to refuse. A bucket
has no rename: each object is one PUT of bytes serialised in memory, whole or absent, the part before
its marker and the summary before the predictions (:mod:`frugal.serving.batch.bucket_output`). No two
workers write the same object: worker ``i`` owns shards ``i, i+n, ...``, an Indexed Job starts a pod's
replacement only once it is gone, and a shard's bytes are the same whoever computes them. Overwrite
takes no lock: a process that finds ``predictions.npz`` removes ``summary.json``, then only the shard
objects whose LastModified is not later than the predictions' (the finished run's: a concurrent
worker's fresh shards are later and stay), then ``predictions.npz``. An input object's identity in a
marker is its size and LastModified. A store's refusal (a key, the policy, no bucket) is a BatchError
naming the URI and the error's class; an unreachable store is a crash the Job retries.

Every input file is checked against the model's inputs from its metadata before anything is
written or removed. What only the rows can tell (nulls, rows of a list column of different lengths)
shows when that shard is read: the worker stops there with the error, the shards before it kept.

Cost and energy price a worker's busy seconds (the sum of its shards' seconds) like a serving replica
at full utilisation, as the planner does: ``busy hours × costPerHour`` plus ``maxWatts × busy
seconds`` joules at ``pricePerKWh``. A worker is busy from its first shard to its last, so neither
``idleWatts`` nor the start (verifying and loading the model) is priced; ``idleWatts`` is accepted
so the config can carry a hardware profile's power as the operator writes it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from frugal.serving.batch import output_dir
from frugal.serving.batch.batch_config import CONFIG_ENV, BatchConfig, config_from, parse_config
from frugal.serving.batch.bucket_output import BucketOutput
from frugal.serving.batch.inputs import (
    BatchError,
    FileInfo,
    Shard,
    ShardReader,
    data_location,
    describe,
    input_files,
    local_path,
    one_line,
    plan,
)
from frugal.serving.batch.output_dir import (
    MARKER_SUFFIX,
    Layout,
    LocalOutput,
    Marker,
    OutputFiles,
    read_marker,
    refuse_finished,
)
from frugal.serving.server import artifacts
from frugal.serving.server.artifacts import ArtifactError, Manifest, TensorSpec, Variant
from frugal.storage import object_store
from frugal.storage.object_store import Location, ObjectStoreError, is_remote

if TYPE_CHECKING:
    from frugal.serving.server.runtime import OnnxModel

__all__ = [
    "CONFIG_ENV",
    "MARKER_SUFFIX",
    "BatchConfig",
    "BatchError",
    "Layout",
    "Marker",
    "Run",
    "Summary",
    "WorkerResult",
    "aggregate",
    "check",
    "config_from",
    "finished",
    "parse_config",
    "plan_run",
    "price",
    "read_marker",
    "refuse_finished",
    "run_worker",
    "summary_json",
]

log = logging.getLogger("frugal.serving.batch")

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6


class Summary(BaseModel):
    """`summary.json`: what the batch did and what it cost (None where the config gives no price)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    model: str
    variant: str
    rows: int
    shards: int
    workers: list[int]  # worker indices seen in the markers
    processes: int  # distinct processes (host, pid) that computed shards: restarts count
    started_at: float = Field(alias="startedAt")
    finished_at: float = Field(alias="finishedAt")
    seconds: float  # wall: the first shard's start to the last shard's end
    rows_per_second: float = Field(alias="rowsPerSecond")
    busy_seconds: float = Field(alias="busySeconds")
    cost_usd: float | None = Field(alias="costUsd")
    energy_joules: float | None = Field(alias="energyJoules")
    cost_per_million_rows_usd: float | None = Field(alias="costPerMillionRowsUsd")
    outputs: dict[str, list[int]]  # each output's shape in predictions.npz


@dataclass(frozen=True)
class WorkerResult:
    index: int
    count: int
    shards: int  # assigned to this worker
    computed: int
    skipped: int  # found finished
    rows: int  # computed by this process
    seconds: float  # busy on the computed shards


def price(busy_seconds: float, config: BatchConfig) -> tuple[float | None, float | None]:
    """(cost in USD, energy in joules) of `busy_seconds` of worker time at full utilisation."""
    energy = config.max_watts * busy_seconds if config.max_watts is not None else None
    parts = []
    if config.cost_per_hour is not None:
        parts.append(busy_seconds / SECONDS_PER_HOUR * config.cost_per_hour)
    if energy is not None and config.price_per_kwh is not None:
        parts.append(energy / JOULES_PER_KWH * config.price_per_kwh)
    return (sum(parts) if parts else None), energy


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class Run:
    """What every process of a batch derives alike from its config: the model and the shards."""

    config: BatchConfig
    layout: Layout
    artifacts: Path
    manifest: Manifest
    variant: Variant
    model_sha256: str
    inputs: tuple[TensorSpec, ...]
    files: tuple[FileInfo, ...]
    shards: tuple[Shard, ...]
    output: OutputFiles

    @functools.cached_property
    def by_path(self) -> dict[Location, FileInfo]:
        return {info.path: info for info in self.files}

    def expected(self, shard: Shard) -> dict[str, Any]:
        """The marker fields that identify `shard` of this run's input and model (the file's size and
        modification time as planning found them; an object's LastModified)."""
        info = self.by_path[shard.file]
        return {
            "shard": shard.index,
            "file": shard.file.name,
            "start": shard.start,
            "stop": shard.stop,
            "rows": shard.rows,
            "input_size": info.size,
            "input_mtime_ns": info.mtime_ns,
            "model_sha256": self.model_sha256,
        }

    def matches(self, marker: Marker) -> bool:
        if not 0 <= marker.shard < len(self.shards):
            return False
        wanted = self.expected(self.shards[marker.shard])
        return all(getattr(marker, key) == value for key, value in wanted.items())


def _manifest(config: BatchConfig) -> tuple[Path, Manifest, Variant]:
    directory = _artifact_dir(config)
    try:
        manifest = artifacts.load_manifest(directory)
        return directory, manifest, manifest.variant(config.variant)
    except ArtifactError as exc:
        raise BatchError(f"artifacts: {exc}") from None


def _artifact_dir(config: BatchConfig) -> Path:
    """The artifact directory on this machine: `artifacts` itself, or for an object store's URI the
    directory its manifest and the variant's files were fetched into (as `frugal serve` does; the
    files are verified afterwards like any local artifact). Workers sharing it fetch safely together."""
    if not object_store.is_object_store(config.artifacts):
        return local_path(config.artifacts, "artifacts")
    from frugal.serving.server.fetch import default_fetch_dir, describe_missing, fetch_artifacts

    uri = config.artifacts
    target = local_path(config.fetch_dir, "fetchDir") if config.fetch_dir else default_fetch_dir(uri)
    try:
        fetched = fetch_artifacts(object_store.location(uri), target, [config.variant])
    except FileNotFoundError as exc:
        raise BatchError(f"artifacts: {describe_missing(uri, exc)}") from None
    except ObjectStoreError as exc:
        if not exc.refused:
            raise  # unreachable, a timeout: a crash the Job retries
        raise BatchError(f"artifacts: {exc}") from None
    except ArtifactError as exc:
        raise BatchError(f"artifacts: {exc}") from None
    except OSError as exc:
        raise BatchError(f"fetchDir: cannot write {target}: {exc.strerror or exc}") from None
    log.info("%s", fetched.summary(uri))
    return target


def _open_run(config: BatchConfig, directory: Path, manifest: Manifest, variant: Variant,
              inputs: Sequence[TensorSpec]) -> Run:  # fmt: skip
    """The run's shards after checking every input file's metadata against `inputs`."""
    root = data_location(config.input, "input")
    files = tuple(describe(path, inputs) for path in input_files(root))
    shards = tuple(plan(files, config.rows_per_shard))
    if not shards:
        raise BatchError(f"input {root} has no rows")
    entry = manifest.files.get(variant.file)
    sha = entry.sha256 if entry is not None else ""
    layout = Layout(data_location(config.output, "output"))
    output = BucketOutput(layout) if is_remote(layout.output) else LocalOutput(layout)
    return Run(config, layout, directory, manifest, variant, sha, tuple(inputs), files, shards, output)


def _load_model(config: BatchConfig, directory: Path, manifest: Manifest, variant: Variant) -> OnnxModel:
    """Verify the variant's files against the manifest, then open it in ONNX Runtime."""
    from frugal.serving.server import runtime

    cache = local_path(config.verify_cache_dir, "verifyCacheDir") if config.verify_cache_dir else None
    try:
        path = artifacts.verify_variant(directory, manifest, variant, cache)
        choice = runtime.provider_chain(config.execution_provider, runtime.ort.get_available_providers())
    except (ArtifactError, ValueError) as exc:
        raise BatchError(f"artifacts: {exc}") from None
    if choice.fallback:
        log.warning("%s", choice.fallback)
    threads = config.intra_op_threads or runtime.read_cpu_limit()
    try:
        model = runtime.OnnxModel(str(path), choice.providers, threads)
    except Exception as exc:  # ONNX Runtime's load errors share no base class
        raise BatchError(f"artifacts: ONNX Runtime cannot load {path}: {one_line(exc)}") from None
    if not model.batchable():
        raise BatchError(
            f"variant {variant.name!r}: its inputs and outputs need a dynamic first (batch) dimension"
        )
    return model


# ------------------------------------------------------------------------------------------ output


def finished(run: Run, shard: Shard) -> Marker | None:
    """The shard's marker when the shard is done for this run: a marker of this input and model, and
    its outputs beside it."""
    run.output.refuse_links(run.layout.marker(shard.index), run.layout.part(shard.index))
    marker = read_marker(run.layout.marker(shard.index))
    if marker is None or not run.matches(marker) or not run.output.is_file(run.layout.part(shard.index)):
        return None
    return marker


def _settle(run: Run) -> None:
    """Apply the output rules before a worker starts: refuse or (overwrite) discard a finished run;
    refuse or (overwrite) remove markers of another input or model. A matching unfinished run stays."""
    layout, overwrite = run.layout, run.config.overwrite
    with run.output.guarded():
        if run.output.exists(layout.predictions):
            if not overwrite:
                raise output_dir.refused_finished(layout)
            log.info("overwrite: removing the finished run in %s", layout.output)
            run.output.discard_finished()
    # Outside the lock (reading every marker takes a while on a big run): concurrent workers of this
    # run only ever add matching markers, and removing a stale one twice is harmless. An unreadable
    # marker (one cut short by a machine crash) is not another run's: its shard is simply redone.
    stale = [
        path
        for path, marker in output_dir.markers_in(layout).items()
        if marker is not None and not run.matches(marker)
    ]
    if stale and not overwrite:
        raise BatchError(
            f"{layout.shards} holds {len(stale)} shard(s) of another input or model (e.g. {stale[0].name}): "
            "pass overwrite (--overwrite) to replace them or choose another output"
        )
    if stale:
        run.output.remove_shards(stale)


# ------------------------------------------------------------------------------------------ worker

P = ParamSpec("P")
R = TypeVar("R")


def _refusals_are_batch_errors(function: Callable[P, R]) -> Callable[P, R]:
    """An object store's refusal (keys, policy, no bucket) as a BatchError, which it is: bad input that
    retrying cannot fix. Its message names the URI and the error's class, never a key."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ObjectStoreError as exc:
            if not exc.refused:
                raise  # unreachable, a timeout: a crash the Job retries
            raise BatchError(str(exc)) from None

    return wrapper


@_refusals_are_batch_errors
def check(config: BatchConfig) -> Run:
    """Everything a worker checks before scoring, without scoring: the variant's files, that ONNX
    Runtime loads it, every input file against its inputs, and the output rules (with overwrite this
    discards a finished run). Raises BatchError."""
    return _prepare(config)[0]


@_refusals_are_batch_errors
def plan_run(config: BatchConfig) -> Run:
    """The run's shards from the input files' metadata, checked against the variant's inputs, without
    touching the output (what a placement needs to know before anything is written or removed).
    Raises BatchError."""
    directory, manifest, variant = _manifest(config)
    return _open_run(config, directory, manifest, variant, _signature(config, directory, manifest, variant))


def _prepare(config: BatchConfig) -> tuple[Run, OnnxModel]:
    directory, manifest, variant = _manifest(config)
    model = _load_model(config, directory, manifest, variant)
    run = _open_run(config, directory, manifest, variant, model.inputs)
    _settle(run)
    return run, model


@_refusals_are_batch_errors
def run_worker(config: BatchConfig, index: int, count: int) -> WorkerResult:
    """Score shards ``index, index+count, ...`` that have no marker yet (one log line per shard)."""
    if count < 1 or not 0 <= index < count:
        raise BatchError(f"worker index {index} of {count}: the index must be in 0..count-1 (count ≥ 1)")
    run, model = _prepare(config)
    mine = run.shards[index::count]
    reader = ShardReader(run.inputs)
    run.output.prepare()
    computed = rows = 0
    busy = 0.0
    for position, shard in enumerate(mine, 1):
        where = f"{shard.name} ({position}/{len(mine)} of worker {index})"
        marker = finished(run, shard)
        if marker is not None:
            log.info("%s: done before (pid %d), skipped", where, marker.pid)
            continue
        done = _score(run, model, reader, shard, index, count)
        computed, rows, busy = computed + 1, rows + done.rows, busy + done.seconds
        log.info("%s: %d rows in %.3f s (%.0f rows/s)", where, done.rows, done.seconds,
                 done.rows / max(done.seconds, 1e-9))  # fmt: skip
    return WorkerResult(index, count, len(mine), computed, len(mine) - computed, rows, busy)


def _score(run: Run, model: OnnxModel, reader: ShardReader, shard: Shard, index: int, count: int) -> Marker:
    """Read, score and write one shard, then its marker (the marker last: it vouches for the outputs)."""
    started_at, began = time.time(), time.perf_counter()
    outputs = infer(
        model, reader.read(shard), run.config.batch_size, f"{shard.file}: rows {shard.start}-{shard.stop}"
    )
    run.output.write_npz(run.layout.part(shard.index), outputs)
    marker = Marker.model_validate(
        {
            **run.expected(shard),
            "seconds": time.perf_counter() - began,
            "started_at": started_at,
            "finished_at": time.time(),
            "worker": index,
            "workers": count,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
    )
    # Not synced: the outputs it vouches for are, and a marker lost or cut short by a machine crash
    # only makes the shard run again (one sync per shard instead of two; a sync costs ~5 ms here).
    run.output.write_json(run.layout.marker(shard.index), marker, durable=False)
    return marker


def infer(
    model: OnnxModel, rows: Mapping[str, np.ndarray], batch_size: int, where: str
) -> dict[str, np.ndarray]:
    """The model's outputs for `rows`, run `batch_size` rows at a time from the first."""
    total = len(next(iter(rows.values())))
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    for start in range(0, total, batch_size):
        feeds = {name: array[start : start + batch_size] for name, array in rows.items()}
        try:
            outputs = model.run(feeds)
        except Exception as exc:  # ONNX Runtime's run errors (e.g. an index out of range) share no base
            raise BatchError(f"{where}: ONNX Runtime failed on these rows: {one_line(exc)}") from None
        for name, value in outputs.items():
            pieces[name].append(value)
    return {name: np.concatenate(parts) for name, parts in pieces.items()}


# ------------------------------------------------------------------------------------------ aggregate


def _signature(
    config: BatchConfig, directory: Path, manifest: Manifest, variant: Variant
) -> tuple[TensorSpec, ...]:
    """The variant's inputs: the manifest's, or ONNX Runtime's when the manifest does not list them."""
    if variant.inputs:
        return variant.inputs
    return _load_model(config, directory, manifest, variant).inputs


@_refusals_are_batch_errors
def aggregate(config: BatchConfig) -> Summary:
    """Join every shard's outputs in input order into ``predictions.npz`` and write ``summary.json``
    (the summary first: a run with predictions always has one). Raises BatchError when a shard is not
    done, or when the output holds a finished run and overwrite is off."""
    directory, manifest, variant = _manifest(config)
    run = _open_run(config, directory, manifest, variant, _signature(config, directory, manifest, variant))
    layout = run.layout
    with run.output.guarded():
        if run.output.exists(layout.predictions) and not config.overwrite:
            raise output_dir.refused_finished(layout)
        markers = _finished_markers(run)
        outputs = _join(run, markers)
        summary = summarise(run, markers, outputs)
        run.output.write_json(layout.summary, summary)
        run.output.write_npz(layout.predictions, outputs)
    return summary


def _finished_markers(run: Run) -> list[Marker]:
    found = [finished(run, shard) for shard in run.shards]
    missing = [s.name for s, m in zip(run.shards, found, strict=True) if m is None]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise BatchError(
            f"{len(missing)} of {len(run.shards)} shards are not done in {run.layout.shards} ({shown}): "
            "run the workers (frugal batch-worker) again to finish them"
        )
    return [m for m in found if m is not None]


def _join(run: Run, markers: Sequence[Marker]) -> dict[str, np.ndarray]:
    pieces: dict[str, list[np.ndarray]] = {}
    for marker in markers:
        part = run.layout.part(marker.shard)
        try:
            arrays = run.output.load_npz(part)
        except ObjectStoreError:
            raise
        except (OSError, ValueError) as exc:
            raise BatchError(
                f"{part} is unreadable ({one_line(exc)}): delete {run.layout.marker(marker.shard).name} "
                "and run the workers again to recompute it"
            ) from None
        for name, array in arrays.items():
            if len(array) != marker.rows:
                raise BatchError(f"{part}: {name!r} has {len(array)} rows, its marker says {marker.rows}")
            pieces.setdefault(name, []).append(array)
    try:
        return {name: np.concatenate(parts) for name, parts in pieces.items()}
    except ValueError as exc:
        raise BatchError(f"the shards' outputs cannot be joined in one array each: {one_line(exc)}") from None


def summarise(run: Run, markers: Sequence[Marker], outputs: Mapping[str, np.ndarray]) -> Summary:
    """The summary of a finished run from its markers (wall time: first shard start to last end)."""
    rows = sum(m.rows for m in markers)
    started, finished = min(m.started_at for m in markers), max(m.finished_at for m in markers)
    seconds = max(finished - started, 1e-9)
    busy = sum(m.seconds for m in markers)
    cost, energy = price(busy, run.config)
    return Summary.model_validate(
        {
            "model": run.manifest.model,
            "variant": run.variant.name,
            "rows": rows,
            "shards": len(markers),
            "workers": sorted({m.worker for m in markers}),
            "processes": len({(m.host, m.pid) for m in markers}),
            "started_at": started,
            "finished_at": finished,
            "seconds": seconds,
            "rows_per_second": rows / seconds,
            "busy_seconds": busy,
            "cost_usd": cost,
            "energy_joules": energy,
            "cost_per_million_rows_usd": cost / rows * 1e6 if cost is not None and rows else None,
            "outputs": {name: list(array.shape) for name, array in outputs.items()},
        }
    )


def summary_json(summary: Summary) -> str:
    return json.dumps(summary.model_dump(by_alias=True), sort_keys=True)
