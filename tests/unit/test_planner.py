"""The planner: cheapest (variant, hardware profile, shards) meeting the SLO and accuracy budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest

from frugal.operator.decision.planner import (
    Measurement,
    Objectives,
    PlanningError,
    Profile,
    Variant,
    plan,
    why_not,
)

CPU = Profile("cpu-small", cost_per_hour=0.10, idle_watts=20, max_watts=60)
GPU = Profile("gpu-t4", cost_per_hour=0.35, idle_watts=30, max_watts=70)
GPU_HOT = Profile("gpu-hot", cost_per_hour=0.35, idle_watts=30, max_watts=300)


def variant(name: str, drop: float, *measurements: Measurement, size: int = 1000) -> Variant:
    return Variant(name=name, size_bytes=size, accuracy_drop=drop, measurements=measurements)


FP32 = variant("fp32", 0.0, Measurement("cpu-small", 40, 100), Measurement("gpu-t4", 5, 2000))
INT8 = variant("int8", 0.004, Measurement("cpu-small", 20, 400), Measurement("gpu-t4", 4, 2500))
PRUNED = variant("pruned", 0.03, Measurement("cpu-small", 10, 900), Measurement("gpu-t4", 3, 3000))


@dataclass(frozen=True)
class Case:
    name: str
    variants: tuple[Variant, ...]
    profiles: tuple[Profile, ...]
    objectives: Objectives
    chosen: tuple[str, str, int] | None


CASES = [
    Case(
        "cheapest per request wins even on the pricier profile (throughput)",
        (FP32, INT8, PRUNED),
        (CPU, GPU),
        Objectives(50, 0.01, 0.15),
        ("int8", "gpu-t4", 1),
    ),
    Case(
        "a tight SLO rules out the CPU",
        (FP32,),
        (CPU, GPU),
        Objectives(10, 0.01, 0.15),
        ("fp32", "gpu-t4", 1),
    ),
    Case(
        "the accuracy budget rules out the cheapest variant",
        (FP32, INT8, PRUNED),
        (CPU,),
        Objectives(50, 0.01, 0.15),
        ("int8", "cpu-small", 1),
    ),
    Case(
        "a looser budget admits it",
        (FP32, INT8, PRUNED),
        (CPU,),
        Objectives(50, 0.05, 0.15),
        ("pruned", "cpu-small", 1),
    ),
    Case(
        "nothing meets the SLO",
        (FP32, INT8),
        (CPU,),
        Objectives(5, 0.01, 0.15),
        None,
    ),
    Case(
        "a sub-linear load still needs whole replicas: the small CPU profile wins",
        (INT8,),
        (CPU, GPU),
        Objectives(50, 0.01, 0.15, expected_rps=50),
        ("int8", "cpu-small", 1),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_choice(case: Case) -> None:
    result = plan(case.variants, case.profiles, case.objectives)
    got = (
        None
        if result.chosen is None
        else (result.chosen.variant, result.chosen.profile, result.chosen.shards)
    )
    assert got == case.chosen
    assert len(result.table) == len(case.variants) * len(case.profiles) * len(case.objectives.shard_counts)
    if result.chosen is not None:
        cheapest = min(r.cost_per_request or math.inf for r in result.table if r.feasible)
        assert result.chosen.cost_per_request == cheapest


def test_cost_formula_without_load_runs_one_replica_flat_out() -> None:
    profile = Profile("p", cost_per_hour=0.36, idle_watts=10, max_watts=110)
    result = plan([variant("v", 0, Measurement("p", 5, 100))], [profile], Objectives(50, 0.01, 0.2))
    row = result.chosen
    assert row is not None
    assert row.replicas == 1
    assert row.watts == pytest.approx(110)
    assert row.cost_per_hour == pytest.approx(0.36 + 0.110 * 0.2)
    assert row.cost_per_request == pytest.approx((0.36 + 0.022) / (3600 * 100))
    assert row.energy_per_request_joules == pytest.approx(1.1)


def test_cost_formula_with_load_rounds_replicas_up_and_scales_power_with_utilisation() -> None:
    profile = Profile("p", cost_per_hour=0.36, idle_watts=10, max_watts=110)
    objectives = Objectives(50, 0.01, 0.2, expected_rps=150)
    row = plan([variant("v", 0, Measurement("p", 5, 100))], [profile], objectives).chosen
    assert row is not None
    assert row.replicas == 2
    assert row.watts == pytest.approx(2 * (10 + 100 * 0.75))
    assert row.cost_per_hour == pytest.approx(0.72 + 0.170 * 0.2)
    assert row.cost_per_request == pytest.approx(0.754 / (3600 * 150))


def test_energy_price_can_flip_the_choice() -> None:
    cheap_but_hot = Profile("hot", cost_per_hour=0.10, idle_watts=100, max_watts=1000)
    dear_but_cool = Profile("cool", cost_per_hour=0.20, idle_watts=10, max_watts=50)
    v = variant("v", 0, Measurement("hot", 5, 100), Measurement("cool", 5, 100))
    free_power = plan([v], [cheap_but_hot, dear_but_cool], Objectives(50, 0.01, price_per_kwh=0.0))
    dear_power = plan([v], [cheap_but_hot, dear_but_cool], Objectives(50, 0.01, price_per_kwh=0.5))
    assert free_power.chosen is not None and free_power.chosen.profile == "hot"
    assert dear_power.chosen is not None and dear_power.chosen.profile == "cool"


def test_ties_go_to_lower_power_and_the_reason_says_so() -> None:
    v = variant("v", 0, Measurement("gpu-t4", 5, 1000), Measurement("gpu-hot", 5, 1000))
    result = plan([v], [GPU_HOT, GPU], Objectives(50, 0.01, price_per_kwh=0.0))
    assert result.chosen is not None and result.chosen.profile == "gpu-t4"
    assert "lower power" in result.reason


def test_every_row_says_why() -> None:
    result = plan([FP32, INT8, PRUNED], [CPU, GPU], Objectives(10, 0.01, 0.15))
    reasons = {(r.variant, r.profile): r.reason for r in result.table}
    assert "drop 0.03 exceeds the budget 0.01" in reasons[("pruned", "gpu-t4")]
    assert "exceeds the SLO of 10 ms" in reasons[("fp32", "cpu-small")]
    assert reasons[("int8", "gpu-t4")].startswith("chosen: $")
    assert "per 1k requests" in reasons[("fp32", "gpu-t4")]
    assert "int8 on gpu-t4 with 1 shard" in result.reason
    assert "next: fp32 on gpu-t4" in result.reason


def test_single_profile_without_profiling_falls_back_to_the_compression_report() -> None:
    v = Variant("fp32", 1000, 0.0, report_latency_p95_ms=3.0, report_throughput_rps=500.0)
    result = plan([v], [CPU], Objectives(50, 0.01, 0.15))
    assert result.used_fallback
    assert result.chosen is not None and result.chosen.source == "compression-report"
    assert "compression report" in result.reason


def test_several_profiles_without_profiling_do_not_guess() -> None:
    v = Variant("fp32", 1000, 0.0, report_latency_p95_ms=3.0, report_throughput_rps=500.0)
    result = plan([v], [CPU, GPU], Objectives(50, 0.01, 0.15))
    assert result.chosen is None and not result.used_fallback
    assert "no latency measurements" in result.reason
    assert all("no latency measured on" in row.reason for row in result.table)


def test_unmeasured_shard_counts_are_estimated_with_a_hop_per_stage() -> None:
    v = variant("v", 0, Measurement("cpu-small", 10, 100))
    result = plan([v], [CPU], Objectives(50, 0.01, 0.15, shard_counts=(1, 3), hop_latency_ms=2))
    three = next(r for r in result.table if r.shards == 3)
    assert three.source == "estimated" and three.latency_p95_ms == pytest.approx(14)
    assert result.chosen is not None and result.chosen.shards == 1


def test_memory_forces_sharding_and_measured_shards_are_used_as_is() -> None:
    small = Profile("small", cost_per_hour=0.1, idle_watts=5, max_watts=20, memory_bytes=600)
    v = variant("v", 0, Measurement("small", 10, 100), Measurement("small", 12, 180, shards=2), size=1000)
    result = plan([v], [small], Objectives(50, 0.01, 0.15, shard_counts=(1, 2)))
    one = next(r for r in result.table if r.shards == 1)
    assert "does not fit" in one.reason
    assert result.chosen is not None and result.chosen.shards == 2
    assert result.chosen.source == "profiling" and result.chosen.throughput_rps == 180


def test_the_memory_check_uses_the_largest_stage_file_and_uncut_counts_are_rejected() -> None:
    """An embedding table is one indivisible block: two stages of a 1000-byte model may be 700 + 300,
    and 700 does not fit where 500 (size / shards) would have."""
    small = Profile("small", cost_per_hour=0.1, idle_watts=5, max_watts=20, memory_bytes=600)
    measured = (
        Measurement("small", 10, 100),
        Measurement("small", 12, 90, shards=2),
        Measurement("small", 14, 80, shards=3),
    )
    v = replace(variant("v", 0, *measured, size=1000), stage_bytes=((2, 700), (4, 260)))
    result = plan([v], [small], Objectives(50, 0.01, 0.15, shard_counts=(1, 2, 3, 4)))
    rows = {r.shards: r for r in result.table}
    assert "does not fit: 0.001 MB per pod" in rows[1].reason
    assert "does not fit: 0.0007 MB per shard (its largest stage file)" in rows[2].reason
    assert "compression made no 3-shard stage files" in rows[3].reason
    assert result.chosen is not None and result.chosen.shards == 4
    assert v.bytes_per_pod(4) == 260 and replace(v, stage_bytes=None).bytes_per_pod(2) == 500


def test_measured_server_memory_overrides_the_file_sizes() -> None:
    """A server holds the runtime and the interpreter besides the weights: what profiling measured
    (each count's largest stage server) decides whether a count fits, not the file bytes."""
    small = Profile("small", cost_per_hour=0.1, idle_watts=5, max_watts=20, memory_bytes=200_000_000)
    measured = (
        Measurement("small", 10, 100, memory_bytes=250_000_000),
        Measurement("small", 12, 90, shards=2, memory_bytes=190_000_000),
    )
    v = replace(variant("v", 0, *measured, size=90_000_000), stage_bytes=((2, 47_000_000),))
    result = plan([v], [small], Objectives(50, 0.01, 0.15, shard_counts=(1, 2)))
    rows = {r.shards: r for r in result.table}
    assert "does not fit: 250 MB measured peak resident memory of a server > 200 MB" in rows[1].reason
    assert result.chosen is not None and result.chosen.shards == 2


@pytest.mark.parametrize(
    ("objectives", "profiles", "needle"),
    [
        (Objectives(0, 0.01), (CPU,), "latencyP95Ms"),
        (Objectives(50, 0.01, shard_counts=(0,)), (CPU,), "shards"),
        (Objectives(50, 0.01), (), "hardwareProfiles"),
        (Objectives(50, 0.01), (Profile("bad", 0.1, 50, 10),), "maxWatts"),
    ],
)
def test_unusable_inputs_name_the_field(
    objectives: Objectives, profiles: tuple[Profile, ...], needle: str
) -> None:
    with pytest.raises(PlanningError, match=needle):
        plan([FP32], profiles, objectives)


def test_no_choice_names_what_to_change() -> None:
    budget = plan([PRUNED], [CPU], Objectives(50, 0.01))
    slo = plan([FP32], [CPU], Objectives(5, 0.01))
    assert "accuracyBudget.maxDrop" in budget.reason
    assert "latencyP95Ms" in slo.reason and "fp32 on cpu-small at 40 ms" in slo.reason


def test_costs_within_the_tolerance_count_as_equal_and_the_smaller_model_wins() -> None:
    big = variant("fp32", 0.0, Measurement("cpu-small", 10, 1050), size=200_000)
    small = variant("int8", 0.0, Measurement("cpu-small", 10, 1000), size=50_000)
    strict = plan([big, small], [CPU], Objectives(50, 0.01, 0.15))
    tolerant = plan([big, small], [CPU], Objectives(50, 0.01, 0.15, cost_tolerance=0.10))
    assert strict.chosen is not None and strict.chosen.variant == "fp32"
    assert tolerant.chosen is not None and tolerant.chosen.variant == "int8"
    assert "smaller model" in tolerant.reason and "within 10%" in tolerant.reason


def test_a_real_saving_beyond_the_tolerance_still_wins() -> None:
    big = variant("fp32", 0.0, Measurement("cpu-small", 10, 2000), size=200_000)
    small = variant("int8", 0.0, Measurement("cpu-small", 10, 1000), size=50_000)
    result = plan([big, small], [CPU], Objectives(50, 0.01, 0.15, cost_tolerance=0.10))
    assert result.chosen is not None and result.chosen.variant == "fp32"
    assert "lowest cost per request" in result.reason


def test_every_row_of_the_plan_table_says_why_it_lost() -> None:
    result = plan([FP32, INT8, PRUNED], [CPU, GPU], Objectives(30, 0.01, 0.15))
    verdicts = {(r.variant, r.profile): why_not(r, result) for r in result.table}
    assert result.chosen is not None
    assert verdicts[(result.chosen.variant, result.chosen.profile)] == "chosen"
    assert "drop 0.03 exceeds the budget 0.01" in verdicts[("pruned", "cpu-small")]
    assert "p95 40 ms exceeds the SLO of 30 ms" in verdicts[("fp32", "cpu-small")]
    losers = [v for (name, _), v in verdicts.items() if v != "chosen" and name != "pruned" and "SLO" not in v]
    assert losers and all(v.startswith("costs ") and "more per request" in v for v in losers), verdicts


def test_a_near_tie_loser_is_told_what_decided_it() -> None:
    big = variant("fp32", 0.0, Measurement("cpu-small", 10, 1050), size=200_000)
    small = variant("int8", 0.0, Measurement("cpu-small", 10, 1000), size=50_000)
    tolerant = plan([big, small], [CPU], Objectives(50, 0.01, 0.15, cost_tolerance=0.10))
    loser = tolerant.option("fp32", "cpu-small", 1)
    assert loser is not None
    assert "within 10% of the choice's cost" in why_not(loser, tolerant)
    assert "the smaller model, 50000 vs 200000 bytes" in why_not(loser, tolerant)
