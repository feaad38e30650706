"""The `frugal` command line.

Each subcommand imports its component only when it runs, so `frugal serve` works with just
`frugal[serving]` installed and `frugal validate` needs neither torch nor ONNX Runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Subcommands owned by another component: everything after the subcommand is handed over as is.
DELEGATED: dict[str, tuple[str, str]] = {
    "compress": (
        "frugal.compression.compress_command",
        "compress a model into ONNX variants (the compression Job)",
    ),
    "serve": ("frugal.serving.serve_command", "serve an ONNX variant over the Open Inference Protocol"),
    "front": (
        "frugal.serving.front",
        "hold requests for a model scaled to zero and forward them once it wakes",
    ),
    "operator": ("frugal.operator.cluster.operator_command", "run the Kubernetes operator"),
    "batch-worker": (
        "frugal.serving.batch.worker_command",
        "score this worker's shards of a batch (an Indexed Job's pod, or a local worker)",
    ),
    "batch-aggregate": (
        "frugal.serving.batch.aggregate_command",
        "join a batch's finished shards into its predictions and summary",
    ),
    "model-cache": (
        "frugal.serving.model_cache_command",
        "the node's model cache agent: publish verified variants that serving pods offer, evict the least used",
    ),
}


def _delegate(module_name: str, argv: list[str]) -> int:
    entry: Callable[[list[str]], int] = importlib.import_module(module_name).main
    return int(entry(argv) or 0)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal",
        description="Cost-aware model serving: compress, profile, plan, serve and autoscale a ModelDeployment.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run ModelDeployment(s) end to end on this machine (no cluster needed)"
    )
    up.add_argument("files", nargs="+", help="YAML files holding ModelDeployments and HardwareProfiles")
    up.add_argument(
        "--for",
        dest="duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="drive a local load for SECONDS, then stop and print a summary (default: serve until Ctrl-C)",
    )
    up.add_argument(
        "--workdir", default=None, help="where artifacts and logs go (default: a cache directory)"
    )
    up.add_argument("--port", type=int, default=0, help="port of the model endpoint (default: a free port)")
    up.add_argument(
        "--load",
        choices=("steady", "ramp"),
        default="steady",
        help="shape of the local load: steady (closed loop, --concurrency clients) or ramp (open loop: "
        "0 up to --rps over the first 30%% of --for, held 30%%, down over 10%%, quiet for the last 30%%)",
    )
    up.add_argument("--concurrency", type=int, default=8, help="concurrent clients of the steady load")
    up.add_argument(
        "--rps", type=float, default=None, metavar="PEAK", help="peak requests per second of the ramp"
    )
    up.add_argument(
        "--scale-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="autoscaler tick: scrape the replicas, apply the scaling policy (default 5; 0: no autoscaling)",
    )
    up.add_argument(
        "--stabilization-window",
        type=int,
        default=None,
        metavar="SECONDS",
        help="scale-down window: sets spec.autoscaling.stabilizationWindowSeconds of this run",
    )
    up.add_argument(
        "--replan-window",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long another option must stay cheaper before the run moves to it: sets "
        "spec.autoscaling.replanning.windowSeconds of this run",
    )
    up.add_argument(
        "--prometheus-targets",
        default=None,
        metavar="FILE",
        help="keep FILE a Prometheus file_sd list of this run's replicas and of its operator series "
        "(phase, compression report, SLO, autoscaler), so a Prometheus with file_sd_configs on FILE and "
        "honor_labels: true feeds the chart's dashboard and alerts (docs/operations.md)",
    )

    batch = commands.add_parser(
        "batch", help="score a dataset (a BatchInference) on this machine with worker processes"
    )
    batch.add_argument(
        "files", nargs="+", help="YAML files holding a BatchInference, its HardwareProfiles and its ModelDeployment"
    )
    batch.add_argument("--workdir", default=None, help="where the model's pipeline and zoo:// inputs go")
    batch.add_argument("--workers", type=int, default=None, help="worker processes (default: the placement's)")
    batch.add_argument("--overwrite", action="store_true", help="replace a finished run's outputs")

    validate = commands.add_parser(
        "validate", help="check YAML against the CRDs' schemas and rules, as the API server would"
    )
    validate.add_argument("files", nargs="+")

    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATED:
        return _delegate(DELEGATED[args_list[0]][0], args_list[1:])
    args = _build_parser().parse_args(args_list)
    if args.command == "version":
        from importlib.metadata import version

        print(version("frugal"))
        return 0
    if args.command == "validate":
        from frugal.operator.local.up_command import validate_files

        return validate_files(args.files)
    if args.command == "batch":
        if args.workers is not None and args.workers < 1:
            print("frugal batch: --workers must be at least 1", file=sys.stderr)
            return 2
        from frugal.operator.local.batch_command import batch as run_batch

        return run_batch(args.files, args.workdir, args.workers, args.overwrite)
    if args.load == "ramp" and (args.rps is None or args.rps <= 0 or args.duration is None):
        print("frugal up: --load ramp needs --rps PEAK (above 0) and --for SECONDS", file=sys.stderr)
        return 2
    windows = (args.stabilization_window, args.replan_window)
    if args.scale_interval < 0 or any(w is not None and w < 0 for w in windows):
        print(
            "frugal up: --scale-interval, --stabilization-window and --replan-window must be 0 or more",
            file=sys.stderr,
        )
        return 2
    from frugal.operator.local.up_command import LoadOptions, up

    load = LoadOptions(
        args.duration,
        args.load,
        args.concurrency,
        args.rps,
        args.scale_interval,
        args.stabilization_window,
        args.replan_window,
    )
    targets = Path(args.prometheus_targets) if args.prometheus_targets else None
    return up(args.files, workdir=args.workdir, port=args.port, load=load, prometheus_targets=targets)


if __name__ == "__main__":
    sys.exit(main())
