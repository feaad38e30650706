"""One BatchInference pass: observe (the model, the profiles, the Jobs, the shards written so far),
decide (:func:`frugal.operator.decision.batch.decide_batch`, pure), create the Jobs, write status.

Progress is read where the workers write it: each finished shard leaves a completion marker in the
output. In a bucket the operator reads the markers with the keys of the batch's object-store Secret
(never logged or written anywhere); on a claim it sees them under ``--pvc-root`` (the chart mounts the
artifacts claim there; a batch on another claim needs it mounted too, else progress shows only at
the end).
"""

from __future__ import annotations

import dataclasses
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
from frugal.operator.control import artifact_access
from frugal.operator.control.port import ApiError, ClusterPort
from frugal.operator.control.reconciler import Emit, Reconciler
from frugal.operator.decision import artifact_files, status_writes
from frugal.operator.decision.batch_inference import (
    BatchObserved,
    Progress,
    ResolvedModel,
    batch_store_access,
    candidate_names,
    decide_batch,
    refusal,
)
from frugal.operator.manifests import batch_jobs
from frugal.operator.manifests.batch_jobs import ARTIFACTS, INPUT, OUTPUT, Location
from frugal.operator.manifests.storage import StoreAccess
from frugal.schema.artifact_format import ArtifactError, read_manifest
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
                batch, profiles, locations, observed, settings.serving_image_for, settings.allow_host_path,
                settings.object_store,
            )  # fmt: skip
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
                "cluster put the data in a bucket (s3://<bucket>/<prefix>) or on a claim (pvc://<claim>/<path>)"
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
        access = batch_store_access(batch, model, locations, self.reconciler.settings.object_store)
        store_error: str | None = None
        try:
            readable = {role: self._readable(loc, access, ns) for role, loc in locations.items()}
        except ArtifactError as error:
            readable, store_error = {}, str(error)
        if model is not None:
            model = _with_throughput(model, readable.get(ARTIFACTS), candidate_names(batch, profiles))
        workers = self.reconciler.job(ns, batch_jobs.job_name(batch.owner, "score"))
        aggregate = self.reconciler.job(ns, batch_jobs.job_name(batch.owner, "aggregate"))
        progress, summary, unreadable = _progress(
            readable.get(ARTIFACTS),
            None if model is None else model.variant,
            (locations[INPUT], readable.get(INPUT)),
            (locations[OUTPUT], readable.get(OUTPUT)),
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
            store_error=store_error,
        )
        return observed, profiles, locations

    def _readable(
        self, location: Location, access: StoreAccess | None, namespace: str
    ) -> object_store.Location | None:
        """Where the operator reads `location`: a bucket with the store's keys, or its own view of the
        volume (None: it cannot see it). Raises ArtifactError when the keys' Secret cannot be read."""
        if location.in_object_store:
            return artifact_access.opened(self.cluster, location.uri, access, namespace)
        return location.operator_path

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
        price, store = float(md.price_per_kwh), md.spec.object_store
        resolved = ResolvedModel(str(variant), str(artifacts), price_per_kwh=price, object_store=store)
        return resolved, None, md.serving_profiles

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


def _with_throughput(
    model: ResolvedModel, artifacts: object_store.Location | None, profiles: tuple[str, ...]
) -> ResolvedModel:
    """One worker's rows/s per profile: what profiling measured for the variant (one serving replica
    at the serving batch size), and the compression report's number as a fallback."""
    if artifacts is None:
        return model
    try:
        found = artifact_files.read(artifacts, profiles)
    except (artifact_files.ArtifactError, OSError):  # OSError: a bucket's read failed (next pass)
        return model
    throughput = artifact_files.throughput(found, model.variant)
    report = None
    for variant in artifact_files.planner_variants(found):
        if variant.name == model.variant:
            report = variant.report_throughput_rps
    return dataclasses.replace(model, throughput=throughput, report_throughput=report)


def _progress(
    artifacts: object_store.Location | None,
    variant: str | None,
    input_location: tuple[Location, object_store.Location | None],
    output: tuple[Location, object_store.Location | None],
    rows_per_shard: int,
) -> tuple[Progress, Mapping[str, Any] | None, str | None]:
    """Shards done (their markers) and the summary, read from the output as the operator reads it, the
    shards in all, planned from the input's metadata as the workers plan them, and why the input
    cannot be planned (when the operator sees it, no worker could plan it either). Read only: the
    output's rules (refuse, overwrite) are the workers' to apply. Each location comes as (where the
    spec names it, where the operator reads it: None when it cannot).

    The input is anyone's file: whatever reading it raises stays with this BatchInference (its
    status says so) and never reaches the loop that reconciles every other one."""
    from frugal.serving.batch import inputs as batch_data
    from frugal.serving.batch import output_dir

    (input_spec, input_path), (output_spec, output_path) = input_location, output
    if output_path is None:
        return Progress(), None, None
    total_shards = total_rows = None
    unreadable: str | None = None
    if input_path is not None and artifacts is not None:
        try:
            paths = batch_data.input_files(input_path)  # first: a refused key then names the input
            manifest = read_manifest(artifacts)
            inputs = manifest.variant(str(variant)).inputs
            files = [batch_data.describe(path, inputs) for path in paths]
            shards = batch_data.plan(files, rows_per_shard)
            total_shards, total_rows = len(shards), sum(shard.rows for shard in shards)
        except batch_data.BatchError as error:
            # The same bytes the workers would read (declaring more rows than they hold, say): refused
            # before any Job. An input missing here may be on a claim the operator does not mount.
            if input_spec.in_object_store or _exists(input_path):
                unreadable = f"spec.input.uri {input_spec.uri} cannot be scored: {error}"
        except (ArtifactError, OSError) as error:
            # A refused key refuses the workers too (they get the same Secret): say so now. Anything
            # else (a model not there yet, a transient error) is another condition's, or the next poll's.
            if (refused := _refusal(error)) is not None:
                unreadable = f"the batch cannot read its data or model: {refused}"
        except Exception as error:  # one user's file must not stop every other batch
            log.warning("BatchInference input %s cannot be planned: %s", input_spec.uri, type(error).__name__)
            unreadable = (
                f"spec.input.uri {input_spec.uri} is unreadable: {type(error).__name__}: "
                f"{batch_data.one_line(error)}"
            )[:2048]
    layout = output_dir.Layout(output_path)
    markers: list[output_dir.Marker] = []
    summary = None
    try:
        if output_spec.in_object_store or not _is_link(layout.shards):
            markers = [m for m in output_dir.markers_in(layout).values() if m is not None]
        if output_spec.in_object_store or not _is_link(layout.summary):
            summary = output_dir.read_summary(layout)
    except Exception as error:  # the output is anyone's directory too: no progress, and no crash
        log.warning("BatchInference output %s cannot be read: %s", output_spec.uri, type(error).__name__)
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


def _refusal(error: BaseException) -> str | None:
    """What a store refused (a key, a policy, no keys: retrying cannot help), or None. The schema's
    readers wrap the store's error in an ArtifactError that names the object; its class is the
    context's."""
    if isinstance(error, object_store.ObjectStoreError):
        return str(error) if error.refused else None
    cause = error.__context__ if isinstance(error, ArtifactError) else error
    kinds = object_store.REFUSALS - {"FileNotFoundError"}  # a model not written yet is not a refusal
    return str(error) if cause is not None and type(cause).__name__ in kinds else None


def _exists(path: object_store.Location) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _is_link(path: object_store.Location) -> bool:
    """A link planted where the workers write: never followed by the operator's reads."""
    return isinstance(path, Path) and path.is_symlink()
