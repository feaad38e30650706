"""Measure a variant through real servers: one `frugal serve` per stage on this machine's loopback, the
first stage forwarding to the next as a sharded Deployment does, driven by concurrent one-row requests.

What the profiling Job uses when the planner compares shard counts (a variant compression cut into
stages): every count is measured the same way, through the same servers, hops, batcher and codec, so a
count wins or loses on what serving it costs, not on an estimate per hop. Each measurement gives:

* p95 latency and requests per second at a closed-loop concurrency of the serving batch size (one full
  batch in flight: the same point the session-only measurement describes);
* the peak resident memory (``VmHWM``) of every stage server after load; the largest is what one pod
  of that count needs.

The stages share this pod's CPUs (in a cluster each stage has a pod of its own), so a chain's
throughput here is a lower bound; latency and memory are what a pod sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from frugal.schema.artifact_format import Variant

READY = re.compile(r"ready on (http://[\d.]+:\d+)")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ChainMeasurement:
    shards: int
    latency_p95_ms: float
    throughput_rps: float
    memory_bytes: int  # the largest stage server's peak resident set
    requests: int


@dataclass
class _Server:
    process: subprocess.Popen[str]
    url: str
    log: list[str]


def measure_chain(
    directory: Path,
    model: str,
    variant: Variant,
    shards: int,
    row: dict[str, np.ndarray],
    batch: int,
    max_delay_ms: float,
    provider: str,
    seconds: float,
) -> ChainMeasurement:
    """Start the `shards` stage servers of `variant` (1: the whole model), drive them for `seconds`
    after a warm-up with `batch` concurrent clients each sending `row`, and stop them."""
    with _chain(directory, variant.name, shards, batch, max_delay_ms, provider) as servers:
        latencies, elapsed = asyncio.run(_drive(servers[0].url, model, row, batch, seconds))
        memory = max(_peak_rss(server.process.pid) for server in servers)
    if not latencies:
        raise RuntimeError(f"{variant.name} in {shards} shard(s) answered no request in {seconds:.1f} s")
    return ChainMeasurement(
        shards=shards,
        latency_p95_ms=float(np.percentile(latencies, 95)) * 1000,
        throughput_rps=len(latencies) / elapsed,
        memory_bytes=memory,
        requests=len(latencies),
    )


@contextlib.contextmanager
def _chain(
    directory: Path, variant: str, shards: int, batch: int, max_delay_ms: float, provider: str
) -> Iterator[list[_Server]]:
    """The stage servers, the last started first (each stage needs its successor's URL); yields them
    first stage first."""
    started: list[_Server] = []
    try:
        following: str | None = None
        for index in reversed(range(shards)):
            command = [
                sys.executable, "-m", "frugal.serving.server",
                "--artifacts", str(directory), "--variant", variant,
                "--host", "127.0.0.1", "--port", "0", "--grpc-port", "-1",
                "--max-batch-size", str(batch), "--max-delay-ms", str(max_delay_ms),
                "--execution-provider", provider, "--log-level", "WARNING",
                "--shard-index", str(index), "--shard-count", str(shards),
            ]  # fmt: skip
            if following is not None:
                command += ["--next-stage", following]
            server = _start(command)
            started.append(server)
            following = server.url
        yield list(reversed(started))
    finally:
        for server in started:
            _stop(server.process)


def _start(command: list[str]) -> _Server:
    """Spawn a server; return once it prints its ready line (its stdout and stderr keep being read)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read_stdout(stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            match = READY.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()  # the process closed its output: it is gone

    def read_stderr(stream: IO[str]) -> None:
        log.extend(iter(stream.readline, ""))

    assert process.stdout is not None and process.stderr is not None
    threading.Thread(target=read_stdout, args=(process.stdout,), daemon=True).start()
    threading.Thread(target=read_stderr, args=(process.stderr,), daemon=True).start()
    ready.wait(START_TIMEOUT_S)
    if found:
        return _Server(process, found[0], log)
    _stop(process)
    tail = "".join(log[-20:]).strip()
    raise RuntimeError(f"a stage server did not become ready ({' '.join(command[3:7])}): {tail}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


async def _drive(
    url: str, model: str, row: dict[str, np.ndarray], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """`concurrency` clients in a closed loop, each sending one-row binary OIP requests; the first
    quarter of the time (at least 0.5 s) warms up and is not counted."""
    import aiohttp

    from frugal.serving.server.codec import encode_request

    body, headers = encode_request(row, binary=True)
    target = f"{url}/v2/models/{model}/infer"
    warm_up = max(0.5, seconds / 4)
    latencies: list[float] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        begin = time.perf_counter()
        counting_from = begin + warm_up
        stop_at = counting_from + seconds

        async def client() -> None:
            while (now := time.perf_counter()) < stop_at:
                async with session.post(target, data=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        failures.append(f"{reply.status}: {(await reply.text())[:200]}")
                        return
                if now >= counting_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    if failures:
        raise RuntimeError(f"the chain at {url} answered {failures[0]}")
    return latencies, seconds


def chain_counts(variant: Variant, wanted: Sequence[int] | None) -> list[int]:
    """The shard counts to measure: 1 (the whole variant) and every count compression cut, limited to
    `wanted` (the ModelDeployment's allowed counts) when given."""
    available = [1, *(s.count for s in variant.stage_sets)]
    return [c for c in available if wanted is None or c in wanted]
