"""The operator's control loops, written once for both backends.

What lives here: the reconciler (a ModelDeployment's children and status), the autoscaler's driver
(read metrics, run the pure tick, act on it) and the BatchInference reconciler. They talk to "a
cluster" only through :mod:`frugal.operator.control.port` — get, list, apply under a field manager,
create, delete, patch status, and a metrics source — so the same classes run against the Kubernetes
API and Prometheus (:mod:`frugal.operator.cluster`) and against `frugal up`'s in-memory store
(:mod:`frugal.operator.local`). Decisions stay in :mod:`frugal.operator.decision` (pure); nothing here
imports kopf or the kubernetes client.
"""
