"""A small closed-loop load generator for Open Inference Protocol endpoints.

`frugal up --for` uses it to drive local traffic; benchmarks reuse it. Each of `concurrency` clients
sends the next request as soon as the previous answer arrives, until the deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np


@dataclass
class LoadStats:
    """What a load run observed; latencies in seconds."""

    latencies: list[float] = field(default_factory=list)
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def requests(self) -> int:
        return sum(self.status_counts.values())

    @property
    def ok(self) -> int:
        return self.status_counts.get(200, 0)

    def record(self, status: int, latency: float) -> None:
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if status == 200:
            self.latencies.append(latency)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies), q) * 1000.0)

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def throughput(self) -> float:
        elapsed = self.elapsed()
        return self.ok / elapsed if elapsed > 0 else 0.0


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Iterable[dict[str, Any]],
    deadline: float,
    stats: LoadStats,
) -> None:
    for body in bodies:
        if time.monotonic() >= deadline:
            return
        start = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                stats.record(response.status, time.perf_counter() - start)
        except aiohttp.ClientError:
            stats.errors += 1
            await asyncio.sleep(0.05)


async def run_load(
    url: str,
    make_bodies: Callable[[int], Iterable[dict[str, Any]]],
    duration: float,
    concurrency: int,
    stats: LoadStats | None = None,
) -> LoadStats:
    """Drive `url` with `concurrency` closed-loop clients for `duration` seconds.

    `make_bodies(client_index)` yields request bodies for one client (cycled forever if finite).
    """
    stats = stats or LoadStats()
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(
                _client(session, url, itertools.cycle(list(make_bodies(i))), deadline, stats)
                for i in range(concurrency)
            )
        )
    stats.finished = time.monotonic()
    return stats
