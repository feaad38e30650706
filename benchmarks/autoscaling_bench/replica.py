"""The simulated replica: one replica's measured behaviour, tabulated on a grid of per-replica rates.

Below saturation a request's latency distribution is interpolated (per quantile) between the
measured points; the simulation (:mod:`.simulate`) queues what arrives beyond saturation.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from .measure import FAILED_MS


@dataclass
class Replica:
    """One replica's measured behaviour, tabulated on a grid of per-replica rates 0..saturation."""

    saturation_rps: float
    slo_ms: float
    levels: np.ndarray
    grid: np.ndarray  # per-replica rates
    quantiles: np.ndarray  # [grid, levels] ms
    cpu: np.ndarray  # cores at each grid rate
    batch: np.ndarray
    cpu_saturation: float
    start_s: float
    capacity_rps: float  # frugal's profiled capacity (the policy's prior)
    slo_capacity_rps: float = 0.0  # highest per-replica rate whose p95 is within the SLO

    @classmethod
    def from_measurements(cls, data: dict[str, Any], slo_ms: float, size: int = 400) -> Replica:
        levels = np.asarray(data["levels"])
        points = sorted(data["points"], key=lambda p: p["offered_rps"])
        saturation = max(data["saturation_rps"], *(p["completed_rps"] for p in points if p["fraction"] > 1.0))
        below = [p for p in points if p["offered_rps"] < saturation]
        above = [p for p in points if p["offered_rps"] >= saturation]
        # The anchor at saturation: the first point measured at or beyond it (its queue grew while
        # measured: pessimistic), else the highest point below it.
        anchor = above[0] if above else below[-1]
        # An idle replica (rate 0) has the lightest point's latencies, no CPU and batches of one.
        xs = np.array([0.0] + [p["offered_rps"] for p in below] + [saturation])
        qs = np.array([np.maximum.accumulate(p["quantiles_ms"]) for p in [below[0], *below, anchor]])
        top_cpu = max(anchor["cpu_cores"], data["saturation_cpu_cores"])
        cpu = np.array([0.0] + [p["cpu_cores"] for p in below] + [top_cpu])
        batch = np.array([1.0] + [p["mean_batch"] for p in [*below, anchor]])
        grid = np.linspace(0.0, saturation, size + 1)
        quantiles = np.stack([np.interp(grid, xs, qs[:, j]) for j in range(len(levels))], axis=1)
        p95 = quantiles[:, int(np.searchsorted(levels, 95.0))]
        within = np.nonzero(p95 > slo_ms)[0]
        slo_capacity = grid[within[0] - 1] if len(within) and within[0] > 0 else saturation
        return cls(
            saturation,
            slo_ms,
            levels,
            grid,
            quantiles,
            np.interp(grid, xs, cpu),
            np.interp(grid, xs, batch),
            float(cpu[-1]),
            statistics.median(data["start_seconds"]),
            float(data["profiling"]["capacity_rps"]),
            float(slo_capacity),
        )

    def scaled(self, multiple: float, max_batch: int, start_s: float | None = None) -> Replica:
        """A modelled replica that serves `multiple` times the rate at the same latency distribution
        and CPU share at the same utilisation (a wider one, not a faster one): by Little's law it then
        holds `multiple` times the requests, in its queue and in its batches (at most `max_batch`).
        The same pod start unless `start_s` is given."""
        return dataclasses.replace(
            self,
            saturation_rps=self.saturation_rps * multiple,
            grid=self.grid * multiple,
            batch=np.clip(self.batch * multiple, 1.0, float(max_batch)),
            capacity_rps=self.capacity_rps * multiple,
            slo_capacity_rps=self.slo_capacity_rps * multiple,
            start_s=self.start_s if start_s is None else start_s,
        )

    def index(self, rate: float) -> int:
        return min(len(self.grid) - 1, max(0, round(rate / self.saturation_rps * (len(self.grid) - 1))))

    def cdf(self, k: int, bounds_ms: np.ndarray, wait_ms: float = 0.0) -> np.ndarray:
        """Share of requests at grid point k answered within each bound, after an extra queue wait."""
        return np.interp(bounds_ms - wait_ms, self.quantiles[k], self.levels / 100.0, left=0.0, right=1.0)

    def mean_ms(self) -> np.ndarray:
        """Mean latency at every grid point (the quantile function integrated over its levels)."""
        q = np.minimum(self.quantiles, FAILED_MS / 1000.0)
        return np.asarray(np.trapezoid(q, self.levels / 100.0, axis=1))

    def p95(self, k: int) -> float:
        return float(self.quantiles[k, int(np.searchsorted(self.levels, 95.0))])
