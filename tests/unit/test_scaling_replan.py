"""The autoscaler's re-planning step (pure parts of frugal.operator.decision.scaling): whether a tick
re-plans, the status.replan it writes on a rollover, and the replicas the new revision starts with."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from frugal.operator.api.spec import parse_hardware_profile, parse_model_deployment
from frugal.operator.decision import scaling
from frugal.operator.decision.planner import Option
from frugal.operator.decision.replanning import ReplanMemory, ReplanReason


def hwp(name: str, cost: str, idle: float, peak: float) -> Any:
    return parse_hardware_profile({"metadata": {"name": name}, "spec": {
        "accelerator": {"kind": "cpu", "count": 1}, "costPerHour": cost,
        "power": {"idleWatts": idle, "maxWatts": peak}}})  # fmt: skip


# Cheap to rent but power-hungry under load, against dearer and frugal: at a few requests a second
# "small" is cheaper per request, at saturation (the deploy-time plan) "big" is.
PROFILES = {"small": hwp("small", "0.10", 1, 1000), "big": hwp("big", "0.12", 20, 21)}
BODY: dict[str, Any] = {
    "apiVersion": "frugal.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
    "spec": {"model": {"uri": "zoo://digits-mlp"},
             "serving": {"hardwareProfiles": ["small", "big"], "slo": {"latencyP95Ms": 20}},
             "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "power": {"pricePerKWh": "1.0"},
                             "replanning": {"windowSeconds": 0}}},
}  # fmt: skip
MEASURED = [
    {"hardwareProfile": p, "shards": 1, "latencyP95Ms": 5.0, "throughputRps": 1000.0} for p in PROFILES
]
STATUS: dict[str, Any] = {
    "selected": {"variant": "int8", "hardwareProfile": "big", "shards": 1},
    "variants": [{"name": "int8", "sizeBytes": 1000, "metric": {"name": "accuracy", "drop": 0.0},
                  "profiles": MEASURED}],
}  # fmt: skip
ON_BIG, ON_SMALL = Option("int8", "big", 1), Option("int8", "small", 1)


def md_with(**autoscaling: Any) -> Any:
    body = copy.deepcopy(BODY)
    body["spec"]["autoscaling"].update(autoscaling)
    return parse_model_deployment(body)


MD = md_with()


def tick(md: Any = MD, rate: float | None = 5.0, ready: tuple[int, ...] = (1,), memory: Any = None) -> Any:
    plan = scaling.plan_at_load(md, STATUS, PROFILES, rate)
    running = scaling.running_choice(STATUS)
    memory = ReplanMemory() if memory is None else memory
    return plan, *scaling.replan_at_load(md, plan, running, ready, scaling.replan_settings(md), memory, 100.0)


def test_a_few_requests_a_second_roll_over_from_the_deploy_time_choice_at_once_with_no_window() -> None:
    assert scaling.running_choice(STATUS) == ON_BIG
    assert scaling.replan_settings(MD).window_s == 0 and scaling.replan_settings(MD).cooldown == 0
    plan, decision, memory = tick()
    assert plan is not None and plan.chosen is not None and plan.chosen.profile == "small"
    assert decision is not None and decision.roll_over and decision.reason is ReplanReason.CHEAPER
    assert decision.running == ON_BIG and decision.target == ON_SMALL
    assert memory.last_rollover_at == 100.0
    # at hundreds of requests a second the running option is the cheapest: nothing to do
    _, busy, _ = tick(rate=500.0)
    assert busy is not None and not busy.roll_over and busy.reason is ReplanReason.ALREADY_CHEAPEST


def test_replanning_disabled_decides_nothing_and_keeps_the_memory() -> None:
    kept = ReplanMemory(candidate=ON_SMALL, since=3.0, last_rollover_at=1.0)
    _, decision, memory = tick(md_with(replanning={"enabled": False}), memory=kept)
    assert decision is None and memory is kept


def test_nothing_to_compare_without_a_running_option() -> None:
    plan = scaling.plan_at_load(MD, STATUS, PROFILES, 5.0)
    decision, memory = scaling.replan_at_load(
        MD, plan, scaling.running_choice({}), (1,), scaling.replan_settings(MD), ReplanMemory(), 0.0
    )
    assert decision is None and memory == ReplanMemory()


def test_no_replanning_while_a_rollover_is_under_way() -> None:
    # a shard of the running option has no ready replica at a load above 0: the previous revision serves
    kept = ReplanMemory(candidate=ON_SMALL, since=3.0)
    _, decision, memory = tick(ready=(0,), memory=kept)
    assert decision is None and memory is kept
    _, sharded, _ = tick(ready=(1, 0))
    assert sharded is None
    # with no load (scaled to zero) re-planning still runs, and holds for want of a load
    _, idle, _ = tick(rate=None, ready=(0,))
    assert idle is not None and not idle.roll_over and idle.reason is ReplanReason.NO_LOAD


def test_rollover_replicas_are_what_the_load_needs_within_the_spec_bounds() -> None:
    quiet = scaling.plan_at_load(MD, STATUS, PROFILES, 5.0)
    assert quiet is not None
    row = quiet.option("int8", "small", 1)
    assert row is not None and row.replicas == 1
    assert scaling.rollover_replicas(MD, quiet, ON_SMALL) == 1
    assert scaling.rollover_replicas(md_with(minReplicas=2), quiet, ON_SMALL) == 2  # at least the initial
    busy = scaling.plan_at_load(MD, STATUS, PROFILES, 2500.0)
    assert busy is not None
    row = busy.option("int8", "small", 1)
    assert row is not None and row.replicas == 3
    assert scaling.rollover_replicas(MD, busy, ON_SMALL) == 3
    flooded = scaling.plan_at_load(MD, STATUS, PROFILES, 9000.0)
    assert flooded is not None
    row = flooded.option("int8", "small", 1)
    assert row is not None and row.replicas is not None and row.replicas > 4
    assert scaling.rollover_replicas(MD, flooded, ON_SMALL) == 4  # at most maxReplicas
    # minReplicas 0 starts the new option at 1, not 0
    assert scaling.rollover_replicas(md_with(minReplicas=0), quiet, ON_SMALL) == 1


def test_replan_status_is_the_next_revision_of_the_generation() -> None:
    plan, decision, _ = tick()
    assert plan is not None and decision is not None and decision.roll_over
    first = scaling.replan_status(MD, STATUS, plan, decision, "2026-01-02T03:04:05Z")
    assert first["generation"] == 1 and first["revision"] == 1
    assert first["selected"] == {"variant": "int8", "hardwareProfile": "small", "shards": 1}
    assert first["from"] == {"variant": "int8", "hardwareProfile": "big", "shards": 1}
    assert first["replicas"] == 1 and first["loadRps"] == pytest.approx(5.0)
    assert first["reason"] == "Cheaper" and first["lastRolloverTime"] == "2026-01-02T03:04:05Z"
    assert float(first["costPer1kRequests"]) < float(first["fromCostPer1kRequests"])
    assert "small" in first["message"] and "big" in first["message"]
    # within the generation the revision counts up ...
    again = scaling.replan_status(MD, {**STATUS, "replan": first}, plan, decision, "2026-01-02T04:00:00Z")
    assert again["revision"] == 2
    third = scaling.replan_status(MD, {**STATUS, "replan": again}, plan, decision, "2026-01-02T05:00:00Z")
    assert third["revision"] == 3
    # ... and a new generation starts again at 1
    body = copy.deepcopy(BODY)
    body["metadata"]["generation"] = 2
    newer = parse_model_deployment(body)
    fresh = scaling.replan_status(newer, {**STATUS, "replan": third}, plan, decision, "2026-01-03T00:00:00Z")
    assert fresh["generation"] == 2 and fresh["revision"] == 1


def test_the_replanned_condition_names_both_options_and_their_costs() -> None:
    _, decision, _ = tick()
    assert decision is not None
    condition = scaling.replanned_condition(decision)
    assert (condition.type, condition.status, condition.reason) == ("Replanned", True, "Cheaper")
    assert "int8 on small" in condition.message and "int8 on big" in condition.message
    assert f"${decision.target_cost_per_1k_requests:.4g}" in condition.message
    assert f"${decision.running_cost_per_1k_requests:.4g}" in condition.message


def test_the_reconcilers_status_writes_keep_the_replanned_condition() -> None:
    # The autoscaler writes Replanned and asks the reconciler to act at once: the reconciler's own
    # status write must keep the condition, as it keeps MetricsAvailable and PowerCapped.
    from frugal.operator.control.reconciler import FOREIGN_CONDITIONS

    assert {scaling.REPLANNED, scaling.METRICS_AVAILABLE, scaling.POWER_CAPPED} <= FOREIGN_CONDITIONS


def test_an_idle_model_that_keeps_replicas_moves_to_the_hardware_cheapest_to_keep_waiting() -> None:
    # 0 req/s with minReplicas 1: each option is one idle replica; small's hour is the cheaper.
    _, idle, _ = tick(rate=0.0)
    assert idle is not None and idle.roll_over and idle.target == ON_SMALL
    assert "while idle" in idle.message
    status = scaling.replan_status(MD, STATUS, scaling.plan_at_load(MD, STATUS, PROFILES, 0.0), idle, "t")
    assert status["loadRps"] == 0.0 and status["replicas"] == 1
    # Scaled to zero (minReplicas 0), idle costs nothing on any option: nothing to move for.
    _, asleep, _ = tick(md_with(minReplicas=0), rate=0.0, ready=(0,))
    assert asleep is not None and not asleep.roll_over and asleep.reason is ReplanReason.NO_LOAD
