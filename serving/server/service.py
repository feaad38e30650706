"""The protocol-neutral data plane: load → verify → warm up → infer through the batcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from frugal.schema.request_limits import body_limit
from frugal.serving.server import artifacts, model_files, runtime
from frugal.serving.server.artifacts import Manifest, TensorSpec, Variant
from frugal.serving.server.batching import Batcher, Tensors
from frugal.serving.server.codec import InferRequest
from frugal.serving.server.failures import ModelNotFound, ProtocolError, echo, one_line
from frugal.serving.server.forward import NextStage
from frugal.serving.server.metrics import MetricLabels, ServerMetrics
from frugal.serving.server.power import BusyClock, EstimatedPower, PowerSource, open_nvml
from frugal.serving.server.settings import ServeConfig, StartupError
from frugal.serving.server.signature import check_request

log = logging.getLogger("frugal.serving")


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    variant: Variant
    model: runtime.OnnxModel
    inputs: tuple[TensorSpec, ...]  # what clients send to this server
    outputs: tuple[TensorSpec, ...]  # what clients get back (the whole model's outputs)
    size_bytes: int
    warm_run_s: float = 1.0  # median seconds of a warm-up run at the largest warm-up batch


def load_model(config: ServeConfig) -> LoadedModel:
    """Verify the variant against the manifest and open an ONNX Runtime session for this server's stage.

    Artifacts it cannot serve (no manifest, a variant the manifest does not list, a file that is missing,
    changed or not ONNX) raise `StartupError` naming the flag to change."""
    resolved = model_files.resolve(config)
    path, manifest, variant = resolved.path, resolved.manifest, resolved.variant
    size = sum(path.parent.joinpath(f).stat().st_size for f in _basenames(manifest, resolved.served))
    choice = runtime.provider_chain(config.execution_provider, runtime.ort.get_available_providers())
    if choice.fallback:
        log.warning("%s", choice.fallback)
    threads = config.intra_op_threads or runtime.read_cpu_limit()
    try:
        model = runtime.OnnxModel(str(path), choice.providers, threads)
    except Exception as exc:  # ONNX Runtime's and onnx's load errors have no common base class
        raise StartupError(f"cannot load {path} as an ONNX model: {one_line(exc)}", "--artifacts") from None
    if model.active_providers[0] != choice.providers[0]:
        log.warning(
            "ONNX Runtime could not start %s (active: %s); serving on the fallback",
            choice.providers[0],
            ", ".join(model.active_providers),
        )
    log.info("session on %s with %d intra-op threads", ", ".join(model.active_providers), threads)
    # a stage answers its clients with the whole model's outputs (the last stage's, forwarded back)
    outputs = model.outputs if config.shard_count <= 1 else variant.outputs
    batches = (1, min(config.max_batch_size, 8)) if model.batchable() else (1,)
    try:
        warm = model.warm_up(batches)
    except Exception as exc:  # zeros are not valid input for every graph (e.g. shape tensors of a stage)
        log.warning("warm-up with synthetic zeros failed, the first requests warm the session: %s", exc)
        warm = 1.0
    return LoadedModel(manifest, variant, model, model.inputs, outputs, size, warm)


def _basenames(manifest: Manifest, variant: Variant) -> list[str]:
    return [f.rsplit("/", 1)[-1] for f in artifacts.variant_files(manifest, variant)]


class ModelService:
    """Everything one server process serves: a model, its batcher, its metrics and its next stage."""

    def __init__(self, config: ServeConfig, loaded: LoadedModel, registry: CollectorRegistry) -> None:
        self.config = config
        self.loaded = loaded
        self.name = config.model_name or loaded.manifest.model
        self.version = str(loaded.manifest.generation)
        labels = config.labels
        self.metrics = ServerMetrics(
            registry,
            MetricLabels(
                model=self.name,
                variant=loaded.variant.name,
                shard=str(config.shard_index),
                namespace=labels.get("namespace", ""),
                hardware_profile=labels.get("hardware_profile", labels.get("hardwareProfile", "")),
            ),
            None if config.latency_target_ms is None else config.latency_target_ms / 1000,
        )
        self.max_body_bytes = config.max_body_bytes or body_limit(loaded.inputs, config.max_batch_size)
        log.info(
            "request bodies up to %d bytes (%s)",
            self.max_body_bytes,
            "--max-body-bytes" if config.max_body_bytes else "derived from the model's inputs",
        )
        self.metrics.model_size.set(loaded.size_bytes)
        self.busy = BusyClock()
        self.next_stage = (
            NextStage(config.next_stage, self.name, config.request_timeout_ms / 1000)
            if config.next_stage
            else None
        )
        batchable = loaded.model.batchable()
        if not batchable:
            log.info("model inputs/outputs have a fixed first dimension; batching is off")
        self.batcher = Batcher(
            loaded.model.run,
            max_batch_size=config.max_batch_size if batchable else 1,
            max_delay_s=config.max_delay_ms / 1000,
            max_queue_size=config.max_queue_size,
            observer=self,
            forward=self.next_stage,
            inline_below_s=config.inline_below_ms / 1000,
            expected_run_s=loaded.warm_run_s,
        )
        self.power: PowerSource | None = self._power_source()
        self.ready = False
        self._power_task: asyncio.Task[None] | None = None

    def _power_source(self) -> PowerSource | None:
        if self.config.execution_provider != runtime.CPU:
            nvml = open_nvml()
            if nvml is not None:
                return nvml
        if self.config.idle_watts is not None and self.config.max_watts is not None:
            return EstimatedPower(self.busy, self.config.idle_watts, self.config.max_watts)
        log.info("no NVML and no --idle-watts/--max-watts: power metrics are off")
        return None

    # BatchObserver
    def on_batch(self, requests: int, rows: int, busy_seconds: float) -> None:
        self.metrics.batch_size.observe(requests)
        self.busy.add(busy_seconds)

    async def start(self) -> None:
        self.batcher.start()
        if self.power is not None:
            self._power_task = asyncio.get_running_loop().create_task(self._sample_power())
        self.ready = True

    async def _sample_power(self) -> None:
        assert self.power is not None
        while True:
            await asyncio.sleep(self.config.power_interval_s)
            try:
                sample = self.power.sample()
            except Exception as exc:  # an NVML read can fail transiently; keep serving
                log.warning("power sample failed: %s", exc)
                continue
            self.metrics.power(self.power.name, sample.watts, sample.joules)

    async def infer(self, request: InferRequest, limit_s: float | None = None) -> Tensors:
        """Check and run one request; `limit_s` (a client's own deadline, e.g. gRPC's) shortens its deadline."""
        check_request(request, self.loaded.inputs, self.loaded.outputs)
        timeout_s = request_timeout_s(request, self.config.request_timeout_ms)
        if limit_s is not None:
            timeout_s = max(0.0, min(timeout_s, limit_s))
        return await self.batcher.submit(request.inputs, timeout_s)

    def check_model(self, name: str, version: str | None) -> None:
        """Raise `ModelNotFound` saying why, unless `name` (and `version`, when given) is served here."""
        if name != self.name:
            raise ModelNotFound(f"model '{echo(name)}' is not served here; this server serves '{self.name}'")
        if version and version != self.version:
            raise ModelNotFound(f"model '{name}' has no version '{echo(version)}'; it has '{self.version}'")

    async def close(self) -> None:
        self.ready = False
        await self.batcher.close()
        if self._power_task is not None:
            self._power_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._power_task
        if self.next_stage is not None:
            await self.next_stage.close()

    def model_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [_spec(s) for s in self.loaded.inputs],
            "outputs": [_spec(s) for s in self.loaded.outputs],
            "parameters": {
                "variant": self.loaded.variant.name,
                "shard": f"{self.config.shard_index}/{self.config.shard_count}",
                "execution_provider": self.loaded.model.active_providers[0],
            },
        }


def request_timeout_s(request: InferRequest, default_ms: float) -> float:
    """The server's deadline, shortened by a request's Triton-style `timeout` parameter (microseconds)."""
    asked = request.parameters.get("timeout")
    if asked is None:
        return default_ms / 1000
    if not isinstance(asked, int) or isinstance(asked, bool) or asked <= 0:
        raise ProtocolError("parameters.timeout must be a positive integer (microseconds)")
    return min(default_ms / 1000, asked / 1_000_000)


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
