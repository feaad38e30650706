"""Pod-template pieces every child shares: restricted security, scheduling from a profile, volumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frugal.operator.api.spec import HardwareProfileSpec
from frugal.operator.manifests.storage import ArtifactLocation

NON_ROOT_UID = 65532
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"
# The node's disk a pod may use (the scratch emptyDir, logs), unless the HardwareProfile says: bounded, so
# one pod cannot fill a node; the scratch volume holds caches and temporary files, the artifacts
# live on their own volume.
EPHEMERAL_REQUEST = "256Mi"
EPHEMERAL_LIMIT = "2Gi"

POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_UID,
    "runAsGroup": NON_ROOT_UID,
    "fsGroup": NON_ROOT_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}

CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# A read-only root filesystem needs somewhere to write: HOME, caches and temp files go to /tmp.
SCRATCH_ENV = [
    {"name": "HOME", "value": SCRATCH_PATH},
    {"name": "TMPDIR", "value": SCRATCH_PATH},
    {"name": "FRUGAL_CACHE_DIR", "value": f"{SCRATCH_PATH}/frugal-cache"},
]

# Serving pods: `frugal serve` records files it has checked against the manifest here, so a restarted
# container trusts them by their stat tuple instead of hashing them again (`--verify-cache-dir`). An
# emptyDir lives as long as the pod: container restarts keep it, a new pod starts empty and hashes once.
VERIFY_CACHE_VOLUME = "verify-cache"
VERIFY_CACHE_PATH = "/var/cache/frugal/verify"
VERIFY_CACHE_ENV = "FRUGAL_VERIFY_CACHE_DIR"
VERIFY_CACHE_SIZE_LIMIT = "8Mi"  # the file holds at most 512 entries of a path and six numbers each


def scheduling(profile: HardwareProfileSpec) -> dict[str, Any]:
    """nodeSelector and tolerations that put a pod on the profile's pool."""
    result: dict[str, Any] = {}
    if profile.node_selector:
        result["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        result["tolerations"] = [dict(t) for t in profile.tolerations]
    return result


# The extended resource each accelerator kind is scheduled by (device plugins register these names).
ACCELERATOR_RESOURCES = {"nvidia-gpu": "nvidia.com/gpu", "google-tpu": "google.com/tpu"}
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


def resources(profile: HardwareProfileSpec) -> dict[str, Any]:
    """The profile's requests and limits, plus `accelerator.count` of the accelerator's extended
    resource (or CPU cores, for cpu) and bounded ephemeral storage, where the profile's own resources
    do not already say."""
    requests, limits = dict(profile.requests), dict(profile.limits)
    requests.setdefault("ephemeral-storage", EPHEMERAL_REQUEST)
    limits.setdefault("ephemeral-storage", EPHEMERAL_LIMIT)
    extended = ACCELERATOR_RESOURCES.get(profile.accelerator_kind)
    if extended is not None and not _names_a_slice(requests, limits):
        limits.setdefault(extended, str(profile.accelerator_count))
    elif profile.accelerator_kind == "cpu":
        requests.setdefault("cpu", str(profile.accelerator_count))
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _names_a_slice(*resources: Mapping[str, Any]) -> bool:
    """Whether the profile asks for a MIG slice (``nvidia.com/mig-<profile>``): then that slice is the
    accelerator, and a whole ``nvidia.com/gpu`` beside it would ask for a GPU and a slice at once."""
    return any(name.startswith(MIG_RESOURCE_PREFIX) for found in resources for name in found)


def volumes(artifacts: ArtifactLocation) -> list[dict[str, Any]]:
    return [*artifacts.volumes(), scratch_volume()]


def scratch_volume() -> dict[str, Any]:
    """The writable /tmp of a read-only root filesystem, bounded like the pod's ephemeral storage."""
    return {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": EPHEMERAL_LIMIT}}


def volume_mounts(artifacts: ArtifactLocation, read_only: bool) -> list[dict[str, Any]]:
    return [*artifacts.mount(read_only), {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}]


def verify_cache_volume() -> dict[str, Any]:
    return {"name": VERIFY_CACHE_VOLUME, "emptyDir": {"sizeLimit": VERIFY_CACHE_SIZE_LIMIT}}


def verify_cache_mount() -> dict[str, Any]:
    return {"name": VERIFY_CACHE_VOLUME, "mountPath": VERIFY_CACHE_PATH}


def container(
    name: str,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    profile: HardwareProfileSpec,
    artifacts: ArtifactLocation,
    read_only: bool,
) -> dict[str, Any]:
    """A container with the restricted security context, the profile's resources and the volumes."""
    result: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": [*SCRATCH_ENV, *env, *artifacts.env()],
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": volume_mounts(artifacts, read_only),
        # A failed run's last log lines become the pod's termination message, which the operator
        # copies into the ModelDeployment's condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if limits := resources(profile):
        result["resources"] = limits
    return result
