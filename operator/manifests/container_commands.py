"""The command lines children run: ``frugal compress``, the profiler and ``frugal serve``.

One place knows the flags of the other components' entry points; the builders only call these.
The compression config is the ModelDeployment's spec translated to ``frugal.compression``'s own
config shape (camelCase on the wire), passed inline so the Job needs no ConfigMap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from frugal.operator.api.spec import ModelDeploymentSpec

SERVING_PORT = 8080
DISTRIBUTED_PORT = 29500


def compression_config(md: ModelDeploymentSpec, output: str) -> dict[str, Any]:
    """`spec.model`, `spec.data` and `spec.compression` in the compression component's shape."""
    spec = md.body.get("spec") or {}
    compression = spec.get("compression") or {}
    model = spec.get("model") or {}
    data = spec.get("data") or {}
    config: dict[str, Any] = {
        "model": _drop_none(
            {
                "uri": md.model_uri,
                "format": _format(model.get("format")),
                "architecture": model.get("architecture"),
            }
        ),
        "data": _drop_none(
            {
                "validation": (data.get("validation") or {}).get("uri"),
                "calibration": (data.get("calibration") or {}).get("uri"),
                "validationMaxSamples": (data.get("validation") or {}).get("maxSamples"),
                "calibrationMaxSamples": (data.get("calibration") or {}).get("maxSamples"),
            }
        ),
        "accuracyBudget": {"metric": md.metric, "maxDrop": md.max_drop},
        "output": output,
        "name": md.model_name,
        "generation": md.owner.generation,
        "servingBatchSize": md.max_batch_size,
    }
    if pruning := compression.get("pruning"):
        config["pruning"] = _drop_none(
            {
                "method": pruning.get("method"),
                "sparsity": pruning.get("sparsity"),
                "thresholdScale": pruning.get("thresholdScale"),
                "attentionHeads": pruning.get("attentionHeads"),
            }
        )
    if quantization := compression.get("quantization"):
        config["quantization"] = _drop_none(
            {
                "method": quantization.get("method"),
                "bits": quantization.get("bits"),
                "perChannel": quantization.get("perChannel"),
            }
        )
    if (distillation := compression.get("distillation")) is not None:
        config["distillation"] = _distillation(distillation)
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
        "--max-batch-size",
        str(md.max_batch_size),
        "--max-delay-ms",
        str(md.max_delay_ms),
        "--max-queue-size",
        str(md.max_queue_size),
    ]
    if shards > 1:
        command += ["--shard-index", str(index), "--shard-count", str(shards)]
    if next_stage is not None:
        command += ["--next-stage", next_stage]
    return command


def _distillation(distillation: Mapping[str, Any]) -> dict[str, Any]:
    student = distillation.get("student") or {}
    return _drop_none(
        {
            "student": _drop_none({"width": student.get("widthFactor"), "depthFactor": student.get("depthFactor")}),
            "epochs": distillation.get("epochs"),
            "temperature": distillation.get("temperature"),
            "alpha": distillation.get("alpha"),
            "learningRate": distillation.get("learningRate"),
            "workers": distillation.get("workers"),
        }
    )


def _format(value: Any) -> str | None:
    return None if value in (None, "auto") else str(value)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
