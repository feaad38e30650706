"""What a `frugal up` run cost, for its summary: replica-seconds per shard on each option served,
the servers' energy counters, the peak replica counts, every scale event and rollover.

Prices follow the options: replica-seconds on each HardwareProfile at its cost per hour, energy at
spec.pricePerKWh, as the operator prices a plan. Energy is read from each server's
``frugal_energy_joules_total`` at the run's start (a baseline), at every scrape and before a
replica stops.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.local.replicas import Shard

ENERGY = "frugal_energy_joules_total"
SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class ScaleEvent:
    """A change of replica counts: seconds since the autoscaler started, the new counts, why."""

    t: float
    replicas: tuple[int, ...]
    reason: str
    reasons: tuple[str, ...]  # per shard
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 1),
            "replicas": list(self.replicas),
            "reason": self.reason,
            "reasons": list(self.reasons),
            "message": self.message,
        }


@dataclass(frozen=True)
class RolloverEvent:
    """A re-planning rollover: when (seconds since the autoscaler started), between which options, at
    which load and costs, and how long the switch took."""

    t: float
    from_option: str
    to_option: str
    reason: str
    load_rps: float | None
    from_cost_per_1k: float | None
    to_cost_per_1k: float | None
    switch_seconds: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 1),
            "from": self.from_option,
            "to": self.to_option,
            "reason": self.reason,
            "loadRps": None if self.load_rps is None else round(self.load_rps, 1),
            "fromCostPer1kRequests": _money(self.from_cost_per_1k),
            "toCostPer1kRequests": _money(self.to_cost_per_1k),
            "switchSeconds": round(self.switch_seconds, 2),
            "message": self.message,
        }


@dataclass
class _Energy:
    """A replica's energy counter: when the run started counting (0 for later replicas) and the last read."""

    baseline: float = 0.0
    last: float = 0.0


@dataclass
class RunAccount:
    md: ModelDeploymentSpec
    events: list[ScaleEvent] = field(default_factory=list)
    rollovers: list[RolloverEvent] = field(default_factory=list)
    peak_replicas: list[int] = field(default_factory=list)
    _energy: dict[str, _Energy] = field(default_factory=dict)
    # (shards, their profile) of the options served before a rollover.
    _before: list[tuple[list[Shard], HardwareProfileSpec]] = field(default_factory=list)

    def count_from(self, replica: str, counters: Mapping[str, float]) -> None:
        """Start counting `replica`'s energy from its counter now (the run's start)."""
        now = counters.get(ENERGY, 0.0)
        self._energy[replica] = _Energy(now, now)

    def read(self, replica: str, counters: Mapping[str, float]) -> None:
        """A scrape of `replica`: its energy counter so far (a replica that joined later starts at 0)."""
        energy = self._energy.setdefault(replica, _Energy())
        energy.last = counters.get(ENERGY, energy.last)

    def reached(self, counts: Sequence[int]) -> None:
        """The replica counts per shard now: the peak per shard index so far."""
        self.peak_replicas = [
            max(a, b) for a, b in itertools.zip_longest(self.peak_replicas, counts, fillvalue=0)
        ]

    def served_before(self, shards: list[Shard], profile: HardwareProfileSpec) -> None:
        """An option served until a rollover: its replicas still count until they stopped."""
        self._before.append((shards, profile))

    def summary(
        self, started: float, end: float, shards: list[Shard], profile: HardwareProfileSpec
    ) -> dict[str, Any]:
        """Replica-seconds, peak replicas, cost, energy, scale events and rollovers of the run from
        `started` to `end`, with `shards` on `profile` serving at the end."""
        replica_seconds: list[float] = []
        replica_cost = 0.0
        for served, on in [*self._before, (shards, profile)]:
            for shard in served:
                seconds = sum(r.seconds_within(started, end) for r in shard.replicas)
                replica_cost += seconds * float(on.cost_per_hour) / SECONDS_PER_HOUR
                replica_seconds += [0.0] * (shard.index + 1 - len(replica_seconds))
                replica_seconds[shard.index] += seconds
        joules = sum(max(0.0, e.last - e.baseline) for e in self._energy.values())
        cost = replica_cost + joules / JOULES_PER_KWH * float(self.md.price_per_kwh)
        return {
            "replicaSeconds": [round(s, 1) for s in replica_seconds],
            "peakReplicas": list(self.peak_replicas),
            "costUsd": round(cost, 8),
            "energyJoules": round(joules, 1),
            "scaleEvents": [e.as_dict() for e in self.events],
            "rollovers": [e.as_dict() for e in self.rollovers],
        }


def _money(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")
