"""The command lines children run: ``frugal compress``, the profiler and ``frugal serve``.

One place knows the flags of the other components' entry points; the builders only call these.
The compression config is the ModelDeployment's spec translated to ``frugal.compression``'s own
config shape (camelCase on the wire), passed inline so the Job needs no ConfigMap.
"""

from __future__ import annotations

import json
from typing import Any

from frugal.operator.api.models import TensorSpec
from frugal.operator.api.spec import ModelDeploymentSpec

SERVING_PORT = 8080
GRPC_PORT = 8081  # the OIP gRPC service (KServe's and MLServer's convention next to 8080)
DISTRIBUTED_PORT = 29500


def compression_config(md: ModelDeploymentSpec, output: str) -> dict[str, Any]:
    """`spec.model`, `spec.data` and `spec.compression` in the compression component's shape: the
    one mapping from the typed view to `frugal.compression.config.CompressionConfig` (camelCase)."""
    spec = md.spec
    compression = spec.compression
    data = spec.data
    validation = None if data is None else data.validation
    calibration = None if data is None else data.calibration
    config: dict[str, Any] = {
        "model": _drop_none(
            {
                "uri": md.model_uri,
                "format": None if spec.model.format == "auto" else spec.model.format,
                "architecture": spec.model.architecture,
                "inputs": _tensors(spec.model.inputs),
                "outputs": _tensors(spec.model.outputs),
            }
        ),
        "data": _drop_none(
            {
                "validation": None if validation is None else validation.uri,
                "calibration": None if calibration is None else calibration.uri,
                "validationMaxSamples": None if validation is None else validation.max_samples,
                "calibrationMaxSamples": None if calibration is None else calibration.max_samples,
            }
        ),
        "accuracyBudget": {"metric": md.metric, "maxDrop": md.max_drop},
        "output": output,
        "name": md.model_name,
        "generation": md.owner.generation,
        "servingBatchSize": md.max_batch_size,
        "shardCounts": list(md.shard_counts),
    }
    if (pruning := compression.pruning) is not None:
        config["pruning"] = _drop_none(
            {
                "method": pruning.method,
                "sparsity": pruning.sparsity,
                "thresholdScale": pruning.threshold_scale,
                "attentionHeads": pruning.attention_heads,
            }
        )
    if (quantization := compression.quantization) is not None:
        config["quantization"] = _drop_none(
            {"method": quantization.method, "bits": quantization.bits, "perChannel": quantization.per_channel}
        )
    if (distillation := compression.distillation) is not None:
        config["distillation"] = {
            "student": _drop_none(
                {"width": distillation.student.width_factor, "depthFactor": distillation.student.depth_factor}
            ),
            "epochs": distillation.epochs,
            "temperature": distillation.temperature,
            "alpha": distillation.alpha,
            "learningRate": distillation.learning_rate,
            "workers": distillation.workers,
        }
    return config


def compress(md: ModelDeploymentSpec, output: str) -> list[str]:
    return ["frugal", "compress", "--config-json", json.dumps(compression_config(md, output), sort_keys=True)]


def profile(artifacts: str, profile_name: str, md: ModelDeploymentSpec, provider: str) -> list[str]:
    return [
        "python",
        "-m",
        "frugal.serving.profiling",
        "--artifacts",
        artifacts,
        "--hardware-profile",
        profile_name,
        "--batch-size",
        str(md.max_batch_size),
        "--max-delay-ms",
        str(md.max_delay_ms),
        "--provider",
        provider,
        "--shard-counts",
        *map(str, md.shard_counts),
    ]


def serve(
    md: ModelDeploymentSpec, artifacts: str, variant: str, index: int, shards: int, next_stage: str | None
) -> list[str]:
    command = [
        "frugal",
        "serve",
        "--artifacts",
        artifacts,
        "--variant",
        variant,
        "--model-name",
        md.model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVING_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--max-batch-size",
        str(md.max_batch_size),
        "--max-delay-ms",
        str(md.max_delay_ms),
        "--max-queue-size",
        str(md.max_queue_size),
        "--latency-target-ms",
        str(md.slo_p95_ms),
    ]
    if shards > 1:
        command += ["--shard-index", str(index), "--shard-count", str(shards)]
    if next_stage is not None:
        command += ["--next-stage", next_stage]
    return command


def front(
    md: ModelDeploymentSpec, upstream: str, hold_deadline_s: float, *, hold_requests: int, max_body_bytes: int
) -> list[str]:
    """The always-on front of a model that scales to zero (`frugal front`): it keeps at most
    `hold_requests` requests at once, each body at most `max_body_bytes` (``serving_objects.FrontBounds``)."""
    return [
        "frugal",
        "front",
        "--upstream",
        upstream,
        "--model-name",
        md.model_name,
        "--namespace",
        md.owner.namespace,
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVING_PORT),
        "--hold-max-requests",
        str(hold_requests),
        "--hold-deadline-s",
        f"{hold_deadline_s:g}",
        "--max-body-bytes",
        str(max_body_bytes),
    ]


def _tensors(tensors: tuple[TensorSpec, ...] | None) -> list[dict[str, Any]] | None:
    if tensors is None:
        return None
    return [_drop_none({"name": t.name, "datatype": t.datatype, "shape": t.shape}) for t in tensors]


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
