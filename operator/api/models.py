"""Typed, immutable views of validated resources (camelCase aliases match the CRDs).

Build them through `frugal.operator.api.parse_resource` or `load_documents`, which apply the CRDs'
defaults first: fields the schema defaults are required here, so defaults live only in the CRDs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


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


class ModelDeploymentSpec(ApiModel):
    model: ModelSource
    data: Data | None = None
    compression: Compression
    serving: Serving
    autoscaling: Autoscaling
    storage: Storage


# --- ModelDeployment status -----------------------------------------------------------------------


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None


class VariantMetric(ApiModel):
    name: str | None = None
    value: float | None = None
    baseline: float | None = None
    drop: float | None = None


class VariantProfile(ApiModel):
    hardware_profile: str
    shards: int | None = None
    latency_p95_ms: float | None = None
    throughput_rps: float | None = None
    cost_per1k_requests: Decimal | None = Field(default=None, alias="costPer1kRequests")
    meets_slo: bool | None = None
    replicas: int | None = None
    joules_per_request: float | None = None
    verdict: str | None = None


class Variant(ApiModel):
    name: str
    steps: tuple[str, ...] = ()
    size_bytes: int | None = None
    metric: VariantMetric | None = None
    accepted: bool | None = None
    reason: str | None = None
    profiles: tuple[VariantProfile, ...] = ()


class Selected(ApiModel):
    variant: str | None = None
    hardware_profile: str | None = None
    shards: int | None = None
    reason: str | None = None


class ShardStatus(ApiModel):
    index: int
    replicas: int | None = None
    ready_replicas: int | None = None


class Cost(ApiModel):
    per_hour: Decimal | None = None
    per1k_requests: Decimal | None = Field(default=None, alias="per1kRequests")
    energy_per_request_joules: float | None = None


class Artifacts(ApiModel):
    uri: str | None = None
    generation: int | None = None
    pipeline_hash: str | None = None


class Energy(ApiModel):
    watts: float | None = None
    joules_per_request: float | None = None


class AutoscalingStatus(ApiModel):
    reason: str | None = None
    message: str | None = None
    desired_replicas: tuple[int, ...] = ()
    capacity_rps: tuple[float, ...] = ()
    last_scale_time: str | None = None


class ModelDeploymentStatus(ApiModel):
    phase: Literal["Pending", "Compressing", "Profiling", "Deploying", "Serving", "Failed"] | None = None
    observed_generation: int | None = None
    message: str | None = None
    conditions: tuple[Condition, ...] = ()
    artifacts: Artifacts | None = None
    variants: tuple[Variant, ...] = ()
    selected: Selected | None = None
    shards: tuple[ShardStatus, ...] = ()
    replicas: int | None = None
    ready_replicas: int | None = None
    endpoint: str | None = None
    latency_p95_ms: float | None = None
    request_rate: float | None = None
    cost: Cost | None = None
    energy: Energy | None = None
    autoscaling: AutoscalingStatus | None = None
    kopf: dict[str, Any] | None = None


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


class BatchInference(ApiModel):
    api_version: Literal["frugal.dev/v1alpha1"] = "frugal.dev/v1alpha1"
    kind: Literal["BatchInference"] = "BatchInference"
    metadata: ObjectMeta
    spec: BatchInferenceSpec


Resource = ModelDeployment | HardwareProfile | BatchInference
MODELS: dict[str, type[ModelDeployment] | type[HardwareProfile] | type[BatchInference]] = {
    "ModelDeployment": ModelDeployment,
    "HardwareProfile": HardwareProfile,
    "BatchInference": BatchInference,
}
