"""`frugal up`'s cluster: the operator's own reconciler over the in-memory store, carried out by the
process runner.

:class:`LocalCluster` puts the ModelDeployment and its HardwareProfiles in a
:class:`~frugal.operator.local.store.Store`, runs :class:`frugal.operator.control.reconciler.Reconciler`
— the class the operator runs in a cluster — whenever the store changes (and every few seconds, as
the operator's timer does), and lets :class:`~frugal.operator.local.runner.ProcessRunner` run the
Jobs and Deployments it applies. Every Event the reconciler posts is printed. A pipeline that works
here works with the same manifests in a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal.operator.api.crds import API_VERSION
from frugal.operator.api.models import ModelDeploymentStatus
from frugal.operator.api.spec import HardwareProfileSpec, ModelDeploymentSpec, Owner, owner_of
from frugal.operator.control.reconciler import Reconciler
from frugal.operator.decision.decide import Decision, Settings
from frugal.operator.local.balancer import Hold
from frugal.operator.local.replicas import Shard
from frugal.operator.local.runner import ProcessRunner
from frugal.operator.local.store import Store
from frugal.operator.telemetry import OperatorMetrics

# The operator's timer: a pass this often even when nothing changed in the store.
RESYNC_SECONDS = 2.0

Report = Callable[[str], None]


class LocalRunError(RuntimeError):
    """The pipeline stopped; the message says at which stage and why (from the operator's conditions)."""


@dataclass
class LocalCluster:
    """One ModelDeployment on this machine, driven by the operator's reconciler."""

    md: ModelDeploymentSpec
    profiles: Mapping[str, HardwareProfileSpec]
    workdir: Path
    report: Report
    # The operator's series of this run (frugal up --prometheus-targets): each pass's time and phase.
    metrics: OperatorMetrics | None = None
    store: Store = field(default_factory=Store, init=False)
    reconciler: Reconciler = field(init=False)
    runner: ProcessRunner | None = field(default=None, init=False)
    # Set when the endpoint holds a request at zero replicas (the autoscaler wakes on it).
    demand: threading.Event = field(default_factory=threading.Event, init=False)
    _loop: ControlLoop | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(
            self.store, local_settings(self.workdir), metrics=self.metrics, keep_decisions=True
        )
        self.store.subscribe(event_printer(self.report))
        put(self.store, self.profiles.values(), [self.md])

    @property
    def settings(self) -> Settings:
        return self.reconciler.settings

    @property
    def owner(self) -> Owner:
        return owner_of(self._body())

    def run(self, port: int = 0) -> Served:
        """Reconcile until the model is served; `port` is the endpoint's (0: any free port)."""
        runner = self._start(serve=True, port=port)
        try:
            self._wait(lambda status: status.phase == "Serving", runner)
        except BaseException:
            self.stop()
            raise
        decision = self.decision()
        assert decision is not None and decision.location is not None
        assert decision.location.operator_path is not None  # file:// storage is this machine's
        return Served(self, runner, decision.location.operator_path, self.md.model_name, self.md.model_uri)

    def plan(self) -> Decision:
        """Run the pipeline's Jobs (compression, profiling) until the plan is made, then stop; the
        decision says what to serve and where the artifacts are."""
        runner = self._start(serve=False)
        try:
            self._wait(lambda status: status.selected is not None and status.phase != "Compressing", runner)
        finally:
            self.stop()
        decision = self.decision()
        assert decision is not None
        return decision

    def decision(self) -> Decision | None:
        """The reconciler's last decision: what is served, the plan, the status it wrote."""
        owner = self.md.owner
        return self.reconciler.last_decision(owner.namespace, owner.name)

    def stop(self) -> None:
        """Stop reconciling, then drain and stop every replica and balancer."""
        if self._loop is not None:
            self._loop.stop()
        if self.runner is not None:
            self.runner.stop()

    def _start(self, serve: bool, port: int = 0) -> ProcessRunner:
        # With minReplicas 0 the endpoint plays the front: it holds requests until a replica is ready.
        hold = Hold(max_requests=self.md.max_queue_size) if self.md.min_replicas == 0 else None
        owner = self.owner
        self.runner = ProcessRunner(
            self.store, owner, self.workdir, self.report, port, hold, self.demand.set, serve=serve
        )
        self.runner.start()
        owner = self.md.owner
        self._loop = ControlLoop(
            self.store, [lambda: self.reconciler.reconcile_named(owner.namespace, owner.name)], self.report
        )
        self._loop.start()
        return self.runner

    def _wait(self, done: Callable[[ModelDeploymentStatus], bool], runner: ProcessRunner) -> None:
        version = 0
        while True:
            status = ModelDeploymentStatus.from_body(self._body())
            if status.phase == "Failed":
                raise LocalRunError(explain(status))
            if done(status):
                return
            if failures := runner.failures():
                raise LocalRunError(f"serving: {failures[0]}")
            version = self.store.wait_for_change(version, 1.0)

    def _body(self) -> dict[str, Any]:
        return get(self.store, "ModelDeployment", self.md.owner)


@dataclass
class Served:
    """What is running once the ModelDeployment is Serving: views over the store and the runner."""

    cluster: LocalCluster
    runner: ProcessRunner
    artifacts: Path
    model_name: str
    decision_source_uri: str

    @property
    def decision(self) -> Decision:
        decision = self.cluster.decision()
        assert decision is not None  # serving: the reconciler has decided
        return decision

    @property
    def shards(self) -> list[Shard]:
        """The live revision's shards (those the endpoint routes to), by index."""
        return self.runner.shards()

    @property
    def retired(self) -> list[list[Shard]]:
        """The shards of options served before a re-planning rollover, in order."""
        return self.runner.retired

    @property
    def demand(self) -> threading.Event:
        return self.cluster.demand

    @property
    def endpoint(self) -> str:
        """The endpoint balancer: the address users call, whatever the replicas behind it."""
        return self.runner.endpoint.url

    def alive(self) -> bool:
        """No replica died on its own (a shard scaled to zero has none to die)."""
        return all(shard.alive() or not shard.active() for shard in self.shards)

    def held_requests(self) -> int:
        return self.runner.endpoint.held

    def wake_waits(self) -> list[float]:
        """Seconds each request held at zero replicas waited for the first replica."""
        return list(self.runner.endpoint.waits)

    def stop(self) -> None:
        self.cluster.stop()


@dataclass
class ControlLoop:
    """The operator's handlers on one machine: every pass runs after each change to the store, and
    every ``RESYNC_SECONDS`` when nothing changes (the operator's timer)."""

    store: Store
    passes: Sequence[Callable[[], object]]
    report: Report
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frugal-local-operator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = self.store.resource_version
            for one_pass in self.passes:
                try:
                    one_pass()
                except Exception as error:  # the operator logs and retries; so does this loop
                    self.report(f"reconciler: {type(error).__name__}: {error}")
            self.store.wait_for_change(seen, RESYNC_SECONDS)


def local_settings(workdir: Path) -> Settings:
    """The operator's settings on one machine: file:// is this machine's own directories (what a local
    run is for), the artifacts under `workdir`."""
    return Settings(image="local", storage_uri=f"file://{workdir / 'artifacts'}", allow_host_path=True)


def put(
    store: Store,
    profiles: Iterable[HardwareProfileSpec],
    deployments: Iterable[ModelDeploymentSpec],
    others: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Create the run's resources in the store as `kubectl apply` would (profiles are cluster-scoped)."""
    for profile in profiles:
        body = profile.resource.to_dict()
        body["metadata"].pop("namespace", None)
        store.create(body)
    for md in deployments:
        body = md.resource.to_dict()
        body["metadata"]["namespace"] = md.owner.namespace
        store.create(body)
    for other in others:
        store.create(other)


def get(store: Store, kind: str, owner: Owner) -> dict[str, Any]:
    body = store.get(API_VERSION, kind, owner.namespace, owner.name)
    assert body is not None  # created by the run, deleted by nobody
    return body


def event_printer(report: Report) -> Callable[[str, Mapping[str, Any]], None]:
    """A store listener printing every Event the loops post, as `kubectl get events -w` would."""

    def show(kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "ADDED" and obj.get("kind") == "Event":
            report(f"event: {obj.get('type')} {obj.get('reason')}: {obj.get('message')}")

    return show


def explain(status: ModelDeploymentStatus) -> str:
    """Why a ModelDeployment failed: its phase, message and every condition that is False."""
    failing = [c for c in status.conditions if c.status == "False" and c.message]
    detail = "; ".join(f"{c.type}: {c.reason}: {c.message}" for c in failing)
    return f"phase {status.phase}: {status.message}" + (f" ({detail})" if detail else "")
