"""The command line: ``python benchmarks/autoscaling.py [--smoke] [--json] ...``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from frugal.operator.decision import decide, replanning

from .measure import measurements
from .options import replan_setup
from .report import (
    option_rows,
    print_inputs,
    print_replanning,
    print_results,
    replan_verdicts,
    replica_summary,
    verdicts,
)
from .simulate import Result, run_all
from .traces import TRACES, write_traces


def main(description: str | None = None, argv: Sequence[str] | None = None) -> int:
    """`description`: what --help prints above the options (the entry script's docstring)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("digits", "minilm", "both"), default="both")
    parser.add_argument(
        "--trace", type=Path, action="append", help="t_seconds,rps CSV (repeatable; default: shipped)"
    )
    parser.add_argument(
        "--trace-unit",
        choices=("capacity", "rps"),
        default="capacity",
        help="capacity: rps column in multiples of one replica's measured SLO capacity (shipped traces)",
    )
    parser.add_argument("--measure", action="store_true", help="re-measure the replica on this machine")
    parser.add_argument("--hpa-cpu-target", type=float, default=0.7, help="HPA CPU utilisation target")
    parser.add_argument(
        "--keda-fraction",
        type=float,
        default=0.7,
        help="KEDA threshold as a share of one replica's SLO capacity",
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="measure once the 1-min load average is below this (<= 10 min)",
    )
    parser.add_argument(
        "--replan-window",
        type=float,
        default=replanning.DEFAULT_WINDOW_S,
        help="re-planning: seconds a cheaper option must win before a rollover (cooldown: twice that)",
    )
    parser.add_argument(
        "--replan-start-s",
        type=float,
        help="pod start of the modelled hardware's replicas (default: the measured replica's)",
    )
    parser.add_argument("--no-replanning", action="store_true", help="skip the re-planning rows")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--write-traces", action="store_true", help="regenerate benchmarks/traces/*.csv")
    parser.add_argument("--smoke", action="store_true", help="seconds, to see it runs: digits on spiky.csv")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.trace = "digits", args.trace or [TRACES / "spiky.csv"]
    if args.write_traces:
        write_traces()
    traces = args.trace or sorted(TRACES.glob("*.csv"))
    models = ["digits", "minilm"] if args.model == "both" else [args.model]
    datas = {model: measurements(model, args.measure, args.quiet_load) for model in models}
    summaries = [replica_summary(model, datas[model]) for model in models]
    both = {
        m: (
            replan_setup(m, datas[m], args.replan_start_s),
            replan_setup(m, datas[m], args.replan_start_s, True),
        )
        for m in ([] if args.no_replanning else models)
    }
    setups = {m: pair[0] for m, pair in both.items()}
    results: list[Result] = []
    replanned: list[Result] = []
    infos = []
    for model in models:
        for trace in traces:
            found, info, rows = run_all(model, datas[model], trace, args, both.get(model))
            results += found
            replanned += rows
            infos.append(info | {"model": model, "trace": trace.stem})
    if args.json:
        document = {
            "machine": {m: datas[m]["machine"] for m in models},
            "inputs": summaries,
            "scenarios": infos,
            "results": [r.as_dict() for r in results],
            "verdicts": verdicts(results),
        }
        if setups:
            document["replanning"] = {
                "window_s": args.replan_window,
                "cooldown_s": 2 * args.replan_window,
                "cost_tolerance": decide.COST_TOLERANCE,
                "options": [row for setup in setups.values() for row in option_rows(setup)],
                "results": [r.as_dict() for r in replanned],
                "verdicts": replan_verdicts(replanned, results, setups),
            }
        print(json.dumps(document, indent=1, default=float))
        return 0
    for model in models:
        m = datas[model]["machine"]
        print(
            f"{model}: measured {datas[model]['measured_at']} on {m['nproc']} x {m['cpu']} "
            f"(load average {m['loadavg_before']} before, {m['loadavg']} after)"
        )
    print()
    print_inputs(summaries, datas)
    print_results(results, infos)
    if setups:
        print_replanning(replanned, results, setups, args.replan_window)
    return 0
