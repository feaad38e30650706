"""The operator's own reconciler and autoscaler, driven pass by pass against the in-memory store.

The sample-controller idiom: put objects in the store, run one pass, assert what was applied and
what the status says. The store plays the API server only (apply with field managers, the status
subresource, owner references); the test plays the Job and Deployment controllers by writing their
status, and a fixed metrics source plays Prometheus. Everything here runs in well under a second.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from test_decide import BODY, PROFILED

from frugal.operator.control.port import AUTOSCALER_FIELD_MANAGER, MetricsKey, MetricsReading
from frugal.operator.control.reconciler import Reconciler, resync_due
from frugal.operator.control.scaler import Autoscaler
from frugal.operator.decision import observations
from frugal.operator.decision.decide import Settings
from frugal.operator.local.store import Store

API = "frugal.dev/v1alpha1"
NS, NAME = "ml", "digits"
# gpu is cheaper per request when busy (the deploy-time plan prices one replica at saturation),
# cpu is cheaper to keep one replica of when the load is a trickle: re-planning has a reason to move.
PROFILES = {"cpu": "0.10", "gpu": "0.12"}


def hardware_profile(name: str, cost: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "HardwareProfile",
        "metadata": {"name": name},
        "spec": {
            "accelerator": {"kind": "cpu", "count": 1},
            "costPerHour": cost,
            "power": {"idleWatts": 1, "maxWatts": 20},
        },
    }


class FixedMetrics:
    """Every shard of the model answers `rate` req/s at a p95 of 5 ms."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.reads = 0

    def read(self, wanted: Sequence[MetricsKey]) -> MetricsReading:
        self.reads += 1
        sample = observations.ShardSample({"request_rate": self.rate, "latency_p95_seconds": 0.005})
        return MetricsReading({key: {(NS, NAME, 0): sample} for key in wanted})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Loops:
    def __init__(self, body: dict[str, Any] | None = None, drift_seconds: float = 600.0) -> None:
        self.store = Store()
        for name, cost in PROFILES.items():
            self.store.create(hardware_profile(name, cost))
        md = copy.deepcopy(body or BODY)
        md["metadata"].pop("uid", None)
        md["metadata"].pop("generation", None)
        self.store.create(md)
        self.clock = Clock()
        self.metrics = FixedMetrics()
        settings = Settings(image="img", storage_uri="file:///store", allow_host_path=True)
        self.reconciler = Reconciler(
            self.store,
            settings,
            drift_seconds=drift_seconds,
            clock=self.clock,
            read_artifacts=lambda *_: PROFILED,
        )
        self.scaler = Autoscaler(
            self.store, self.reconciler, self.metrics, clock=self.clock, wall_clock=self.clock
        )

    def reconcile(self) -> dict[str, Any]:
        self.reconciler.reconcile_named(NS, NAME)
        return self.status()

    def status(self) -> dict[str, Any]:
        body = self.store.get(API, "ModelDeployment", NS, NAME)
        assert body is not None
        return dict(body.get("status") or {})

    def names(self, api_version: str, kind: str) -> list[str]:
        return [o["metadata"]["name"] for o in self.store.find(api_version, kind, NS, {})]

    def finish_jobs(self) -> None:
        for job in self.store.find("batch/v1", "Job", NS, {}):
            if not (job.get("status") or {}).get("conditions"):
                self.store.patch_status(
                    "batch/v1", "Job", NS, job["metadata"]["name"], {"conditions": [{"type": "Complete", "status": "True"}]}
                )

    def make_ready(self) -> None:
        for deployment in self.store.find("apps/v1", "Deployment", NS, {}):
            replicas = int(deployment["spec"].get("replicas", 1))
            self.store.patch_status(
                "apps/v1", "Deployment", NS, deployment["metadata"]["name"], {"readyReplicas": replicas}
            )

    def serve(self) -> dict[str, Any]:
        self.reconcile()
        self.finish_jobs()
        self.reconcile()
        self.finish_jobs()
        self.reconcile()
        self.make_ready()
        return self.reconcile()

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.store.find("v1", "Event", NS, {})]

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status()["conditions"] if c["type"] == kind)


def test_one_pass_at_a_time_from_compression_to_serving() -> None:
    loops = Loops()
    assert loops.reconcile()["phase"] == "Compressing"
    assert loops.names("batch/v1", "Job") == ["digits-g1-compress"]
    loops.finish_jobs()
    assert loops.reconcile()["phase"] == "Profiling"
    assert sorted(loops.names("batch/v1", "Job")) == [
        "digits-g1-compress",
        "digits-g1-profile-cpu",
        "digits-g1-profile-gpu",
    ]
    loops.finish_jobs()
    status = loops.reconcile()
    assert status["phase"] == "Deploying"
    assert loops.names("apps/v1", "Deployment") == ["digits-g1-shard-0"]
    assert status["selected"]["hardwareProfile"] == "gpu"
    loops.make_ready()
    assert loops.reconcile()["phase"] == "Serving"
    assert ("Normal", "PhaseServing") in loops.events()
    # Every child belongs to the ModelDeployment: deleting it collects them all.
    loops.store.delete(API, "ModelDeployment", NS, NAME)
    assert loops.names("apps/v1", "Deployment") == [] and loops.names("batch/v1", "Job") == []


def test_the_periodic_pass_takes_the_unsettled_the_failed_and_the_drifted_only() -> None:
    passes = [(("ns", "settled"), (100.0, True)), (("ns", "unsettled"), (100.0, False)), (("ns", "old"), (0.0, True))]
    assert resync_due(passes, now=650.0, drift_seconds=600.0) == [("ns", "unsettled"), ("ns", "old")]
    loops = Loops()
    assert loops.reconciler.due() == []  # nothing passed over yet: kopf's resume handler does that
    assert loops.reconcile()["phase"] == "Compressing"
    assert loops.reconciler.due() == []  # settled: waits on its Job, whose events wake it
    loops.clock.now += 600.0
    assert loops.reconciler.due() == [(NS, NAME)]  # the drift pass re-applies its children once
    loops.reconcile()

    def broken(*_: Any) -> Any:
        raise RuntimeError("the pass broke")

    loops.reconciler._reconcile = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        loops.reconcile()
    assert loops.reconciler.due() == [(NS, NAME)]  # tried again at the next pass


def test_the_resync_loop_reconciles_what_is_due_and_forgets_the_deleted() -> None:
    loops = Loops()
    loops.reconcile()
    loops.store.delete(API, "ModelDeployment", NS, NAME)
    loops.clock.now += 600.0
    assert loops.reconciler.due() == [(NS, NAME)]
    stop = threading.Event()
    resync = threading.Thread(target=loops.reconciler.run, args=(0.01, stop))
    resync.start()
    try:
        deadline = time.monotonic() + 10.0
        while loops.reconciler.due() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        resync.join()
    assert loops.reconciler.due() == []


def test_replicas_belong_to_the_autoscaler_and_the_operators_applies_leave_them() -> None:
    loops = Loops(drift_seconds=0.0)  # every pass applies every object again
    loops.serve()
    loops.metrics.rate = 3000.0  # far beyond one replica's profiled 1,560 req/s
    loops.scaler.tick()
    deployment = loops.store.get("apps/v1", "Deployment", NS, "digits-g1-shard-0")
    assert deployment is not None and deployment["spec"]["replicas"] > 1
    scaled = deployment["spec"]["replicas"]
    assert ("Normal", "ScaledUp") in loops.events()
    loops.reconcile()
    deployment = loops.store.get("apps/v1", "Deployment", NS, "digits-g1-shard-0")
    assert deployment is not None and deployment["spec"]["replicas"] == scaled
    status = loops.status()
    assert status["autoscaling"]["desiredReplicas"] == [scaled] and status["requestRate"] == 3000.0


def test_a_rollover_from_start_to_finish() -> None:
    loops = Loops()
    loops.serve()
    assert loops.status()["selected"]["hardwareProfile"] == "gpu"
    loops.metrics.rate = 2.0  # a trickle: one cpu replica costs less than one gpu replica
    loops.scaler.tick()
    assert loops.status()["planAtLoad"]["reason"] == "Waiting"
    assert loops.names("apps/v1", "Deployment") == ["digits-g1-shard-0"]
    loops.clock.now += 301.0  # the replanning window, 300 s by default, has passed
    loops.scaler.tick()
    status = loops.status()
    assert status["replan"]["revision"] == 1 and status["replan"]["selected"]["hardwareProfile"] == "cpu"
    assert loops.condition("Replanned")["status"] == "True"
    # The new revision starts beside the running one, which keeps the endpoint until it is ready.
    assert sorted(loops.names("apps/v1", "Deployment")) == ["digits-g1-r1-shard-0", "digits-g1-shard-0"]
    endpoint = loops.store.get("v1", "Service", NS, "digits")
    assert endpoint is not None and endpoint["spec"]["selector"].get("frugal.dev/revision", "0") == "0"
    assert loops.status()["conditions"] and loops.condition("Ready")["reason"] == "RollingOver"
    loops.make_ready()
    status = loops.reconcile()
    endpoint = loops.store.get("v1", "Service", NS, "digits")
    assert endpoint is not None and endpoint["spec"]["selector"]["frugal.dev/revision"] == "1"
    assert loops.names("apps/v1", "Deployment") == ["digits-g1-r1-shard-0"]
    assert status["selected"]["hardwareProfile"] == "cpu" and status["phase"] == "Serving"
    assert ("Normal", "Replanned") in loops.events()
    # The next tick scales the new revision with a fresh memory and keeps it.
    loops.scaler.tick()
    assert loops.status()["replan"]["revision"] == 1


def test_an_object_in_the_way_is_left_alone_with_a_condition_naming_it() -> None:
    loops = Loops()
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "digits", "namespace": NS, "labels": {"team": "search"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
    }
    loops.store.create(theirs)
    loops.reconcile()
    loops.finish_jobs()
    loops.reconcile()
    loops.finish_jobs()
    loops.reconcile()
    service = loops.store.get("v1", "Service", NS, "digits")
    assert service is not None
    assert service["spec"]["selector"] == {"app": "theirs"} and service["metadata"]["labels"] == {"team": "search"}
    degraded = loops.condition("Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ObjectNotOwned"
    assert "Service digits" in degraded["message"] and "not owned by ModelDeployment digits" in degraded["message"]
    assert ("Warning", "ObjectNotOwned") in loops.events()
    # Its own objects are applied as usual; once the other one is gone, the endpoint is made.
    assert "digits-g1-shard-0" in loops.names("apps/v1", "Deployment")
    loops.store.delete("v1", "Service", NS, "digits")
    loops.reconcile()
    assert loops.condition("Degraded")["status"] == "False"
    assert loops.store.get("v1", "Service", NS, "digits") is not None


def test_without_metrics_nothing_scales_and_the_status_says_why() -> None:
    loops = Loops()
    loops.serve()

    class Failing:
        def read(self, wanted: Sequence[MetricsKey]) -> MetricsReading:
            return MetricsReading(failures={key: "prometheus did not answer" for key in wanted})

    loops.scaler.metrics_source = Failing()
    loops.scaler.tick()
    deployment = loops.store.get("apps/v1", "Deployment", NS, "digits-g1-shard-0")
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    metrics = loops.condition("MetricsAvailable")
    assert metrics["status"] == "False" and "prometheus did not answer" in metrics["message"]
    assert ("Warning", "MetricsStale") in loops.events()


@pytest.mark.parametrize("manager", ["frugal-operator", AUTOSCALER_FIELD_MANAGER])
def test_the_store_removes_only_what_a_manager_stopped_sending(manager: str) -> None:
    store = Store()
    base = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": NS}}
    store.apply({**base, "spec": {"a": 1, "b": 2}}, "other")
    store.apply({**base, "spec": {"c": 3}}, manager)
    store.apply({**base, "spec": {"d": 4}}, manager)
    found = store.get("v1", "Service", NS, "s")
    assert found is not None and found["spec"] == {"a": 1, "b": 2, "d": 4}
    assert found["metadata"]["generation"] == 3


def test_an_unreachable_api_server_is_told_apart_from_a_defect() -> None:
    """The autoscaler logs one line per tick while the API server restarts, a traceback otherwise."""
    import urllib3

    from frugal.operator.control.port import ApiError, unreachable

    refused = urllib3.exceptions.MaxRetryError(None, "/apis", ConnectionRefusedError(111, "refused"))
    assert unreachable(refused) and unreachable(ConnectionResetError()) and unreachable(ApiError(503, "x"))
    assert not unreachable(ApiError(422, "invalid")) and not unreachable(KeyError("spec"))
