"""One BatchInference pass: observe (the model, the profiles, the Jobs, the shards on the volume),
decide (:func:`frugal.operator.decision.batch.decide_batch`, pure), create the Jobs, write status.

Progress is read where the workers write it: each finished shard leaves a completion marker in the
output directory, which the operator sees under ``--pvc-root`` (the chart mounts the artifacts
claim there; a batch on another claim needs it mounted too, else progress shows only at the end).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.api.models import BatchInferenceStatus, ModelDeploymentStatus
from frugal.operator.api.spec import (
    BatchInferenceSpec,
    HardwareProfileSpec,
    SpecError,
    owner_of,
    parse_batch_inference,
    parse_hardware_profile,
    parse_model_deployment,
)
from frugal.operator.control.port import ApiError, ClusterPort
from frugal.operator.control.reconciler import Emit, Reconciler
from frugal.operator.decision import artifact_files, status_writes
from frugal.operator.decision.batch_inference import (
    BatchObserved,
    Progress,
    ResolvedModel,
    candidate_names,
    decide_batch,
    refusal,
)
from frugal.operator.manifests import batch_jobs
from frugal.operator.manifests.batch_jobs import ARTIFACTS, INPUT, OUTPUT, Location
from frugal.storage import object_store

log = logging.getLogger(__name__)
KIND = "BatchInference"


class BatchReconciler:
    def __init__(self, cluster: ClusterPort, reconciler: Reconciler) -> None:
        self.cluster = cluster
        self.reconciler = reconciler  # its settings, its Job reading, its Event poster
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def reconcile_named(self, namespace: str, name: str) -> None:
        with self._lock(namespace, name):
            body = self.cluster.get(API_VERSION, KIND, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            self._reconcile(body, self.reconciler.poster(body))

    def _reconcile(self, body: Mapping[str, Any], emit: Emit) -> None:
        status = BatchInferenceStatus.from_body(body)
        try:
            batch = parse_batch_inference(body)
        except SpecError as error:
            self._write(body, {"phase": "Failed", "message": str(error)}, [], emit)
            return
        settings = self.reconciler.settings
        # Asked before observing, which would read a file:// input on the operator's own filesystem.
        decision = refusal(batch, settings.allow_host_path)
        if decision is None:
            observed, profiles, locations = self._observe(batch, status, settings.pvc_root)
            decision = decide_batch(
                batch, profiles, locations, observed, settings.serving_image_for, settings.allow_host_path
            )
        for job in decision.apply:
            try:
                self.cluster.apply(job)
            except ApiError as error:
                if error.status not in (400, 403, 422):
                    raise
                self._write(body, {"phase": "Failed", "message": f"the API server refused {error}"}, [], emit)
                return
        patch = {"phase": decision.phase.value, "message": decision.message, **decision.status}
        self._write(body, patch, decision.conditions, emit)

    def _observe(
        self, batch: BatchInferenceSpec, status: BatchInferenceStatus, pvc_root: Path | None
    ) -> tuple[BatchObserved, dict[str, HardwareProfileSpec], dict[str, Location]]:
        ns = batch.owner.namespace
        model, model_error, md_profiles = self._model(batch, pvc_root)
        wanted = batch.hardware_profiles or md_profiles
        profiles: dict[str, HardwareProfileSpec] = {}
        for name in wanted:
            found = self.cluster.get(API_VERSION, "HardwareProfile", None, name)
            if found is not None:
                profiles[name] = parse_hardware_profile(found)
        missing = tuple(n for n in wanted if n not in profiles)
        input_error = None
        if batch.input_uri.startswith("zoo://"):
            input_error = (
                f"spec.input.uri {batch.input_uri}: zoo:// data is for frugal batch on one machine; in a "
                "cluster put the data on a claim and use pvc://<claim>/<path>"
            )
            locations = {OUTPUT: batch_jobs.locate(batch.output_uri, pvc_root)}
            locations[INPUT] = locations[OUTPUT]
        else:
            locations = {
                INPUT: batch_jobs.locate(batch.input_uri, pvc_root),
                OUTPUT: batch_jobs.locate(batch.output_uri, pvc_root),
            }
        if model is not None:
            locations[ARTIFACTS] = batch_jobs.locate(model.artifacts_uri, pvc_root)
            model = _with_throughput(model, locations[ARTIFACTS], candidate_names(batch, profiles))
        workers = self.reconciler.job(ns, batch_jobs.job_name(batch.owner, "score"))
        aggregate = self.reconciler.job(ns, batch_jobs.job_name(batch.owner, "aggregate"))
        progress, summary, unreadable = _progress(
            locations.get(ARTIFACTS),
            None if model is None else model.variant,
            locations[INPUT],
            locations[OUTPUT],
            batch.spec.rows_per_shard,
        )
        if unreadable is not None and input_error is None and summary is None:
            input_error = unreadable
        observed = BatchObserved(
            model=model,
            model_error=model_error,
            missing_profiles=missing,
            workers=workers,
            aggregate=aggregate,
            progress=progress,
            summary=summary,
            selected=status.selected,
            input_error=input_error,
        )
        return observed, profiles, locations

    def _model(
        self, batch: BatchInferenceSpec, pvc_root: Path | None
    ) -> tuple[ResolvedModel | None, str | None, tuple[str, ...]]:
        """The variant and artifacts to score with, why they are not known yet, and the profiles a
        ModelDeployment serves on (the default candidates)."""
        if batch.artifacts is not None:
            return ResolvedModel(batch.artifacts.variant, batch.artifacts.uri), None, ()
        name = str(batch.model_deployment)
        body = self.cluster.get(API_VERSION, "ModelDeployment", batch.owner.namespace, name)
        if body is None:
            return None, f"ModelDeployment {name} does not exist in {batch.owner.namespace}", ()
        md_status = ModelDeploymentStatus.from_body(body)
        variant = md_status.selected.variant if md_status.selected else None
        artifacts = md_status.artifacts.uri if md_status.artifacts else None
        try:
            md = parse_model_deployment(body)
        except SpecError as error:
            return None, f"ModelDeployment {name}: {error}", ()
        if not variant or not artifacts:
            return (
                None,
                f"ModelDeployment {name} has not chosen a variant yet (phase {md_status.phase})",
                (md.serving_profiles),
            )
        if object_store.is_object_store(str(artifacts)):
            return (
                None,
                f"ModelDeployment {name} keeps its artifacts in a bucket ({artifacts}); a BatchInference "
                "reads them from a claim only, so far: compress it with pvc:// storage, or name artifacts "
                "on a claim in spec.model.artifacts",
                md.serving_profiles,
            )
        price = float(md.price_per_kwh)
        return ResolvedModel(str(variant), str(artifacts), price_per_kwh=price), None, md.serving_profiles

    def _write(self, body: Mapping[str, Any], patch: dict[str, Any], conditions: Any, emit: Emit) -> None:
        old = BatchInferenceStatus.from_body(body)
        generation = int(body["metadata"].get("generation") or 1)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = status_writes.batch_patch(old, patch, conditions, generation, now)
        if new is None:
            return
        owner = owner_of(body)
        self.cluster.patch_status(API_VERSION, KIND, owner.namespace, owner.name, new)
        if old.phase != new.get("phase"):
            kind = "Warning" if new.get("phase") == "Failed" else "Normal"
            emit(kind, f"Batch{new.get('phase')}", str(new.get("message") or "")[:1024])

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())


def _with_throughput(model: ResolvedModel, artifacts: Location, profiles: tuple[str, ...]) -> ResolvedModel:
    """One worker's rows/s per profile: what profiling measured for the variant (one serving replica
    at the serving batch size), and the compression report's number as a fallback."""
    if artifacts.operator_path is None:
        return model
    try:
        found = artifact_files.read(artifacts.operator_path, profiles)
    except artifact_files.ArtifactError:
        return model
    throughput = artifact_files.throughput(found, model.variant)
    report = None
    for variant in artifact_files.planner_variants(found):
        if variant.name == model.variant:
            report = variant.report_throughput_rps
    return ResolvedModel(model.variant, model.artifacts_uri, throughput, report, model.price_per_kwh)


def _progress(
    artifacts: Location | None,
    variant: str | None,
    input_location: Location,
    output: Location,
    rows_per_shard: int,
) -> tuple[Progress, Mapping[str, Any] | None, str | None]:
    """Shards done (their markers) and the summary, read from the output as the operator sees it, the
    shards in all, planned from the input's metadata as the workers plan them, and why the input
    cannot be planned (when the operator sees it, no worker could plan it either). Read only: the
    output's rules (refuse, overwrite) are the workers' to apply.

    The input is anyone's file: whatever reading it raises stays with this BatchInference (its
    status says so) and never reaches the loop that reconciles every other one."""
    from frugal.serving.batch import engine
    from frugal.serving.batch import inputs as batch_data
    from frugal.serving.server import artifacts as artifact_format

    if output.operator_path is None:
        return Progress(), None, None
    total_shards = total_rows = None
    unreadable: str | None = None
    if (
        input_location.operator_path is not None
        and artifacts is not None
        and artifacts.operator_path is not None
    ):
        try:
            manifest = artifact_format.load_manifest(artifacts.operator_path)
            inputs = manifest.variant(str(variant)).inputs
            files = [
                batch_data.describe(path, inputs)
                for path in batch_data.input_files(input_location.operator_path)
            ]
            shards = batch_data.plan(files, rows_per_shard)
            total_shards, total_rows = len(shards), sum(shard.rows for shard in shards)
        except batch_data.BatchError as error:
            # The same bytes the workers would read (declaring more rows than they hold, say): refused
            # before any Job. An input missing here may be on a claim the operator does not mount.
            if input_location.operator_path.exists():
                unreadable = f"spec.input.uri {input_location.uri} cannot be scored: {error}"
        except (artifact_format.ArtifactError, OSError):
            pass  # the model's files are another condition's; a transient read error, the next poll's
        except Exception as error:  # one user's file must not stop every other batch
            log.warning("BatchInference input %s cannot be planned", input_location.uri, exc_info=True)
            unreadable = (
                f"spec.input.uri {input_location.uri} is unreadable: {type(error).__name__}: "
                f"{batch_data.one_line(error)}"
            )[:2048]
    layout = engine.Layout(output.operator_path)
    markers: list[engine.Marker] = []
    summary = None
    try:
        if layout.shards.is_dir() and not layout.shards.is_symlink():
            markers = [
                marker
                for path in sorted(layout.shards.glob(f"part-*{engine.MARKER_SUFFIX}"))
                if (marker := engine.read_marker(path)) is not None
            ]
        if layout.summary.is_file() and not layout.summary.is_symlink():
            summary = json.loads(layout.summary.read_text())
    except Exception:  # the output is anyone's directory too: no progress, and no crash
        log.warning("BatchInference output %s cannot be read", output.uri, exc_info=True)
    return (
        Progress(
            shards_done=len(markers),
            shards_total=total_shards,
            rows_done=sum(m.rows for m in markers),
            rows_total=total_rows,
            busy_seconds=sum(m.seconds for m in markers),
            wall_seconds=(max(m.finished_at for m in markers) - min(m.started_at for m in markers))
            if markers
            else 0.0,
        ),
        summary,
        unreadable,
    )
