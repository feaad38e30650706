"""The operator's typed view of a ModelDeployment and its HardwareProfiles.

The controller reads raw bodies (what the API server returns, schema defaults applied) and turns
them into these frozen dataclasses once; builders and the planner never index into dicts. Unknown
or missing optional fields fall back to the CRD's documented defaults, so a body written by an older
schema still reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

Body = Mapping[str, Any]


class SpecError(ValueError):
    """A field the API server let through but the operator cannot use (message names the field)."""


@dataclass(frozen=True)
class Owner:
    """What children need of the ModelDeployment: identity for names, labels and ownerReferences."""

    name: str
    namespace: str
    uid: str
    generation: int
    api_version: str = "frugal.dev/v1alpha1"
    kind: str = "ModelDeployment"


@dataclass(frozen=True)
class HardwareProfileSpec:
    name: str
    accelerator_kind: str
    accelerator_count: int
    memory_gib: float | None
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    execution_provider: str
    image: str | None
    cost_per_hour: Decimal
    idle_watts: float
    max_watts: float


@dataclass(frozen=True)
class ModelDeploymentSpec:
    owner: Owner
    body: Mapping[str, Any]
    model_uri: str
    model_name: str
    compression_profile: str
    distillation_workers: int
    metric: str
    max_drop: float
    serving_profiles: tuple[str, ...]
    shards: int
    latency_p95_ms: float
    max_batch_size: int
    max_delay_ms: float
    max_queue_size: int
    min_replicas: int
    max_replicas: int
    price_per_kwh: Decimal
    storage_uri: str | None
    retain_artifacts: bool

    @property
    def initial_replicas(self) -> int:
        """Each shard starts at the spec's minimum, or 1 when the minimum is 0 (autoscaling adjusts)."""
        return max(1, self.min_replicas)


def owner_of(body: Body) -> Owner:
    meta = body.get("metadata", {})
    return Owner(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 1),
        api_version=str(body.get("apiVersion", "frugal.dev/v1alpha1")),
    )


def parse_model_deployment(body: Body) -> ModelDeploymentSpec:
    """The typed view of a ModelDeployment body."""
    spec = body.get("spec") or {}
    serving = spec.get("serving") or {}
    compression = spec.get("compression") or {}
    autoscaling = spec.get("autoscaling") or {}
    budget = compression.get("accuracyBudget") or {}
    batching = serving.get("batching") or {}
    storage = spec.get("storage") or {}
    profiles = tuple(str(p) for p in serving.get("hardwareProfiles") or ())
    if not profiles:
        raise SpecError("spec.serving.hardwareProfiles: name at least one HardwareProfile")
    owner = owner_of(body)
    return ModelDeploymentSpec(
        owner=owner,
        body=body,
        model_uri=str((spec.get("model") or {}).get("uri", "")),
        model_name=str((spec.get("model") or {}).get("name") or owner.name),
        compression_profile=str(compression.get("hardwareProfile") or profiles[0]),
        distillation_workers=int((compression.get("distillation") or {}).get("workers", 1)),
        metric=str(budget.get("metric", "accuracy")),
        max_drop=float(budget.get("maxDrop", 0.01)),
        serving_profiles=profiles,
        shards=int(serving.get("shards", 1)),
        latency_p95_ms=float((serving.get("slo") or {}).get("latencyP95Ms", 0) or 0),
        max_batch_size=int(batching.get("maxBatchSize", 32)),
        max_delay_ms=float(batching.get("maxDelayMs", 2)),
        max_queue_size=int(batching.get("maxQueueSize", 1024)),
        min_replicas=int(autoscaling.get("minReplicas", 1)),
        max_replicas=int(autoscaling.get("maxReplicas", 4)),
        price_per_kwh=_decimal(
            (autoscaling.get("power") or {}).get("pricePerKWh", "0.15"), "spec.autoscaling.power.pricePerKWh"
        ),
        storage_uri=storage.get("uri"),
        retain_artifacts=bool(storage.get("retainArtifacts", True)),
    )


def parse_hardware_profile(body: Body) -> HardwareProfileSpec:
    """The typed view of a HardwareProfile body."""
    name = str(body.get("metadata", {}).get("name", ""))
    spec = body.get("spec") or {}
    accelerator = spec.get("accelerator") or {}
    resources = spec.get("resources") or {}
    cost = _decimal(spec.get("costPerHour", "0"), f"HardwareProfile {name}: spec.costPerHour")
    power = spec.get("power") or {}
    idle, peak = _power(power, cost)
    return HardwareProfileSpec(
        name=name,
        accelerator_kind=str(accelerator.get("kind", "cpu")),
        accelerator_count=int(accelerator.get("count", 1)),
        memory_gib=None if accelerator.get("memoryGiB") is None else float(accelerator["memoryGiB"]),
        node_selector={str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
        tolerations=tuple(spec.get("tolerations") or ()),
        requests={str(k): str(v) for k, v in (resources.get("requests") or {}).items()},
        limits={str(k): str(v) for k, v in (resources.get("limits") or {}).items()},
        execution_provider=str(spec.get("executionProvider", "CPUExecutionProvider")),
        image=spec.get("image"),
        cost_per_hour=cost,
        idle_watts=idle,
        max_watts=peak,
    )


# Without power figures, a pod's share is assumed to draw this many watts per USD/hour at full load
# (a rough cloud average: ~70 W for a 0.35 USD/h T4 share) and a third of that idle.
WATTS_PER_DOLLAR_HOUR = 200.0


def _power(power: Mapping[str, Any], cost: Decimal) -> tuple[float, float]:
    if "maxWatts" in power:
        return float(power.get("idleWatts", 0.0)), float(power["maxWatts"])
    peak = float(cost) * WATTS_PER_DOLLAR_HOUR
    return peak / 3, peak


def _decimal(value: Any, field: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise SpecError(f'{field}: {value!r} is not a decimal number such as "0.35"') from None
