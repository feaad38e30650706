"""kopf handlers: each one delegates to the reconciler in a line or two.

Registered on an explicit registry by :func:`register` (nothing happens at import time). Events on
the Jobs and Deployments the operator manages, and on their pods in trouble, wake their
ModelDeployment up at once. A ModelDeployment's handlers only queue its name for the reconciler's
workers (:meth:`Reconciler.run`), which also run the periodic pass (costing nothing for settled
ones): kopf is the event source, and no object's body waits in memory for a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from frugal.operator.api.crds import GROUP, VERSION
from frugal.operator.api.models import BatchInferenceStatus
from frugal.operator.control.batch_reconciler import BatchReconciler
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.decision import pod_problems
from frugal.operator.manifests import batch_jobs, names

PLURAL = "modeldeployments"
BATCH_PLURAL = "batchinferences"
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
# A running batch's progress (its shards' markers on the volume) is read this often.
BATCH_PROGRESS_SECONDS = 10.0


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    batches: BatchReconciler | None = None,
) -> None:
    """Register every handler of the operator on `registry`."""
    if batches is not None:
        _register_batches(registry, batches)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile(namespace: str | None, name: str | None, **_: Any) -> None:
        if namespace and name:
            reconciler.enqueue(namespace, name)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry)
    def cleanup(body: kopf.Body, **_: Any) -> None:
        reconciler.cleanup(body)

    # A pod that cannot run (no image, OOM-killed, unschedulable) may change no Job or Deployment, so
    # its own events wake its ModelDeployment; a healthy pod's events are filtered out before any call.
    @kopf.on.event("", "v1", "pods", id="pod-in-trouble", labels=MANAGED, when=_in_trouble, registry=registry)
    @kopf.on.event("batch", "v1", "jobs", id="job-changed", labels=MANAGED, registry=registry)
    @kopf.on.event("apps", "v1", "deployments", id="deployment-changed", labels=MANAGED, registry=registry)
    async def child_changed(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        # Listings count too (kopf lists again after a watch expires: an event may have been missed);
        # at a start they cost nothing extra, the owner's name already waits in the queue.
        if namespace and names.LABEL_MD in labels:
            reconciler.enqueue(namespace, labels[names.LABEL_MD])
        if namespace and batches is not None and batch_jobs.LABEL_BATCH in labels:
            await asyncio.to_thread(batches.reconcile_named, namespace, labels[batch_jobs.LABEL_BATCH])


def _in_trouble(body: kopf.Body, **_: Any) -> bool:
    return pod_problems.problem(body) is not None


def _register_batches(registry: kopf.OperatorRegistry, batches: BatchReconciler) -> None:
    @kopf.on.resume(GROUP, VERSION, BATCH_PLURAL, id="batch", registry=registry)
    @kopf.on.create(GROUP, VERSION, BATCH_PLURAL, id="batch", registry=registry)
    @kopf.on.update(GROUP, VERSION, BATCH_PLURAL, id="batch", registry=registry)
    def batch(namespace: str | None, name: str, **_: Any) -> None:
        if namespace:
            batches.reconcile_named(namespace, name)

    @kopf.timer(GROUP, VERSION, BATCH_PLURAL, id="batch-progress", interval=BATCH_PROGRESS_SECONDS, registry=registry)
    def progress(namespace: str | None, name: str, status: Mapping[str, Any], **_: Any) -> None:
        if namespace and BatchInferenceStatus.from_status(status).phase not in ("Succeeded", "Failed"):
            batches.reconcile_named(namespace, name)
