"""What a user must change when a pod cannot run: read from the pod's status as the scheduler and
the kubelet wrote it.

- ``Unschedulable``: the scheduler found no node of the HardwareProfile's pool for it;
- ``ImagePullFailed``: the kubelet cannot get the image (not on the node, not in the registry, no
  pull secret) — the message names the image and where it comes from;
- ``OOMKilled``: the container was killed at its memory limit — the message names the limit and
  the HardwareProfile field that sets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from frugal.operator.manifests import names

UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_FAILED = "ImagePullFailed"
OOM_KILLED = "OOMKilled"
# The kubelet's waiting reasons for an image it cannot get.
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
MESSAGE_LIMIT = 900


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str


def _who(pod: Mapping[str, Any]) -> tuple[str, str]:
    labels = pod.get("metadata", {}).get("labels") or {}
    return labels.get(names.LABEL_ROLE, "a"), labels.get(names.LABEL_PROFILE, "?")


def _containers(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    return {c.get("name", ""): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def oom_killed(pod: Mapping[str, Any]) -> str | None:
    """The message for a container of `pod` killed at its memory limit, now or in its last run."""
    role, profile = _who(pod)
    containers = _containers(pod)
    for status in _statuses(pod):
        for state in (status.get("state") or {}, status.get("lastState") or {}):
            if (state.get("terminated") or {}).get("reason") != OOM_KILLED:
                continue
            name = str(status.get("name", ""))
            limit = ((containers.get(name) or {}).get("resources") or {}).get("limits", {}).get("memory")
            at = f"its memory limit {limit}" if limit else "the node's memory (it has no memory limit)"
            return (
                f"{role} pod {pod['metadata']['name']}: container {name} was OOMKilled at {at}; raise "
                f"spec.resources.limits.memory (and requests.memory) of HardwareProfile {profile}"
            )
    return None


def image_pull_failure(pod: Mapping[str, Any]) -> str | None:
    role, profile = _who(pod)
    for status in _statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            image = status.get("image") or (_containers(pod).get(str(status.get("name", ""))) or {}).get("image")
            detail = " ".join(str(waiting.get("message", "")).split())[:400]
            return (
                f"{role} pod {pod['metadata']['name']} cannot get image {image} ({waiting['reason']}: {detail}). "
                "Build and push it (docker build --target full|serving|gpu, see the README), then set the "
                f"chart's image.repository/image.tag, or spec.image of HardwareProfile {profile}"
            )
    return None


def unschedulable(pod: Mapping[str, Any]) -> str | None:
    role, profile = _who(pod)
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return (
                f"{role} pod {pod['metadata']['name']} cannot be placed on HardwareProfile {profile}'s pool: "
                f"{str(condition.get('message', 'no reason given')).strip()[:800]} "
                "(check the profile's nodeSelector, tolerations and resources against the pool's nodes)"
            )
    return None


def problem(pod: Mapping[str, Any]) -> PodProblem | None:
    for reason, check in ((OOM_KILLED, oom_killed), (IMAGE_PULL_FAILED, image_pull_failure), (UNSCHEDULABLE, unschedulable)):
        if (message := check(pod)) is not None:
            return PodProblem(reason, message[:MESSAGE_LIMIT])
    return None


def first_problem(pods: Iterable[Mapping[str, Any]]) -> PodProblem | None:
    """The first problem of `pods`, in their order."""
    for pod in pods:
        if (found := problem(pod)) is not None:
            return found
    return None
