"""What the autoscaler reads from a ModelDeployment's status and writes back (pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from frugal.operator.decision.autoscaling import Memory, Observation, ShardObservation, Targets, recommend
from frugal.operator.decision.scaling import autoscaling_conditions, capacity_from_status, observed_status

TARGETS = Targets(
    slo_p95_ms=50.0, capacity_rps=100.0, max_replicas=4, cost_per_replica_hour=0.36,
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


def test_the_plan_at_the_observed_load_prices_every_option_from_status_and_marks_the_running_one() -> None:
    from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
    from frugal.operator.decision.scaling import plan_at_load, plan_at_load_status

    def hwp(name: str, cost: str, idle: float, peak: float) -> Any:
        return parse_hardware_profile({"metadata": {"name": name}, "spec": {
            "accelerator": {"kind": "cpu", "count": 1}, "costPerHour": cost,
            "power": {"idleWatts": idle, "maxWatts": peak}}})  # fmt: skip

    # cheap to rent but power-hungry under load, against dearer and frugal: the load decides
    profiles = {"small": hwp("small", "0.10", 1, 1000), "big": hwp("big", "0.12", 20, 21)}
    md = parse_model_deployment({
        "apiVersion": "frugal.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"model": {"uri": "zoo://digits-mlp"},
                 "serving": {"hardwareProfiles": ["small", "big"], "slo": {"latencyP95Ms": 20}},
                 "autoscaling": {"power": {"pricePerKWh": "1.0"}}}})  # fmt: skip
    measured = [
        {"hardwareProfile": p, "shards": 1, "latencyP95Ms": 5.0, "throughputRps": 1000.0} for p in profiles
    ]
    status = {
        "selected": {"variant": "int8", "hardwareProfile": "big", "shards": 1},
        "variants": [{"name": "int8", "sizeBytes": 1000, "metric": {"name": "accuracy", "drop": 0.0},
                      "profiles": measured}],
    }  # fmt: skip
    assert plan_at_load(md, status, profiles, None) is None
    # Idle with replicas kept (minReplicas 1): priced at idle, where the cheaper hour wins (small:
    # 0.10 + 1 W; big: 0.12 + 20 W) and the status says 0 req/s.
    idle = plan_at_load(md, status, profiles, 0.0)
    assert idle is not None and idle.chosen is not None and idle.chosen.profile == "small"
    idle_table = plan_at_load_status(idle, status)
    assert idle_table is not None and idle_table["loadRps"] == 0.0
    # Without a re-planning decision the reason and message are cleared, not left out: the status is
    # merge-patched, so an absent key would keep the last decision's words.
    assert idle_table["reason"] is None and idle_table["message"] is None
    # Idle at minReplicas 0 costs nothing anywhere (it scales to zero): nothing to re-plan for.
    sleepy = parse_model_deployment({**md.resource.to_dict(), "metadata": {"name": "digits", "namespace": "ml",
                                                                          "uid": "u", "generation": 1}}
                                    | {"spec": {**md.resource.spec.to_dict(),
                                                "autoscaling": {"minReplicas": 0, "power": {"pricePerKWh": "1.0"}}}})  # fmt: skip
    assert plan_at_load(sleepy, status, profiles, 0.0) is None

    def cheapest(rate: float) -> str:
        table = plan_at_load_status(plan_at_load(md, status, profiles, rate), status)
        assert table is not None and table["loadRps"] == pytest.approx(rate)
        assert [r["running"] for r in table["options"]].count(True) == 1
        return str(table["cheapest"]["hardwareProfile"])

    # per hour at utilisation u = rate / 1000: small 0.10 + (1 + 999 u) / 1000, big 0.12 + (20 + u) / 1000
    assert cheapest(5.0) == "small"  # 0.106 against 0.140
    assert cheapest(500.0) == "big"  # 0.600 against 0.140
