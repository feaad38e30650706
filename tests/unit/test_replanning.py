"""Re-planning at the observed load: the planner prices each option at the load, and the policy rolls
over to a cheaper option only beyond the tolerance, for a window, at most once per cooldown."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from frugal.operator.decision import decide
from frugal.operator.decision.planner import (
    Measurement,
    Objectives,
    Option,
    Plan,
    Profile,
    Variant,
    plan,
    price,
)
from frugal.operator.decision.replanning import (
    ROLLOVER_REASONS,
    ReplanDecision,
    ReplanMemory,
    ReplanReason,
    ReplanSettings,
    plan_table_rows,
    replan,
)

ROOT = Path(__file__).resolve().parents[2]
PRICE_PER_KWH = 0.15
SLO_MS = 50.0

# A cheap, slow CPU profile and a dear, fast GPU profile; one variant measured on both.
CPU = Profile("cpu-small", cost_per_hour=0.10, idle_watts=20, max_watts=60)
GPU = Profile("gpu-l4", cost_per_hour=0.60, idle_watts=50, max_watts=300)
THROUGHPUT = {"cpu-small": 50.0, "gpu-l4": 1000.0}
MODEL = Variant(
    "int8", 1000, 0.0, measurements=(Measurement("cpu-small", 20, 50), Measurement("gpu-l4", 3, 1000))
)
ON_CPU = Option("int8", "cpu-small", 1)
ON_GPU = Option("int8", "gpu-l4", 1)

SETTINGS = ReplanSettings()  # 300 s window, 10% tolerance, 600 s cooldown
TICK_S = 30.0


def objectives(load: float | None, tolerance: float = decide.COST_TOLERANCE) -> Objectives:
    return Objectives(
        SLO_MS, 0.01, PRICE_PER_KWH, expected_rps=load, cost_tolerance=tolerance, shard_counts=(1,)
    )


def plan_at(
    load: float | None,
    profiles: Sequence[Profile] = (CPU, GPU),
    variants: Sequence[Variant] = (MODEL,),
    tolerance: float = decide.COST_TOLERANCE,
) -> Plan:
    return plan(variants, profiles, objectives(load, tolerance))


def formula(profile: Profile, throughput: float, load: float) -> tuple[int, float, float]:
    """(replicas, watts, USD per request) of one shard at `load`, from the formulas in the brief."""
    replicas = math.ceil(load / throughput)
    utilisation = load / (replicas * throughput)
    watts = replicas * (profile.idle_watts + (profile.max_watts - profile.idle_watts) * utilisation)
    per_hour = replicas * profile.cost_per_hour + watts / 1000.0 * PRICE_PER_KWH
    return replicas, watts, per_hour / (3600.0 * load)


def cost_per_1k(profile: Profile, load: float) -> float:
    return formula(profile, THROUGHPUT[profile.name], load)[2] * 1000.0


def run(
    ticks: Iterable[tuple[float, Plan]],
    running: Option,
    settings: ReplanSettings = SETTINGS,
    memory: ReplanMemory | None = None,
) -> list[tuple[float, ReplanDecision]]:
    """Feed (time, plan at the load) through the policy, rolling over at once when it says so."""
    memory = memory or ReplanMemory()
    decisions = []
    for now, at_load in ticks:
        decision, memory = replan(at_load, running, settings, memory, now)
        decisions.append((now, decision))
        if decision.roll_over:
            assert decision.target is not None
            running = decision.target
    return decisions


def steady(load: float, start: float, end: float, plans: Callable[[float], Plan] = plan_at) -> list:
    at_load = plans(load)
    return [(start + i * TICK_S, at_load) for i in range(int((end - start) / TICK_S))]


def rollovers(decisions: list[tuple[float, ReplanDecision]]) -> list[tuple[float, ReplanDecision]]:
    return [(t, d) for t, d in decisions if d.roll_over]


# -- the planner at a load ---------------------------------------------------------------------------


@pytest.mark.parametrize("load", [1.0, 5.0, 50.0, 100.0, 310.0, 500.0, 2000.0])
def test_the_planner_prices_every_option_with_the_replicas_the_load_needs(load: float) -> None:
    result = plan_at(load)
    for row in result.table:
        profile = CPU if row.profile == CPU.name else GPU
        replicas, watts, per_request = formula(profile, THROUGHPUT[row.profile], load)
        assert row.replicas == replicas
        assert row.watts == pytest.approx(watts)
        assert row.cost_per_request == pytest.approx(per_request)
        assert row.energy_per_request_joules == pytest.approx(watts / load)
    cpu, gpu = cost_per_1k(CPU, load), cost_per_1k(GPU, load)
    # Only loads where one option is cheaper beyond the planner's tolerance, so the price decides.
    assert max(cpu, gpu) > min(cpu, gpu) * (1 + decide.COST_TOLERANCE)
    assert result.chosen is not None
    assert result.chosen.profile == (CPU.name if cpu < gpu else GPU.name)


def test_a_few_requests_a_second_go_to_the_cpu_and_hundreds_to_the_gpu() -> None:
    assert cost_per_1k(CPU, 5.0) < cost_per_1k(GPU, 5.0)
    assert cost_per_1k(GPU, 500.0) < cost_per_1k(CPU, 500.0)
    quiet, busy, unknown = plan_at(5.0), plan_at(500.0), plan_at(None)
    assert quiet.chosen is not None and Option.of(quiet.chosen) == ON_CPU
    assert busy.chosen is not None and Option.of(busy.chosen) == ON_GPU
    cpu_row = busy.option("int8", "cpu-small", 1)
    assert cpu_row is not None and cpu_row.replicas == 10  # ceil(500 / 50)
    # Without a load every option runs one replica flat out (L = T), where the GPU is cheaper per
    # request: the choice a deploy-time plan makes for a model that then sees a few requests a second.
    assert formula(GPU, 1000.0, 1000.0)[2] < formula(CPU, 50.0, 50.0)[2]
    assert unknown.chosen is not None and Option.of(unknown.chosen) == ON_GPU
    assert {r.replicas for r in unknown.table} == {1}


def test_shard_counts_are_the_ones_asked_for_each_priced_at_the_load() -> None:
    asked = tuple(range(1, 4))
    result = plan(
        [MODEL], [CPU], Objectives(SLO_MS, 0.01, PRICE_PER_KWH, shard_counts=asked, expected_rps=120)
    )
    assert sorted(r.shards for r in result.table) == [1, 2, 3]
    for row in result.table:
        replicas, _, _ = formula(CPU, 50.0, 120.0)
        assert row.replicas == replicas  # replica throughput is kept when a shard count is estimated
        assert row.cost_per_hour == pytest.approx(
            replicas * row.shards * CPU.cost_per_hour + row.watts / 1000 * PRICE_PER_KWH
        )
        assert row.watts == pytest.approx(row.shards * formula(CPU, 50.0, 120.0)[1])
    assert result.chosen is not None and result.chosen.shards == 1  # each shard is another pod


def test_price_gives_the_row_plan_would_and_prices_options_outside_the_plan() -> None:
    at_load = objectives(500.0)
    result = plan([MODEL], [CPU, GPU], at_load)
    row = result.option("int8", "cpu-small", 1)
    assert row is not None and not row.reason.startswith("chosen")
    assert price(MODEL, CPU, 1, at_load) == row
    two = price(MODEL, CPU, 2, at_load)  # not among shard_counts
    assert result.option("int8", "cpu-small", 2) is None
    assert two.shards == 2 and two.replicas == 10
    assert two.cost_per_request == pytest.approx(2 * (row.cost_per_request or 0.0))


# -- the policy ----------------------------------------------------------------------------------------


def test_no_rollover_before_the_window_and_one_after_it() -> None:
    decisions = run(steady(500.0, 0.0, 600.0), ON_CPU)
    early = [d for t, d in decisions if t < SETTINGS.window_s]
    assert early and all(not d.roll_over and d.reason is ReplanReason.WAITING for d in early)
    assert all(d.roll_over_at == pytest.approx(SETTINGS.window_s) for d in early)
    moved = rollovers(decisions)
    assert len(moved) == 1
    when, decision = moved[0]
    assert when == pytest.approx(SETTINGS.window_s)
    assert decision.reason is ReplanReason.CHEAPER and decision.target == ON_GPU
    assert decision.running == ON_CPU
    cpu, gpu = cost_per_1k(CPU, 500.0), cost_per_1k(GPU, 500.0)
    assert decision.running_cost_per_1k_requests == pytest.approx(cpu)
    assert decision.target_cost_per_1k_requests == pytest.approx(gpu)
    assert decision.saving == pytest.approx(1 - gpu / cpu)
    assert str(ON_CPU) in decision.message and str(ON_GPU) in decision.message
    assert f"${cpu:.4g}" in decision.message and f"${gpu:.4g}" in decision.message
    assert "500 req/s" in decision.message and "\n" not in decision.message
    # Served from then on, the GPU is the choice: nothing more to do.
    assert {d.reason for t, d in decisions if t > when} == {ReplanReason.ALREADY_CHEAPEST}


def test_one_tick_without_the_saving_starts_the_window_again() -> None:
    ticks = [*steady(500.0, 0.0, 150.0), (150.0, plan_at(5.0)), *steady(500.0, 180.0, 900.0)]
    decisions = run(ticks, ON_CPU)
    assert dict(decisions)[150.0].reason is ReplanReason.ALREADY_CHEAPEST
    assert [t for t, _ in rollovers(decisions)] == [180.0 + SETTINGS.window_s]


def test_a_different_better_option_restarts_the_timer() -> None:
    big = Profile("gpu-big", cost_per_hour=2.0, idle_watts=100, max_watts=400)
    model = Variant(
        "int8",
        1000,
        0.0,
        measurements=(*MODEL.measurements, Measurement("gpu-big", 2, 5000)),
    )

    def plans(load: float) -> Plan:
        return plan_at(load, (CPU, GPU, big), (model,))

    busy, busier = plans(500.0).chosen, plans(5000.0).chosen
    assert busy is not None and busy.profile == GPU.name
    assert busier is not None and busier.profile == big.name
    ticks = steady(500.0, 0.0, 180.0, plans) + steady(5000.0, 180.0, 900.0, plans)
    decisions = run(ticks, ON_CPU)
    moved = rollovers(decisions)
    assert [(t, d.target) for t, d in moved] == [(180.0 + SETTINGS.window_s, Option("int8", "gpu-big", 1))]


def test_costs_crossing_within_the_tolerance_never_roll_over() -> None:
    # Two GPUs of nearly the same price per request: at 5000 req/s the first is cheaper, at 4750 the
    # second, each by less than 10%. The planner (asked without a tolerance) flips between them.
    a = Profile("gpu-a", cost_per_hour=0.50, idle_watts=40, max_watts=200)
    b = Profile("gpu-b", cost_per_hour=0.26, idle_watts=20, max_watts=100)
    model = Variant(
        "int8", 1000, 0.0, measurements=(Measurement("gpu-a", 3, 500), Measurement("gpu-b", 3, 250))
    )
    for load in (5000.0, 4750.0):
        ca, cb = formula(a, 500.0, load)[2], formula(b, 250.0, load)[2]
        assert max(ca, cb) < min(ca, cb) * (1 + SETTINGS.cost_tolerance)
    assert formula(a, 500.0, 5000.0)[2] < formula(b, 250.0, 5000.0)[2]
    assert formula(b, 250.0, 4750.0)[2] < formula(a, 500.0, 4750.0)[2]

    def plans(load: float) -> Plan:
        return plan_at(load, (a, b), (model,), tolerance=0.0)

    phases = [(5000.0 if i % 2 else 4750.0, i * 400.0) for i in range(8)]
    ticks = [tick for load, start in phases for tick in steady(load, start, start + 400.0, plans)]
    chosen = {(at_load.chosen.profile if at_load.chosen else None) for _, at_load in ticks}
    assert chosen == {"gpu-a", "gpu-b"}
    held = run(ticks, Option("int8", "gpu-a", 1))
    assert rollovers(held) == []
    assert {d.reason for _, d in held} == {ReplanReason.WITHIN_TOLERANCE, ReplanReason.ALREADY_CHEAPEST}
    within = next(d for _, d in held if d.reason is ReplanReason.WITHIN_TOLERANCE)
    assert "within the 10% tolerance" in within.message
    # Without the tolerance the same loads would move it back and forth.
    assert len(rollovers(run(ticks, Option("int8", "gpu-a", 1), ReplanSettings(cost_tolerance=0.0)))) > 1


def test_costs_oscillating_across_the_tolerance_roll_over_once() -> None:
    # At 310 req/s the CPU costs over 10% more than the GPU, at 280 req/s less than 10% more.
    assert cost_per_1k(CPU, 310.0) > cost_per_1k(GPU, 310.0) * 1.1
    assert cost_per_1k(GPU, 280.0) < cost_per_1k(CPU, 280.0) < cost_per_1k(GPU, 280.0) * 1.1
    every_tick = [(i * TICK_S, plan_at(310.0 if i % 2 else 280.0)) for i in range(60)]
    assert rollovers(run(every_tick, ON_CPU)) == []  # the saving never lasts a window
    phases = [(310.0 if i % 2 == 0 else 280.0, i * 400.0) for i in range(8)]
    slow = [tick for load, start in phases for tick in steady(load, start, start + 400.0)]
    decisions = run(slow, ON_CPU)
    assert [(t, d.target) for t, d in rollovers(decisions)] == [(SETTINGS.window_s, ON_GPU)]


def test_costs_swinging_beyond_the_tolerance_roll_over_at_most_once_per_cooldown() -> None:
    phase = SETTINGS.window_s + 60.0
    phases = [(500.0 if i % 2 == 0 else 50.0, i * phase) for i in range(10)]
    ticks = [tick for load, start in phases for tick in steady(load, start, start + phase)]
    moved = [t for t, _ in rollovers(run(ticks, ON_CPU))]
    assert SETTINGS.cooldown == pytest.approx(2 * SETTINGS.window_s)
    assert len(moved) >= 2
    assert all(later - earlier >= SETTINGS.cooldown for earlier, later in itertools.pairwise(moved))
    unrestrained = [t for t, _ in rollovers(run(ticks, ON_CPU, ReplanSettings(cooldown_s=0.0)))]
    assert len(unrestrained) == len(phases) > len(moved)
    cooling = [d for _, d in run(ticks, ON_CPU) if d.reason is ReplanReason.COOLING_DOWN]
    assert cooling and all(not d.roll_over for d in cooling)


def test_the_cooldown_delays_a_win_until_it_ends() -> None:
    last = 1000.0
    decisions = run(steady(500.0, last, last + 900.0), ON_CPU, memory=ReplanMemory(last_rollover_at=last))
    cooling = [d for t, d in decisions if t < last + SETTINGS.cooldown]
    assert cooling and {d.reason for d in cooling} == {ReplanReason.COOLING_DOWN}
    assert all(d.roll_over_at == pytest.approx(last + SETTINGS.cooldown) for d in cooling)
    assert "cooldown 600 s" in cooling[-1].message
    # The window (300 s from the first tick) ended inside the cooldown: the rollover comes as it ends.
    assert [t for t, _ in rollovers(decisions)] == [last + SETTINGS.cooldown]


def test_an_infeasible_running_option_rolls_over_at_once_even_in_a_cooldown() -> None:
    slow_on_cpu = Variant(
        "int8", 1000, 0.0, measurements=(Measurement("cpu-small", 80, 50), Measurement("gpu-l4", 3, 1000))
    )
    at_load = plan_at(5.0, variants=(slow_on_cpu,))
    assert at_load.chosen is not None and Option.of(at_load.chosen) == ON_GPU  # the CPU misses the SLO
    decision, memory = replan(at_load, ON_CPU, SETTINGS, ReplanMemory(last_rollover_at=90.0), 100.0)
    assert decision.roll_over and decision.reason is ReplanReason.RUNNING_INFEASIBLE
    assert decision.target == ON_GPU
    assert "exceeds the SLO" in decision.message and str(ON_GPU) in decision.message
    assert memory == ReplanMemory(last_rollover_at=100.0)
    gone = Option("int8", "cpu-old", 1)  # not in the plan's table at all
    absent, _ = replan(at_load, gone, SETTINGS, ReplanMemory(), 100.0)
    assert absent.roll_over and absent.reason is ReplanReason.RUNNING_INFEASIBLE
    assert "not among the options planned" in absent.message


def test_nothing_feasible_holds() -> None:
    at_load = plan([MODEL], [CPU, GPU], Objectives(1.0, 0.01, PRICE_PER_KWH, expected_rps=500.0))
    decision, memory = replan(at_load, ON_CPU, SETTINGS, ReplanMemory(ON_GPU, 0.0), 400.0)
    assert not decision.roll_over and decision.reason is ReplanReason.NOTHING_FEASIBLE
    assert decision.target is None and memory == ReplanMemory()


@pytest.mark.parametrize("load", [None, 0.0])
def test_no_observed_load_never_replans_and_restarts_the_window(load: float | None) -> None:
    decision, memory = replan(plan_at(load), ON_CPU, SETTINGS, ReplanMemory(ON_GPU, 0.0, -5000.0), 400.0)
    assert not decision.roll_over and decision.reason is ReplanReason.NO_LOAD
    assert decision.target is None and "nothing to re-plan for" in decision.message
    assert memory == ReplanMemory(last_rollover_at=-5000.0)
    ticks = [*steady(500.0, 0.0, 150.0), (150.0, plan_at(load)), *steady(500.0, 180.0, 600.0)]
    assert [t for t, _ in rollovers(run(ticks, ON_CPU))] == [180.0 + SETTINGS.window_s]


def test_reasons_settings_and_the_planner_tolerance_agree() -> None:
    assert {ReplanReason.CHEAPER, ReplanReason.RUNNING_INFEASIBLE} == ROLLOVER_REASONS
    assert ReplanSettings().cost_tolerance == decide.COST_TOLERANCE
    assert ReplanSettings(window_s=60.0).cooldown == 120.0
    assert ReplanSettings(window_s=60.0, cooldown_s=0.0).cooldown == 0.0
    with pytest.raises(ValueError, match="window"):
        ReplanSettings(window_s=-1.0)


def test_the_plan_table_at_the_load_says_what_each_option_costs_and_why_it_is_out() -> None:
    slow_on_cpu = Variant(
        "fp32", 4000, 0.0, measurements=(Measurement("cpu-small", 80, 20), Measurement("gpu-l4", 4, 800))
    )
    at_load = plan_at(500.0, variants=(MODEL, slow_on_cpu))
    rows = plan_table_rows(at_load, running=ON_CPU)
    by_option = {(r["variant"], r["hardwareProfile"], r["shards"]): r for r in rows}
    assert len(rows) == len(at_load.table) == 4
    gpu, cpu = by_option[("int8", "gpu-l4", 1)], by_option[("int8", "cpu-small", 1)]
    assert [r["chosen"] for r in rows].count(True) == 1 and gpu["chosen"]
    assert cpu["running"] and not gpu["running"]
    assert cpu["replicas"] == 10 and gpu["replicas"] == 1
    assert cpu["costPer1kRequests"] == f"{cost_per_1k(CPU, 500.0):.3g}"
    assert gpu["costPer1kRequests"] == f"{cost_per_1k(GPU, 500.0):.3g}"
    _, watts, _ = formula(GPU, 1000.0, 500.0)
    assert gpu["joulesPerRequest"] == pytest.approx(watts / 500.0, rel=1e-2)
    assert gpu["latencyP95Ms"] == 3 and gpu["meetsSlo"] and gpu["feasible"] and gpu["rejections"] == []
    out = by_option[("fp32", "cpu-small", 1)]
    assert not out["feasible"] and not out["meetsSlo"] and not out["chosen"]
    assert out["rejections"] and "exceeds the SLO" in out["rejections"][0]


def test_the_replanning_module_imports_nothing_of_kubernetes_or_the_api() -> None:
    code = (
        "import sys, frugal.operator.decision.replanning\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kopf', 'pydantic')"
        " or m.startswith(('frugal.operator.api', 'frugal.operator.manifests'))])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
