"""`frugal validate` and `frugal up`: the user-facing local commands.

`up` validates the YAML exactly as the API server would, runs the operator's own reconciler on this
machine (:mod:`frugal.operator.local.local_cluster`), checks the served model on held-out data, drives
an optional local load (steady, or an open-loop ramp) with a live status line while the operator's
autoscaler (:mod:`frugal.operator.local.autoscaler`) resizes every shard, and ends with a summary.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from frugal.operator.api import HardwareProfile, ModelDeployment, Resource, ValidationFailed, load_documents
from frugal.operator.api.spec import (
    HardwareProfileSpec,
    ModelDeploymentSpec,
    SpecError,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.decision import planner
from frugal.operator.local import autoscaler, evaluation, loadgen
from frugal.operator.local.local_cluster import LocalCluster, LocalRunError, Served
from frugal.operator.local.monitoring import Monitoring

EXIT_INVALID = 2
EXIT_FAILED = 1


def validate_files(files: Sequence[str]) -> int:
    console = Console(stderr=True)
    try:
        resources = load_resources(files)
    except (ValidationFailed, ValueError) as error:
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    for resource in resources:
        console.print(f"ok  {resource.kind} {resource.metadata.name}", highlight=False)
    return 0


@dataclass(frozen=True)
class LoadOptions:
    """How `frugal up --for` drives the endpoint, and how often the autoscaler ticks (0: never)."""

    duration: float | None = None
    shape: str = "steady"
    concurrency: int = 8
    peak_rps: float | None = None
    scale_interval: float = 5.0
    stabilization_window: int | None = None  # sets spec.autoscaling.stabilizationWindowSeconds
    replan_window: int | None = None  # sets spec.autoscaling.replanning.windowSeconds


LOG_WIDTH = 140  # columns when stderr is not a terminal (a log, CI): the plan table fits on one line a row


def up(
    files: Sequence[str],
    workdir: str | None,
    port: int,
    load: LoadOptions,
    prometheus_targets: Path | None = None,
) -> int:
    console = Console(stderr=True, width=None if sys.stderr.isatty() else LOG_WIDTH)
    try:
        resources = load_resources(files)
        deployment, profiles = _pick(resources)
        md = parse_model_deployment(with_overrides(resource_body(deployment), load))
        profile_specs = {p.metadata.name: parse_hardware_profile(resource_body(p)) for p in profiles}
        _check_profiles_defined(md, profile_specs, files)
    except (ValidationFailed, SpecError, ValueError) as error:
        console.print(str(error), markup=False, highlight=False)
        return EXIT_INVALID
    directory = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="frugal-up-"))
    console.print(
        f"[bold]frugal up[/]: ModelDeployment {md.owner.name} ({md.model_uri}); work directory {directory}"
    )
    if len(profile_specs) > 1:
        console.print(
            "  note: this machine stands in for every HardwareProfile; profiling measures it, "
            "not the named accelerators",
            highlight=False,
        )
    monitoring = Monitoring.start(prometheus_targets) if prometheus_targets is not None else None
    if monitoring is not None:
        console.print(
            f"  Prometheus: targets in {prometheus_targets} (file_sd_configs, honor_labels: true); "
            f"this run's operator series at http://{monitoring.address}/metrics",
            highlight=False,
        )
    try:
        return _run(console, md, profile_specs, directory, port, load, monitoring)
    finally:
        if monitoring is not None:
            monitoring.stop()
        if workdir is None:
            shutil.rmtree(directory, ignore_errors=True)


def _run(
    console: Console,
    md: ModelDeploymentSpec,
    profile_specs: Mapping[str, HardwareProfileSpec],
    directory: Path,
    port: int,
    load: LoadOptions,
    monitoring: Monitoring | None,
) -> int:
    report = _reporter(console)
    metrics = monitoring.metrics if monitoring is not None else None
    cluster = LocalCluster(md, profile_specs, directory, report=report, metrics=metrics)
    started = time.monotonic()
    try:
        served = cluster.run(port)
    except LocalRunError as error:
        console.print(f"[red]failed[/]: {error}", highlight=False)
        return EXIT_FAILED
    scaler = autoscaler.for_served(served, load.scale_interval, report, metrics=metrics)
    if monitoring is not None:
        monitoring.watch(md, served)
    if served.decision.plan is not None:
        console.print(plan_table(served.decision.plan))
        console.print(f"  chose {served.decision.plan.reason}", highlight=False)
    try:
        console.print(
            f"  serving {served.model_name} at {served.endpoint}/v2/models/{served.model_name} "
            f"(ready {time.monotonic() - started:.1f}s after start)",
            highlight=False,
        )
        return _serve_and_report(console, served, scaler, md, load)
    finally:
        scaler.stop()
        served.stop()


def _reporter(console: Console) -> Callable[[str], None]:
    def report(line: str) -> None:
        console.print(f"  {line}", highlight=False, markup=False)

    return report


def _serve_and_report(
    console: Console,
    served: Served,
    scaler: autoscaler.LocalAutoscaler,
    md: ModelDeploymentSpec,
    load: LoadOptions,
) -> int:
    model = evaluation.ServedModel.load(served)
    check = evaluation.check_served(model)
    console.print(
        f"  held-out {check.metric} of the served model: {check.value:.4f} on {check.rows} rows",
        highlight=False,
    )
    if scaler.enabled:
        targets = scaler.targets
        console.print(
            f"  autoscaling every {load.scale_interval:g}s: {targets.floor}..{targets.max_replicas} replicas per "
            f"shard, SLO p95 {targets.slo_p95_ms:g} ms, profiled capacity {targets.capacity_rps:.0f} req/s "
            f"per replica, scale-down window {targets.stabilization_window_s:g}s",
            highlight=False,
        )
        if scaler.replan_settings is not None and md.spec.autoscaling.replanning.enabled:
            console.print(
                f"  re-planning at the observed load: another option must stay more than "
                f"{scaler.replan_settings.cost_tolerance:.0%} cheaper for {scaler.replan_settings.window_s:g}s",
                highlight=False,
            )
    scaler.start()
    if load.duration is None:
        console.print("  serving until Ctrl-C")
        try:
            while served.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return 0
    stats = loadgen.LoadStats()
    url = f"{served.endpoint}/v2/models/{served.model_name}/infer"
    bodies = evaluation.request_bodies(model)
    ramp = None
    if load.shape == "ramp":
        assert load.peak_rps is not None
        ramp = loadgen.Ramp(load.peak_rps, load.duration)
        console.print(f"  load: open-loop ramp {ramp.describe()}", highlight=False)
        if scaler.enabled and ramp.quiet_seconds < scaler.targets.stabilization_window_s + 2 * load.scale_interval:
            console.print(
                f"  note: the quiet tail ({ramp.quiet_seconds:.0f}s) is shorter than the scale-down window "
                f"({targets.stabilization_window_s:g}s) and two ticks: replicas may not come down before the "
                "end (a longer --for, or --stabilization-window)",
                highlight=False,
            )
        job = loadgen.run_open_loop(url, bodies, ramp.rate, load.duration, stats)
    else:
        job = loadgen.run_load(url, bodies, load.duration, load.concurrency, stats)
    with Live(_StatusLine(served, stats, scaler, ramp), console=console, refresh_per_second=4):
        asyncio.run(job)
    row = evaluation.summary_row(
        model, check, stats, md.slo_p95_ms, {"load": load.shape, **scaler.finish()}
    )
    console.print()
    console.print(_summary_table(served.model_name, row))
    (served.artifacts.parent / "summary.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row), file=sys.stdout, flush=True)
    return 0 if stats.ok > 0 and stats.failed == 0 else EXIT_FAILED


@dataclass(frozen=True)
class _StatusLine:
    """Rendered afresh on every refresh of the live display."""

    served: Served
    stats: loadgen.LoadStats
    scaler: autoscaler.LocalAutoscaler
    ramp: loadgen.Ramp | None = None

    def __rich__(self) -> str:
        selected = self.served.decision.selection
        stats = self.stats
        active, starting, reason = self.scaler.status()
        replicas = "/".join(str(n) for n in active) + (f" (+{starting} starting)" if starting else "")
        target = f"target={self.ramp.rate(time.monotonic() - stats.started):.0f}rps  " if self.ramp else ""
        scaled = f"  last scale={reason}" if reason else ""
        return (
            f"[bold green]Serving[/] {self.served.model_name}  variant={selected and selected.variant}  "
            f"hardware={selected and selected.profile}  shards={len(self.served.shards)}  replicas={replicas}  "
            f"{target}rps={stats.recent_rps():.0f}  requests={stats.requests}  p95={stats.percentile_ms(95):.2f}ms  "
            f"errors={stats.failed}{scaled}"
        )


def plan_table(plan: planner.Plan) -> Table:
    """Every option the planner priced, cheapest feasible first, each with why it won or lost."""
    objectives = plan.objectives
    title = "plan" + (
        f": p95 <= {objectives.slo_p95_ms:g} ms, accuracy drop <= {objectives.max_accuracy_drop:g}"
        + (f", at {objectives.expected_rps:g} req/s" if objectives.expected_rps else ", at one replica's capacity")
        if objectives
        else ""
    )
    table = Table(title=title, title_justify="left")
    for column in ("variant", "hardware", "shards", "measured", "p95 ms", "replicas", "$/1k req", "J/req"):
        left = column in ("variant", "hardware", "measured")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.add_column("verdict", min_width=24)

    def order(row: planner.Candidate) -> tuple[int, float]:
        return (0 if row is plan.chosen else 1 if row.feasible else 2, row.cost_per_request or float("inf"))

    for row in sorted(plan.table, key=order):
        table.add_row(
            row.variant,
            row.profile,
            str(row.shards),
            row.measured_by,
            "-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:.3g}",
            str(row.replicas) if row.cost_per_request is not None else "-",
            "-" if row.cost_per_1k_requests is None else f"{row.cost_per_1k_requests:.3g}",
            "-" if row.energy_per_request_joules is None else f"{row.energy_per_request_joules:.3g}",
            planner.why_not(row, plan),
            style="bold green" if row is plan.chosen else None if row.feasible else "dim",
        )
    return table


def _summary_table(model_name: str, row: Mapping[str, Any]) -> Table:
    table = Table(title=f"frugal up: {model_name}", show_header=False)
    for key, value in row.items():
        if key == "scaleEvents":
            value = (
                "\n".join(f"t={e['t']:.0f}s {'/'.join(map(str, e['replicas']))} {e['reason']}" for e in value)
                or "none"
            )
        elif key == "rollovers":
            value = (
                "\n".join(
                    f"t={e['t']:.0f}s {e['from']} -> {e['to']} at {e['loadRps']} req/s "
                    f"(${e['fromCostPer1kRequests']} -> ${e['toCostPer1kRequests']} per 1k requests, "
                    f"switch {e['switchSeconds']:.1f}s)"
                    for e in value
                )
                or "none"
            )
        elif key == "statusCounts":
            value = ", ".join(f"{code}: {count}" for code, count in value.items()) or "none"
        table.add_row(key, str(value))
    return table


def load_resources(files: Sequence[str]) -> list[Resource]:
    resources: list[Resource] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"{name}: no such file")
        resources += load_documents(path)
    return resources


def _pick(resources: Sequence[Resource]) -> tuple[ModelDeployment, list[HardwareProfile]]:
    deployments = [r for r in resources if isinstance(r, ModelDeployment)]
    profiles = [r for r in resources if isinstance(r, HardwareProfile)]
    if len(deployments) != 1:
        raise ValueError(f"frugal up runs one ModelDeployment at a time; the files hold {len(deployments)}")
    return deployments[0], profiles


def _check_profiles_defined(
    md: ModelDeploymentSpec, profiles: Mapping[str, HardwareProfileSpec], files: Sequence[str]
) -> None:
    wanted = dict.fromkeys((md.compression_profile, *md.serving_profiles))
    missing = [name for name in wanted if name not in profiles]
    if missing:
        raise ValueError(
            f"HardwareProfile {', '.join(missing)} is not defined in {', '.join(files)}: add the file that "
            "defines it to the command, e.g. frugal up <deployment>.yaml examples/hardwareprofiles.yaml"
        )


def with_overrides(body: dict[str, Any], load: LoadOptions) -> dict[str, Any]:
    """The ModelDeployment as this run serves it: --stabilization-window and --replan-window set
    spec.autoscaling's fields, so the operator's autoscaler reads them from the spec as in a cluster."""
    autoscaling = body.setdefault("spec", {}).setdefault("autoscaling", {})
    if load.stabilization_window is not None:
        autoscaling["stabilizationWindowSeconds"] = load.stabilization_window
    if load.replan_window is not None:
        autoscaling.setdefault("replanning", {})["windowSeconds"] = load.replan_window
    return body


def resource_body(resource: Resource) -> dict[str, Any]:
    """A resource as the API server would hand it over: namespace, generation and uid filled in."""
    body = resource.to_dict()
    metadata = body.setdefault("metadata", {})
    metadata.setdefault("namespace", "default")
    metadata.setdefault("generation", 1)
    metadata.setdefault("uid", "local")
    return body
