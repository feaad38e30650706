"""Data-parallel distillation: two gloo workers average to the full-batch gradient (the seed's rule)."""

from __future__ import annotations

import torch

from frugal.compression.config import CompressionConfig
from frugal.compression.distributed import Topology, topology, worker_rank
from frugal.compression.steps.distillation import first_step_gradients, run_local_workers


def config() -> CompressionConfig:
    return CompressionConfig.model_validate(
        {
            "model": {"uri": "zoo://digits-mlp"},
            "distillation": {"student": {"width": 0.25}, "batchSize": 64},
            "output": "/nonexistent",
        }
    )


def test_two_workers_average_to_the_full_batch_gradient() -> None:
    single = first_step_gradients(Topology(0, 1, "127.0.0.1", 0), config())
    averaged = run_local_workers(2, first_step_gradients, config())
    assert len(single) == len(averaged) == 6
    for one, two in zip(single, averaged, strict=True):
        assert torch.allclose(one, two, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in single)


def test_rank_comes_from_an_indexed_job_or_torchrun() -> None:
    job = topology({"JOB_COMPLETION_INDEX": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "compress-0.svc"})
    assert (job.rank, job.world_size, job.master_addr, job.master_port) == (3, 4, "compress-0.svc", 29500)
    assert topology({"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "1234"}).master_port == 1234
    local = topology({"JOB_COMPLETION_INDEX": "1", "WORLD_SIZE": "2", "FRUGAL_RENDEZVOUS_FILE": "/tmp/r"})
    assert (local.rank, local.rendezvous_file) == (1, "/tmp/r") and job.rendezvous_file is None
    assert worker_rank({}) == 0 and worker_rank({"RANK": "1", "WORLD_SIZE": "2"}) == 1
