"""The operator's typed view of a ModelDeployment and its HardwareProfiles.

Built once per reconcile from the body the API server returns: the CRD's own defaults are applied
(as the API server does, so a body stored by an older schema reads like a new one) and the result is
validated into the pydantic resource models of `frugal.operator.api.models`. Every value comes from
there; no default is written here. The flattened names below are what builders and the planner use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import pydantic

from frugal.operator.api import models
from frugal.operator.api.crds import API_VERSION, schema
from frugal.operator.api.field_errors import join_path
from frugal.operator.api.structural import apply_defaults

Body = Mapping[str, Any]
Typed = TypeVar("Typed", models.ModelDeployment, models.HardwareProfile, models.BatchInference)


class SpecError(ValueError):
    """A field the API server let through but the operator cannot use (message names the field)."""


@dataclass(frozen=True)
class Owner:
    """What children need of the ModelDeployment: identity for names, labels and ownerReferences."""

    name: str
    namespace: str
    uid: str
    generation: int
    api_version: str = API_VERSION
    kind: str = "ModelDeployment"
    # Serving revision within the generation: a re-planning rollover moves to the next one.
    revision: int = 0


@dataclass(frozen=True)
class HardwareProfileSpec:
    resource: models.HardwareProfile
    idle_watts: float
    max_watts: float

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def accelerator_kind(self) -> str:
        return self.resource.spec.accelerator.kind

    @property
    def accelerator_count(self) -> int:
        return self.resource.spec.accelerator.count

    @property
    def memory_gib(self) -> float | None:
        return self.resource.spec.accelerator.memory_gib

    @property
    def node_selector(self) -> Mapping[str, str]:
        return self.resource.spec.node_selector

    @property
    def tolerations(self) -> tuple[dict[str, Any], ...]:
        return tuple(t.to_dict() for t in self.resource.spec.tolerations)

    @property
    def requests(self) -> Mapping[str, str]:
        resources = self.resource.spec.resources
        return {} if resources is None else {k: str(v) for k, v in resources.requests.items()}

    @property
    def limits(self) -> Mapping[str, str]:
        resources = self.resource.spec.resources
        return {} if resources is None else {k: str(v) for k, v in resources.limits.items()}

    @property
    def execution_provider(self) -> str:
        return self.resource.spec.execution_provider

    @property
    def image(self) -> str | None:
        return self.resource.spec.image

    @property
    def cost_per_hour(self) -> Decimal:
        return self.resource.spec.cost_per_hour


@dataclass(frozen=True)
class ModelDeploymentSpec:
    owner: Owner
    resource: models.ModelDeployment

    @property
    def spec(self) -> models.ModelDeploymentSpec:
        return self.resource.spec

    @property
    def model_uri(self) -> str:
        return self.spec.model.uri

    @property
    def model_name(self) -> str:
        return self.resource.model_name

    @property
    def compression_profile(self) -> str:
        return self.spec.compression.hardware_profile or self.serving_profiles[0]

    @property
    def distillation_workers(self) -> int:
        distillation = self.spec.compression.distillation
        return 1 if distillation is None else distillation.workers  # no distillation: no workers to spread

    @property
    def metric(self) -> str:
        return self.spec.compression.accuracy_budget.metric

    @property
    def max_drop(self) -> float:
        return self.spec.compression.accuracy_budget.max_drop

    @property
    def serving_profiles(self) -> tuple[str, ...]:
        return self.spec.serving.hardware_profiles

    @property
    def shard_counts(self) -> tuple[int, ...]:
        """The shard counts the planner may choose among (`spec.serving.shards`), ascending."""
        try:
            return models.shard_counts(self.spec.serving.shards)
        except ValueError as error:
            raise SpecError(str(error)) from None

    @property
    def shards(self) -> int:
        """The one shard count of a spec that fixes it (`spec.serving.shards` an integer); a range or
        "auto" leaves the count to the planner, whose choice is `status.selected.shards`."""
        counts = self.shard_counts
        if len(counts) != 1:
            raise SpecError(
                f"spec.serving.shards: {self.spec.serving.shards!r} leaves the count to the planner "
                f"(any of {', '.join(map(str, counts))}): read the chosen option's shards instead"
            )
        return counts[0]

    @property
    def slo_p95_ms(self) -> float:
        return self.spec.serving.slo.latency_p95_ms

    @property
    def max_batch_size(self) -> int:
        return self.spec.serving.batching.max_batch_size

    @property
    def max_delay_ms(self) -> float:
        return self.spec.serving.batching.max_delay_ms

    @property
    def max_queue_size(self) -> int:
        return self.spec.serving.batching.max_queue_size

    @property
    def min_replicas(self) -> int:
        return self.spec.autoscaling.min_replicas

    @property
    def price_per_kwh(self) -> Decimal:
        return self.spec.autoscaling.power.price_per_kwh

    @property
    def storage_uri(self) -> str | None:
        return self.spec.storage.uri

    @property
    def uris(self) -> dict[str, str]:
        """Every URI the spec sets, by its field's path (spec.model.uri, spec.data.*.uri, spec.storage.uri)."""
        return _uris(self.resource)

    @property
    def retain_artifacts(self) -> bool:
        return self.spec.storage.retain_artifacts

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
        api_version=str(body.get("apiVersion", API_VERSION)),
        kind=str(body.get("kind") or "ModelDeployment"),
    )


@dataclass(frozen=True)
class BatchInferenceSpec:
    """The typed view of a BatchInference."""

    owner: Owner
    resource: models.BatchInference

    @property
    def spec(self) -> models.BatchInferenceSpec:
        return self.resource.spec

    @property
    def model_deployment(self) -> str | None:
        return self.spec.model.model_deployment

    @property
    def artifacts(self) -> models.BatchArtifacts | None:
        return self.spec.model.artifacts

    @property
    def input_uri(self) -> str:
        return self.spec.input.uri

    @property
    def output_uri(self) -> str:
        return self.spec.output.uri

    @property
    def overwrite(self) -> bool:
        return self.spec.output.overwrite

    @property
    def hardware_profiles(self) -> tuple[str, ...]:
        return self.spec.hardware_profiles or ()


def parse_batch_inference(body: Body) -> BatchInferenceSpec:
    """The typed view of a BatchInference body."""
    return BatchInferenceSpec(owner_of({**body, "kind": "BatchInference"}), typed(body, models.BatchInference))


def typed(body: Body, model: type[Typed]) -> Typed:
    """The body's metadata and spec with the CRD's defaults applied, as the resource model."""
    kind = model.model_fields["kind"].default
    document = {"apiVersion": API_VERSION, "kind": kind, "metadata": dict(body.get("metadata") or {})}
    document["spec"] = apply_defaults(dict(body.get("spec") or {}), schema(kind)["properties"]["spec"])
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as error:
        problem = error.errors()[0]
        where = join_path(problem["loc"])
        raise SpecError(f"{kind} {document['metadata'].get('name', '')}: {where}: {problem['msg']}") from None


def parse_model_deployment(body: Body) -> ModelDeploymentSpec:
    """The typed view of a ModelDeployment body."""
    resource = typed(body, models.ModelDeployment)
    if not resource.spec.serving.hardware_profiles:
        raise SpecError("spec.serving.hardwareProfiles: name at least one HardwareProfile")
    for field, uri in _uris(resource).items():
        if has_parent_segment(uri):
            raise SpecError(f"{field}: {uri!r} must not contain '..' path segments")
    return ModelDeploymentSpec(owner_of(body), resource)


def _uris(resource: models.ModelDeployment) -> dict[str, str]:
    uris = {"spec.model.uri": resource.spec.model.uri, "spec.storage.uri": resource.spec.storage.uri}
    for role in ("validation", "calibration"):
        source = getattr(resource.spec.data, role) if resource.spec.data else None
        uris[f"spec.data.{role}.uri"] = source.uri if source else None
    return {field: uri for field, uri in uris.items() if uri is not None}


def has_parent_segment(uri: str) -> bool:
    """Whether a URI's path climbs with a '..' segment (the CRD refuses these too)."""
    return ".." in uri.split("/")


def parse_hardware_profile(body: Body) -> HardwareProfileSpec:
    """The typed view of a HardwareProfile body."""
    resource = typed(body, models.HardwareProfile)
    idle, peak = _power(resource.spec.power, resource.spec.cost_per_hour)
    return HardwareProfileSpec(resource, idle, peak)


# Without power figures, a pod's share is assumed to draw this many watts per USD/hour at full load
# (a rough cloud average: ~70 W for a 0.35 USD/h T4 share) and a third of that idle.
WATTS_PER_DOLLAR_HOUR = 200.0


def _power(power: models.PowerDraw | None, cost: Decimal) -> tuple[float, float]:
    if power is not None:
        return power.idle_watts, power.max_watts
    peak = float(cost) * WATTS_PER_DOLLAR_HOUR
    return peak / 3, peak
