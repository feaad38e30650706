"""A BatchInference's Jobs (pure): an Indexed Job of scoring workers, then one aggregation Job.

Completion index ``i`` of ``N`` scores shards ``i, i+N, i+2N, ...`` (``frugal batch-worker`` reads
``JOB_COMPLETION_INDEX``, which Kubernetes sets in an Indexed Job's pods); a pod that fails is
retried (``backoffLimitPerIndex``) and skips the shards it already finished, since each finished
shard leaves a completion marker next to its output. The aggregation Job joins the shards in input
order once every index has succeeded. Both run the same config, given as JSON in
``FRUGAL_BATCH_CONFIG``, with the paths as the pod sees them.

Both are bounded like the ModelDeployment's Jobs: the scoring Job may run ``spec.deadlineSeconds`` when
the author gives one (the placement chose the workers to finish within it, start-up included, so a Job
still running then has a hung pod or a wrong estimate: it fails with ``DeadlineExceeded``, which the
status reports) and :data:`SCORE_DEADLINE_SECONDS` otherwise; aggregation, a join of finished shards,
:data:`AGGREGATE_DEADLINE_SECONDS`. The scratch ``emptyDir`` has a ``sizeLimit``, so a pod cannot fill
its node's disk.

Volumes: each pvc:// claim the batch names (input, output, artifacts) is mounted once at
``<CLAIMS_MOUNT>/<claim>`` (writable if the output is on it), each file:// location as a hostPath at
its own path (for ``frugal up``-style single-node use). An s3:// location needs no volume: the pods
read and write the bucket themselves, with the store's settings and references to its Secret's keys
as environment (:class:`~frugal.operator.manifests.storage.StoreAccess`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from frugal.operator.api.spec import BatchInferenceSpec, HardwareProfileSpec, Owner, has_parent_segment
from frugal.operator.manifests import names, pod_specs, storage
from frugal.operator.manifests.storage import StoreAccess
from frugal.storage import object_store

CONFIG_ENV = "FRUGAL_BATCH_CONFIG"
LABEL_BATCH = "frugal.dev/batch-inference"
RETRIES_PER_INDEX = 2
SCORE_DEADLINE_SECONDS = 24 * 3600  # no spec.deadlineSeconds: a day of scoring, then the Job fails
AGGREGATE_DEADLINE_SECONDS = 3600  # joining finished shards: a copy, not inference
INPUT, OUTPUT, ARTIFACTS = "input", "output", "artifacts"


@dataclass(frozen=True)
class Location:
    """A URI as a pod sees it and as the operator sees it on its own filesystem (None: it cannot; a
    bucket's objects the operator reads with the store's keys instead)."""

    uri: str
    pod_path: str
    operator_path: Path | None

    @property
    def in_object_store(self) -> bool:
        return object_store.is_object_store(self.uri)


def locate(uri: str, pvc_root: Path | None) -> Location:
    parsed = urlparse(uri)
    if object_store.is_object_store(uri):
        if not parsed.netloc or has_parent_segment(parsed.path):  # the CRD refuses these too
            raise ValueError(f"{uri!r}: use s3://<bucket>/<key or prefix> without '..' segments")
        return Location(uri, uri, None)
    if parsed.scheme == "file":
        path = posixpath.normpath(parsed.path or "/")
        return Location(uri, path, Path(path))
    pvc = storage.split_pvc(uri)
    if pvc is None:
        raise ValueError(
            f"{uri!r}: a batch reads and writes s3://<bucket>/<prefix>, pvc://<claim>/<path> or file:///<path>"
        )
    claim, sub = pvc
    if has_parent_segment(sub):  # the CRD refuses these; never address outside the named claim path
        raise ValueError(f"{uri!r}: '..' path segments are not allowed")
    operator_path = None if pvc_root is None else pvc_root / claim / sub
    return Location(uri, posixpath.join(storage.CLAIMS_MOUNT, claim, sub), operator_path)


def job_name(owner: Owner, step: str) -> str:
    return names.bounded(names.generation_prefix(owner), step, limit=names.JOB_NAME_MAX)


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        names.LABEL_NAME: f"frugal-{component}",
        names.LABEL_INSTANCE: owner.name,
        names.LABEL_ROLE: component,
        names.LABEL_PART_OF: names.PART_OF,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        LABEL_BATCH: owner.name,
        names.LABEL_GENERATION: str(owner.generation),
    }


def worker_config(
    batch: BatchInferenceSpec,
    locations: Mapping[str, Location],
    variant: str,
    profile: HardwareProfileSpec,
    price_per_kwh: float,
) -> dict[str, Any]:
    """What `frugal batch-worker` and `frugal batch-aggregate` read (paths as the pod sees them)."""
    return {
        "input": locations[INPUT].pod_path,
        "output": locations[OUTPUT].pod_path,
        "artifacts": locations[ARTIFACTS].pod_path,
        "variant": variant,
        "batchSize": batch.spec.batch_size,
        "rowsPerShard": batch.spec.rows_per_shard,
        "overwrite": batch.overwrite,
        "executionProvider": profile.execution_provider,
        "costPerHour": float(profile.cost_per_hour),
        "idleWatts": profile.idle_watts,
        "maxWatts": profile.max_watts,
        "pricePerKWh": price_per_kwh,
    }


def desired_worker_job(
    batch: BatchInferenceSpec,
    profile: HardwareProfileSpec,
    image: str,
    locations: Mapping[str, Location],
    config: Mapping[str, Any],
    workers: int,
    access: StoreAccess | None = None,
) -> dict[str, Any]:
    """The Indexed Job of `workers` scoring pods on `profile`'s pool; `access`: how they reach the
    object store of the batch's s3:// locations."""
    command = ["frugal", "batch-worker", "--count", str(workers)]
    spec = {
        "completionMode": "Indexed",
        "completions": workers,
        "parallelism": workers,
        "backoffLimitPerIndex": RETRIES_PER_INDEX,
        "maxFailedIndexes": 0,
        "activeDeadlineSeconds": batch.spec.deadline_seconds or SCORE_DEADLINE_SECONDS,
    }
    return _job(batch, "score", "batch-worker", profile, image, locations, config, command, spec, access)


def desired_aggregate_job(
    batch: BatchInferenceSpec,
    profile: HardwareProfileSpec,
    image: str,
    locations: Mapping[str, Location],
    config: Mapping[str, Any],
    access: StoreAccess | None = None,
) -> dict[str, Any]:
    """The Job that joins the shards in input order (on the workers' profile: its image has the runtime)."""
    command = ["frugal", "batch-aggregate"]
    return _job(
        batch,
        "aggregate",
        "batch-aggregate",
        profile,
        image,
        locations,
        config,
        command,
        {"backoffLimit": RETRIES_PER_INDEX, "activeDeadlineSeconds": AGGREGATE_DEADLINE_SECONDS},
        access,
    )


def _job(
    batch: BatchInferenceSpec,
    step: str,
    component: str,
    profile: HardwareProfileSpec,
    image: str,
    locations: Mapping[str, Location],
    config: Mapping[str, Any],
    command: list[str],
    spec: dict[str, Any],
    access: StoreAccess | None,
) -> dict[str, Any]:
    owner = batch.owner
    job_labels = labels(owner, component)
    volumes, mounts = _volumes(locations)
    container: dict[str, Any] = {
        "name": component,
        "image": profile.image or image,
        "command": command,
        "env": [
            *pod_specs.SCRATCH_ENV,
            {"name": CONFIG_ENV, "value": json.dumps(dict(config), sort_keys=True)},
            *(access.env() if access is not None else []),
        ],
        "securityContext": dict(pod_specs.CONTAINER_SECURITY),
        "volumeMounts": [
            *mounts,
            *(access.mounts() if access is not None else []),
            {"name": pod_specs.SCRATCH_VOLUME, "mountPath": pod_specs.SCRATCH_PATH},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources := pod_specs.resources(profile):
        container["resources"] = resources
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": dict(pod_specs.POD_SECURITY),
        "containers": [container],
        "volumes": [*volumes, *(access.volumes() if access is not None else []), pod_specs.scratch_volume()],
        **pod_specs.scheduling(profile),
    }
    metadata = {
        "name": job_name(owner, step),
        "namespace": owner.namespace,
        "labels": job_labels,
        "ownerReferences": [names.owner_reference(owner)],
    }
    spec = {**spec, "template": {"metadata": {"labels": job_labels}, "spec": pod_spec}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _volumes(locations: Mapping[str, Location]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One volume per claim (writable when the output is on it) and per file:// location."""
    claims: dict[str, bool] = {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for role, location in locations.items():
        if location.in_object_store:
            continue
        pvc = storage.split_pvc(location.uri)
        if pvc is not None:
            claims[pvc[0]] = claims.get(pvc[0], False) or role == OUTPUT
            continue
        name = names.bounded("host", role)
        kind = "DirectoryOrCreate" if role == OUTPUT else ""
        volumes.append({"name": name, "hostPath": {"path": location.pod_path, "type": kind}})
        mounts.append({"name": name, "mountPath": location.pod_path, "readOnly": role != OUTPUT})
    for claim, writable in sorted(claims.items()):
        name = storage.claim_volume_name(claim)
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable}}
        )
        mounts.append(
            {"name": name, "mountPath": posixpath.join(storage.CLAIMS_MOUNT, claim), "readOnly": not writable}
        )
    return volumes, mounts
