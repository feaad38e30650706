"""`frugal batch`: a BatchInference on this machine, run by the operator's own reconcilers.

The files hold one BatchInference, the HardwareProfiles it may use and, when ``model.modelDeployment``
names one, that ModelDeployment. They go into the in-memory API store with the operator's
ModelDeployment reconciler (the model's pipeline: compression and profiling) and its BatchInference
reconciler, which places the batch (cost per row at the profiled throughput, shown as a table from
``status.plan``) and creates the scoring and aggregation Jobs; the process runner runs them as
processes (:mod:`frugal.operator.local.local_batch`). The summary is printed (also as one JSON line on
stdout). ``zoo://<name>`` as the input means the built-in model's held-out data, written to a file
here first, for trying it out; in a cluster the input is a claim.
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
from frugal.operator.api.models import BatchInferenceStatus, BatchPlanRow, BatchSelected
from frugal.operator.api.spec import (
    BatchInferenceSpec,
    HardwareProfileSpec,
    ModelDeploymentSpec,
    SpecError,
    parse_batch_inference,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.local import evaluation
from frugal.operator.local.local_batch import LocalBatch
from frugal.operator.local.local_cluster import LocalRunError
from frugal.operator.local.up_command import load_resources, resource_body
from frugal.operator.manifests import batch_jobs

EXIT_INVALID = 2
EXIT_FAILED = 1


def batch(files: Sequence[str], workdir: str | None, workers: int | None, overwrite: bool) -> int:
    console = Console(stderr=True)
    try:
        job, profiles, deployments = _load(files)
    except (ValidationFailed, SpecError, ValueError) as error:
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    directory = Path(workdir or Path.home() / ".cache" / "frugal" / "batch" / job.owner.name)
    directory.mkdir(parents=True, exist_ok=True)
    report = lambda line: console.print(f"  {line}", highlight=False, markup=False)  # noqa: E731
    from frugal.serving.batch import engine

    try:
        md = _model_deployment(job, deployments)
        _profiles(job.hardware_profiles or (md.serving_profiles if md else ()), profiles)
        input_path = _input(job.input_uri, directory)
        output_path = _path(job.output_uri, "spec.output.uri")
        if not (overwrite or job.overwrite):
            engine.refuse_finished(output_path)  # before the pipeline runs, not after
    except (ValueError, engine.BatchError) as error:
        console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INVALID
    body = _as_run(job, input_path, workers, overwrite)
    needed = _needed_profiles(job, md, profiles)
    shown = _Progress(console, job.owner.name)
    try:
        status = LocalBatch(body, needed, md, directory / "pipeline", report).run(shown.update)
    except LocalRunError as error:
        console.print(f"failed: {error}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_FAILED
    if status.phase != "Succeeded":
        console.print(f"failed: {status.message}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_FAILED
    document = json.loads(engine.Layout(output_path).summary.read_text())
    console.print(_summary_table(document, output_path))
    selected = status.selected.hardware_profile if status.selected else None
    print(json.dumps({"hardwareProfile": selected, "output": str(output_path), **document}), flush=True)
    return 0


class _Progress:
    """The placement table once the reconciler has placed the batch, then each change of progress."""

    def __init__(self, console: Console, name: str) -> None:
        self.console, self.name = console, name
        self.placed = False
        self.last: tuple[int | None, int | None] | None = None

    def update(self, status: BatchInferenceStatus) -> None:
        if not self.placed and status.plan and status.selected is not None:
            self.placed = True
            rows = status.progress.rows_total if status.progress else None
            self.console.print(_plan_table(self.name, rows, status.plan, status.selected))
        if status.progress is not None and status.phase == "Running":
            now = (status.progress.shards_done, status.progress.shards_total)
            if now != self.last and now[1]:
                self.last = now
                self.console.print(f"  scoring: {now[0]}/{now[1]} shards done", highlight=False)


def _model_deployment(
    job: BatchInferenceSpec, deployments: Mapping[str, ModelDeploymentSpec]
) -> ModelDeploymentSpec | None:
    if job.artifacts is not None:
        return None
    name = str(job.model_deployment)
    md = deployments.get(name)
    if md is None:
        raise ValueError(
            f"spec.model.modelDeployment: ModelDeployment {name} is not in the files given: add its YAML "
            "to the command (its pipeline runs first), or use spec.model.artifacts"
        )
    return md


def _needed_profiles(
    job: BatchInferenceSpec, md: ModelDeploymentSpec | None, profiles: Mapping[str, HardwareProfileSpec]
) -> dict[str, HardwareProfileSpec]:
    """The profiles the run needs: the batch's candidates and the model's pipeline's."""
    wanted = [*job.hardware_profiles]
    if md is not None:
        wanted += [md.compression_profile, *md.serving_profiles]
    return {name: profiles[name] for name in dict.fromkeys(wanted) if name in profiles}


def _as_run(
    job: BatchInferenceSpec, input_path: Path, workers: int | None, overwrite: bool
) -> dict[str, Any]:
    """The BatchInference as this run applies it: the input as a file (zoo:// data written out),
    --workers and --overwrite set in its spec."""
    body = job.resource.to_dict()
    body["metadata"]["namespace"] = job.owner.namespace
    spec = body["spec"]
    spec["input"]["uri"] = f"file://{input_path}"
    if workers is not None:
        spec["workers"] = workers
        spec["maxWorkers"] = max(workers, spec.get("maxWorkers", workers))
    if overwrite:
        spec["output"]["overwrite"] = True
    return body


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


def _plan_table(name: str, rows: int | None, plan: Sequence[BatchPlanRow], selected: BatchSelected) -> Table:
    table = Table(
        title=f"frugal batch: {name}, {rows if rows is not None else '?'} rows: cost per row on each candidate"
    )
    for column in ("profile", "rows/s per worker", "workers", "seconds", "$ per 1M rows", "verdict"):
        table.add_column(column)
    for row in plan:
        chosen = row.hardware_profile == selected.hardware_profile
        verdict = "chosen" if chosen else (row.reason or "dearer") if not row.feasible else "dearer"
        table.add_row(
            str(row.hardware_profile),
            "-" if row.rows_per_second is None else f"{row.rows_per_second:.0f}",
            str(row.workers),
            "-" if row.seconds is None else f"{row.seconds:.0f}",
            "-" if row.cost_per_million_rows is None else f"{float(row.cost_per_million_rows):.4g}",
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
