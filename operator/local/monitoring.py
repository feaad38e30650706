"""`frugal up --prometheus-targets FILE`: a local run that a real Prometheus (and the chart's Grafana
dashboard and alert rules) can watch, as they watch the operator in a cluster.

Two parts:

* the operator's own series for this run (:class:`frugal.operator.telemetry.OperatorMetrics`: the
  phase, the compression report, the SLO, replicas per shard, the autoscaler's reason, cost per hour
  and watts), served on a port of their own on loopback;
* a Prometheus ``file_sd`` file listing that port and every replica process serving now, rewritten
  (atomically: a new file renamed over the old) whenever the replicas change — the part a PodMonitor
  plays in a cluster. Each replica's series carry its ``namespace``/``model``/``shard`` labels, as in a
  cluster: scrape with ``honor_labels: true`` so Prometheus keeps them as written.

Prometheus re-reads a ``file_sd`` file when it changes (and every ``refresh_interval``), so a scaled or
rolled-over replica is scraped from its first ready moment to its last.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal.operator.api.spec import ModelDeploymentSpec
from frugal.operator.decision.conditions import Phase
from frugal.operator.local.local_cluster import Served
from frugal.operator.local.replicas import Shard
from frugal.operator.telemetry import OperatorMetrics, serve

REFRESH_SECONDS = 0.5
OPERATOR_POD = "frugal-up"

TargetGroup = dict[str, Any]  # one element of a file_sd file: {"targets": [...], "labels": {...}}


def target_groups(operator_address: str, shards: Sequence[Shard]) -> list[TargetGroup]:
    """The file_sd document: this run's operator series, then every replica that is ready and not yet
    stopped (a retiring replica still answers what it holds: it stays a target until it exits)."""
    groups: list[TargetGroup] = [{"targets": [operator_address], "labels": {"pod": OPERATOR_POD}}]
    for shard in shards:
        for replica in shard.replicas:
            if replica.ready_at is None or replica.stopped_at is not None:
                continue
            address = replica.url.removeprefix("http://")
            groups.append({"targets": [address], "labels": {"pod": replica.name}})
    return groups


def observe_served(
    metrics: OperatorMetrics, md: ModelDeploymentSpec, served: Served, replicas: Sequence[int]
) -> None:
    """What `served` runs now — the selection, `replicas` per shard, the compression report — as the
    reconciler exports it in a cluster."""
    decision = served.decision
    if decision.selection is None:
        return
    shards = [{"index": shard.index, "replicas": n} for shard, n in zip(served.shards, replicas, strict=True)]
    metrics.observe(md, decision.selection, {**decision.status, "shards": shards})


def write_atomically(path: Path, groups: Sequence[TargetGroup]) -> None:
    """Replace `path` in one step, so Prometheus never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(list(groups), indent=2) + "\n")
    os.replace(partial, path)


@dataclass
class Monitoring:
    """This run's operator series on `address`, and the targets file kept current from `served`."""

    metrics: OperatorMetrics
    targets_file: Path
    address: str
    _server: Any
    _served: Served | None = None
    _written: list[TargetGroup] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, targets_file: Path, host: str = "127.0.0.1") -> Monitoring:
        """Serve the operator series on a free port of `host`; the targets file lists that port at once
        (the phase, compression and profiling show as they happen)."""
        metrics = OperatorMetrics()
        server = serve(metrics, 0, host)
        monitoring = cls(metrics, targets_file, f"{host}:{server.server_port}", server)
        monitoring.refresh()
        return monitoring

    def watch(self, md: ModelDeploymentSpec, served: Served) -> None:
        """List `served`'s replicas from now on, following scaling and rollovers (the autoscaler keeps
        the served series current from its ticks)."""
        self._served = served
        self.metrics.assessed(md.owner.namespace, md.owner.name, Phase.SERVING, {})
        observe_served(self.metrics, md, served, [len(shard.active()) for shard in served.shards])
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="frugal-up-targets", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        served = self._served
        shards = [] if served is None else [*served.shards, *(s for old in served.retired for s in old)]
        groups = target_groups(self.address, shards)
        if groups != self._written:
            write_atomically(self.targets_file, groups)
            self._written = groups

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self.refresh()

    def stop(self) -> None:
        """Stop following the replicas and serving the series; the targets file is left listing nothing
        of this run's (so Prometheus stops scraping what no longer exists)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        write_atomically(self.targets_file, [])
        self._server.shutdown()
        self._server.server_close()
