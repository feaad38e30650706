"""Where torch work runs: CUDA when present, TPU through torch_xla when installed, else CPU."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch


def pick_device(local_rank: int = 0) -> torch.device:
    """The best device this process can use (same code on every node pool); ranks on one node take
    the node's GPUs in turn."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if importlib.util.find_spec("torch_xla") is not None:
        import torch_xla.core.xla_model as xm  # pragma: no cover - only on TPU pools

        return torch.device(xm.xla_device())  # pragma: no cover
    return torch.device("cpu")


def distributed_backend(device_type: str, ranks_on_node: int = 1, gpus_on_node: int = 1) -> str:
    """nccl for CUDA, xla for TPU, gloo otherwise, and gloo when ranks on this node would share a
    GPU (nccl refuses two ranks on one device; gloo reduces CUDA tensors too)."""
    if device_type == "cuda" and ranks_on_node > gpus_on_node:
        return "gloo"
    return {"cuda": "nccl", "xla": "xla"}.get(device_type, "gloo")


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads (small models train faster on one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
