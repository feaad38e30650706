"""`frugal batch`: a BatchInference on this machine, placed as the operator places it.

The files hold one BatchInference, the HardwareProfiles it may use and, when ``model.modelDeployment``
names one, that ModelDeployment: its pipeline runs first (compression and profiling, the Jobs
`frugal up` runs) and the batch scores with the variant it would serve. The placement is the
operator's (:func:`frugal.operator.decision.batch_placement.place`: cost per row at the profiled
throughput), shown as a table; then N worker processes score the shards (a dead one is restarted
and resumes), the shards are joined in input order, and the summary is printed (also as one JSON
line on stdout). ``zoo://<name>`` as the input means the built-in model's held-out data, for trying
it out; in a cluster the input is a claim.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from frugal.operator.api import (
    BatchInference,
    HardwareProfile,
    ModelDeployment,
    ValidationFailed,
)
from frugal.operator.api.spec import (
    BatchInferenceSpec,
    HardwareProfileSpec,
    SpecError,
    parse_batch_inference,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.decision import artifact_files, batch_placement
from frugal.operator.decision.decide import planner_profile
from frugal.operator.local import evaluation
from frugal.operator.local.local_cluster import LocalCluster, LocalRunError
from frugal.operator.local.up_command import load_resources, resource_body
from frugal.operator.manifests import batch_jobs

EXIT_INVALID = 2
EXIT_FAILED = 1


def batch(
    files: Sequence[str], workdir: str | None, workers: int | None, overwrite: bool, retries: int = 2
) -> int:
    console = Console(stderr=True)
    try:
        job, profiles, deployments = _load(files)
    except (ValidationFailed, SpecError, ValueError) as error:
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    directory = Path(workdir or Path.home() / ".cache" / "frugal" / "batch" / job.owner.name)
    directory.mkdir(parents=True, exist_ok=True)
    report = lambda line: console.print(f"  {line}", highlight=False, markup=False)  # noqa: E731
    try:
        variant, artifacts, price, candidates = _model(job, profiles, deployments, directory, report)
        input_path = _input(job.input_uri, directory)
        output_path = _path(job.output_uri, "spec.output.uri")
    except (LocalRunError, ValueError) as error:
        console.print(f"failed: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_FAILED if isinstance(error, LocalRunError) else EXIT_INVALID
    from frugal.serving.batch import engine
    from frugal.serving.batch import local_runner as batch_local

    base = engine.BatchConfig.model_validate(
        {
            "input": str(input_path),
            "output": str(output_path),
            "artifacts": str(artifacts),
            "variant": variant,
            "batchSize": job.spec.batch_size,
            "rowsPerShard": job.spec.rows_per_shard,
            "overwrite": overwrite or job.overwrite,
        }
    )
    try:
        run = engine.plan_run(base)  # read only: the output's rules apply when the workers start
    except engine.BatchError as error:
        console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INVALID
    rows = sum(shard.rows for shard in run.shards)
    throughput = artifact_files.throughput(
        artifact_files.read(artifacts, [p.name for p in candidates]), variant
    )
    request = batch_placement.Request(
        rows,
        workers or job.spec.workers,
        job.spec.max_workers,
        None if job.spec.deadline_seconds is None else float(job.spec.deadline_seconds),
        price,
    )
    placement = batch_placement.place([planner_profile(p) for p in candidates], throughput, request)
    console.print(_plan_table(job.owner.name, rows, placement))
    if placement.chosen is None:
        console.print(f"failed: {placement.reason}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_FAILED
    chosen = placement.chosen
    profile = profiles[chosen.profile]
    config = base.model_copy(
        update={
            "execution_provider": profile.execution_provider,
            "cost_per_hour": float(profile.cost_per_hour),
            "idle_watts": profile.idle_watts,
            "max_watts": profile.max_watts,
            "price_per_kwh": price,
        }
    )
    console.print(
        f"[bold]frugal batch[/]: {rows} rows of {input_path} in {len(run.shards)} shards, {chosen.workers} "
        f"worker(s) on {chosen.profile} (this machine stands in for it), variant {variant}",
        highlight=False,
    )
    try:
        engine.check(config)  # the output's rules (refuse a finished run, or overwrite it) and the model
    except engine.BatchError as error:
        console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INVALID
    try:
        summary = batch_local.run_local(config, chosen.workers, retries)
    except engine.BatchError as error:
        console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_FAILED
    document = json.loads(engine.summary_json(summary))
    console.print(_summary_table(document, output_path))
    print(json.dumps({"hardwareProfile": chosen.profile, "output": str(output_path), **document}), flush=True)
    return 0


def _load(
    files: Sequence[str],
) -> tuple[BatchInferenceSpec, dict[str, HardwareProfileSpec], dict[str, Any]]:
    resources = load_resources(files)
    jobs = [r for r in resources if isinstance(r, BatchInference)]
    if len(jobs) != 1:
        raise ValueError(f"frugal batch runs one BatchInference at a time; the files hold {len(jobs)}")
    profiles = {
        r.metadata.name: parse_hardware_profile(resource_body(r))
        for r in resources
        if isinstance(r, HardwareProfile)
    }
    deployments = {
        r.metadata.name: parse_model_deployment(resource_body(r))
        for r in resources
        if isinstance(r, ModelDeployment)
    }
    return parse_batch_inference(resource_body(jobs[0])), profiles, deployments


def _model(
    job: BatchInferenceSpec,
    profiles: Mapping[str, HardwareProfileSpec],
    deployments: Mapping[str, Any],
    directory: Path,
    report: Any,
) -> tuple[str, Path, float, list[HardwareProfileSpec]]:
    """(variant, artifacts directory, price per kWh, candidate profiles)."""
    if job.artifacts is not None:
        names = job.hardware_profiles
        return (
            job.artifacts.variant,
            _path(job.artifacts.uri, "spec.model.artifacts.uri"),
            0.15,
            _profiles(names, profiles),
        )
    name = str(job.model_deployment)
    md = deployments.get(name)
    if md is None:
        raise ValueError(
            f"spec.model.modelDeployment: ModelDeployment {name} is not in the files given: add its YAML "
            "to the command (its pipeline runs first), or use spec.model.artifacts"
        )
    names = job.hardware_profiles or md.serving_profiles
    md_profiles = {
        p: profiles[p] for p in dict.fromkeys((md.compression_profile, *md.serving_profiles)) if p in profiles
    }
    decision = LocalCluster(md, md_profiles, directory / "pipeline", report).plan()
    assert decision.selection is not None and decision.location is not None
    assert decision.location.operator_path is not None
    return (
        decision.selection.variant,
        decision.location.operator_path,
        float(md.price_per_kwh),
        _profiles(names, profiles),
    )


def _profiles(names: Sequence[str], profiles: Mapping[str, HardwareProfileSpec]) -> list[HardwareProfileSpec]:
    missing = [n for n in names if n not in profiles]
    if missing or not names:
        raise ValueError(
            f"HardwareProfile {', '.join(missing) or '(none named)'} is not defined in the files given: add "
            "the file that defines it, e.g. examples/hardwareprofiles.yaml"
        )
    return [profiles[n] for n in names]


def _input(uri: str, directory: Path) -> Path:
    """The input as a path; ``zoo://<name>``: the built-in model's held-out inputs, written once."""
    if not uri.startswith("zoo://"):
        return _path(uri, "spec.input.uri")
    data = evaluation.held_out(uri)
    target = directory / "input" / f"{uri.removeprefix('zoo://')}.npz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {name: np.asarray(array) for name, array in data.inputs.items()}
        np.savez(target, **arrays)
    return target


def _path(uri: str, field: str) -> Path:
    location = batch_jobs.locate(uri, None) if uri.startswith("file://") else None
    if location is None or location.operator_path is None:
        raise ValueError(f"{field}: {uri} is not a file:// location (frugal batch runs on this machine)")
    return location.operator_path


def _plan_table(name: str, rows: int, placement: batch_placement.Placement) -> Table:
    table = Table(title=f"frugal batch: {name}, {rows} rows: cost per row on each candidate")
    for column in ("profile", "rows/s per worker", "workers", "seconds", "$ per 1M rows", "verdict"):
        table.add_column(column)
    for option in placement.options:
        verdict = "chosen" if option is placement.chosen else (option.rejection or "dearer")
        table.add_row(
            option.profile,
            "-" if option.rows_per_second is None else f"{option.rows_per_second:.0f}",
            str(option.workers),
            "-" if option.seconds is None else f"{option.seconds:.0f}",
            "-" if option.cost_per_million_rows is None else f"{option.cost_per_million_rows:.4g}",
            verdict,
        )
    return table


def _summary_table(summary: Mapping[str, Any], output: Path) -> Table:
    table = Table(title="frugal batch: summary", show_header=False)
    for key in ("rows", "shards", "processes", "seconds", "rowsPerSecond", "costUsd", "energyJoules",
                "costPerMillionRowsUsd"):  # fmt: skip
        table.add_row(key, str(summary.get(key)))
    table.add_row("predictions", str(output / "predictions.npz"))
    return table
