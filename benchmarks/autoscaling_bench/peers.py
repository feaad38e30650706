"""The peers frugal is compared with, and what every autoscaler reads at a tick (:class:`View`).

* static: the fewest replicas that keep the trace's peak within the SLO, never changed;
* HPA-style: CPU utilisation target with the HPA's defaults (15 s sync, 10% tolerance, unready pods
  counted at 0% on scale-up, scale-up limit max(100%, 4 pods) per 15 s, scale-down stabilisation =
  the highest recommendation of the last 300 s);
* KEDA-style: the Prometheus scaler's ``desired = ceil(rps / threshold)`` (an AverageValue external
  metric: the same 10% tolerance) fed to the same HPA behaviour;
* a reference limit: the trace's rate at the tick and the true capacity (not a peer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from frugal.operator.decision import observations

HPA_DOWN_WINDOW_S = 300.0
HPA_TOLERANCE = 0.1


@dataclass
class View:
    """What an autoscaler can read at a tick."""

    now: float
    requested: int
    ready: int
    observation: observations.Observation
    rps: float  # rate(frugal_request_duration_seconds_count[1m]), summed over replicas
    cpu_utilisation: float  # mean over ready replicas, of the CPU request, over the last 15 s
    offered_rps: float = 0.0  # the trace's rate at this instant: only the reference limit reads it
    rolling_over: bool = False  # a re-planning rollover's replicas are starting: frugal's reads it


class HpaBehavior:
    """The HPA's default behaviour: up at once within max(100%, 4 pods) per 15 s, down to the highest
    recommendation of the last 300 s."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.recommendations: list[tuple[float, int]] = []

    def apply(self, now: float, current: int, desired: int) -> int:
        desired = max(self.low, min(self.high, desired))
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - HPA_DOWN_WINDOW_S]
        self.recommendations.append((now, desired))
        down = max(r for _, r in self.recommendations)
        count = desired if desired > current else min(current, down)
        if count > current:
            count = min(count, max(2 * current, current + 4))
        return max(self.low, min(self.high, count))


class Static:
    name = "static"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def decide(self, view: View) -> int:
        return self.replicas


class Hpa:
    """CPU utilisation target (replica_calculator.go's GetResourceReplicas)."""

    name = "HPA-style"

    def __init__(self, target: float, low: int, high: int) -> None:
        self.target = target
        self.behavior = HpaBehavior(low, high)

    def decide(self, view: View) -> int:
        current, ready = view.requested, view.ready
        unready = max(0, current - ready)
        ratio = view.cpu_utilisation / self.target
        if ready == 0:
            desired = current
        elif not (unready > 0 and ratio > 1.0):
            desired = current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(ratio * ready)
        else:
            # scale-up with pods not ready yet: they count as 0% used
            new_ratio = view.cpu_utilisation * ready / (self.target * (ready + unready))
            if abs(1.0 - new_ratio) <= HPA_TOLERANCE or new_ratio < 1.0:
                desired = current
            else:
                desired = max(current, math.ceil(new_ratio * (ready + unready)))
        return self.behavior.apply(view.now, current, desired)


class Keda:
    """KEDA's Prometheus scaler: an AverageValue external metric, desired = ceil(rps / threshold)."""

    name = "KEDA-style"

    def __init__(self, threshold: float, low: int, high: int) -> None:
        self.threshold = threshold
        self.behavior = HpaBehavior(low, high)

    def decide(self, view: View) -> int:
        current = view.requested
        ratio = view.rps / (self.threshold * max(current, 1))
        desired = current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(view.rps / self.threshold)
        return self.behavior.apply(view.now, current, desired)


class ReactiveLimit:
    """A reference, not a peer: every tick it knows the trace's rate *at that instant* and each
    replica's true capacity within the SLO, and asks for that rate at the same utilisation target
    as frugal. No policy that reacts every 15 s to what has happened can do better; the gap between
    it and 100% is what reacting costs on that trace."""

    name = "limit: instant rate, same tick"

    def __init__(self, slo_capacity_rps: float, utilisation: float, low: int, high: int) -> None:
        self.capacity, self.utilisation, self.low, self.high = slo_capacity_rps, utilisation, low, high

    def decide(self, view: View) -> int:
        wanted = math.ceil(view.offered_rps / (self.utilisation * self.capacity) - 1e-9)
        return max(self.low, min(self.high, wanted))
