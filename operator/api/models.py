"""Typed, immutable views of validated resources (camelCase aliases match the CRDs).

Build them through `frugal.operator.api.parse_resource` or `load_documents`, which apply the CRDs'
defaults first: fields the schema defaults are required here, so defaults live only in the CRDs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", protected_namespaces=()
    )

    def to_dict(self) -> dict[str, Any]:
        """The resource form: camelCase keys, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(ApiModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- ModelDeployment spec -------------------------------------------------------------------------


class TensorSpec(ApiModel):
    name: str
    datatype: str
    shape: tuple[int, ...] | None = None


class ModelSource(ApiModel):
    uri: str
    format: Literal["auto", "onnx", "torchscript", "pytorch"]
    architecture: Literal["digits-mlp", "all-minilm-l6-v2"] | None = None
    name: str | None = None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None


class DataSource(ApiModel):
    uri: str
    max_samples: int | None = None


class Data(ApiModel):
    validation: DataSource | None = None
    calibration: DataSource | None = None


class Pruning(ApiModel):
    method: Literal["magnitude", "threshold", "structured"]
    sparsity: float
    threshold_scale: float
    attention_heads: float | None = None


class Quantization(ApiModel):
    method: Literal["dynamic-int8", "static-int8", "int8-weight", "int4-weight", "fp16", "uniform"]
    bits: int | None = None
    per_channel: bool


class Student(ApiModel):
    width_factor: float
    depth_factor: float | None = None


class Distillation(ApiModel):
    student: Student
    epochs: int
    temperature: float
    alpha: float
    learning_rate: float
    workers: int


class AccuracyBudget(ApiModel):
    metric: Literal["accuracy", "f1", "cosine"]
    max_drop: float


class Compression(ApiModel):
    hardware_profile: str | None = None
    pruning: Pruning | None = None
    quantization: Quantization | None = None
    distillation: Distillation | None = None
    accuracy_budget: AccuracyBudget


class Slo(ApiModel):
    latency_p95_ms: float


class Batching(ApiModel):
    max_batch_size: int
    max_delay_ms: float
    max_queue_size: int


class Serving(ApiModel):
    hardware_profiles: tuple[str, ...]
    shards: int
    slo: Slo
    batching: Batching


class PowerBudget(ApiModel):
    cap_watts: float | None = None
    price_per_kwh: Decimal = Field(alias="pricePerKWh")
    source: Literal["dcgm", "kepler", "estimate"]


class Prometheus(ApiModel):
    url: str


class Replanning(ApiModel):
    enabled: bool
    window_seconds: int


class Autoscaling(ApiModel):
    min_replicas: int
    max_replicas: int
    scale_to_zero_after_seconds: int | None = None
    stabilization_window_seconds: int
    power: PowerBudget
    prometheus: Prometheus | None = None
    replanning: Replanning


class Storage(ApiModel):
    uri: str | None = None
    retain_artifacts: bool


class ObjectStore(ApiModel):
    secret_name: str | None = None
    endpoint: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"]


class ModelDeploymentSpec(ApiModel):
    model: ModelSource
    data: Data | None = None
    compression: Compression
    serving: Serving
    autoscaling: Autoscaling
    storage: Storage
    object_store: ObjectStore | None = None


# --- Status ---------------------------------------------------------------------------------------
#
# What the operator writes under `status` (the CRDs' status schemas, field for field, which
# tests/unit/test_status_fields.py holds them to). Strict where the API server is: an integer is an
# int, a number an int or a float, a string a str (money is a decimal string, kept as written), a
# date-time an RFC 3339 string; a JSON array is accepted as a list. Every field is optional unless
# the CRD requires it, and `None` is a value: in a status patch (a JSON merge patch) it removes the
# field. Writers build a model and send `to_patch()`; readers take `from_body(body)`, which never raises.

T = TypeVar("T")
# A JSON array of T: a list (or a tuple) whose items are validated strictly.
Items = Annotated[tuple[T, ...], Strict(False)]
# A date-time string, written as "%Y-%m-%dT%H:%M:%SZ" (UTC).
Timestamp = str
# A decimal number of US dollars as a string ("0.0123"): the CRD types money as strings.
Money = str

log = logging.getLogger(__name__)


class StatusModel(ApiModel):
    model_config = ConfigDict(strict=True)

    def to_patch(self) -> dict[str, Any]:
        """The status patch (a JSON merge patch) of this model: camelCase keys, JSON types, the fields
        that were set (an explicit `None` stays, removing the field), nothing else."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def from_status(cls, status: Any) -> Self:
        """The typed view of a status mapping as read from the API server, never raising: keys this
        model does not know are ignored (a newer operator's fields), and a value that does not fit is
        left out (logged), as the smallest enclosing optional field or array item."""
        if isinstance(status, cls):
            return status
        if not isinstance(status, Mapping):
            return cls()
        data = _known_keys(cls, status)
        dropped = []
        for _ in range(_MAX_REPAIRS):
            try:
                found = cls.model_validate(data)
            except ValidationError as error:
                where = _drop(data, error.errors()[0]["loc"])
                if where is None:
                    break
                dropped.append(".".join(map(str, where)))
                continue
            if dropped:
                log.warning(
                    "%s: left out what does not fit: status.%s", cls.__name__, ", status.".join(dropped)
                )
            return found
        log.warning("%s: status unreadable, read as empty", cls.__name__)
        return cls()

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None) -> Self:
        """The typed view of a resource body's status (an empty one when it has none): see `from_status`."""
        return cls.from_status(None if body is None else body.get("status"))


_MAX_REPAIRS = 100


def _key(key: str) -> Any:
    """An optional field whose JSON key is `key` where to_camel would not give it (costPer1kRequests,
    from), still built by its Python name (an `alias` would make type checkers want the key)."""
    return Field(default=None, validation_alias=key, serialization_alias=key)


def json_key(name: str, info: FieldInfo) -> str:
    """The key of field `name` in the resource (camelCase)."""
    return info.serialization_alias or info.alias or name


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `tuple[X, ...]`, `Annotated[...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


@functools.cache
def _fields_by_key(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """`model`'s fields by JSON key, each with the model nested in it (if any): worked out once per
    model, since the autoscaler reads every served ModelDeployment's status on every tick."""
    return {json_key(name, info): _nested_model(info.annotation) for name, info in model.model_fields.items()}


def _known_keys(model: type[BaseModel], data: Any) -> Any:
    """A copy of `data` without the keys `model` does not know, through nested objects and arrays
    (plain dicts and lists throughout: the caller's body is never changed)."""
    if not isinstance(data, Mapping):
        return _plain(data)
    fields = _fields_by_key(model)
    known: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            continue
        nested = fields[key]
        if nested is not None and isinstance(value, list | tuple):
            known[key] = [_known_keys(nested, item) for item in value]
        elif nested is not None:
            known[key] = _known_keys(nested, value)
        else:
            known[key] = _plain(value)
    return known


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _drop(data: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[int | str, ...] | None:
    """Remove from `data` (in place) the deepest value on the path `loc` that is there (an item of
    an array of objects, each of which says what it is; an array of scalars, positional, goes
    whole); its path, or None when not even the first step is."""
    parents: list[Any] = [data]
    for step in loc:
        if not _has(parents[-1], step):
            break
        parents.append(parents[-1][step])
    depth = len(parents) - 1
    in_scalar_array = depth > 0 and isinstance(loc[depth - 1], int)
    if in_scalar_array and not any(isinstance(item, dict) for item in parents[depth - 1]):
        depth -= 1
    if depth == 0:
        return None
    del parents[depth - 1][loc[depth - 1]]
    return loc[:depth]


def _has(container: Any, step: int | str) -> bool:
    if isinstance(container, dict):
        return step in container
    return isinstance(container, list) and isinstance(step, int) and 0 <= step < len(container)


class Condition(StatusModel):
    """One standard Kubernetes condition (both kinds' status.conditions[])."""

    type: str
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: Timestamp
    reason: str
    message: str


# --- ModelDeployment status -----------------------------------------------------------------------


class Artifacts(StatusModel):
    uri: str | None = None
    generation: int | None = None
    pipeline_hash: str | None = None


class VariantMetric(StatusModel):
    name: str | None = None
    value: float | None = None
    baseline: float | None = None
    drop: float | None = None


class VariantProfile(StatusModel):
    """status.variants[].profiles[]: one profiling measurement, as hardware selection priced it."""

    hardware_profile: str
    shards: int | None = None
    latency_p95_ms: float | None = None
    throughput_rps: float | None = None
    cost_per_1k_requests: Money | None = _key("costPer1kRequests")
    meets_slo: bool | None = None
    replicas: int | None = None
    joules_per_request: float | None = None
    verdict: str | None = None


class Variant(StatusModel):
    name: str
    steps: Items[str] = ()
    size_bytes: int | None = None
    metric: VariantMetric | None = None
    accepted: bool | None = None
    reason: str | None = None
    profiles: Items[VariantProfile] = ()


class Selected(StatusModel):
    """status.selected: the option hardware selection chose, and why."""

    variant: str | None = None
    hardware_profile: str | None = None
    shards: int | None = None
    reason: str | None = None


class ShardStatus(StatusModel):
    index: int
    replicas: int | None = None
    ready_replicas: int | None = None


class Energy(StatusModel):
    watts: float | None = None
    joules_per_request: float | None = None


class AutoscalingStatus(StatusModel):
    reason: str | None = None
    message: str | None = None
    desired_replicas: Items[int] = ()
    capacity_rps: Items[float] = ()
    last_scale_time: Timestamp | None = None


class Option(StatusModel):
    """A (variant, hardware profile, shard count) option: planAtLoad.cheapest, replan.selected and .from."""

    variant: str | None = None
    hardware_profile: str | None = None
    shards: int | None = None


class PricedOption(StatusModel):
    """status.planAtLoad.options[]: one option priced at the observed load, or rejected."""

    variant: str
    hardware_profile: str
    shards: int | None = None
    latency_p95_ms: float | None = None
    meets_slo: bool | None = None
    throughput_rps: float | None = None
    replicas: int | None = None
    watts: float | None = None
    cost_per_1k_requests: Money | None = _key("costPer1kRequests")
    joules_per_request: float | None = None
    feasible: bool | None = None
    rejections: Items[str] = ()
    chosen: bool | None = None
    running: bool | None = None


class PlanAtLoad(StatusModel):
    load_rps: float | None = None
    reason: str | None = None
    message: str | None = None
    cheapest: Option | None = None
    options: Items[PricedOption] = ()


class Replan(StatusModel):
    """status.replan: the last re-planning rollover of the generation."""

    generation: int | None = None
    revision: int | None = None
    selected: Option | None = None
    from_: Option | None = _key("from")
    replicas: int | None = None
    load_rps: float | None = None
    cost_per_1k_requests: Money | None = _key("costPer1kRequests")
    from_cost_per_1k_requests: Money | None = _key("fromCostPer1kRequests")
    reason: str | None = None
    message: str | None = None
    last_rollover_time: Timestamp | None = None


class Cost(StatusModel):
    per_hour: Money | None = None
    per_1k_requests: Money | None = _key("per1kRequests")
    energy_per_request_joules: float | None = None


class ModelDeploymentStatus(StatusModel):
    phase: Literal["Pending", "Compressing", "Profiling", "Deploying", "Serving", "Failed"] | None = None
    observed_generation: int | None = None
    message: str | None = None
    conditions: Items[Condition] = ()
    artifacts: Artifacts | None = None
    variants: Items[Variant] = ()
    selected: Selected | None = None
    shards: Items[ShardStatus] = ()
    replicas: int | None = None
    ready_replicas: int | None = None
    endpoint: str | None = None
    grpc_endpoint: str | None = None
    latency_p95_ms: float | None = None
    request_rate: float | None = None
    energy: Energy | None = None
    autoscaling: AutoscalingStatus | None = None
    plan_at_load: PlanAtLoad | None = None
    replan: Replan | None = None
    cost: Cost | None = None
    # kopf's own handler progress (x-kubernetes-preserve-unknown-fields): kept whole, never ours.
    kopf: dict[str, Any] | None = None

    def condition(self, kind: str) -> Condition | None:
        """The condition of type `kind`, if there is one."""
        return next((c for c in self.conditions if c.type == kind), None)


# What a status reader takes: the typed status, or a status mapping as read (read through the model).
StatusLike = ModelDeploymentStatus | Mapping[str, Any] | None


class ModelDeployment(ApiModel):
    api_version: Literal["frugal.dev/v1alpha1"] = "frugal.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @property
    def model_name(self) -> str:
        """The name in inference URLs: spec.model.name, else metadata.name."""
        return self.spec.model.name or self.metadata.name


# --- HardwareProfile ------------------------------------------------------------------------------


class Accelerator(ApiModel):
    kind: Literal["nvidia-gpu", "google-tpu", "cpu", "fpga"]
    model: str | None = None
    count: int
    memory_gib: float | None = Field(default=None, alias="memoryGiB")


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"]
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(ApiModel):
    requests: dict[str, int | str] = Field(default_factory=dict)
    limits: dict[str, int | str] = Field(default_factory=dict)


class PowerDraw(ApiModel):
    idle_watts: float
    max_watts: float


class HardwareProfileSpec(ApiModel):
    accelerator: Accelerator
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    resources: Resources | None = None
    execution_provider: Literal["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    image: str | None = None
    cost_per_hour: Decimal
    power: PowerDraw | None = None


class HardwareProfile(ApiModel):
    api_version: Literal["frugal.dev/v1alpha1"] = "frugal.dev/v1alpha1"
    kind: Literal["HardwareProfile"] = "HardwareProfile"
    metadata: ObjectMeta
    spec: HardwareProfileSpec


# --- BatchInference -------------------------------------------------------------------------------


class BatchArtifacts(ApiModel):
    uri: str
    variant: str


class BatchModel(ApiModel):
    model_deployment: str | None = None
    artifacts: BatchArtifacts | None = None


class BatchInput(ApiModel):
    uri: str


class BatchOutput(ApiModel):
    uri: str
    overwrite: bool


class BatchInferenceSpec(ApiModel):
    model: BatchModel
    input: BatchInput
    output: BatchOutput
    hardware_profiles: tuple[str, ...] | None = None
    workers: int | None = None
    max_workers: int
    deadline_seconds: int | None = None
    batch_size: int
    rows_per_shard: int


class BatchSelected(StatusModel):
    """status.selected of a BatchInference: the placement chosen."""

    variant: str | None = None
    hardware_profile: str | None = None
    workers: int | None = None
    reason: str | None = None


class BatchPlanRow(StatusModel):
    """status.plan[]: one candidate profile, priced per million rows, or why it was rejected."""

    hardware_profile: str | None = None
    rows_per_second: float | None = None
    workers: int | None = None
    seconds: float | None = None
    cost_per_million_rows: Money | None = None
    feasible: bool | None = None
    reason: str | None = None


class BatchProgress(StatusModel):
    shards_done: int | None = None
    shards_total: int | None = None
    rows_done: int | None = None
    rows_total: int | None = None
    summary: str | None = None


class BatchCost(StatusModel):
    usd: Money | None = None
    per_million_rows: Money | None = None


class BatchInferenceStatus(StatusModel):
    phase: Literal["Pending", "Running", "Aggregating", "Succeeded", "Failed"] | None = None
    observed_generation: int | None = None
    message: str | None = None
    conditions: Items[Condition] = ()
    selected: BatchSelected | None = None
    plan: Items[BatchPlanRow] = ()
    progress: BatchProgress | None = None
    rows_per_second: float | None = None
    energy_joules: float | None = None
    cost: BatchCost | None = None
    output_uri: str | None = None

    def condition(self, kind: str) -> Condition | None:
        """The condition of type `kind`, if there is one."""
        return next((c for c in self.conditions if c.type == kind), None)


class BatchInference(ApiModel):
    api_version: Literal["frugal.dev/v1alpha1"] = "frugal.dev/v1alpha1"
    kind: Literal["BatchInference"] = "BatchInference"
    metadata: ObjectMeta
    spec: BatchInferenceSpec
    status: BatchInferenceStatus | None = None


Resource = ModelDeployment | HardwareProfile | BatchInference
MODELS: dict[str, type[ModelDeployment] | type[HardwareProfile] | type[BatchInference]] = {
    "ModelDeployment": ModelDeployment,
    "HardwareProfile": HardwareProfile,
    "BatchInference": BatchInference,
}
