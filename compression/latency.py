"""Latency of ONNX variants, measured fairly: variants interleaved, repeated, medians reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .evaluate import session
from .source import Arrays, HeldOut


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per call at batch 1 and at the serving batch size."""

    batch1_ms: float
    batch_ms: float
    batch_size: int
    batch_spread: float = 0.0
    threads: int = 0

    @property
    def throughput(self) -> float:
        """Rows per second at the serving batch size."""
        return self.batch_size * 1000.0 / self.batch_ms if self.batch_ms > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "batch1Ms": round(self.batch1_ms, 4),
            "batchMs": round(self.batch_ms, 4),
            "batchSize": self.batch_size,
            "throughputPerS": round(self.throughput, 1),
            "batchSpread": round(self.batch_spread, 4),
            "threads": self.threads,
        }


def _time_call(sess: ort.InferenceSession, feed: Arrays, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        sess.run(None, feed)
    return (time.perf_counter() - start) * 1000.0 / calls


def _calls_for(sess: ort.InferenceSession, feed: Arrays, budget_ms: float) -> int:
    once = max(_time_call(sess, feed, 1), 1e-3)
    return max(1, min(200, int(budget_ms / once)))


def spread(samples: list[float]) -> float:
    """(max - min) / median of repeated timings: how far apart the rounds were (0 = identical)."""
    middle = statistics.median(samples)
    return (max(samples) - min(samples)) / middle if middle > 0 else 0.0


def measure(
    paths: Mapping[str, Path],
    data: HeldOut,
    batch_size: int,
    repeats: int = 5,
    budget_ms: float = 40.0,
    threads: int = 1,
) -> dict[str, Latency]:
    """Median latency of every variant; each round visits every variant before the next round.

    Every session gets the same intra-op thread count (``threads``; 0 = ONNX Runtime's default) and
    one warm-up call per batch size before timing starts.
    """
    sessions = {name: session(path, threads) for name, path in paths.items()}
    feeds = {1: data.rows(1), batch_size: data.rows(batch_size)}
    for sess in sessions.values():
        for feed in feeds.values():
            sess.run(None, feed)
    calls = {(n, b): _calls_for(s, feeds[b], budget_ms) for n, s in sessions.items() for b in feeds}
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for name, sess in sessions.items():
            for batch, feed in feeds.items():
                samples[(name, batch)].append(_time_call(sess, feed, calls[(name, batch)]))
    return {
        name: Latency(
            statistics.median(samples[(name, 1)]),
            statistics.median(samples[(name, batch_size)]),
            batch_size,
            spread(samples[(name, batch_size)]),
            threads,
        )
        for name in sessions
    }
