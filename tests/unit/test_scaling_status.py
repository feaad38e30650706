"""What the autoscaler reads from a ModelDeployment's status and writes back (pure parts)."""

from __future__ import annotations

import pytest

from frugal.operator.decision.autoscaling import Memory, Observation, ShardObservation, Targets, recommend
from frugal.operator.decision.scaling import autoscaling_conditions, capacity_from_status, observed_status

TARGETS = Targets(
    latency_p95_ms=50.0, capacity_rps=100.0, max_replicas=4, cost_per_replica_hour=0.36,
    price_per_kwh=0.15, idle_watts=10.0, max_watts=60.0,
)  # fmt: skip


def test_capacity_is_the_selected_rows_profiled_throughput() -> None:
    status = {
        "selected": {"variant": "int8", "hardwareProfile": "cpu", "shards": 1},
        "variants": [
            {"name": "fp32", "profiles": [{"hardwareProfile": "cpu", "throughputRps": 10.0}]},
            {"name": "int8", "profiles": [{"hardwareProfile": "gpu", "throughputRps": 900.0},
                                          {"hardwareProfile": "cpu", "throughputRps": 120.5}]},
        ],
    }  # fmt: skip
    assert capacity_from_status(status) == 120.5
    assert capacity_from_status({**status, "selected": {"variant": "int8", "hardwareProfile": "tpu"}}) is None


def test_observed_status_prices_the_ready_replicas_at_the_observed_rate() -> None:
    seen = Observation(
        (ShardObservation(request_rate=50.0, latency_p95_ms=21.37, watts=42.0, replicas=2, ready=2),)
    )
    answer, _ = recommend(seen, (2,), TARGETS, Memory(), 0.0)
    status = observed_status(answer, seen, (2,), TARGETS)
    per_hour = 2 * 0.36 + 42.0 / 1000 * 0.15
    assert status["cost"]["perHour"] == f"{per_hour:.4f}"
    assert float(status["cost"]["per1kRequests"]) == pytest.approx(per_hour / 3600 / 50 * 1000, rel=0.05)
    assert status["energy"] == {"watts": 42.0, "joulesPerRequest": 0.84}  # measured watts, not predicted
    assert status["latencyP95Ms"] == 21.0 and status["requestRate"] == 50.0
    assert status["autoscaling"]["desiredReplicas"] == [2]


def test_stale_metrics_clear_the_observed_numbers_and_say_why() -> None:
    seen = Observation((ShardObservation(replicas=3, ready=3),), stale="query request_rate failed: refused")
    answer, _ = recommend(seen, (3,), TARGETS, Memory(), 0.0)
    status = observed_status(answer, seen, (3,), TARGETS)
    assert status["latencyP95Ms"] is None and status["requestRate"] is None  # removed by the merge patch
    assert status["cost"]["perHour"] == f"{3 * 0.36 + 30.0 / 1000 * 0.15:.4f}"  # idle watts of what runs
    metrics, power = autoscaling_conditions(answer, seen, TARGETS)
    assert (metrics.type, metrics.status, metrics.reason) == ("MetricsAvailable", False, "MetricsStale")
    assert "refused" in metrics.message
    assert (power.type, power.status, power.reason) == ("PowerCapped", False, "NoPowerCap")


def test_a_binding_cap_is_a_true_power_capped_condition() -> None:
    capped = Targets(**{**TARGETS.__dict__, "cap_watts": 100.0})
    seen = Observation((ShardObservation(request_rate=400.0, latency_p95_ms=45.0, replicas=1, ready=1),))
    answer, _ = recommend(seen, (1,), capped, Memory(), 0.0)
    _, power = autoscaling_conditions(answer, seen, capped)
    assert power.status is True and power.reason == "PowerCapped" and "cap 100 W" in power.message
