"""Load generators for Open Inference Protocol endpoints: closed-loop (steady) and open-loop (ramp).

`frugal up --for` uses them to drive local traffic; benchmarks reuse them.

* **steady** (:func:`run_load`): each of `concurrency` clients sends the next request as soon as the
  previous answer arrives, until the deadline. The load follows the server's speed.
* **ramp** (:func:`run_open_loop` with a :class:`Ramp`): requests arrive at a target rate that does
  not depend on how fast the server answers, as users' requests do. Each arrival is its own task;
  at most `max_outstanding` are in flight, and an arrival beyond that is counted as skipped rather
  than queued (a slow server must not make the generator's memory grow without bound). The ramp's
  shape over a run of D seconds: from 0 up to the peak over the first 30% of D, the peak held for
  30%, down to 0 over 10%, then quiet for the last 30% (so a scale-down can be seen once the
  autoscaler's stabilisation window has passed).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

MAX_OUTSTANDING = 512
TICK_SECONDS = 0.005
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class LoadStats:
    """What a load run observed; latencies in seconds, times from time.monotonic()."""

    latencies: list[float] = field(default_factory=list)
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # no HTTP answer: connection refused or reset, timeout
    skipped: int = 0  # open loop: arrivals not sent because max_outstanding were in flight
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    answered_at: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.status_counts.values())

    @property
    def ok(self) -> int:
        return self.status_counts.get(200, 0)

    @property
    def failed(self) -> int:
        """Requests without a 200: other statuses and no answer at all."""
        return self.requests - self.ok + self.errors

    def record(self, status: int, latency: float) -> None:
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        self.answered_at.append(time.monotonic())
        if status == 200:
            self.latencies.append(latency)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies), q) * 1000.0)

    def within(self, seconds: float) -> float:
        """Share of the requests sent (answered or not, skipped ones included) answered 200 within `seconds`."""
        sent = self.requests + self.errors + self.skipped
        if sent == 0:
            return float("nan")
        return sum(1 for latency in self.latencies if latency <= seconds) / sent

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def throughput(self) -> float:
        elapsed = self.elapsed()
        return self.ok / elapsed if elapsed > 0 else 0.0

    def recent_rps(self, window: float = 2.0) -> float:
        """Answers per second over the last `window` seconds."""
        now = time.monotonic()
        span = min(window, max(now - self.started, 1e-9))
        return (len(self.answered_at) - bisect.bisect_left(self.answered_at, now - span)) / span


@dataclass(frozen=True)
class Ramp:
    """Target request rate over a run: up to `peak_rps`, held, down, then quiet (fractions of `duration`)."""

    peak_rps: float
    duration: float
    up: float = 0.3
    hold: float = 0.3
    down: float = 0.1

    def rate(self, t: float) -> float:
        """Requests per second `t` seconds into the run."""
        d = self.duration
        up_end, hold_end, down_end = (
            self.up * d,
            (self.up + self.hold) * d,
            (self.up + self.hold + self.down) * d,
        )
        if t < 0 or t >= down_end:
            return 0.0
        if t < up_end:
            return self.peak_rps * t / up_end
        if t < hold_end:
            return self.peak_rps
        return self.peak_rps * (down_end - t) / (down_end - hold_end)

    @property
    def quiet_seconds(self) -> float:
        return self.duration * (1.0 - self.up - self.hold - self.down)

    def describe(self) -> str:
        d = self.duration
        return (
            f"0 -> {self.peak_rps:g} req/s over {self.up * d:.0f}s, held {self.hold * d:.0f}s, "
            f"down over {self.down * d:.0f}s, quiet {self.quiet_seconds:.0f}s"
        )


JSON = {"Content-Type": "application/json"}


def _encoded(bodies: Iterable[dict[str, Any]]) -> list[bytes]:
    """Request bodies as JSON once, not once per request (the generator shares the CPU it measures)."""
    return [json.dumps(body).encode() for body in bodies]


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, stats: LoadStats) -> bool:
    """One request; False when no HTTP answer came."""
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=JSON) as response:
            await response.read()
            stats.record(response.status, time.perf_counter() - start)
            return True
    except (aiohttp.ClientError, TimeoutError):
        stats.errors += 1
        return False


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Iterable[bytes],
    deadline: float,
    stats: LoadStats,
) -> None:
    for body in bodies:
        if time.monotonic() >= deadline:
            return
        if not await _send(session, url, body, stats):
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
    stats.started = time.monotonic()
    deadline = stats.started + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        await asyncio.gather(
            *(
                _client(session, url, itertools.cycle(_encoded(make_bodies(i))), deadline, stats)
                for i in range(concurrency)
            )
        )
    stats.finished = time.monotonic()
    return stats


async def run_open_loop(
    url: str,
    make_bodies: Callable[[int], Iterable[dict[str, Any]]],
    rate: Callable[[float], float],
    duration: float,
    stats: LoadStats | None = None,
    max_outstanding: int = MAX_OUTSTANDING,
) -> LoadStats:
    """Send requests to `url` at `rate(t)` per second (t: seconds since the start) for `duration`
    seconds, each as its own task, whatever the answers' speed; then wait for those in flight.

    Arrivals are due whenever the integral of the rate passes the next whole request, checked every
    few milliseconds; at most `max_outstanding` requests are in flight (arrivals beyond are skipped).
    """
    stats = stats or LoadStats()
    bodies = itertools.cycle(_encoded(make_bodies(0)))
    connector = aiohttp.TCPConnector(limit=max_outstanding)
    in_flight: set[asyncio.Task[bool]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        stats.started = last = time.monotonic()
        due = 0.0
        while (now := time.monotonic()) - stats.started < duration:
            due += rate((last + now) / 2 - stats.started) * (now - last)
            last = now
            while due >= 1.0:
                due -= 1.0
                if len(in_flight) >= max_outstanding:
                    stats.skipped += 1
                    continue
                task = asyncio.create_task(_send(session, url, next(bodies), stats))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.sleep(TICK_SECONDS)
        if in_flight:
            await asyncio.gather(*in_flight)
    stats.finished = time.monotonic()
    return stats
