"""Typed configuration of one compression run (what ``frugal compress`` and the operator pass in).

Field names are camelCase on the wire (the ModelDeployment's ``spec.compression`` shape) and
snake_case in Python; both are accepted. ``pruning`` and ``quantization`` take one object or a list:
every entry becomes a candidate variant in the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

PruningMethod = Literal["magnitude", "threshold", "structured"]
QuantizationMethod = Literal["dynamic-int8", "static-int8", "fp16", "int8-weight", "int4-weight", "uniform"]
Metric = Literal["accuracy", "f1", "cosine"]
ModelFormat = Literal["zoo", "onnx", "torchscript", "pytorch"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class DeclaredTensor(_Model):
    """One tensor of the signature the user declares (``spec.model.inputs``/``outputs``)."""

    name: str = Field(min_length=1)
    datatype: str
    shape: tuple[int, ...] | None = Field(default=None, description="-1 marks a dynamic dimension.")


class ModelSource(_Model):
    """Where the model comes from: ``zoo://NAME``, ``file://PATH`` or a plain path.

    A file is an ONNX model, a TorchScript archive (both need ``data.validation``), or a PyTorch
    ``state_dict`` of a zoo ``architecture`` (its widths and encoder layers may be fewer than the zoo's).
    """

    uri: str = Field(
        min_length=1, description="zoo://digits-mlp, zoo://all-minilm-l6-v2, file:///m.onnx, ..."
    )
    format: ModelFormat | None = Field(
        default=None,
        description="When absent: from the extension (.onnx; .pt/.pth pytorch; .ts/.torchscript torchscript).",
    )
    architecture: str | None = Field(
        default=None,
        description="Zoo architecture a PyTorch state dict fills (digits-mlp, all-minilm-l6-v2); format pytorch only.",
    )
    inputs: tuple[DeclaredTensor, ...] | None = Field(
        default=None, description="The signature the model must have: checked before anything is built."
    )
    outputs: tuple[DeclaredTensor, ...] | None = None


class DataSource(_Model):
    """Validation and calibration data as ``.npz`` or ``.parquet`` files keyed by input name (plus ``labels``)."""

    validation: str | None = None
    calibration: str | None = None
    validation_max_samples: int | None = Field(
        default=None, ge=1, description="Use the first N validation rows only (all when absent)."
    )
    calibration_max_samples: int | None = Field(
        default=None, ge=1, description="Use the first N calibration rows only (all when absent)."
    )


class PruningConfig(_Model):
    method: PruningMethod = "magnitude"
    sparsity: float = Field(default=0.5, ge=0.0, lt=1.0, description="Fraction of weights/neurons removed.")
    attention_heads: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Structured, encoders: fraction of each layer's heads removed.",
    )
    threshold_scale: float = Field(
        default=1.0,
        gt=0.0,
        le=100.0,
        description="Threshold: weights with |w| below thresholdScale × the layer's mean |w| are zeroed.",
    )
    fine_tune_epochs: int = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _heads_need_structure(self) -> PruningConfig:
        if self.attention_heads and self.method != "structured":
            raise ValueError("attentionHeads applies only to method structured")
        return self

    @model_validator(mode="after")
    def _scale_needs_threshold(self) -> PruningConfig:
        # The operator always sends the CRD default (1.0), so only another value is a mistake.
        if self.threshold_scale != 1.0 and self.method != "threshold":
            raise ValueError("thresholdScale applies only to method threshold")
        return self


class QuantizationConfig(_Model):
    method: QuantizationMethod = "dynamic-int8"
    bits: int = Field(default=8, ge=2, le=16, description="Bits for the uniform quantizer.")
    per_channel: bool = False
    fallback: bool = Field(
        default=True,
        description="When over budget, retry per-channel and excluding the most sensitive nodes.",
    )
    fallback_margin: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Headroom the fallback keeps inside the accuracy budget."
    )


class StudentConfig(_Model):
    width: float = Field(default=0.5, gt=0.0, le=1.0, description="Hidden width relative to the teacher.")
    layers: int | None = Field(default=None, ge=1, description="Encoder layers kept (transformers).")
    depth_factor: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description=(
            "Fraction of the teacher's hidden (MLP) or encoder layers kept, at least one. Without it"
            " (and without layers) an MLP student keeps every hidden layer, an encoder student half."
        ),
    )

    @model_validator(mode="after")
    def _one_depth(self) -> StudentConfig:
        if self.layers is not None and self.depth_factor is not None:
            raise ValueError("student.layers and student.depthFactor both set the depth; set one of them")
        return self


class DistillationConfig(_Model):
    student: StudentConfig = StudentConfig()
    # The ModelDeployment CRD's defaults (a unit test holds them equal).
    epochs: int = Field(default=5, ge=1, le=1000)
    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of the soft (KD) loss.")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    batch_size: int = Field(default=64, ge=1)
    workers: int = Field(default=1, ge=1, le=64)
    max_samples: int | None = Field(
        default=None, ge=2, description="Train on at most this many rows of the training data."
    )


class AccuracyBudget(_Model):
    metric: Metric | None = Field(
        default=None, description="accuracy or f1 (macro F1) for classifiers, cosine for encoders."
    )
    max_drop: float = Field(default=0.01, ge=0.0, le=1.0)
    min_value: float | None = Field(default=None, ge=0.0, le=1.0, description="Absolute floor on the metric.")


class CompressionConfig(_Model):
    """Everything one compression run needs."""

    model: ModelSource
    data: DataSource = DataSource()
    pruning: list[PruningConfig] = Field(default_factory=list)
    quantization: list[QuantizationConfig] = Field(default_factory=list)
    distillation: DistillationConfig | None = None
    accuracy_budget: AccuracyBudget = AccuracyBudget()
    output: Path
    name: str = Field(default="model", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    generation: int = Field(default=1, ge=0)
    serving_batch_size: int = Field(default=32, ge=1, le=4096)
    shard_counts: list[int] = Field(
        default_factory=lambda: [1],
        description="The shard counts serving may use: every kept variant is cut into each count above 1, "
        "one verified ONNX file per stage.",
    )
    latency_repeats: int = Field(default=5, ge=1, le=100)
    latency_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="Intra-op threads per timed session (0 = ONNX Runtime's default).",
    )
    seed: int = 0

    @field_validator("pruning", "quantization", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict | BaseModel) else value

    @field_validator("shard_counts")
    @classmethod
    def _counts(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1 or max(value) > 16:
            raise ValueError("shard counts must be between 1 and 16")
        return sorted(set(value))

    @model_validator(mode="after")
    def _unique_steps(self) -> CompressionConfig:
        for field in ("pruning", "quantization"):
            entries = [s.model_dump_json() for s in getattr(self, field)]
            if len(entries) != len(set(entries)):
                raise ValueError(f"{field}: the same step is listed twice")
        return self
