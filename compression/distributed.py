"""Rank and world size from the environment, the way torchrun or a Kubernetes Indexed Job gives them.

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``. An
Indexed Job gives each pod ``JOB_COMPLETION_INDEX``; the operator adds ``WORLD_SIZE`` and
``MASTER_ADDR`` (the index-0 pod's stable hostname), so the index is the rank, one rank per pod.
Ranks on one machine (``frugal up``) may instead meet through a file, ``FRUGAL_RENDEZVOUS_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

RENDEZVOUS_FILE_ENV = "FRUGAL_RENDEZVOUS_FILE"


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    master_addr: str
    master_port: int
    ranks_on_node: int = 1
    # Ranks spawned on one machine meet through a file instead of rank 0's TCP store: no port to
    # pick and release (another socket can take it in between), no store that dies with rank 0.
    rendezvous_file: str | None = None

    @property
    def local_rank(self) -> int:
        return self.rank % self.ranks_on_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def topology(env: Mapping[str, str] | None = None) -> Topology:
    """Where this process sits in the data-parallel group (rank 0 of 1 when nothing is set)."""
    env = os.environ if env is None else env
    rank = env.get("RANK") or env.get("JOB_COMPLETION_INDEX") or "0"
    return Topology(
        rank=int(rank),
        world_size=int(env.get("WORLD_SIZE", "1")),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=int(env.get("MASTER_PORT", "29500")),
        ranks_on_node=max(1, int(env.get("LOCAL_WORLD_SIZE", "1"))),
        rendezvous_file=env.get(RENDEZVOUS_FILE_ENV) or None,
    )


def worker_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank when it runs inside a multi-process group, else 0."""
    found = topology(env)
    return found.rank if found.distributed else 0
