"""Desired compression and profiling Jobs (pure: spec in, manifest dict out).

The compression Job runs on the pool of ``spec.compression.hardwareProfile``. Distillation with
``workers > 1`` makes it an Indexed Job whose pods find each other through a headless Service:
rank = the completion index, world size = workers, rendezvous at pod 0 (torchrun's variables).
Profiling runs one Job per candidate serving profile, with that profile's image and resources.
The claims that pvc:// model and data URIs name are mounted read-only in the compression pod
(every worker: they share the template) and ``FRUGAL_PVC_ROOT`` says where.

Both kinds are bounded: a pod that fails is retried ``BACKOFF_LIMIT`` times (a lost node, an
out-of-memory kill), except that exit code 2 — the commands' "your input is wrong" (an unreadable
model, a bad config) — fails the Job at once (``podFailurePolicy``: retrying cannot help), a pod
evicted or preempted (``DisruptionTarget``) is not counted, and ``activeDeadlineSeconds`` ends a Job
that hangs. The container's termination message falls back to its log's tail, which the operator
copies into the ModelDeployment's condition and Event.
"""

from __future__ import annotations

from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec
from frugal.operator.manifests import container_commands, names, pod_specs, storage
from frugal.operator.manifests.storage import ArtifactLocation

BACKOFF_LIMIT = 2
EXIT_USER_ERROR = 2  # what `frugal compress` and `frugal profile` exit with on input they cannot use
COMPRESSION_DEADLINE_SECONDS = 6 * 3600  # distillation of a large teacher may take hours
PROFILING_DEADLINE_SECONDS = 3600
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def desired_compression_job(
    md: ModelDeploymentSpec, profile: HardwareProfileSpec, image: str, artifacts: ArtifactLocation
) -> dict[str, Any]:
    """The compression Job of the current generation."""
    name = names.compression_job(md.owner)
    labels = names.labels(md.owner, "compression", **{names.LABEL_PROFILE: profile.name})
    workers = md.distillation_workers
    claims = storage.claims_named(_input_uris(md))
    env = _claims_env(claims) + (_distributed_env(md, name, workers) if workers > 1 else [])
    container = pod_specs.container(
        "compress", image, container_commands.compress(md, artifacts.pod_path), env, profile, artifacts, read_only=False
    )
    pod_spec = _pod_spec(container, profile, artifacts)
    volumes, mounts = storage.claim_mounts(claims, artifacts)
    pod_spec["volumes"] += volumes
    container["volumeMounts"] += mounts
    job_spec = _bounded(COMPRESSION_DEADLINE_SECONDS)
    if workers > 1:
        pod_spec["subdomain"] = names.distillation_service(md.owner)
        container["ports"] = [{"name": "rendezvous", "containerPort": container_commands.DISTRIBUTED_PORT}]
        job_spec.update(completionMode="Indexed", completions=workers, parallelism=workers)
    job_spec["template"] = {"metadata": {"labels": labels}, "spec": pod_spec}
    return _job(md, name, labels, job_spec)


def desired_distillation_service(md: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The headless Service that gives each distillation worker a DNS name (None with 1 worker)."""
    if md.distillation_workers <= 1:
        return None
    name = names.distillation_service(md.owner)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(md.owner, name, "compression"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": _selector(names.labels(md.owner, "compression")),
            "ports": [{"name": "rendezvous", "port": container_commands.DISTRIBUTED_PORT}],
        },
    }


def desired_profiling_job(
    md: ModelDeploymentSpec, profile: HardwareProfileSpec, image: str, artifacts: ArtifactLocation
) -> dict[str, Any]:
    """The Job that measures every surviving variant on `profile`'s hardware."""
    name = names.profiling_job(md.owner, profile.name)
    labels = names.labels(md.owner, "profiling", **{names.LABEL_PROFILE: profile.name})
    command = container_commands.profile(artifacts.pod_path, profile.name, md, profile.execution_provider)
    # Profiling writes one results file; the artifacts volume stays writable for it.
    container = pod_specs.container(
        "profile", profile.image or image, command, [], profile, artifacts, read_only=False
    )
    pod_spec = _pod_spec(container, profile, artifacts)
    spec = {**_bounded(PROFILING_DEADLINE_SECONDS), "template": {"metadata": {"labels": labels}, "spec": pod_spec}}
    return _job(md, name, labels, spec)


def _bounded(deadline_seconds: int) -> dict[str, Any]:
    """How often and how long a Job may try (see the module's docstring)."""
    return {
        "backoffLimit": BACKOFF_LIMIT,
        "activeDeadlineSeconds": deadline_seconds,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [EXIT_USER_ERROR]}},
            ]
        },
    }


def _pod_spec(
    container: dict[str, Any], profile: HardwareProfileSpec, artifacts: ArtifactLocation
) -> dict[str, Any]:
    """A run-to-completion pod on `profile`'s pool with the restricted security context."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": dict(pod_specs.POD_SECURITY),
        "containers": [container],
        "volumes": pod_specs.volumes(artifacts),
        **pod_specs.scheduling(profile),
    }


def _job(md: ModelDeploymentSpec, name: str, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    metadata = names.metadata(md.owner, name, labels[names.LABEL_ROLE])
    metadata["labels"] = labels
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _input_uris(md: ModelDeploymentSpec) -> list[str]:
    """spec.model.uri, spec.data.validation.uri and spec.data.calibration.uri (those set)."""
    data = md.spec.data
    sources = () if data is None else (data.validation, data.calibration)
    return [md.model_uri, *(source.uri for source in sources if source is not None)]


def _claims_env(claims: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": storage.PVC_ROOT_ENV, "value": storage.CLAIMS_MOUNT}] if claims else []


def _distributed_env(md: ModelDeploymentSpec, job: str, workers: int) -> list[dict[str, Any]]:
    rendezvous = f"{job}-0.{names.distillation_service(md.owner)}.{md.owner.namespace}.svc"
    return [
        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        {"name": "WORLD_SIZE", "value": str(workers)},
        {"name": "MASTER_ADDR", "value": rendezvous},
        {"name": "MASTER_PORT", "value": str(container_commands.DISTRIBUTED_PORT)},
    ]


def _selector(labels: dict[str, str]) -> dict[str, str]:
    keys = (names.LABEL_MD, names.LABEL_GENERATION, names.LABEL_ROLE)
    return {key: labels[key] for key in keys}
