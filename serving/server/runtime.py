"""The ONNX Runtime session: execution provider choice, thread sizing, signature, warm-up.

Pure helpers (`provider_chain`, `cpu_limit`) decide; `OnnxModel` only wraps the session.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from frugal.serving.datatypes import OIP_TO_NUMPY, ORT_TO_OIP
from frugal.serving.server.artifacts import TensorSpec

log = logging.getLogger("frugal.serving")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# What each requested provider brings along, best first; CPU is always the last resort.
_CHAINS: dict[str, tuple[str, ...]] = {TENSORRT: (TENSORRT, CUDA, CPU), CUDA: (CUDA, CPU), CPU: (CPU,)}


@dataclass(frozen=True)
class ProviderChoice:
    providers: tuple[str, ...]
    fallback: str | None  # why the requested provider is not first, when it is not


def provider_chain(requested: str, available: Sequence[str]) -> ProviderChoice:
    """The providers to hand ONNX Runtime for `requested`, keeping only those this build has."""
    if requested not in _CHAINS and requested not in available:
        raise ValueError(
            f"unknown execution provider {requested!r}; use one of {', '.join(_CHAINS)} "
            f"(this build has {', '.join(available)})"
        )
    chain = tuple(p for p in _CHAINS.get(requested, (requested, CPU)) if p in available or p == CPU)
    fallback = None
    if chain[0] != requested:
        fallback = (
            f"{requested} is not available in this ONNX Runtime build (it has {', '.join(available)}); "
            f"falling back to {chain[0]}"
        )
    return ProviderChoice(chain, fallback)


def cpu_limit(cpu_max: str | None, cpus_available: int) -> int:
    """CPUs this process may use: the cgroup v2 `cpu.max` quota (rounded up) capped by affinity."""
    if cpu_max:
        parts = cpu_max.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return max(1, cpus_available)
            if quota > 0 and period > 0:
                return max(1, min(cpus_available, math.ceil(quota / period)))
    return max(1, cpus_available)


def read_cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    try:
        cpu_max: str | None = (cgroup_root / "cpu.max").read_text()
    except OSError:
        cpu_max = None
    return cpu_limit(cpu_max, len(os.sched_getaffinity(0)))


def tensor_specs(args: Sequence[Any]) -> tuple[TensorSpec, ...]:
    """ONNX Runtime's NodeArg list → OIP tensor specs (symbolic or unknown dims become -1)."""
    return tuple(
        TensorSpec(
            name=arg.name,
            datatype=ORT_TO_OIP.get(arg.type, arg.type),
            shape=tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])),
        )
        for arg in args
    )


class OnnxModel:
    """One ONNX Runtime session and the signature it serves."""

    def __init__(self, model: str | bytes, providers: Sequence[str], intra_op_threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, sess_options=options, providers=list(providers))
        self.inputs = tensor_specs(self.session.get_inputs())
        self.outputs = tensor_specs(self.session.get_outputs())
        self.output_names = [spec.name for spec in self.outputs]
        self.active_providers = tuple(self.session.get_providers())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, values, strict=True))

    def batchable(self) -> bool:
        """Whether requests can be stacked on dim 0: every input and output has a dynamic first dim."""
        return all(spec.shape and spec.shape[0] == -1 for spec in (*self.inputs, *self.outputs))

    def warm_up(self, batch_sizes: Sequence[int] = (1,), repeats: int = 5) -> float:
        """Run each batch size a few times; returns the median seconds of the largest one."""
        timings: list[float] = []
        for batch in batch_sizes:
            feeds = {spec.name: example_tensor(spec, batch) for spec in self.inputs}
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                self.run(feeds)
                timings.append(time.perf_counter() - started)
        return statistics.median(timings) if timings else 0.0


def example_tensor(spec: TensorSpec, batch: int) -> np.ndarray:
    """Zeros of the spec's shape, with the batch dim set to `batch` and other free dims to 1."""
    shape = [batch if i == 0 and d == -1 else (d if d >= 0 else 1) for i, d in enumerate(spec.shape)]
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=OIP_TO_NUMPY.get(spec.datatype, np.dtype("float32")))
