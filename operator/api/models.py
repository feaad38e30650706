"""Typed, immutable views of validated resources (camelCase aliases match the CRDs).

Build them through `frugal.operator.api.parse_resource` or `load_documents`, which apply the CRDs'
defaults first: fields the schema defaults are required here, so defaults live only in the CRDs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator

# The bases, and the names the status models are written in (re-exported: callers read them here).
from frugal.operator.api.model_bases import (
    ApiModel,
    Condition,
    Items,
    Money,
    StatusModel,
    Timestamp,
    json_key,
    key_field,
)

__all__ = ["ApiModel", "Condition", "Items", "Money", "StatusModel", "Timestamp", "json_key"]


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


# spec.serving.shards: an integer fixes the shard count; "auto" or a range "N-M" lets the planner choose.
MAX_SHARDS = 16
AUTO_MAX_SHARDS = 4  # "auto": every count from 1 to this
# The message of the CRD's rule on spec.serving.shards, word for word (tests/unit/test_shard_counts.py).
SHARDS_USAGE = (
    'spec.serving.shards: use an integer 1-16, "auto" (any count 1-4) '
    'or a range "N-M" with 1 <= N <= M <= 16, such as "1-4"'
)
_SHARD_RANGE = re.compile(r"([1-9]|1[0-6])-([1-9]|1[0-6])")


def shard_counts(shards: int | str) -> tuple[int, ...]:
    """The shard counts `spec.serving.shards` allows, ascending: 2 -> (2,), "auto" -> (1, 2, 3, 4),
    "2-4" -> (2, 3, 4). Raises ValueError (SHARDS_USAGE) for what the CRD's rule refuses."""
    if isinstance(shards, bool):
        raise ValueError(SHARDS_USAGE)
    if isinstance(shards, int):
        low = high = shards
    elif shards == "auto":
        low, high = 1, AUTO_MAX_SHARDS
    elif isinstance(shards, str) and (written := _SHARD_RANGE.fullmatch(shards)):
        low, high = int(written[1]), int(written[2])
    else:
        raise ValueError(SHARDS_USAGE)
    if not 1 <= low <= high <= MAX_SHARDS:
        raise ValueError(SHARDS_USAGE)
    return tuple(range(low, high + 1))


def _shards(shards: Any) -> int | str:
    """spec.serving.shards as written, when `shard_counts` takes it (no bool, no float: an int-or-string)."""
    shard_counts(shards)
    return shards


class Serving(ApiModel):
    hardware_profiles: tuple[str, ...]
    shards: Annotated[int | str, PlainValidator(_shards)]
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
    project: str | None = None  # GCS
    account_name: str | None = None  # Azure


class ModelDeploymentSpec(ApiModel):
    model: ModelSource
    data: Data | None = None
    compression: Compression
    serving: Serving
    autoscaling: Autoscaling
    storage: Storage
    object_store: ObjectStore | None = None


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
    cost_per_1k_requests: Money | None = key_field("costPer1kRequests")
    meets_slo: bool | None = None
    replicas: int | None = None
    joules_per_request: float | None = None
    verdict: str | None = None
    measured_by: Literal["servers", "session", "estimated", "compression-report", "none"] | None = None
    memory_bytes: int | None = None


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
    cost_per_1k_requests: Money | None = key_field("costPer1kRequests")
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
    from_: Option | None = key_field("from")
    replicas: int | None = None
    load_rps: float | None = None
    cost_per_1k_requests: Money | None = key_field("costPer1kRequests")
    from_cost_per_1k_requests: Money | None = key_field("fromCostPer1kRequests")
    reason: str | None = None
    message: str | None = None
    last_rollover_time: Timestamp | None = None


class Cost(StatusModel):
    per_hour: Money | None = None
    per_1k_requests: Money | None = key_field("per1kRequests")
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
    object_store: ObjectStore | None = None


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
