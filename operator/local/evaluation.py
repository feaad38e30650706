"""Checks on the served model and the numbers of `frugal up`'s summary.

The held-out data is the model's own (the zoo ships it; otherwise `spec.data.validation`), sent
through the running server over the Open Inference Protocol, so the accuracy reported is the served
model's, not the compression step's estimate.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frugal.operator.local.loadgen import LoadStats
from frugal.operator.local.local_cluster import Served
from frugal.schema.artifact_format import Manifest, Variant, read_manifest

CHECK_BATCH = 64
NUMPY_TYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
}


@dataclass(frozen=True)
class HeldOutData:
    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: array[start:stop] for name, array in self.inputs.items()}


@dataclass(frozen=True)
class ServedCheck:
    metric: str
    value: float
    rows: int


@dataclass(frozen=True)
class ServedModel:
    """What the checks need of the running model, read once: its manifest entry and held-out data."""

    served: Served
    manifest: Manifest
    entry: Variant
    data: HeldOutData

    @classmethod
    def load(cls, served: Served) -> ServedModel:
        manifest = read_manifest(served.artifacts)
        assert served.decision.selection is not None  # serving: the plan chose
        entry = manifest.variant(served.decision.selection.variant)
        return cls(served, manifest, entry, held_out(served.decision_source_uri))

    def variant_file(self, name: str) -> Path:
        return self.served.artifacts / self.manifest.variant(name).file


def held_out(uri: str) -> HeldOutData:
    """The held-out data of the model at `uri`."""
    if uri.startswith("zoo://"):
        from frugal.compression import zoo

        source = zoo.load(uri.removeprefix("zoo://"))
        return HeldOutData(dict(source.validation.inputs), source.validation.labels)
    raise ValueError(f"no held-out data for {uri}: set spec.data.validation")


def _tensor(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    dtype = NUMPY_TYPES.get(datatype, np.float32)
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": np.asarray(array, dtype=dtype).reshape(-1).tolist(),
    }


def infer_body(entry: Variant, rows: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"inputs": [_tensor(i.name, i.datatype, rows[i.name]) for i in entry.inputs]}


def infer(served: Served, body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    request = urllib.request.Request(
        f"{served.endpoint}/v2/models/{served.model_name}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return {o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"]) for o in answer["outputs"]}


def check_served(model: ServedModel) -> ServedCheck:
    """Accuracy (classifiers) or minimum cosine to the unquantized model (encoders), through the server."""
    data = model.data
    outputs = [
        next(
            iter(infer(model.served, infer_body(model.entry, data.rows(start, start + CHECK_BATCH))).values())
        )
        for start in range(0, len(data), CHECK_BATCH)
    ]
    predictions = np.concatenate(outputs)
    if data.labels is not None:
        accuracy = float(np.mean(predictions.argmax(axis=1) == data.labels))
        return ServedCheck("accuracy", accuracy, len(data))
    reference = _reference_outputs(model)
    cosine = np.sum(predictions * reference, axis=1) / (
        np.linalg.norm(predictions, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return ServedCheck("min cosine to fp32", float(cosine.min()), len(data))


def _reference_outputs(model: ServedModel) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(model.variant_file("fp32")), providers=["CPUExecutionProvider"]
    )
    result = session.run(None, {name: np.asarray(array) for name, array in model.data.inputs.items()})
    return np.asarray(result[0], dtype=np.float64)


def request_bodies(model: ServedModel) -> Callable[[int], Iterable[dict[str, Any]]]:
    """Single-row requests over the held-out data, each client starting at its own offset."""
    bodies = [infer_body(model.entry, model.data.rows(i, i + 1)) for i in range(min(len(model.data), 256))]

    def for_client(index: int) -> list[dict[str, Any]]:
        offset = (index * 37) % len(bodies)
        return bodies[offset:] + bodies[:offset]

    return for_client


def summary_row(
    model: ServedModel,
    check: ServedCheck,
    stats: LoadStats,
    slo_ms: float,
    scaling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary: what was served, how well, and (with `scaling`, the autoscaler's account)
    replicas, replica-seconds, energy, cost and scale events."""
    served = model.served
    sizes = {v.name: v.size_bytes for v in model.manifest.variants}
    selected = served.decision.selection
    assert selected is not None  # serving: the plan chose
    variant = selected.variant
    original = sizes.get("fp32", sizes[variant])
    attainment = stats.within(slo_ms / 1000.0)
    return {
        "model": served.model_name,
        "variant": variant,
        "hardwareProfile": selected.profile,
        "shards": len(served.shards),
        "sizeBytes": sizes[variant],
        "originalSizeBytes": original,
        "sizeRatio": round(sizes[variant] / original, 4),
        "heldOutMetric": check.metric,
        "heldOutValue": round(check.value, 4),
        "heldOutRows": check.rows,
        "requestsServed": stats.ok,
        "requestsFailed": stats.failed,
        "requestsSkipped": stats.skipped,
        "statusCounts": {str(code): count for code, count in sorted(stats.status_counts.items())},
        "throughputRps": round(stats.throughput(), 1),
        "latencyP50Ms": round(stats.percentile_ms(50), 3),
        "latencyP95Ms": round(stats.percentile_ms(95), 3),
        "sloLatencyP95Ms": slo_ms,
        "sloAttainment": None if attainment != attainment else round(attainment, 4),
        **(scaling or {}),
        **_per_request(scaling or {}, stats.ok),
    }


def _per_request(scaling: Mapping[str, Any], answered: int) -> dict[str, Any]:
    """The run's price per request: what the product is for, from the autoscaler's account."""
    if not answered or "costUsd" not in scaling:
        return {}
    return {
        "costPer1kRequestsUsd": float(f"{float(scaling['costUsd']) / answered * 1000.0:.6g}"),
        "joulesPerRequest": float(f"{float(scaling['energyJoules']) / answered:.6g}"),
    }
