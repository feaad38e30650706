"""What a run prints: the measured inputs, the results' tables, the verdicts against the targets."""

from __future__ import annotations

from typing import Any

import numpy as np

from frugal.operator.decision import decide

from .measure import load_example
from .options import ReplanSetup, ServedOption
from .replica import Replica
from .simulate import SLO_TARGET, Result


def replica_summary(model: str, data: dict[str, Any]) -> dict[str, Any]:
    md, _ = load_example(model)
    replica = Replica.from_measurements(data, md.slo_p95_ms)
    p95 = int(np.searchsorted(np.asarray(data["levels"]), 95.0))
    return {
        "model": model,
        "variant": data["variant"],
        "slo_ms": md.slo_p95_ms,
        "profiled_capacity_rps": replica.capacity_rps,
        "saturation_rps": replica.saturation_rps,
        "slo_capacity_rps": replica.slo_capacity_rps,
        "start_s": replica.start_s,
        "cpu_at_saturation": replica.cpu_saturation,
        "curve": [
            {
                "fraction": p["fraction"],
                "offered_rps": round(p["offered_rps"], 1),
                "completed_rps": round(p["completed_rps"], 1),
                "p50_ms": round(p["quantiles_ms"][int(np.searchsorted(data["levels"], 50.0))], 2),
                "p95_ms": round(p["quantiles_ms"][p95], 2),
                "server_p95_ms": None if p["server_p95_ms"] is None else round(p["server_p95_ms"], 2),
                "cpu_cores": round(p["cpu_cores"], 2),
                "mean_batch": round(p["mean_batch"], 1),
                "failed": p["failed"],
            }
            for p in data["points"]
        ],
    }


def print_inputs(summaries: list[dict[str, Any]], datas: dict[str, dict[str, Any]]) -> None:
    print(
        "| model | variant | SLO p95 | profiled capacity (frugal) | saturation (measured) | within SLO up to | pod start |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for s in summaries:
        print(
            f"| {s['model']} | {s['variant']} | {s['slo_ms']:g} ms | {s['profiled_capacity_rps']:.0f} req/s | "
            f"{s['saturation_rps']:.0f} req/s | {s['slo_capacity_rps']:.0f} req/s | {s['start_s']:.2f} s |"
        )
    print()
    print(
        "| model | load (x saturation) | offered req/s | done req/s | p50 ms | p95 ms | server p95 ms | CPU cores | mean batch | failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summaries:
        for p in s["curve"]:
            server = "-" if p["server_p95_ms"] is None else f"{p['server_p95_ms']:.2f}"
            print(
                f"| {s['model']} | {p['fraction']:.2f} | {p['offered_rps']:.0f} | {p['completed_rps']:.0f} | "
                f"{p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {server} | {p['cpu_cores']:.2f} | {p['mean_batch']:.1f} | {p['failed']} |"
            )
    print()


def print_results(results: list[Result], infos: list[dict[str, Any]]) -> None:
    print(
        "| model | trace | policy | replica-h | cost USD | energy kWh | SLO attainment | scale events "
        "| peak replicas | cost vs static | cost vs HPA |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        group = [x for x in results if x.model == r.model and x.trace == r.trace]
        static = next(x for x in group if x.policy == "static")
        hpa = next(x for x in group if x.policy == "HPA-style")  # the default 70% CPU target
        print(
            f"| {r.model} | {r.trace} | {r.policy} | {r.replica_hours:.2f} | {r.cost_usd:.4f} | "
            f"{r.energy_kwh:.4f} | {100 * r.slo_attainment:.2f}% | {r.scale_events} | {r.peak_replicas} | "
            f"{r.cost_usd / static.cost_usd:.2f} | {r.cost_usd / hpa.cost_usd:.2f} |"
        )
    print()
    for info in infos:
        print(
            f"{info['model']} / {info['trace']}: peak {info['peak_rps']:.0f} req/s -> static "
            f"{info['static_replicas']} replicas, max {info['max_replicas']}, start {info['initial']}; "
            f"KEDA threshold {info['keda_threshold_rps']:.0f} req/s per replica, HPA CPU target "
            f"{100 * info['hpa_cpu_target']:.0f}%"
        )
    print()
    for verdict in verdicts(results):
        print(verdict["line"])


def verdicts(results: list[Result]) -> list[dict[str, Any]]:
    found = []
    for model, trace in dict.fromkeys((r.model, r.trace) for r in results):
        group = {r.policy: r for r in results if r.model == model and r.trace == trace}
        frugal, static, hpa = group["frugal"], group["static"], group["HPA-style"]
        tuned, limit = group["HPA-style, tuned"], group["limit: instant rate, same tick"]
        saving_static = 1 - frugal.cost_usd / static.cost_usd
        saving_hpa = 1 - frugal.cost_usd / hpa.cost_usd
        saving_tuned = 1 - frugal.cost_usd / tuned.cost_usd
        checks = {
            "slo>=99%": frugal.slo_attainment >= SLO_TARGET,
            "cost<=0.60 static": saving_static >= 0.40,
            "cost<=0.85 HPA": saving_hpa >= 0.15,
        }
        status = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items())
        line = (
            f"{model} / {trace}: frugal SLO {100 * frugal.slo_attainment:.2f}% (reactive limit "
            f"{100 * limit.slo_attainment:.2f}%), {100 * saving_static:.0f}% cheaper than static, "
            f"{100 * saving_hpa:.0f}% cheaper than HPA-style (HPA {100 * hpa.slo_attainment:.2f}% SLO), "
            f"{100 * saving_tuned:.0f}% cheaper than HPA-style tuned (target {tuned.notes['setting']:g}: "
            f"{100 * tuned.slo_attainment:.2f}% SLO) -> {status}"
        )
        asleep = group["frugal, scale to zero"]
        line += (
            f"; scale to zero: {100 * (1 - asleep.cost_usd / frugal.cost_usd):.0f}% cheaper than frugal "
            f"without it, SLO {100 * asleep.slo_attainment:.2f}%, {asleep.notes.get('held_requests', 0):.0f} "
            f"request(s) held, waking in {asleep.notes.get('mean_wake_wait_s', 0):.1f} s on average"
        )
        found.append({"model": model, "trace": trace, "checks": checks, "line": line})
    return found


def option_rows(setup: ReplanSetup) -> list[dict[str, Any]]:
    """The options re-planning chooses among, and which of their numbers are measured."""
    rows = []
    for choice, option in setup.options.items():
        replica = option.replica
        rows.append(
            {
                "model": setup.model,
                "option": str(choice),
                "profile": choice.profile,
                "variant": choice.variant,
                "source": _source(setup, option),
                "profiled_throughput_rps": replica.capacity_rps,
                "saturation_rps": replica.saturation_rps,
                "slo_capacity_rps": replica.slo_capacity_rps,
                "cost_per_hour": option.cost_per_hour,
                "idle_watts": option.idle_watts,
                "max_watts": option.max_watts,
                "start_s": replica.start_s,
                "deploy_time_choice": choice == setup.deployed,
            }
        )
    return rows


def _source(setup: ReplanSetup, option: ServedOption) -> str:
    """Which of an option's numbers are measured."""
    if option.measured:
        return "measured"
    scale = option.replica.saturation_rps / setup.options[setup.measured].replica.saturation_rps
    if option.choice.profile == setup.measured.profile:
        return f"throughput profiled; curve: the measured one x{scale:.3g}"
    return f"modelled: {setup.other.throughput_multiple:g} x its row on {setup.measured.profile}"


def _fixed(group: dict[str, Result], setup: ReplanSetup) -> tuple[Result, Result]:
    return (
        group[f"frugal, fixed {setup.measured.profile}"],
        group[f"frugal, fixed {setup.other.profile}"],
    )


def replan_verdicts(
    rows: list[Result], results: list[Result], setups: dict[str, ReplanSetup]
) -> list[dict[str, Any]]:
    """Per (model, trace): what re-planning (and scale to zero with it) costs and saves against each
    fixed option: the measured one (A) and the modelled one (B), and which the deploy-time plan picks."""
    found = []
    for model, trace in dict.fromkeys((r.model, r.trace) for r in rows):
        setup = setups[model]
        group = {r.policy: r for r in rows if r.model == model and r.trace == trace}
        a, b = _fixed(group, setup)
        deployed = setup.deployed.profile

        moved = group["frugal + re-planning"]
        checks = {
            "cheaper than the deploy-time choice": moved.cost_usd
            < group[f"frugal, fixed {deployed}"].cost_usd,
            "cheaper than both fixed": moved.cost_usd < min(a.cost_usd, b.cost_usd),
            "slo>=99%": moved.slo_attainment >= SLO_TARGET,
        }
        line = (
            f"{model} / {trace} (fixed SLO {100 * a.slo_attainment:.2f}% / {100 * b.slo_attainment:.2f}%; "
            f"the deploy-time plan picks {deployed}): re-planning {_against(moved, a, b, setup)}"
        )
        for label, policy in (
            ("priced with measured capacity", "frugal + re-planning, measured capacity"),
            ("with scale to zero", "frugal + re-planning, scale to zero"),
        ):
            if policy in group:
                line += f"; {label}: {_against(group[policy], a, b, setup)}"
        status = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items())
        found.append({"model": model, "trace": trace, "checks": checks, "line": f"{line} -> {status}"})
    return found


def _against(r: Result, a: Result, b: Result, setup: ReplanSetup) -> str:
    return (
        f"cost {r.cost_usd / a.cost_usd:.2f}x / {r.cost_usd / b.cost_usd:.2f}x and energy "
        f"{r.energy_kwh / a.energy_kwh:.2f}x / {r.energy_kwh / b.energy_kwh:.2f}x of fixed "
        f"{setup.measured.profile} / {setup.other.profile}, SLO {100 * r.slo_attainment:.2f}% "
        f"({r.notes['rollovers']} rollover(s): {_served(r)})"
    )


def _served(result: Result) -> str:
    hours = result.notes.get("serving_hours") or {}
    return ", ".join(f"{h:.1f} h on {label}" for label, h in hours.items())


def print_replanning(
    rows: list[Result], results: list[Result], setups: dict[str, ReplanSetup], window_s: float
) -> None:
    print(
        f"Re-planning (window {window_s:g} s, cooldown {2 * window_s:g} s, tolerance "
        f"{decide.COST_TOLERANCE:.0%}): the options, A = measured, B = modelled"
    )
    print()
    print(
        "| model | option | numbers | profiled capacity | within SLO up to | costPerHour | idle-max W | pod start | deploy-time plan |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for setup in setups.values():
        for o in option_rows(setup):
            print(
                f"| {o['model']} | {o['option']} | {o['source']} | {o['profiled_throughput_rps']:.0f} req/s | "
                f"{o['slo_capacity_rps']:.0f} req/s | {o['cost_per_hour']:g} | {o['idle_watts']:g}-{o['max_watts']:g} | "
                f"{o['start_s']:.2f} s | {'chosen' if o['deploy_time_choice'] else ''} |"
            )
    print()
    print(
        "| model | trace | policy | served on | rollovers | SLO attainment | cost USD | energy kWh | J/request "
        "| cost vs fixed A | cost vs fixed B | energy vs fixed A | energy vs fixed B | cost vs static |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        group = {x.policy: x for x in rows if x.model == r.model and x.trace == r.trace}
        a, b = _fixed(group, setups[r.model])
        static = next(x for x in results if (x.model, x.trace, x.policy) == (r.model, r.trace, "static"))
        served = _served(r) or r.policy.removeprefix("frugal, fixed ").split(",")[0]
        rollovers = r.notes.get("rollovers", "-")
        joules = r.energy_kwh * 3.6e6 / r.requests if r.requests else 0.0
        print(
            f"| {r.model} | {r.trace} | {r.policy} | {served} | {rollovers} | {100 * r.slo_attainment:.2f}% | "
            f"{r.cost_usd:.4f} | {r.energy_kwh:.4f} | {joules:.4f} | {r.cost_usd / a.cost_usd:.2f} | "
            f"{r.cost_usd / b.cost_usd:.2f} | {r.energy_kwh / a.energy_kwh:.2f} | {r.energy_kwh / b.energy_kwh:.2f} | "
            f"{r.cost_usd / static.cost_usd:.2f} |"
        )
    print()
    for verdict in replan_verdicts(rows, results, setups):
        print(verdict["line"])
