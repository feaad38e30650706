"""`frugal batch`'s cluster: the operator's BatchInference reconciler (and, when the batch names a
ModelDeployment, its reconciler for that model's pipeline) over the in-memory store, with the process
runner running the Jobs they create: compression and profiling, the Indexed Job of scoring workers
(an index that dies is run again up to its ``backoffLimitPerIndex``, and resumes from the shards it
finished), then the aggregation Job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal.operator.api.models import BatchInferenceStatus, ModelDeploymentStatus
from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec, owner_of
from frugal.operator.control.batch_reconciler import BatchReconciler
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.local.local_cluster import (
    ControlLoop,
    LocalRunError,
    event_printer,
    explain,
    get,
    local_settings,
    put,
)
from frugal.operator.local.runner import ProcessRunner
from frugal.operator.local.store import Store

Report = Callable[[str], None]
FINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass
class LocalBatch:
    """One BatchInference (`body`, as applied) on this machine, with the profiles and the
    ModelDeployment it names, if any."""

    body: Mapping[str, Any]
    profiles: Mapping[str, HardwareProfileSpec]
    md: ModelDeploymentSpec | None
    workdir: Path
    report: Report

    def run(self, on_status: Callable[[BatchInferenceStatus], None]) -> BatchInferenceStatus:
        """Reconcile until the batch has Succeeded or Failed; `on_status` sees every status it passes
        through. LocalRunError when the ModelDeployment's pipeline fails first."""
        store = Store()
        store.subscribe(event_printer(self.report))
        reconciler = Reconciler(store, local_settings(self.workdir))
        batches = BatchReconciler(store, reconciler)
        put(store, self.profiles.values(), [self.md] if self.md is not None else [], [self.body])
        batch = owner_of(self.body)
        passes: list[Callable[[], object]] = []
        if self.md is not None:
            owner = self.md.owner
            passes.append(lambda: reconciler.reconcile_named(owner.namespace, owner.name))
        passes.append(lambda: batches.reconcile_named(batch.namespace, batch.name))
        runner = ProcessRunner(store, batch, self.workdir, self.report, serve=False)
        loop = ControlLoop(store, passes, self.report)
        runner.start()
        loop.start()
        try:
            version = 0
            while True:
                status = BatchInferenceStatus.from_body(get(store, "BatchInference", batch))
                on_status(status)
                if status.phase in FINAL_PHASES:
                    return status
                if self.md is not None:
                    md_status = ModelDeploymentStatus.from_body(get(store, "ModelDeployment", self.md.owner))
                    if md_status.phase == "Failed":
                        raise LocalRunError(explain(md_status))
                version = store.wait_for_change(version, 1.0)
        finally:
            loop.stop()
            runner.stop()
