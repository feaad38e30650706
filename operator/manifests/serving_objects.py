"""Desired serving objects (pure): per shard a Deployment, a Service and a PodDisruptionBudget, plus
the stable endpoint Service, and for a model that may scale to zero its always-on front.

Names and selectors carry the generation and the serving revision (a re-planning rollover within a
generation), so a new generation's or revision's shards come up beside the old ones; the endpoint
Service (named after the ModelDeployment) selects the front shard of whichever (generation, revision)
is live, and only moves once the new one is ready. With ``minReplicas: 0`` the endpoint
Service selects the front (`frugal front`, one Deployment per ModelDeployment, not per generation)
instead, and the live generation's first shard is behind ``<name>-live``, which the front forwards
to and which moves between generations as the endpoint would. ``<name>-live`` also names the live
revision's shard Deployments (`frugal.schema.wake_annotation`), which the front scales from 0 to 1 itself
when it holds a request, as the ServiceAccount, Role and RoleBinding ``<name>-front`` allow
(:func:`desired_front_role`: that Service and those Deployments' scale, nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec, Owner
from frugal.operator.manifests import container_commands, names, pod_specs
from frugal.operator.manifests import node_cache_volumes as node_cache_pieces
from frugal.operator.manifests.storage import ArtifactLocation
from frugal.schema.artifact_format import TensorSpec
from frugal.schema.request_limits import body_limit
from frugal.schema.wake_annotation import WAKE_ANNOTATION, wake_annotation

DRAIN_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30
# How long the front holds a request for a model waking from zero: a pod start plus a model load.
HOLD_DEADLINE_SECONDS = 60
MIB = 1024 * 1024
# The front's memory (FrontBounds): its own process (about 40 MiB idle, measured; its memory request)
# and the requests it keeps, each at most BODY_COPIES x the body limit: the body, and either the copy
# aiohttp makes as it finishes reading it or the replica's answer.
FRONT_MEMORY_LIMIT = 256 * MIB
FRONT_PROCESS_MEMORY = 64 * MIB
BODY_COPIES = 2
FRONT_BOUNDS_ANNOTATION = "frugal.dev/front-bounds"


class ServingOption(Protocol):
    """What serving objects are built for: a variant on a hardware profile over a number of shards
    (:class:`frugal.operator.decision.planner.Option`, which the planner chose)."""

    @property
    def variant(self) -> str: ...

    @property
    def profile(self) -> str: ...

    @property
    def shards(self) -> int: ...


@dataclass(frozen=True)
class Live:
    """The (generation, revision) the endpoint reaches."""

    generation: int
    revision: int = 0

    @classmethod
    def of(cls, owner: Owner) -> Live:
        return cls(owner.generation, owner.revision)


def desired_shard(
    md: ModelDeploymentSpec,
    profile: HardwareProfileSpec,
    image: str,
    artifacts: ArtifactLocation,
    selection: ServingOption,
    index: int,
    node_cache: bool = False,
) -> list[dict[str, Any]]:
    """One shard of the current generation: its Deployment, Service and PodDisruptionBudget."""
    return [
        desired_shard_deployment(md, profile, image, artifacts, selection, index, node_cache),
        desired_shard_service(md, selection, index),
        desired_shard_pdb(md, selection, index),
    ]


def shard_labels(owner: Owner, selection: ServingOption, index: int) -> dict[str, str]:
    return names.labels(
        owner,
        "serving",
        **{
            names.LABEL_SHARD: str(index),
            names.LABEL_PROFILE: selection.profile,
            names.LABEL_VARIANT: selection.variant,
            names.LABEL_REVISION: str(owner.revision),
        },
    )


def shard_metadata(owner: Owner, selection: ServingOption, index: int) -> dict[str, Any]:
    """Name, labels and owner reference shared by a shard's Deployment, Service and PDB."""
    metadata = names.metadata(owner, names.shard(owner, index), "serving")
    metadata["labels"] = shard_labels(owner, selection, index)
    return metadata


def shard_selector(owner: Owner, index: int, live: Live | None = None) -> dict[str, str]:
    """A shard's pods: of the owner's (generation, revision), or of `live`."""
    live = Live.of(owner) if live is None else live
    return {
        names.LABEL_MD: owner.name,
        names.LABEL_ROLE: "serving",
        names.LABEL_GENERATION: str(live.generation),
        names.LABEL_REVISION: str(live.revision),
        names.LABEL_SHARD: str(index),
    }


def desired_shard_deployment(
    md: ModelDeploymentSpec,
    profile: HardwareProfileSpec,
    image: str,
    artifacts: ArtifactLocation,
    selection: ServingOption,
    index: int,
    node_cache: bool = False,
) -> dict[str, Any]:
    """The shard's Deployment without spec.replicas: that field belongs to the autoscaler
    (:func:`desired_replicas`, applied under its own field manager). `node_cache`: its pods share
    verified variants through the node's model cache (:mod:`frugal.operator.manifests.node_cache_volumes`)."""
    labels = shard_labels(md.owner, selection, index)
    command = container_commands.serve(
        md,
        artifacts.pod_path,
        selection.variant,
        index,
        selection.shards,
        _next_stage_url(md.owner, index, selection.shards),
    )
    container = pod_specs.container(
        "serve",
        profile.image or image,
        command,
        _serving_env(md, profile, selection, index),
        profile,
        artifacts,
        read_only=True,
    )
    container.update(
        ports=[
            {"name": "http", "containerPort": container_commands.SERVING_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": container_commands.GRPC_PORT, "protocol": "TCP"},
        ],
        readinessProbe=_probe("/v2/health/ready", period=5, failures=3),
        livenessProbe=_probe("/v2/health/live", period=10, failures=6),
        startupProbe=_probe("/v2/health/live", period=2, failures=90),
        lifecycle={"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
    )
    container["volumeMounts"].append(pod_specs.verify_cache_mount())
    volumes = [*pod_specs.volumes(artifacts), pod_specs.verify_cache_volume()]
    if node_cache:
        container["volumeMounts"] += node_cache_pieces.mounts()
        container["env"].append({"name": node_cache_pieces.ENV, "value": node_cache_pieces.MOUNT_PATH})
        volumes.append(node_cache_pieces.pod_volume())
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": dict(pod_specs.POD_SECURITY),
        "containers": [container],
        "volumes": volumes,
        **pod_specs.scheduling(profile),
    }
    metadata = shard_metadata(md.owner, selection, index)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": shard_selector(md.owner, index)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(container_commands.SERVING_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def desired_replicas(owner: Owner, index: int, replicas: int) -> dict[str, Any]:
    """The autoscaler's whole apply to a shard's Deployment: its replica count and nothing else."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.shard(owner, index), "namespace": owner.namespace},
        "spec": {"replicas": replicas},
    }


def desired_shard_service(md: ModelDeploymentSpec, selection: ServingOption, index: int) -> dict[str, Any]:
    metadata = shard_metadata(md.owner, selection, index)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"selector": shard_selector(md.owner, index), "ports": _serving_ports()},
    }


def desired_shard_pdb(md: ModelDeploymentSpec, selection: ServingOption, index: int) -> dict[str, Any]:
    metadata = shard_metadata(md.owner, selection, index)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": shard_selector(md.owner, index)}},
    }


def has_front(md: ModelDeploymentSpec) -> bool:
    """Whether the model may scale to zero, and so is called through its front."""
    return md.min_replicas == 0


def desired_endpoint_service(md: ModelDeploymentSpec, live: Live) -> dict[str, Any]:
    """The model's stable endpoint: the front shard of the live (generation, revision), or the front
    (which proxies REST and gRPC alike, on the same port names)."""
    metadata = names.metadata(md.owner, names.endpoint_service(md.owner), "endpoint")
    selector = front_selector(md.owner) if has_front(md) else shard_selector(md.owner, 0, live)
    if not has_front(md):
        metadata["labels"][names.LABEL_GENERATION] = str(live.generation)
        metadata["labels"][names.LABEL_REVISION] = str(live.revision)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"selector": selector, "ports": _serving_ports()},
    }


def desired_live_service(md: ModelDeploymentSpec, live: Live, shards: int) -> dict[str, Any]:
    """Behind the front: the live revision's first shard (moves once a new one is ready); its
    annotation names the revision's `shards` Deployments, the ones the front wakes."""
    metadata = names.metadata(md.owner, names.live_service(md.owner), "endpoint")
    metadata["labels"][names.LABEL_GENERATION] = str(live.generation)
    metadata["labels"][names.LABEL_REVISION] = str(live.revision)
    metadata["annotations"] = {WAKE_ANNOTATION: wake_annotation(live_shards(md.owner, live, shards))}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"selector": shard_selector(md.owner, 0, live), "ports": _serving_ports()},
    }


def front_selector(owner: Owner) -> dict[str, str]:
    return {names.LABEL_MD: owner.name, names.LABEL_ROLE: "front"}


def live_shards(owner: Owner, live: Live, shards: int) -> list[str]:
    """The Deployments of the live (generation, revision)'s `shards` shards, front shard first."""
    if shards < 1:
        raise ValueError("a revision has at least one shard")
    return [names.shard(owner, index, live.generation, live.revision) for index in range(shards)]


def desired_front_account(md: ModelDeploymentSpec) -> dict[str, Any]:
    """The front's ServiceAccount. It mounts no token by itself: only the front's pod asks for one."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": names.metadata(md.owner, names.front_identity(md.owner), "front"),
        "automountServiceAccountToken": False,
    }


def desired_front_access(md: ModelDeploymentSpec, live: Live, shards: int) -> list[dict[str, Any]]:
    """The front's Role (:func:`desired_front_role`) and the RoleBinding giving it to the front's
    account, in that order: the API server checks a binding against the Role it names, which must exist."""
    name = names.front_identity(md.owner)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": names.metadata(md.owner, name, "front"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": md.owner.namespace}],
    }
    return [desired_front_role(md, live, shards), binding]


def desired_front_role(md: ModelDeploymentSpec, live: Live, shards: int) -> dict[str, Any]:
    """What the front may do with its token: read ``<name>-live`` (the annotation naming the Deployments
    to wake) and get or patch the scale of exactly the live revision's shard Deployments. Moves with
    the live revision, in the same pass as ``<name>-live``'s selector. No list, no watch, no other
    Deployment: a stolen token can at most wake this model, or scale its live shards, which the
    autoscaler corrects on its next tick."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": names.metadata(md.owner, names.front_identity(md.owner), "front"),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["services"],
                "verbs": ["get"],
                "resourceNames": [names.live_service(md.owner)],
            },
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "verbs": ["get", "patch"],
                # Never empty: an empty resourceNames would allow every Deployment of the namespace.
                "resourceNames": live_shards(md.owner, live, shards),
            },
        ],
    }


@dataclass(frozen=True)
class FrontBounds:
    """What a model's front may keep in memory: at most `requests` requests at once (held, or on their
    way to a replica), each body at most `max_body_bytes`, within `memory_limit` bytes.

    The rule: the body limit is the model's own, derived from the served variant's inputs exactly as
    ``frugal serve`` derives its ``--max-body-bytes``; `requests` is ``maxQueueSize``, capped so that
    ``FRONT_PROCESS_MEMORY + requests x BODY_COPIES x max_body_bytes`` fits FRONT_MEMORY_LIMIT. When not
    even one request fits (a body limit above 96 MiB), the front keeps one and its memory limit grows to
    fit it."""

    max_body_bytes: int
    requests: int
    memory_limit: int
    max_queue_size: int

    @classmethod
    def of(cls, md: ModelDeploymentSpec, inputs: Sequence[TensorSpec]) -> FrontBounds:
        body = body_limit(inputs, md.max_batch_size)
        per_request = BODY_COPIES * body
        fits = (FRONT_MEMORY_LIMIT - FRONT_PROCESS_MEMORY) // per_request
        requests = max(1, min(md.max_queue_size, fits))
        needed = FRONT_PROCESS_MEMORY + requests * per_request
        memory = max(FRONT_MEMORY_LIMIT, -(-needed // MIB) * MIB)
        return cls(body, requests, memory, md.max_queue_size)

    def describe(self) -> str:
        """One line for the front Deployment's annotation: the bound and why it fits."""
        capped = (
            "" if self.requests == self.max_queue_size else f" (maxQueueSize {self.max_queue_size}, capped)"
        )
        return (
            f"keeps at most {self.requests} request{'' if self.requests == 1 else 's'}{capped} of at most {self.max_body_bytes} bytes (the model's "
            f"body limit): {FRONT_PROCESS_MEMORY // MIB}Mi + {self.requests} x {BODY_COPIES} x "
            f"{self.max_body_bytes} B fits its {self.memory_limit // MIB}Mi memory limit"
        )

    def resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {
                "cpu": "50m",
                "memory": f"{FRONT_PROCESS_MEMORY // MIB}Mi",
                "ephemeral-storage": "64Mi",
            },
            "limits": {"cpu": "1", "memory": f"{self.memory_limit // MIB}Mi", "ephemeral-storage": "256Mi"},
        }


def desired_front(
    md: ModelDeploymentSpec,
    image: str,
    placement: Mapping[str, Any] | None = None,
    *,
    inputs: Sequence[TensorSpec],
) -> dict[str, Any]:
    """The always-on front of a model that may scale to zero: it holds requests while no replica
    runs, scales the live shards from 0 to 1 itself (as ``<name>-front``, :func:`desired_front_role`;
    its held-requests gauge tells the autoscaler too) and forwards them, REST and gRPC, to
    ``<name>-live``. One replica,
    owned by the operator's apply (the autoscaler never scales it); its template changes only with the
    served variant's `inputs` or the batching settings (`FrontBounds`), so a rollout of the same model
    does not restart it. `placement` (``nodeSelector``, ``tolerations``) puts it where the operator
    runs, not on the model's pool: a front on a GPU pool would keep a GPU node alive while the model
    sleeps."""
    upstream = (
        f"http://{names.live_service(md.owner)}.{md.owner.namespace}.svc:{container_commands.SERVING_PORT}"
    )
    bounds = FrontBounds.of(md, inputs)
    metadata = names.metadata(md.owner, names.front(md.owner), "front")
    metadata["annotations"] = {FRONT_BOUNDS_ANNOTATION: bounds.describe()}
    template_labels = {k: v for k, v in metadata["labels"].items() if k != names.LABEL_GENERATION}
    command = container_commands.front(
        md,
        upstream,
        HOLD_DEADLINE_SECONDS,
        hold_requests=bounds.requests,
        max_body_bytes=bounds.max_body_bytes,
    )
    command += [
        "--grpc-port", str(container_commands.GRPC_PORT),
        "--grpc-upstream", f"{names.live_service(md.owner)}.{md.owner.namespace}.svc:{container_commands.GRPC_PORT}",
        "--wake-service", names.live_service(md.owner),
    ]  # fmt: skip
    container = {
        "name": "front",
        "image": image,
        "command": command,
        "env": list(pod_specs.SCRATCH_ENV),
        "securityContext": dict(pod_specs.CONTAINER_SECURITY),
        "volumeMounts": [{"name": pod_specs.SCRATCH_VOLUME, "mountPath": pod_specs.SCRATCH_PATH}],
        "resources": bounds.resources(),
        "ports": [
            {"name": "http", "containerPort": container_commands.SERVING_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": container_commands.GRPC_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=6),
        # A crash's last log lines become its termination message (`kubectl describe pod` shows them).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": front_selector(md.owner)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": template_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(container_commands.SERVING_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    # Its token (in-cluster path) lets the front wake the model: desired_front_role.
                    "serviceAccountName": names.front_identity(md.owner),
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    # Held requests may wait HOLD_DEADLINE_SECONDS: let them finish on shutdown.
                    "terminationGracePeriodSeconds": HOLD_DEADLINE_SECONDS + DRAIN_SECONDS,
                    "securityContext": dict(pod_specs.POD_SECURITY),
                    **{key: value for key, value in (placement or {}).items() if value},
                    "containers": [container],
                    "volumes": [{"name": pod_specs.SCRATCH_VOLUME, "emptyDir": {"sizeLimit": "128Mi"}}],
                },
            },
        },
    }


def endpoint_url(owner: Owner) -> str:
    return f"http://{names.endpoint_service(owner)}.{owner.namespace}.svc:{container_commands.SERVING_PORT}"


def grpc_endpoint(md: ModelDeploymentSpec) -> str:
    """host:port of the OIP gRPC service: the endpoint (behind it, the front of a model at zero)."""
    return f"{names.endpoint_service(md.owner)}.{md.owner.namespace}.svc:{container_commands.GRPC_PORT}"


def _next_stage_url(owner: Owner, index: int, shards: int) -> str | None:
    if index + 1 >= shards:
        return None
    return f"http://{names.shard(owner, index + 1)}.{owner.namespace}.svc:{container_commands.SERVING_PORT}"


def _serving_env(
    md: ModelDeploymentSpec, profile: HardwareProfileSpec, selection: ServingOption, index: int
) -> list[dict[str, Any]]:
    """Settings `frugal serve` reads from FRUGAL_<FLAG> variables (flags on the command line win)."""
    labels = f"namespace={md.owner.namespace},hardware_profile={profile.name}"
    values = {
        "FRUGAL_EXECUTION_PROVIDER": profile.execution_provider,
        "FRUGAL_IDLE_WATTS": f"{profile.idle_watts:g}",
        "FRUGAL_MAX_WATTS": f"{profile.max_watts:g}",
        "FRUGAL_LABELS": labels,
        "FRUGAL_SHUTDOWN_GRACE_S": str(DRAIN_SECONDS),
        pod_specs.VERIFY_CACHE_ENV: pod_specs.VERIFY_CACHE_PATH,
    }
    return [{"name": key, "value": value} for key, value in values.items()]


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _service_port() -> dict[str, Any]:
    return {"name": "http", "port": container_commands.SERVING_PORT, "targetPort": "http", "protocol": "TCP"}


def _serving_ports() -> list[dict[str, Any]]:
    """REST and the OIP gRPC service (HTTP/2 without TLS, which `appProtocol` tells meshes and gateways)."""
    grpc = {
        "name": "grpc",
        "port": container_commands.GRPC_PORT,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }
    return [_service_port(), grpc]


def desired_pod_monitor(md: ModelDeploymentSpec) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor scraping every serving pod of the ModelDeployment, and its front."""
    metadata = names.metadata(md.owner, names.bounded(md.owner.name, "serving"), "serving")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {
                "matchLabels": {names.LABEL_MD: md.owner.name},
                "matchExpressions": [
                    {"key": names.LABEL_ROLE, "operator": "In", "values": ["serving", "front"]}
                ],
            },
            # honorLabels: the servers' own namespace/model/shard labels are what the autoscaler groups by
            "podMetricsEndpoints": [
                {"port": "http", "path": "/metrics", "interval": "15s", "honorLabels": True}
            ],
        },
    }
