"""Knowledge distillation, data-parallel with ``torch.distributed`` (DDP).

A narrower student learns from the teacher's temperature-softened outputs mixed with the hard
labels (``alpha * T² * KL + (1 - alpha) * CE``); encoders learn the teacher's embeddings (cosine loss).
Every step each rank takes its slice of the global batch, and DDP averages the gradients across
ranks — the seed's rule ``g = mean(grad_i)`` — before the optimizer step, so N workers follow the
same trajectory as one process on the whole batch.

Ranks come from the environment (torchrun, or a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``);
``workers > 1`` without such an environment spawns the workers locally.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..config import CompressionConfig, DistillationConfig, StudentConfig
from ..device import distributed_backend, pick_device
from ..distributed import Topology, topology
from ..errors import CompressionError
from ..source import SourceModel

T = TypeVar("T")


def kept_depth(teacher_layers: int, depth_factor: float | None) -> int:
    """Layers a student keeps of ``teacher_layers``: ``depth_factor`` of them (rounded, at least
    one), or all of them when there is no factor."""
    if depth_factor is None:
        return teacher_layers
    return max(1, round(depth_factor * teacher_layers))


DEFAULT_ENCODER_DEPTH = 0.5


def student_layer_count(teacher_layers: int, student: StudentConfig) -> int:
    """Encoder layers a student keeps: ``layers`` when set, else ``depthFactor`` of the teacher's,
    else half of them."""
    if student.layers is not None:
        return student.layers
    return kept_depth(teacher_layers, student.depth_factor or DEFAULT_ENCODER_DEPTH)


def make_student(source: SourceModel, config: DistillationConfig) -> nn.Module:
    """A narrower (and, with ``depthFactor``, shallower) MLP keeping its first hidden layers, or a
    BERT encoder keeping ``student_layer_count`` of the teacher's layers."""
    assert source.module is not None
    if source.family == "mlp":
        from ..zoo.digits import DigitsMLP

        hidden = getattr(source.module, "hidden", None)
        if hidden is None:
            raise CompressionError(f"distillation does not know the MLP layout of {source.uri}")
        kept = hidden[: kept_depth(len(hidden), config.student.depth_factor)]
        torch.manual_seed(0)
        return DigitsMLP([max(4, round(h * config.student.width)) for h in kept])
    if source.family == "bert":
        from .transformer import choose_layers, encoder_layer_count, keep_layers

        assert source.train is not None
        count = student_layer_count(encoder_layer_count(source.module), config.student)
        sample = tuple(x[:128] for x in source.train.inputs)
        return keep_layers(source.module, count, choose_layers(source.module, count, sample))
    raise CompressionError(f"distillation does not know the architecture of {source.uri}")


def kd_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    labels: torch.Tensor | None,
    config: DistillationConfig,
) -> torch.Tensor:
    """Soft-target KL (scaled by T²) mixed with cross-entropy; cosine distance for embeddings."""
    if labels is None:
        return (1.0 - nn.functional.cosine_similarity(student_out, teacher_out, dim=-1)).mean()
    t = config.temperature
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student_out / t, dim=-1),
        nn.functional.log_softmax(teacher_out / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = nn.functional.cross_entropy(student_out, labels)
    return config.alpha * t * t * soft + (1.0 - config.alpha) * hard


def _teacher_outputs(teacher: nn.Module, inputs: tuple[torch.Tensor, ...], tokens: bool) -> torch.Tensor:
    device = next(teacher.parameters()).device
    if tokens:
        from .transformer import encode

        return encode(teacher, inputs, device=device)
    with torch.no_grad():
        out: torch.Tensor = teacher.eval()(*(x.to(device) for x in inputs))
        return out


def shard(indices: torch.Tensor, topo: Topology) -> torch.Tensor:
    """This rank's rows of a global batch (round-robin, so shards differ by at most one row)."""
    return indices[topo.rank :: topo.world_size]


class Trainer:
    """Holds the student, teacher targets and optimizer of one rank."""

    def __init__(self, source: SourceModel, config: DistillationConfig, topo: Topology, seed: int) -> None:
        assert source.train is not None and source.module is not None
        self.config, self.topo, self.seed = config, topo, seed
        self.device = pick_device(topo.local_rank)
        rows = slice(0, config.max_samples)
        self.inputs = tuple(x[rows] for x in source.train.inputs)
        self.labels = source.train.labels[rows] if source.train.labels is not None else None
        self.tokens = source.family == "bert"
        # .to() moves a module in place: the source's teacher is copied only when it has to move.
        teacher = source.module if self.device.type == "cpu" else copy.deepcopy(source.module).to(self.device)
        self.targets = _teacher_outputs(teacher, self.inputs, self.tokens).cpu()
        # Encoders learn to reproduce the teacher exactly, so dropout stays off (eval mode). Their
        # vocabulary table stays the teacher's: a few thousand sentences touch a fraction of its rows.
        student = make_student(source, config).to(self.device)
        if self.tokens:
            student.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # type: ignore[union-attr]
        self.student = student.eval() if self.tokens else student.train()
        self.model: nn.Module = self.student
        if topo.distributed:
            self.model = nn.parallel.DistributedDataParallel(self.student)
        trained = [p for p in self.student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.learning_rate)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        order = torch.randperm(len(self.targets), generator=torch.Generator().manual_seed(self.seed + epoch))
        size = self.config.batch_size
        return [order[s : s + size] for s in range(0, len(order), size) if len(order[s : s + size]) >= 2]

    def backward(self, batch: torch.Tensor) -> float:
        """Loss on this rank's shard of ``batch``; after it, gradients are averaged over ranks."""
        rows = shard(batch, self.topo)
        inputs = tuple(x[rows] for x in self.inputs)
        if self.tokens:
            from .transformer import trim_padding

            inputs = trim_padding(*inputs)
        inputs = tuple(x.to(self.device) for x in inputs)
        labels = self.labels[rows].to(self.device) if self.labels is not None else None
        self.optimizer.zero_grad()
        loss = kd_loss(self.model(*inputs), self.targets[rows].to(self.device), labels, self.config)
        loss.backward()
        return float(loss.detach())

    def gradients(self) -> list[torch.Tensor]:
        return [p.grad.detach().cpu().clone() for p in self.student.parameters() if p.grad is not None]

    def fit(self) -> nn.Module:
        for epoch in range(self.config.epochs):
            for batch in self.batches(epoch):
                self.backward(batch)
                self.optimizer.step()
        self.release_group()
        return self.student.eval().cpu()

    def release_group(self) -> None:
        """Drop the DDP wrapper, whose reducer holds the process group: the group must be freed
        by ``destroy_process_group``, not later by whatever collects the wrapper (at interpreter
        exit, gloo's worker threads can then abort the process)."""
        self.model = self.student


def train_rank(topo: Topology, config: CompressionConfig, source: SourceModel | None = None) -> nn.Module:
    """Distill on this rank (joins the process group when the topology is distributed)."""
    from ..loaders import load_source

    assert config.distillation is not None
    source = source or load_source(config)
    torch.manual_seed(config.seed)
    with _group(topo):
        return Trainer(source, config.distillation, topo, config.seed).fit()


def first_step_gradients(topo: Topology, config: CompressionConfig) -> list[torch.Tensor]:
    """The gradient after one backward on the first global batch (averaged across ranks by DDP)."""
    from ..loaders import load_source

    assert config.distillation is not None
    with _group(topo):
        trainer = Trainer(load_source(config), config.distillation, topo, config.seed)
        trainer.backward(trainer.batches(0)[0])
        gradients = trainer.gradients()
        trainer.release_group()
        return gradients


class _group:
    """Join the process group for the block when the topology is distributed."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo

    def __enter__(self) -> None:
        if self.topo.distributed and not dist.is_initialized():
            init_method = None
            if self.topo.rendezvous_file is not None:
                init_method = f"file://{self.topo.rendezvous_file}"
            else:
                os.environ["MASTER_ADDR"] = self.topo.master_addr
                os.environ["MASTER_PORT"] = str(self.topo.master_port)
            device = pick_device(self.topo.local_rank)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            gpus = torch.cuda.device_count() if device.type == "cuda" else 0
            backend = distributed_backend(device.type, self.topo.ranks_on_node, gpus)
            dist.init_process_group(
                backend, init_method=init_method, rank=self.topo.rank, world_size=self.topo.world_size
            )

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self.topo.distributed and dist.is_initialized():
            gc.collect()  # wrappers that hold the group and sit in reference cycles go now
            if exc_type is None:
                dist.barrier()  # no rank closes its connections while another still reduces
            dist.destroy_process_group()


def _spawned(
    local_rank: int, world: int, rendezvous: str, fn: Callable[..., Any], args: tuple[Any, ...], out: str
) -> None:
    torch.set_num_threads(1)
    topo = Topology(local_rank, world, "127.0.0.1", 0, ranks_on_node=world, rendezvous_file=rendezvous)
    result = fn(topo, *args)
    if local_rank == 0:
        torch.save(result, out)


def run_local_workers(world: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(topology, *args)`` in ``world`` local processes (gloo/nccl); return rank 0's result."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out, rendezvous = str(Path(tmp) / "rank0.pt"), str(Path(tmp) / "rendezvous")
        mp.start_processes(
            _spawned, args=(world, rendezvous, fn, args, out), nprocs=world, start_method="spawn"
        )
        result: T = torch.load(out, weights_only=False)
        return result


def distill(
    source: SourceModel, config: DistillationConfig, seed: int = 0, full: CompressionConfig | None = None
) -> nn.Module:
    """The distilled student: in this process, in the environment's group, or in local workers."""
    topo = topology()
    if topo.distributed:
        assert full is not None
        return train_rank(topo, full, source)
    if config.workers > 1:
        if full is None:
            raise CompressionError("distillation.workers > 1 needs the whole config to start workers")
        return run_local_workers(config.workers, train_rank, full)
    solo = copy.copy(config)
    return Trainer(source, solo, Topology(0, 1, "127.0.0.1", 0), seed).fit()


def run_worker(config: CompressionConfig) -> int:
    """A non-zero rank of an Indexed Job: train in the group, then exit (rank 0 writes the artifact)."""
    if config.distillation is None:
        raise CompressionError("this pod has a non-zero rank but the config has no distillation to share")
    train_rank(topology(), config)
    return 0
